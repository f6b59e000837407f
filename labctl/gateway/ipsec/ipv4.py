"""IPv4 header helpers shared by ESP, AH and NAT-T: parse, rebuild, Internet checksum.

Everything here works on ``bytes``/``bytearray`` and never raises on short input by itself: callers check
lengths first (via :func:`header_length`), so a malformed packet becomes a counted drop, not an exception.
"""

from __future__ import annotations

import struct

PROTO_ICMP = 1
PROTO_IPIP = 4  # next header for an inner IPv4 packet (tunnel mode), RFC 4303 §2.6
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ESP = 50
PROTO_AH = 51
PROTO_NONE = 59  # "no next header": ESP dummy packet, RFC 4303 §2.6

DEFAULT_TTL = 64
# Flags/fragment-offset word: DF bit, MF bit and the offset mask (RFC 791 §3.1).
FLAG_DF = 0x4000
FLAG_MF = 0x2000
FRAG_OFFSET_MASK = 0x1FFF

HEADER = struct.Struct("!BBHHHBBH4s4s")
WORD = struct.Struct("!H")
PORTS = struct.Struct("!HH")


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The RFC 1071 checksum, computed on one big integer.

    Because 2**16 == 1 (mod 0xFFFF), the ones'-complement sum of the 16-bit words is congruent to the whole
    buffer read as one number, modulo 0xFFFF; CPython does that in C, far faster than a loop over words.
    """
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    whole = int.from_bytes(data, "big")
    folded = whole % 0xFFFF
    if folded == 0 and whole:
        folded = 0xFFFF  # a non-zero ones'-complement sum is never 0, it is 0xFFFF
    return (~folded) & 0xFFFF


def header_length(packet: bytes | bytearray) -> int:
    """IHL in bytes when ``packet`` starts with a plausible IPv4 header, else 0."""
    if len(packet) < 20:
        return 0
    first = packet[0]
    if first >> 4 != 4:
        return 0
    ihl = (first & 0x0F) * 4
    if ihl < 20 or ihl > len(packet):
        return 0
    return ihl


def total_length(packet: bytes | bytearray) -> int:
    return int(WORD.unpack_from(packet, 2)[0])


def is_fragment(packet: bytes | bytearray) -> bool:
    return bool(WORD.unpack_from(packet, 6)[0] & (FLAG_MF | FRAG_OFFSET_MASK))


def build_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    ident: int,
    tos: int = 0,
    flags_frag: int = 0,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """A 20-byte IPv4 header with a correct checksum."""
    hdr = bytearray(HEADER.pack(0x45, tos, 20 + payload_len, ident, flags_frag, ttl, proto, 0, src, dst))
    WORD.pack_into(hdr, 10, internet_checksum(hdr))
    return bytes(hdr)


def rewrite_header(header: bytes | bytearray, proto: int, payload_len: int) -> bytes:
    """Copy of an IPv4 header (options kept) with a new protocol, total length and checksum."""
    hdr = bytearray(header)
    WORD.pack_into(hdr, 2, len(hdr) + payload_len)
    hdr[9] = proto
    hdr[10] = hdr[11] = 0
    WORD.pack_into(hdr, 10, internet_checksum(hdr))
    return bytes(hdr)
