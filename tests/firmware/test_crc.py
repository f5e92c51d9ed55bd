"""The one CRC-32 (firmware_py/crc.py): C and table paths equal zlib's, including a continued CRC."""
import zlib

from hypothesis import given, strategies as st

from firmware_py import crc


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_plain_and_native_paths_equal_zlib_with_continuation(a, b):
    first = zlib.crc32(a)
    assert crc.crc32_py(a) == first
    assert crc.crc32_py(b, crc=first) == zlib.crc32(b, first) == zlib.crc32(a + b)
    assert crc.crc32(b, crc.crc32(a)) == zlib.crc32(a + b)
    assert crc.crc32_py(list(a + b)) == zlib.crc32(a + b)     # byte-value sequences on the plain path


def test_check_value():
    assert crc.crc32_py(b"123456789") == 0xCBF43926 == crc.crc32(b"123456789")
