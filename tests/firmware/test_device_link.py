"""End to end: the runtime behind the real serial link on a virtual board (MicroPython unix port behind a
pty), driven by the host link: flash firmware + model blob, stream real N-MNIST samples with labels, read
results, stats and adapted weights, checkpoint, reboot; results equal the in-process Device's."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from converters.blob import intmodel_to_blob
from firmware_py.device import Device
from firmware_py.store import checkpoint_bytes, persistent_banks

from .test_runtime_bitexact import _recordings, make_model


@pytest.mark.slow
def test_runtime_over_the_serial_link_on_a_virtual_board(tmp_path, nmnist_small):
    if shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed")
    from edge.events import read_events
    from host_tools.cmd_board import flash
    from host_tools.link import connect, open_serial
    from host_tools.virtual_board import VirtualBoard

    model = make_model("scalar", "solsa")
    blob = tmp_path / "model.blob"
    blob.write_bytes(intmodel_to_blob(model))
    items = _recordings(nmnist_small, 10)
    ref = Device()
    ref.load_model(blob.read_bytes())
    with VirtualBoard(tmp_path / "board", runtime="micropython", heap="256K") as vb:
        flash(vb.path, str(blob), mpy=True, handler="firmware_py.handler", log=lambda *a: None)
        link = connect(open_serial(vb.path), handler="firmware_py.handler")
        assert link.hello() is not None
        assert link.info.max_payload == 1024         # the runtime's handler caps its batches (memory plan)
        for f, label in items:
            ev = read_events(f, label).events
            link.send_events(ev["x"], ev["y"], ev["t"], ev["p"])
            r = link.end_of_sample(label)
            ref.begin_sample()
            ref.add_events(ev["x"].tolist(), ev["y"].tolist(), ev["t"].tolist(), ev["p"].tolist())
            cls, counts, conf = ref.end_sample(label)
            assert (r.cls, list(r.counts), r.confidence) == (cls, counts, conf)
        stats = link.get_stats()
        assert stats["samples"] == 10 and stats["labelled"] == 10 and stats["updates"] > 0
        assert stats["mem_total"] == ref.stats()["memory"]["total"] - ref.stats()["memory"]["buffers"] \
            + stats["mem_buffers"]
        weights = link.get_weights()
        assert weights == checkpoint_bytes(ref.net.model, ref.model_crc, persistent_banks(ref.rule))
        link.checkpoint()
        # a bad label and a bad event come back as errors; the board keeps serving
        from host_tools.link import LinkError
        with pytest.raises(LinkError):
            link.end_of_sample(12)
        with pytest.raises(LinkError):     # the batch is refused; its error arrives with the next answer
            link.send_events(np.array([40]), np.array([1]), np.array([5]), np.array([1]))
            link.end_of_sample(-1)
        stats = link.get_stats()
        assert stats["bad_events"] == 1 and stats["samples"] in (10, 11)   # the (empty) sample may have ended
    # power cycle: the board boots the stored model and the checkpointed (adapted) weights
    with VirtualBoard(tmp_path / "board", runtime="micropython", heap="256K") as vb:
        link = connect(open_serial(vb.path), handler="firmware_py.handler")
        assert link.get_weights() == weights
