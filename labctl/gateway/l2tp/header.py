"""L2TPv2 header codec (RFC 2661 §3.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from labctl.gateway.l2tp.errors import MalformedPacket

# RFC 2661 §3.1 flag bits of the first 16-bit word.
FLAG_TYPE = 0x8000  # T: control message
FLAG_LENGTH = 0x4000  # L: Length field present
FLAG_SEQUENCE = 0x0800  # S: Ns/Nr present
FLAG_OFFSET = 0x0200  # O: Offset Size present
FLAG_PRIORITY = 0x0100  # P: data message to be treated preferentially
VERSION_MASK = 0x000F
VERSION = 2


@dataclass(frozen=True, slots=True)
class L2tpHeader:
    control: bool
    tunnel_id: int
    session_id: int
    ns: int | None = None
    nr: int | None = None
    priority: bool = False


def push_control(tunnel_id: int, session_id: int, ns: int, nr: int, body: bytes) -> bytes:
    """A control message: T, L and S set, O and P clear (RFC 2661 §3.1)."""
    length = 12 + len(body)
    flags = FLAG_TYPE | FLAG_LENGTH | FLAG_SEQUENCE | VERSION
    return struct.pack("!HHHHHH", flags, length, tunnel_id, session_id, ns & 0xFFFF, nr & 0xFFFF) + body


def push_data(tunnel_id: int, session_id: int, payload: bytes, *, with_length: bool = False) -> bytes:
    """A data message; the optional fields are left out (RFC 2661 §3.1: L, S, O are optional on data)."""
    if with_length:
        flags = FLAG_LENGTH | VERSION
        return struct.pack("!HHHH", flags, 8 + len(payload), tunnel_id, session_id) + payload
    return struct.pack("!HHH", VERSION, tunnel_id, session_id) + payload


def pull_header(data: bytes) -> tuple[L2tpHeader, bytes]:
    """Parse a header; return it and the message body (AVPs or the PPP frame)."""
    if len(data) < 6:
        raise MalformedPacket("shorter than the smallest L2TP header")
    flags = struct.unpack_from("!H", data)[0]
    if flags & VERSION_MASK != VERSION:
        # RFC 2661 §3.1: version 1 is L2F and 3 is L2TPv3; neither is ours to parse.
        raise MalformedPacket(f"L2TP version {flags & VERSION_MASK}, expected 2")
    control = bool(flags & FLAG_TYPE)
    if control and (flags & (FLAG_LENGTH | FLAG_SEQUENCE)) != (FLAG_LENGTH | FLAG_SEQUENCE):
        raise MalformedPacket("control message without Length and Sequence fields")
    if control and flags & (FLAG_OFFSET | FLAG_PRIORITY):
        raise MalformedPacket("control message with Offset or Priority set")
    offset = 2
    end = len(data)
    if flags & FLAG_LENGTH:
        length = struct.unpack_from("!H", data, offset)[0]
        offset += 2
        if length > len(data) or length < offset + 4:
            raise MalformedPacket(f"Length field {length} does not fit {len(data)} octets")
        end = length
    if end < offset + 4:
        raise MalformedPacket("truncated tunnel/session ids")
    tunnel_id, session_id = struct.unpack_from("!HH", data, offset)
    offset += 4
    ns = nr = None
    if flags & FLAG_SEQUENCE:
        if end < offset + 4:
            raise MalformedPacket("truncated Ns/Nr")
        ns, nr = struct.unpack_from("!HH", data, offset)
        offset += 4
    if flags & FLAG_OFFSET:
        if end < offset + 2:
            raise MalformedPacket("truncated Offset Size")
        pad = struct.unpack_from("!H", data, offset)[0]
        offset += 2 + pad
        if offset > end:
            raise MalformedPacket("Offset Size runs past the message")
    header = L2tpHeader(control, tunnel_id, session_id, ns, nr, bool(flags & FLAG_PRIORITY))
    return header, bytes(data[offset:end])
