"""The micro:bit's EVENTS decoder (the micro profile): docs/PROTOCOL.md's EVENTS payload (protocol 2:
base-128 digits + 4, see link.pack_events) binned into micro_net.BM with the semantics of
firmware_py/binning.py (crop, downsample, polarity plane, time step) in one pass. An event outside the
sensor is refused (E_BAD_EVENT) when it is reached, so the batch's earlier events stay binned (the host
sends none: host_tools/link.py checks the range before sending). Its own module: the micro:bit compiles
a module with its whole parse tree in the heap, and small modules fit the heap the others leave
(docs/MICROBIT.md). tests/firmware/test_micro_runtime.py checks the bins against binning.py's (through
intsim's results).
"""
import micro_model as M  # type: ignore[import-not-found]  # generated at flash time (tests write one)

try:
    from firmware_py import micro_net as N
except ImportError:     # the micro:bit's flat filesystem
    import micro_net as N  # type: ignore[import-not-found, no-redef]


def events(p):
    """An EVENTS payload binned into N.BM."""
    t0 = p[0] + (p[1] << 7) + (p[2] << 14) + (p[3] << 21) + (p[4] << 28) - 4 * 0x10204081
    if len(p) != 7 + 6 * (p[5] + (p[6] << 7) - 516):
        raise ValueError("events length")
    for k in range(7, len(p), 6):
        lo = p[k] + (p[k + 1] << 7) + (p[k + 2] << 14) - 66052
        hi = p[k + 3] + (p[k + 4] << 7) + (p[k + 5] << 14) - 66052
        x = (lo & 2047) - M.CX
        y = (hi & 2047) - M.CY
        if x >= M.SW - M.CX or y >= M.SH - M.CY:
            raise Exception(b"\x05event outside the sensor")     # E_BAD_EVENT
        t = (t0 + (lo >> 11) + (hi >> 12 << 10)) // M.DT
        if 0 <= x < M.XW and 0 <= y < M.YH and t < M.STEPS:    # XW, YH: the crop, whole cells
            i = ((hi >> 11 & 1) * M.GH + y // M.DS) * M.GW + x // M.DS
            N.BM[t * M.NB + (i >> 3)] |= 1 << (i & 7)
