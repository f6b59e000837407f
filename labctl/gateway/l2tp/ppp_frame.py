"""PPP framing as carried by L2TP, and the packet/option codecs shared by LCP, IPCP, PAP and CHAP."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from labctl.gateway.l2tp.errors import MalformedPacket

# RFC 1661 §2 and the IANA PPP DLL protocol numbers.
PROTO_IPV4 = 0x0021
PROTO_IPV6 = 0x0057
PROTO_IPCP = 0x8021
PROTO_IPV6CP = 0x8057
PROTO_CCP = 0x80FD
PROTO_LCP = 0xC021
PROTO_PAP = 0xC023
PROTO_CHAP = 0xC223

# RFC 1661 §5: LCP codes (1-7 shared by every NCP using the same automaton).
CONFIGURE_REQUEST = 1
CONFIGURE_ACK = 2
CONFIGURE_NAK = 3
CONFIGURE_REJECT = 4
TERMINATE_REQUEST = 5
TERMINATE_ACK = 6
CODE_REJECT = 7
PROTOCOL_REJECT = 8
ECHO_REQUEST = 9
ECHO_REPLY = 10
DISCARD_REQUEST = 11

_ADDRESS_CONTROL = b"\xff\x03"


def push_frame(protocol: int, information: bytes) -> bytes:
    """A PPP frame for the L2TP data channel.

    RFC 2661 §2 carries PPP frames without HDLC flags, FCS or byte stuffing, but with the address and
    control octets (0xFF 0x03) unless Address-and-Control-Field-Compression was negotiated (RFC 1661
    §6.6), which we never request. The protocol field stays two octets: we never request PFC (§6.5).
    """
    return _ADDRESS_CONTROL + struct.pack("!H", protocol) + information


def pull_frame(frame: bytes) -> tuple[int, bytes]:
    """Split a received PPP frame into (protocol, information).

    The address/control octets are optional on receipt (a peer that had ACFC accepted may omit them,
    RFC 1661 §6.6), and a compressed one-octet protocol field is recognised by its odd low bit
    (RFC 1661 §2: protocol values have the least significant bit of the most significant octet 0).
    """
    if frame[:2] == _ADDRESS_CONTROL:
        frame = frame[2:]
    if not frame:
        raise MalformedPacket("empty PPP frame")
    if frame[0] & 1:
        return frame[0], frame[1:]
    if len(frame) < 2:
        raise MalformedPacket("truncated PPP protocol field")
    protocol = (frame[0] << 8) | frame[1]
    if not protocol & 1:
        # RFC 1661 §2: a valid protocol field has its least significant octet odd.
        raise MalformedPacket(f"invalid PPP protocol 0x{protocol:04x}")
    return protocol, frame[2:]


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """RFC 1661 §5 packet format: Code, Identifier, Length, Data (also PAP and CHAP)."""

    code: int
    identifier: int
    data: bytes = b""


def push_packet(packet: ControlPacket) -> bytes:
    return struct.pack("!BBH", packet.code, packet.identifier & 0xFF, 4 + len(packet.data)) + packet.data


def pull_packet(information: bytes) -> ControlPacket:
    if len(information) < 4:
        raise MalformedPacket("control packet shorter than its 4-octet header")
    code, identifier, length = struct.unpack_from("!BBH", information)
    # RFC 1661 §5: octets beyond Length are padding and ignored; a Length past the end is malformed.
    if length < 4 or length > len(information):
        raise MalformedPacket(f"control packet length {length} does not fit {len(information)} octets")
    return ControlPacket(code, identifier, bytes(information[4:length]))


@dataclass(frozen=True, slots=True)
class Option:
    """RFC 1661 §6 configuration option: Type, Length, Data."""

    type: int
    data: bytes = b""


def push_options(options: list[Option]) -> bytes:
    out = bytearray()
    for option in options:
        out += struct.pack("!BB", option.type, 2 + len(option.data)) + option.data
    return bytes(out)


def pull_options(data: bytes) -> list[Option]:
    options = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise MalformedPacket("truncated option header")
        kind, length = data[offset], data[offset + 1]
        if length < 2 or offset + length > len(data):
            raise MalformedPacket(f"option {kind} has bad length {length}")
        options.append(Option(kind, bytes(data[offset + 2 : offset + length])))
        offset += length
    return options
