"""Reading event recordings on the board (from its own flash), in batches into preallocated arrays.

Kept out of binning.py: a board that only bins its sensor's events does not pay for it.
"""


def decode_nmnist(raw, n, xs, ys, ts, ps):
    """Decode n N-MNIST events (5 bytes each: x, y, p in bit 7 | t bits 22..16, t bits 15..0, big-endian)
    from raw into the preallocated xs, ys, ts, ps: how a board reads a recording from its own flash in
    batches. (Timestamp-overflow markers, y == 240, do not occur in N-MNIST recordings of ~300 ms.)"""
    for e in range(n):
        b = 5 * e
        xs[e] = raw[b]
        ys[e] = raw[b + 1]
        ps[e] = raw[b + 2] >> 7
        ts[e] = ((raw[b + 2] & 0x7F) << 16) | (raw[b + 3] << 8) | raw[b + 4]
