"""The micro:bit's sample: END_SAMPLE -> RESULT (the micro profile), NUMERICS.md §4-§7 and §9 over the binned
sample in micro_net.BM, with micro_net's LIF step and readout rule. Its own module: the micro:bit compiles a
module with its whole parse tree in the heap, and small modules fit the heap the others leave
(docs/MICROBIT.md). tests/firmware/test_micro_runtime.py checks it bit for bit against converters/intsim.
"""
import struct

import micro_model as M  # type: ignore[import-not-found]  # generated at flash time (tests write one)

try:
    from firmware_py import micro_net as N
except ImportError:     # the micro:bit's flat filesystem
    import micro_net as N  # type: ignore[import-not-found, no-redef]

S = [0, 0, 0, 0]        # samples, labelled, correct, free heap: STATS


def run(y):
    """The binned sample in micro_net.BM from the zero state, learning when y >= 0; BM is cleared for the next
    sample; -> per-class spike counts."""
    I0 = [0] * M.NH
    V0 = [0] * M.NH
    I1 = [0] * M.NO
    V1 = [0] * M.NO
    c = [0] * M.NO
    pre = [0] * M.NH
    post = [0] * M.NO
    for t in range(M.STEPS):
        a = N.rows(t)
        a2 = [0] * M.NO
        for i in N.lif(a, I0, V0, M.AS0, M.AM0, M.TH0, M.SH0):
            pre[i] += 1
            for j in range(M.NO):
                a2[j] += N.W[i * M.NO + j]
        for j in N.lif(a2, I1, V1, M.AS1, M.AM1, M.TH1, M.SH1):
            c[j] += 1
            post[j] += 1
        if y >= 0 and (t + 1) % M.KUP == 0:
            N.update(y, pre, post)
            pre = [0] * M.NH
            post = [0] * M.NO
    for q in range(len(N.BM)):
        N.BM[q] = 0
    return c


def result(y):
    """END_SAMPLE with label y (-1: none) -> RESULT payload: class (ties to the lowest), confidence
    (runtime.confidence), spike counts."""
    if y >= M.NO:
        raise Exception(b"\x06label outside the classes")        # E_BAD_LABEL
    c = run(y if M.LEARN else -1)
    b = c.index(max(c))
    S[0] += 1
    if y >= 0:
        S[1] += 1
        S[2] += b == y
    s = sorted(c)
    o = struct.pack("<hBB", b, 0 if s[-1] <= s[0] else min(255, (s[-1] - s[-2]) * 255 // (s[-1] - s[0])), M.NO)
    for v in c:
        o += struct.pack("<H", v)
    return o
