"""The micro:bit's request handler (the micro profile; the generated main.py runs its link loop).

The requests of docs/PROTOCOL.md that the micro profile answers:
- EVENTS: binned into micro_net.BM (micro_events.py);
- END_SAMPLE -> RESULT: micro_net.run (learning from the label when the model has a rule);
- GET_WEIGHTS -> WEIGHTS: the learned layer's int8 weights (total length, then the requested bytes); the
  host puts them into the flashed model (host_tools/micro_flash.apply_readout, `snn-edge pull`);
- GET_STATS -> STATS: samples, labelled, correct and the free heap.
Everything else is refused with one code, E_UNSUPPORTED: LOAD_MODEL (the model is flashed), PUT_WEIGHTS,
CHECKPOINT and RESET (learning lives in RAM; a board reset starts from the flashed weights), which the
code to do them would not leave heap for (measured: docs/MICROBIT.md), and unknown types too (one branch).
Error codes are firmware_py/errors.py's (the tests check them). Why not device.py/handler.py: micro_net.py.
"""
import gc
import struct

import utime  # type: ignore[import-not-found]  # the port's clock (tests give one)

import micro_model as M  # type: ignore[import-not-found]  # generated at flash time (tests write one)

try:
    from firmware_py import micro_events as E
    from firmware_py import micro_link as L
    from firmware_py import micro_net as N
    from firmware_py import micro_sample as R
except ImportError:     # the micro:bit's flat filesystem
    import micro_events as E  # type: ignore[import-not-found, no-redef]
    import micro_link as L  # type: ignore[import-not-found, no-redef]
    import micro_net as N  # type: ignore[import-not-found, no-redef]
    import micro_sample as R  # type: ignore[import-not-found, no-redef]

NAMES = (b"\x07samples", b"\x08labelled", b"\x07correct", b"\x09heap_free")



def handle(t, p):
    """One request -> (answer type, payload); raises Exception(bytes((code,)) + message) to refuse it."""
    if t == 3:                                      # EVENTS
        E.events(p)
        return 0x80, b""
    if t == 4:                                      # END_SAMPLE -> RESULT
        gc.collect()                                # the network's lists need the heap unfragmented
        return 0x82, R.result(struct.unpack("<h", (p + b"\xff\xff")[:2])[0])
    if t == 6:                                      # GET_WEIGHTS -> WEIGHTS
        o, n = struct.unpack("<II", p)
        return 0x84, struct.pack("<I", len(N.W)) + bytes(N.W[o:o + n])
    if t == 5:                                      # GET_STATS -> STATS
        gc.collect()
        R.S[3] = gc.mem_free()
        o = b""
        for k in range(4):
            o += NAMES[k] + struct.pack("<i", R.S[k])
        return 0x83, o
    raise Exception(b"\x03not on the micro:bit")                    # E_UNSUPPORTED


# The link's handler and its INFO (the boot id: the clock at boot; the description names the profile).
L.H = handle  # type: ignore[assignment]
L.INFO = struct.pack("<BIHH", L.VERSION, utime.ticks_us() & 0x3FFFFFFF, L.MAX_PAYLOAD, L.WINDOW) + b"snn-edge-micro"  # type: ignore[assignment, operator]
