"""Nothing allocated per sample on a 32-bit board, by the Device and by the whole board loop (NUMERICS.md §0; the device's hot loops keep every
intermediate below 2**30, and every buffer is allocated when the model loads).

Under the 32-bit MicroPython unix port (small ints are 31-bit there, as on every board), the Device runs real
N-MNIST recordings with the README's model size (578-64-10) for inference and for each on-device rule, with
the plain and the fast (viper) kernels; after one warm-up sample, gc is disabled around each sample and
gc.mem_alloc() read before and after (tests/firmware/alloc_mpy.py). Budget: 1 KB per sample (what is left is
per sample, not per event or step: the readout's list and the answer's tuple). The 64-bit port runs the same
check with twice the budget (its words and object headers are twice as big); it hides big-int allocations,
but not lists, tuples or dicts made per event or step.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from converters.blob import intmodel_to_blob
from converters.intmodel import IntLayer, IntModel, default_learn
from .conftest import MICROPYTHONS, run_script
from .test_runtime_bitexact import BINARY_SPEC, make_gem_model

BUDGET = {"micropython32": 1024, "micropython": 2048}
N_RECORDINGS = 4        # one warm-up, three measured


def readme_model(rule: str, learn_all: int = 0) -> IntModel:
    """578-64-10 with random int8 weights that spike on real N-MNIST (the README's N-MNIST model size);
    learn_all: SOLSA on every layer (NUMERICS.md §10.8, 5 steps between updates)."""
    rng = np.random.default_rng(64)
    layers = [IntLayer(rng.integers(-40, 41, (578, 64)).astype(np.int8), np.array(2048, np.int32), 3500, 600, 4, 6),
              IntLayer(rng.integers(-40, 41, (64, 10)).astype(np.int8), np.array(2048, np.int32), 3500, 600, 4, 6)]
    learn = default_learn(rule)
    if learn_all:
        learn.params.update(learn_all=1, k_update=5)
    return IntModel(layers, 1, BINARY_SPEC, learn)


CASES = {  # name: (model factory, mode, SOLSA traces: -1 the model's, 0 full, 1 factorised)
    "inference": (lambda: readme_model("none"), "infer", -1),
    "readout_delta": (lambda: readme_model("readout_delta"), "learn", -1),
    "solsa_full": (lambda: readme_model("solsa"), "learn", 0),
    "solsa_factorised": (lambda: readme_model("solsa"), "learn", 1),
    "solsa_all": (lambda: readme_model("solsa", learn_all=1), "learn", 0),
    "gem": (lambda: make_gem_model(), "learn", -1),
}


@pytest.fixture(scope="module")
def recordings(nmnist_small):
    return [(sorted((nmnist_small / "Train" / str(d)).glob("*.bin"))[0], d) for d in range(N_RECORDINGS)]


@pytest.mark.parametrize("interp", MICROPYTHONS)
@pytest.mark.parametrize("kernel", ["plain", "fast"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_sample_allocates_at_most_1_kb(case, kernel, interp, recordings, tmp_path):
    make, mode, fact = CASES[case]
    blob = tmp_path / "m.blob"
    blob.write_bytes(intmodel_to_blob(make()))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{f} {d}\n" for f, d in recordings))
    out = json.loads(run_script(interp, "alloc_mpy.py", str(blob), str(lst), mode, kernel, str(fact),
                                heap="512K").strip().splitlines()[-1])
    assert len(out["alloc"]) == N_RECORDINGS - 1
    print(f"{case} {kernel} {interp}: bytes allocated per sample {out['alloc']}")
    assert max(out["alloc"]) <= BUDGET[interp], f"{case}, {kernel}, {interp}: bytes allocated per sample {out['alloc']}"


@pytest.mark.parametrize("interp", MICROPYTHONS)
@pytest.mark.parametrize("kernels", ["fast", "plain"])
@pytest.mark.parametrize("case", ["inference", "solsa_factorised"])
def test_the_board_loop_allocates_at_most_1_kb_per_sample(case, kernels, interp, recordings, tmp_path):
    """The whole loop a board runs (board_main.serve: reads, deframing, CRC checks, the session, the handler,
    the answers) on the host's real frames for each recording, with the GC off for the whole run
    (tests/firmware/loop_alloc_mpy.py), with the viper kernels and with the plain Python ones: every
    sample after the first within the same 1 KB."""
    make, mode, _ = CASES[case]
    blob = tmp_path / "m.blob"
    blob.write_bytes(intmodel_to_blob(make()))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{f} {d}\n" for f, d in recordings))
    out = json.loads(run_script(interp, "loop_alloc_mpy.py", str(blob), str(lst), mode, kernels,
                                heap="8M").strip().splitlines()[-1])
    assert out["results"] == N_RECORDINGS and out["errors"] == 0, out
    assert len(out["alloc"]) == N_RECORDINGS - 1
    print(f"loop {case} {kernels} {interp}: bytes allocated per sample {out['alloc']}")
    assert max(out["alloc"]) <= BUDGET[interp], \
        f"loop {case}, {kernels}, {interp}: bytes allocated per sample {out['alloc']}"
