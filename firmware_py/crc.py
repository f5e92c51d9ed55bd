"""CRC-32 (the zlib polynomial): one definition for the link's frames and the model/checkpoint files.

The C `binascii.crc32` where the port has it (CPython, MicroPython unix/esp32/rp2); otherwise a table-driven
pure-Python path that keeps its state in two 16-bit halves, so it never builds an int above 2**30 (those
live on the heap in MicroPython: a 16 KB board cannot afford one per byte). Both give the same bits (tests).
Runs unchanged on MicroPython 1.9.2 (the micro:bit), later MicroPython and CPython.
"""


def _crc32_tables():
    # The reflected zlib CRC-32 split into two 16-bit tables.
    from array import array
    try:
        lo = array("H", bytearray(512))     # MicroPython: the raw bytes become 256 zero items
        hi = array("H", bytearray(512))
    except TypeError:                       # CPython refuses a buffer for 'H'
        lo = array("H", [0] * 256)
        hi = array("H", [0] * 256)
    for i in range(256):
        c_lo = i
        c_hi = 0
        for _ in range(8):
            bit = c_lo & 1
            c_lo = (c_lo >> 1) | ((c_hi & 1) << 15)
            c_hi >>= 1
            if bit:
                c_lo ^= 0x8320
                c_hi ^= 0xEDB8
        lo[i] = c_lo
        hi[i] = c_hi
    return lo, hi


_TABLES = None


def _tables():
    global _TABLES
    if _TABLES is None:
        _TABLES = _crc32_tables()
    return _TABLES


def crc32_halves(data, start, end, c_lo=0xFFFF, c_hi=0xFFFF):
    """Table-driven CRC-32 of data[start:end] as (low 16 bits, high 16 bits) of the pre-inversion state;
    pass a previous result's halves to continue a running CRC."""
    tlo, thi = _TABLES or _tables()
    for i in range(start, end):
        k = (c_lo ^ data[i]) & 0xFF
        c_lo = ((c_lo >> 8) | ((c_hi & 0xFF) << 8)) ^ tlo[k]
        c_hi = (c_hi >> 8) ^ thi[k]
    return c_lo, c_hi


def crc32_py(data, start=0, end=None, crc=0):
    """The plain path: zlib.crc32(data[start:end], crc) as an int."""
    if end is None:
        end = len(data)
    state = crc ^ 0xFFFFFFFF
    c_lo, c_hi = crc32_halves(data, start, end, state & 0xFFFF, state >> 16)
    return ((c_hi ^ 0xFFFF) << 16) | (c_lo ^ 0xFFFF)


try:  # C fast path where the port has it: same bits
    try:
        from binascii import crc32 as _c_crc32
    except ImportError:
        from ubinascii import crc32 as _c_crc32
except ImportError:
    _c_crc32 = None  # type: ignore[assignment]  # ports without binascii: the table path
    _tables()        # they use it for every frame: build the 1 KB of tables now, before the heap fragments


def crc32(data, crc=0):
    """zlib.crc32(data, crc) for any bytes-like data (or a sequence of byte values on the plain path)."""
    if _c_crc32 is not None:
        return _c_crc32(data, crc) & 0xFFFFFFFF
    return crc32_py(data, 0, len(data), crc)
