"""Float checkpoint -> IntModel (docs/NUMERICS.md §2), with calibration on data and an accuracy report.

Per layer: the weight scale is the largest power of two 2**w_exp with max|W| * 2**w_exp <= 127; decays
become Q12; the state shift F is the largest that keeps the calibrated peak |I|, |V| and theta (with a
margin) inside the 20-bit state and the spike current inside the declared width; theta is rounded to
state units and then, optionally, nudged (within +-10%) to the value whose spikes agree best with the
float network's on the calibration data, layer by layer, because rounding and the truncating decays
bias the integer membrane slightly low.
"""
from __future__ import annotations

import math

import numpy as np

from converters import intsim
from converters.intmodel import IntLayer, IntModel, LearnSpec, validate
from edge.errors import SnnEdgeError
from firmware_py import fixedpoint as fp

STATE_MARGIN = 1.5      # headroom over the calibrated peaks before the state saturates
MAX_SHIFT = 14
THETA_STEPS = tuple(k / 64 for k in range(-4, 5))   # relative threshold nudges tried by calibration


def weight_exponent(W: np.ndarray) -> int:
    m = float(np.abs(W).max())
    if m == 0.0:
        return 0
    return int(math.floor(math.log2(fp.W_MAX / m)))


def quantize_weights(W: np.ndarray, w_exp: int) -> np.ndarray:
    return np.clip(np.rint(W.astype(np.float64) * 2.0 ** w_exp), -fp.W_MAX, fp.W_MAX).astype(np.int8)


def _float_peaks(spec, params, X: np.ndarray):
    """Per layer (max |I|, max |V before reset|) of the float network on the calibration data."""
    from edge import bptt
    fwd = bptt.forward(spec, [p.astype(np.float64) for p in params], X.astype(np.float64))
    return [(float(np.abs(r.current).max()), float(np.abs(r.v_pre).max())) for r in fwd.records], fwd


def in_max_of(spec) -> int:
    """255 when the spec's binning is in count mode, else 1 (binary frames)."""
    from firmware_py.binning import COUNT
    if spec.binning is not None and len(spec.binning) >= 7 and spec.binning[6] == COUNT:
        return 255
    return 1


def quantize(spec, params, X_calib: np.ndarray, *, calibrate_theta: bool = True,
             learn: LearnSpec | None = None) -> IntModel:
    """The integer model of a float network; X_calib [T, B, N_in] uint8 drives the calibration."""
    if spec.neuron != "cuba_lif":
        raise SnnEdgeError(f"quantize: the integer engine and the boards run the cuba_lif neuron; this network's "
                           f"neurons are {spec.neuron!r} (rule na), which has no integer form")
    if X_calib.ndim != 3 or X_calib.shape[2] != spec.n_inputs:
        raise SnnEdgeError(f"calibration data: expected [T, B, {spec.n_inputs}], got {list(X_calib.shape)}")
    in_max = in_max_of(spec)
    peaks, fwd = _float_peaks(spec, params, X_calib)
    layers: list[IntLayer] = []
    chosen = []
    for l, p in enumerate(params):
        kind = "integrator" if (l == spec.n_layers - 1 and spec.readout == "membrane") else "lif"
        peak = max(peaks[l][0], peaks[l][1], float(p.theta)) * STATE_MARGIN
        e0 = weight_exponent(p.W)
        # e0 keeps every weight; e0 + 1 doubles the resolution and clips the few largest ones: keep the
        # one whose integer layer (on top of the integer layers below) agrees better with the float one.
        cands = [_int_layer(p, e, kind, peak, in_max if l == 0 else 1) for e in ((e0, e0 + 1) if calibrate_theta
                                                                                 else (e0,))]
        scores = [_layer_score(layers + [c], l, fwd, X_calib, in_max) for c in cands]
        best = int(np.argmax(scores))
        layers.append(cands[best])
        chosen.append({"layer": l, "w_exp": cands[best].w_exp, "shift": cands[best].shift,
                       "candidates": [[c.w_exp, s] for c, s in zip(cands, scores)]})
    model = IntModel(layers, in_max, spec.binning, learn or LearnSpec(),
                     {"float_spec": spec.to_dict(), "calibration_samples": int(X_calib.shape[1]),
                      "scale_calibration": chosen})
    validate(model, "quantized model")
    if calibrate_theta:
        _calibrate_thresholds(model, fwd, X_calib)
    if model.learn.rule != "none":
        auto_rule_params(model)
    return model


def _int_layer(p, w_exp: int, kind: str, peak: float, in_lim: int) -> IntLayer:
    """One integer layer for weight exponent w_exp: the largest state shift F that keeps the calibrated
    peak inside the state width and the spike current inside the declared width."""
    Wq = quantize_weights(p.W, w_exp)
    col = int(np.abs(Wq.astype(np.int64)).sum(axis=0).max())
    F = 0
    for f in range(MAX_SHIFT, -1, -1):
        fits_state = peak * 2.0 ** (w_exp + f) <= fp.STATE_MAX
        fits_acc = p.a_syn.ndim == 1 or col * in_lim * (1 << f) < (1 << 30)
        if fits_state and fits_acc:
            F = f
            break
    a_syn = (np.array([fp.q12_from_float(float(a)) for a in p.a_syn], np.int32) if p.a_syn.ndim == 1
             else np.array(fp.q12_from_float(float(p.a_syn)), np.int32))
    theta_q = int(min(fp.STATE_MAX, max(1, round(float(p.theta) * 2.0 ** (w_exp + F)))))
    return IntLayer(Wq, a_syn, fp.q12_from_float(float(p.a_mem)), theta_q, F, w_exp, kind)


def _layer_score(layers: list[IntLayer], l: int, fwd, X: np.ndarray, in_max: int) -> float:
    """How well integer layer l matches the float one: spike agreement (lif), or minus the mean squared
    membrane error in float units (integrator readout)."""
    res = intsim.run(IntModel(layers, in_max), X)
    L = layers[l]
    if L.kind == "lif":
        return float((res.spikes[l].astype(bool) == (fwd.layer_spikes[l] > 0.5)).mean())
    v = res.V[l].astype(np.float64) * 2.0 ** -(L.w_exp + L.shift)
    return -float(((v - fwd.layer_spikes[l]) ** 2).mean())


def auto_rule_params(model: IntModel, keep: set[str] | frozenset = frozenset()) -> None:
    """Rule hyper-parameters that depend on the model's scales (unless the user set them, `keep`):
    SOLSA's surrogate shift makes h fall from 4096 at theta to 0 at |V - theta| = 2 theta; the delta
    rule's v_shift counts the integrator's membrane in units of about 1.0 (its theta)."""
    L = model.layers[-1]
    if model.learn.rule == "solsa" and "sg_shift" not in keep:
        model.learn.params["sg_shift"] = fp.surrogate_shift(int(L.theta))
    if model.learn.rule == "readout_delta" and "v_shift" not in keep:
        model.learn.params["v_shift"] = max(0, L.theta.bit_length() - 1)


def input_moments(X: np.ndarray, last_times, spec) -> "Moments":
    """firmware_py.align.Moments of samples X [S, T, N_in] (frames as the board bins them) whose last events
    came at `last_times` [S] (us): the board's sums (Moments.add_binner) from the frames, per sample."""
    from firmware_py.align import Moments
    m = Moments()
    for x, t_last in zip(X, last_times):
        m.add(*_pairs_sums(x, spec), int(t_last))
    return m


def input_reference(X: np.ndarray, last_times, spec) -> list[int]:
    """The model's input reference for label-free alignment (firmware_py/align.py): [centroid x, y of the
    active inputs in cells (Q8), mean last-event time (us), active pairs per sample] over training samples
    X [S, T, N_in]."""
    return list(input_moments(X, last_times, spec).reference())


def calibration_rounds(events: list, spec, reference, samples: int):
    """The board's label-free calibration (firmware_py.device.Device.calibrate, then its rounds) over a stream
    of event arrays: (for each sample the (BinSpec, noise filter on) it is binned with, the samples the rounds
    took (None when the stream ended first), the setting after the stream). The step is rescaled from spec's
    (the model's own)."""
    from edge.transforms import background_filter, to_frames
    from firmware_py import align
    from firmware_py.noise_filter import FILTER_US
    from firmware_py.binning import DEFAULT_SLOTS
    cur, filtering, moments = spec, False, align.Moments()
    out, used = [], None
    for e in events:
        out.append((cur, filtering))
        if moments is None:
            continue
        kept = background_filter(e, spec.sensor_w, spec.sensor_h, FILTER_US) if filtering else e
        sums = _pairs_sums(to_frames(kept, cur), cur)
        if len(e) == 0 or int(e["t"].max()) == 0 or sums[0] > DEFAULT_SLOTS:
            continue      # no events, or more active pairs than the board's event buffer holds: it drops it
        moments.add(*sums, int(e["t"].max()))
        if moments.samples == samples:
            cur, filtering, again = align.next_binning(cur, reference, moments, spec.dt_us, filtering)
            moments = align.Moments() if again else None
            if moments is None:
                used = len(out)
    return out, used, (cur, filtering)


def _pairs_sums(frame: np.ndarray, spec) -> tuple[int, int, int]:
    """(active (step, input) pairs, sum of their cell x, of their cell y) of one sample's frames [T, N_in]."""
    n = np.flatnonzero(np.asarray(frame).reshape(-1)) % spec.n_inputs
    q = n // spec.out_w
    return int(n.size), int((n - q * spec.out_w).sum()), int((q % spec.out_h).sum())


def _calibrate_thresholds(model: IntModel, fwd, X: np.ndarray) -> None:
    """Layer by layer, pick the theta nudge whose integer spikes agree best with the float spikes."""
    chosen = []
    for l, L in enumerate(model.layers):
        if L.kind != "lif":
            break
        target = fwd.layer_spikes[l] > 0.5
        base = L.theta
        best, best_agree = base, -1.0
        for step in THETA_STEPS:
            L.theta = int(min(fp.STATE_MAX, max(1, round(base * (1 + step)))))
            sub = IntModel(model.layers[: l + 1], model.in_max)
            res = intsim.run(sub, X)
            agree = float((res.spikes[l].astype(bool) == target).mean())
            if agree > best_agree + 1e-12 or (abs(agree - best_agree) <= 1e-12 and L.theta == base):
                best, best_agree = L.theta, agree
        L.theta = best
        chosen.append({"layer": l, "theta_rounded": base, "theta": best, "spike_agreement": best_agree})
    model.meta["theta_calibration"] = chosen


def compare(spec, params, model: IntModel, X: np.ndarray, y: np.ndarray, batch: int = 100) -> dict:
    """Float vs integer on X [S, T, N_in] (sample-major, as edge.data.load_frames gives): accuracy and
    per-layer spike agreement (fraction of equal (t, sample, neuron) spike values)."""
    from edge import bptt
    S = X.shape[0]
    f_correct = i_correct = same_pred = 0
    agree = np.zeros(len(model.layers))
    counted = np.zeros(len(model.layers))
    for b0 in range(0, S, batch):
        xb = np.ascontiguousarray(X[b0:b0 + batch].transpose(1, 0, 2))
        yb = y[b0:b0 + batch]
        fwd = bptt.forward(spec, [p.astype(np.float64) for p in params], xb.astype(np.float64))
        res = intsim.run(model, xb)
        fp_pred = np.argmax(fwd.logits, axis=1)
        f_correct += int((fp_pred == yb).sum())
        i_correct += int((res.predictions == yb).sum())
        same_pred += int((fp_pred == res.predictions).sum())
        for l, L in enumerate(model.layers):
            if L.kind == "lif":
                agree[l] += float((res.spikes[l].astype(bool) == (fwd.layer_spikes[l] > 0.5)).sum())
                counted[l] += res.spikes[l].size
    return {"samples": S, "float_accuracy": f_correct / S, "int_accuracy": i_correct / S,
            "prediction_agreement": same_pred / S,
            "spike_agreement": [float(a / c) if c else None for a, c in zip(agree, counted)]}


def format_report(rep: dict) -> str:
    lines = [f"samples              {rep['samples']}",
             f"float accuracy       {100 * rep['float_accuracy']:.2f}%",
             f"int8 accuracy        {100 * rep['int_accuracy']:.2f}%",
             f"prediction agreement {100 * rep['prediction_agreement']:.2f}%"]
    for l, a in enumerate(rep["spike_agreement"]):
        if a is not None:
            lines.append(f"layer {l} spike agreement {100 * a:.3f}%")
    return "\n".join(lines)


# ---- probabilistic (GEM) models: NUMERICS.md §11 ---------------------------------------------

def quantize_gem(spec, params, X_calib: np.ndarray, rule_options: dict, learn: LearnSpec | None = None) -> IntModel:
    """A float GEM network (edge.probabilistic.GLMLayerParams, exponential kernel) -> probabilistic IntModel.

    Scales: the weight exponent keeps every weight; F is the largest shift that keeps the calibrated
    peak |u| (float network, one sampled pass over X_calib) with a margin inside the state, and leaves
    sig_shift = w_exp + F - 4 >= 0.
    """
    from edge.probabilistic import Kernels, draw_uniforms, network_window
    kind = rule_options.get("kernel", "raised_cosine")
    if any(hasattr(p, "W_lat") for p in params):
        raise SnnEdgeError("GEM checkpoint: the recurrent pool (topology=pool) has no integer form; the device "
                           "runs the layered stack (train with the default --set topology=layered)")
    if kind != "exponential" or any(p.W_more.shape[0] for p in params):
        raise SnnEdgeError(f"GEM checkpoint: kernel {kind!r} with {1 + params[0].W_more.shape[0]} basis "
                           "kernel(s); the integer form needs the exponential kernel (train with --set "
                           "kernel=exponential --set n_basis=1)")
    kernels = Kernels("exponential", 1, int(rule_options.get("kernel_len", 8)), int(rule_options.get("fb_len", 8)))
    T, B, _ = X_calib.shape
    U = draw_uniforms(np.random.default_rng(0), T, B, 1, spec.sizes)
    wins = network_window([p.astype(np.float64) for p in params], X_calib.astype(np.float64), kernels, U, None)
    layers = []
    for l, (p, win) in enumerate(zip(params, wins)):
        w_exp = weight_exponent(p.W)
        peak = max(float(np.abs(win.u).max()), 8.0) * STATE_MARGIN
        F = next((f for f in range(MAX_SHIFT, -1, -1) if peak * 2.0 ** (w_exp + f) <= fp.STATE_MAX), 0)
        F = max(F, 4 - w_exp, 0)
        scale = 2.0 ** (w_exp + F)
        q = lambda v: np.clip(np.rint(np.asarray(v, np.float64) * scale), -fp.STATE_MAX, fp.STATE_MAX).astype(np.int32)  # noqa: E731
        layers.append(IntLayer(quantize_weights(p.W, w_exp), np.array(fp.q12_from_float(float(p.a_syn)), np.int32),
                               fp.q12_from_float(float(p.a_mem)), 1, F, w_exp, "prob", q(p.bias), q(p.w_fb),
                               fp.q12_from_float(kernels.fb_decay), w_exp + F - 4))
    model = IntModel(layers, in_max_of(spec), spec.binning, learn or LearnSpec(),
                     {"float_spec": spec.to_dict(), "calibration_samples": int(B), "gem_options": rule_options},
                     int(rule_options.get("k_infer", 5)), int(rule_options.get("seed", 0)))
    validate(model, "quantized GEM model")
    return model


def compare_gem(spec, params, rule_options: dict, model: IntModel, X: np.ndarray, y: np.ndarray,
                batch: int = 100) -> dict:
    """Float GEM (its own sampler) vs integer GEM accuracy on X [S, T, N_in]; spikes are random in both,
    so only accuracies and the agreement of predictions are reported."""
    from edge.rules import make_rule
    rule = make_rule("gem", **rule_options)
    params = [p.copy() for p in params]
    rule.init(spec, params, np.random.default_rng(0))   # GLM params pass through unchanged
    S = X.shape[0]
    f_correct = i_correct = same = 0
    for b0 in range(0, S, batch):
        xb = np.ascontiguousarray(X[b0:b0 + batch].transpose(1, 0, 2))
        fpred = rule.predict(params, xb).argmax(axis=1)
        ipred = intsim.run(model, xb).predictions
        f_correct += int((fpred == y[b0:b0 + batch]).sum())
        i_correct += int((ipred == y[b0:b0 + batch]).sum())
        same += int((fpred == ipred).sum())
    return {"samples": S, "float_accuracy": f_correct / S, "int_accuracy": i_correct / S,
            "prediction_agreement": same / S, "spike_agreement": []}
