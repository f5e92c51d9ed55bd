"""Label-free sensor alignment (firmware_py/align.py): the board measures where and how long its samples are,
against the model's input reference, and re-registers its binning; the host computes the same from frames."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from converters import intsim
from converters.blob import intmodel_to_blob
from converters.quantize import input_moments, input_reference
from edge.events import make_events, read_events
from edge.transforms import to_frames
from firmware_py import align
from firmware_py.binning import BinSpec
from firmware_py.device import Device
from firmware_py.errors import DeviceError

from tests.firmware.test_runtime_bitexact import _recordings, make_model


def _frames(recs, spec):
    return np.stack([to_frames(r.events, spec) for r in recs])


def _last_times(recs):
    return [int(r.events["t"].max()) for r in recs]


def test_the_boards_moments_are_the_frames(nmnist_small):
    """Moments.add_binner (what the board sums at a sample's end) = input_moments of the host's frames."""
    model = make_model("scalar", "none")
    spec = BinSpec(*model.binning)
    recs = [read_events(f, d) for f, d in _recordings(nmnist_small, 12)]
    dev = Device()
    dev.load_model(intmodel_to_blob(model))
    board = align.Moments()
    for r in recs:
        e = r.events
        dev.begin_sample()
        dev.add_events(e["x"].tolist(), e["y"].tolist(), e["t"].tolist(), e["p"].tolist())
        board.add_binner(dev.binner, dev.t_last)
        dev.end_sample(None)
    host = input_moments(_frames(recs, spec), _last_times(recs), spec)
    assert (board.n, board.sx, board.sy, board.samples, board.dur) == \
        (host.n, host.sx, host.sy, host.samples, host.dur)
    assert board.n > 1000 and board.dur > 0


def test_the_boards_noise_filter_is_the_hosts(nmnist_small):
    """noise_filter.NoiseFilter (pure Python, in place, batch by batch) keeps exactly the events that
    edge.transforms.background_filter keeps, on real recordings with sensor noise and hot pixels."""
    from edge.shifts import SensorShift, shift_recording
    from edge.transforms import background_filter
    from firmware_py.noise_filter import FILTER_US, NoiseFilter
    change = SensorShift.parse("noise=5,hot=3")
    f = NoiseFilter(34, 34)
    total = kept_total = 0
    for k, (path, d) in enumerate(_recordings(nmnist_small, 6)):
        e = shift_recording(read_events(path, d), change, np.random.default_rng(k)).events
        want = background_filter(e, 34, 34, FILTER_US)
        f.reset()
        xs, ys, ts, ps = (e[c].tolist() for c in "xytp")
        kept = []
        for a in range(0, len(xs), 256):           # batches, as the link delivers them
            bx, by, bt, bp = xs[a:a + 256], ys[a:a + 256], ts[a:a + 256], ps[a:a + 256]
            m = f.apply(bx, by, bt, bp, len(bx))
            kept += list(zip(bx[:m], by[:m], bt[:m], bp[:m]))
        assert kept == list(zip(*(want[c].tolist() for c in "xytp")))
        total += len(e)
        kept_total += len(kept)
    assert 0.3 < kept_total / total < 0.95, "the filter must drop the noise and keep most of the digit"


def test_alignment_arithmetic_and_its_limits():
    spec = BinSpec(34, 34, 10000, 30, 2, (0, 0, 34, 34), 0)
    m = align.Moments()
    m.add(100, 100 * 9, 100 * 7, 450000)                   # centroid (9, 7) cells, 450 ms
    out = align.aligned(spec, (8 << 8, 8 << 8, 300000, 0), m)  # reference (8, 8) cells, 300 ms
    assert out.crop == (0, 0, 34, 34) and out.dt_us == 15000 and align.another_round(spec, out)   # time first
    space = align.aligned(out, (8 << 8, 8 << 8, 300000, 0), m, 10000)                              # then space
    assert space.crop == (2, -2, 34, 34) and space.dt_us == 15000 and not align.another_round(out, space)
    out = space
    m2 = align.Moments()
    m2.add(10, 10 * 8, 10 * 8, 310000)                       # within the 10 % band: the step stays
    assert align.aligned(out, (8 << 8, 8 << 8, 300000, 0), m2, 10000).dt_us == 10000
    far = align.Moments()
    far.add(1, 200, -200, 1)
    assert align.aligned(spec, (0, 0, 1, 0), far).crop == (33, -33, 34, 34)   # one pixel stays on the sensor
    with pytest.raises(ValueError, match="no active inputs"):
        align.aligned(spec, (0, 0, 1, 0), align.Moments())
    with pytest.raises(ValueError, match="does not fit"):
        BinSpec(34, 34, 10000, 30, 2, (-34, 0, 34, 34), 0)
    # noise first: 30 % more active pairs than the reference turns the filter on and asks for another round
    noisy = align.Moments()
    noisy.add(130, 130 * 9, 130 * 7, 450000)
    assert align.next_binning(spec, (8 << 8, 8 << 8, 300000, 100), noisy, 10000, False) == (spec, True, True)
    s2, on, again = align.next_binning(spec, (8 << 8, 8 << 8, 300000, 100), noisy, 10000, True)   # then the pace
    assert on and again and s2.dt_us == 15000
    assert align.next_binning(spec, (8 << 8, 8 << 8, 300000, 0), noisy, 10000, False)[1] is False  # 0: unknown


def test_calibrate_refuses_bad_arguments():
    dev = Device()
    with pytest.raises(DeviceError, match="no model"):
        dev.calibrate(10, 0, 0, 0)
    dev.load_model(intmodel_to_blob(make_model("scalar", "none")))
    with pytest.raises(DeviceError, match=r"samples 0, expected 1\.\.1000"):
        dev.calibrate(0, 0, 0, 0)
    with pytest.raises(DeviceError, match=r"ref_x 9999, expected 0\.\.4352"):
        dev.calibrate(5, 9999, 0, 0)
    with pytest.raises(DeviceError, match=r"ref_pairs -1, expected 0\.\.17340"):
        dev.calibrate(5, 0, 0, 0, -1)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["unix", "cortex-m3"])
def test_calibrate_over_the_link_undoes_a_moved_slower_noisy_sensor(tmp_path, nmnist_small, target):
    """`stream --calibrate` on a board: from unlabelled samples of a sensor moved by (4, -2) pixels, 1.5x slower
    and with background noise, the board turns its noise filter on (8 samples), finds the pace (8 more), then the
    offset (8 more, in the new step), exactly as the host's calibration_rounds and close to the truth; every
    answer equals intsim on the host's frames in the setting the board used for that sample."""
    from host_tools.virtual_board import CortexM3Board
    if target == "unix" and shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed")
    if target == "cortex-m3" and CortexM3Board.missing():
        pytest.skip(CortexM3Board.missing())
    from converters.onnx_export import export
    from converters.quantize import calibration_rounds
    from edge.transforms import background_filter
    from firmware_py.noise_filter import FILTER_US
    from host_tools.cmd_board import flash
    from host_tools.cmd_stream import model_input_reference, run_stream
    from host_tools.stream import samples_from
    from host_tools.virtual_board import VirtualBoard

    model = make_model("scalar", "none")
    spec = BinSpec(*model.binning)
    train = [read_events(f, d) for f, d in _recordings(nmnist_small, 40)]
    model.meta["input_reference"] = input_reference(_frames(train, spec), _last_times(train), spec)
    onnx_path = tmp_path / "m.onnx"
    export(model, onnx_path)
    blob = tmp_path / "m.blob"
    blob.write_bytes(intmodel_to_blob(model))
    ref = model_input_reference(str(onnx_path))
    folder = str(nmnist_small / "Train")
    shift, n_cal, n = "dx=4,dy=-2,time=1.5,noise=4", 8, 30
    samples = samples_from(folder, shift=shift, limit=n, seed=3)
    recs = [make_events(s.x, s.y, s.t, s.p) for s in samples]
    settings, used, (final, filtering) = calibration_rounds(recs, spec, ref, n_cal)
    assert used == 3 * n_cal and filtering, (used, filtering)
    assert [f for _, f in settings] == [False] * n_cal + [True] * (n - n_cal)
    assert abs(final.dt_us - 15000) <= 1500 and abs(final.crop[0] - 4) <= 1 and abs(final.crop[1] + 2) <= 1, \
        (final.dt_us, final.crop)
    # the unix port (32-bit when it is first on PATH) or the emulated Cortex-M3 (ROMFS firmware, Thumb kernels)
    board = (VirtualBoard(tmp_path / "board", runtime="micropython", heap="256K") if target == "unix"
             else CortexM3Board(192 * 1024))
    with board as vb:
        if target == "unix":
            flash(vb.path, str(blob), mpy=True, handler="firmware_py.handler", log=lambda *a: None)
        else:
            flash(vb.path, str(blob), log=lambda *a: None)
        summary = run_stream(vb.path, folder, shift=shift, limit=n, seed=3, calibrate=(n_cal, ref),
                             log=str(tmp_path / "log.jsonl"), progress=False)
    board = summary["board"]
    assert (board["align_x"], board["align_y"], board["align_dt"], board["calibrating"], board["noise_filter"]) == \
        (final.crop[0], final.crop[1], final.dt_us, 0, 1)
    frames = [to_frames(background_filter(e, spec.sensor_w, spec.sensor_h, FILTER_US) if f else e, s)
              for e, (s, f) in zip(recs, settings)]
    want = intsim.run(model, np.ascontiguousarray(np.stack(frames).transpose(1, 0, 2)))
    import json
    got = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    preds = [g["cls"] for g in sorted((g for g in got if g["kind"] == "sample"), key=lambda g: g["index"])]
    assert preds == want.predictions.tolist()


@pytest.mark.slow
def test_self_training_with_its_guard_over_the_link(tmp_path, nmnist_small):
    """`stream --self-train GATE --guard ...` on a virtual board: the board learns its confident unlabelled
    predictions under the guard exactly as the host's intsim.self_train_samples does (answers, self-trained
    count, guard phase and rollbacks)."""
    if shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed")
    from firmware_py import guard as fguard
    from host_tools.cmd_board import flash
    from host_tools.cmd_stream import run_stream
    from host_tools.options import guard_spec
    from host_tools.stream import samples_from
    from host_tools.virtual_board import VirtualBoard

    model = make_model("scalar", "solsa")
    spec = BinSpec(*model.binning)
    blob = tmp_path / "m.blob"
    blob.write_bytes(intmodel_to_blob(model))
    folder = str(nmnist_small / "Train")
    n, gate, params = 16, 0, guard_spec("warmup=4,period=5,conf_drop=0,rate_band=0,share_rise=0")
    samples = samples_from(folder, shift="dx=2", limit=n, seed=4)
    X = np.stack([to_frames(make_events(s.x, s.y, s.t, s.p), spec) for s in samples])
    g = fguard.Guard(model.layers[-1].n_out, **params)
    _, preds, _, trained, _, _ = intsim.self_train_samples(model, X, gate, g)
    with VirtualBoard(tmp_path / "board", runtime="micropython", heap="256K") as vb:
        flash(vb.path, str(blob), mpy=True, handler="firmware_py.handler", log=lambda *a: None)
        summary = run_stream(vb.path, folder, shift="dx=2", limit=n, seed=4, self_train=(gate, params),
                             log=str(tmp_path / "log.jsonl"), progress=False)
    board = summary["board"]
    assert board["self_trained"] == int(trained.sum()) > 0
    assert g.phase == fguard.FROZEN and g.rollbacks == 1, "these guard settings freeze at the first block"
    assert (board["guard_phase"], board["guard_rollbacks"]) == (g.phase, g.rollbacks)    # phase: guard.PHASES index
    import json
    got = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [o["cls"] for o in sorted((o for o in got if o["kind"] == "sample"), key=lambda o: o["index"])] == \
        preds.tolist()


def test_a_sample_that_overflows_the_event_buffer_is_dropped_whole(nmnist_small):
    """More active (step, input) pairs than the buffer holds: the batch that overflows is refused, the rest of
    the sample is ignored (it does not start another sample), end_sample answers the same error without
    learning, counting or calibrating, and the next sample runs as if the dropped one never came."""
    from firmware_py.errors import E_NO_MEMORY
    model = make_model("scalar", "readout_delta")
    recs = [read_events(f, d) for f, d in _recordings(nmnist_small, 3)]
    dev = Device(slots=300)
    dev.load_model(intmodel_to_blob(model))
    dev.calibrate(2, 2000, 2000, 300000, 0)
    big = recs[0].events
    dev.begin_sample()
    with pytest.raises(DeviceError) as refused:
        for a in range(0, len(big), 256):
            dev.add_events(*(big[c][a:a + 256].tolist() for c in "xytp"))
    assert refused.value.code == E_NO_MEMORY and "sample dropped" in refused.value.msg
    assert dev.add_events(*(big[c][:256].tolist() for c in "xytp")) == 0      # the rest is ignored
    with pytest.raises(DeviceError, match="sample dropped: its events overflowed"):
        dev.end_sample(1)
    st = dev.stats()
    assert (st["samples"], st["labelled"], st["dropped_samples"], st["updates"], st["calibrating"]) == (0, 0, 1, 0, 2)
    ref = Device(slots=300)                      # the next sample: the same answer as on a fresh device
    ref.load_model(intmodel_to_blob(model))
    small = {c: recs[1].events[c][:150].tolist() for c in "xytp"}
    answers = []
    for d in (dev, ref):
        d.begin_sample()
        d.add_events(small["x"], small["y"], small["t"], small["p"])
        answers.append(d.end_sample(2))
    assert answers[0] == answers[1] and dev.stats()["samples"] == 1
