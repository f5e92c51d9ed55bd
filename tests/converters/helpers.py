"""Small integer models built by hand for the converter tests (no training, no data)."""
import numpy as np

from converters.intmodel import IntLayer, IntModel, default_learn


def small_model(rng, per_input_last=False, kind="lif", in_max=1, rule="none", factorised=0, n_in=20,
                n_hidden=8, n_out=4, sg_shift=None, learn_all=0, per_input_hidden=False, depth=2):
    """depth 2: n_in -> n_hidden -> n_out; depth 3 adds a second hidden layer of n_hidden. per_input_hidden
    gives the hidden layers per-input synaptic decays; learn_all: SOLSA learns every layer (§10.8)."""
    layers = []
    a, shift = n_in, 3
    for _ in range(depth - 1):
        a0 = rng.integers(100, 4096, a).astype(np.int32) if per_input_hidden else np.array(3000, np.int32)
        layers.append(IntLayer(rng.integers(-127, 128, (a, n_hidden)).astype(np.int8), a0, 3500, 3000, shift, 7))
        a, shift = n_hidden, 5
    a1 = (rng.integers(100, 4096, n_hidden).astype(np.int32) if per_input_last else np.array(2000, np.int32))
    layers.append(IntLayer(rng.integers(-127, 128, (n_hidden, n_out)).astype(np.int8), a1, 3800, 5000, 5, 7, kind))
    learn = default_learn(rule)
    if rule == "solsa":
        learn.params.update(factorised=factorised, lr_s=8, lra_s=10, learn_all=learn_all, lrh_s=8)
        if sg_shift is not None:   # sg_shift=0 with theta 5000: the §10.5b reset factor clamps at 0
            learn.params["sg_shift"] = sg_shift
    if rule == "readout_delta":
        learn.params.update(k_update=5)
    return IntModel(layers, in_max, None, learn)


def random_input(rng, model, T, B, density=0.3):
    n_in = model.layers[0].n_in
    on = rng.random((T, B, n_in)) < density
    vals = rng.integers(1, model.in_max + 1, (T, B, n_in))
    return (on * vals).astype(np.uint8)


def gem_model(rng, n_in=20, n_hidden=8, n_out=4, K=3):
    """A small probabilistic (GEM) model: 2 GLM layers, K compartments."""
    from converters.intmodel import IntLayer
    layers = []
    for a, b, w_exp, F in ((n_in, n_hidden, 7, 4), (n_hidden, n_out, 7, 4)):
        L = IntLayer(rng.integers(-127, 128, (a, b)).astype(np.int8), np.array(3000, np.int32), 3600, 1, F, w_exp,
                     "prob", bias=rng.integers(-3000, 500, b).astype(np.int32),
                     w_fb=rng.integers(-4000, 0, b).astype(np.int32), a_fb=2458, sig_shift=w_exp + F - 4)
        layers.append(L)
    learn = default_learn("gem")
    learn.params.update(k_update=10, lr_s=6)
    return IntModel(layers, 1, None, learn, {}, K, 7)
