"""MD4 message digest (RFC 1320), in pure Python.

OpenSSL 3 moved MD4 to its legacy provider, so neither ``hashlib`` nor ``cryptography`` can be relied
on for it. MS-CHAPv2 needs it only for the NT password hash (a handful of blocks per login), so
speed does not matter here.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    value &= _MASK
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _f(x: int, y: int, z: int) -> int:
    return (x & y) | (~x & z)


def _g(x: int, y: int, z: int) -> int:
    return (x & y) | (x & z) | (y & z)


def _h(x: int, y: int, z: int) -> int:
    return x ^ y ^ z


# RFC 1320 §3.4: the order in which each round reads the 16 words, and its shift amounts.
_ROUND1 = (tuple(range(16)), (3, 7, 11, 19))
_ROUND2 = ((0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), (3, 5, 9, 13))
_ROUND3 = ((0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15), (3, 9, 11, 15))


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    words = struct.unpack("<16I", block)
    a, b, c, d = state
    for (order, shifts), func, constant in (
        (_ROUND1, _f, 0),
        (_ROUND2, _g, 0x5A827999),
        (_ROUND3, _h, 0x6ED9EBA1),
    ):
        for i, k in enumerate(order):
            s = shifts[i % 4]
            a = _rotl(a + func(b, c, d) + words[k] + constant, s)
            # The four registers rotate roles after every step (RFC 1320 §3.4: [ABCD], [DABC], ...).
            a, b, c, d = d, a, b, c
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def md4(data: bytes) -> bytes:
    """Return the 16-byte MD4 digest of ``data``."""
    # RFC 1320 §3.1-3.2: pad with 0x80, zeros to 56 mod 64, then the bit length as 64-bit little endian.
    bit_length = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", bit_length)
    # RFC 1320 §3.3: initial buffer.
    state = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
    for offset in range(0, len(padded), 64):
        state = _compress(state, padded[offset : offset + 64])
    return struct.pack("<4I", *state)
