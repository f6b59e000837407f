"""L2TP attribute-value pairs (RFC 2661 §4.1) and the helpers to build and read control messages."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from labctl.gateway.l2tp.constants import AvpType, MessageType
from labctl.gateway.l2tp.errors import MalformedPacket

FLAG_MANDATORY = 0x8000
FLAG_HIDDEN = 0x4000
_RESERVED = 0x3C00
LENGTH_MASK = 0x03FF
AVP_HEADER = 6
MAX_VALUE = LENGTH_MASK - AVP_HEADER


@dataclass(frozen=True, slots=True)
class Avp:
    type: int
    value: bytes
    mandatory: bool = True
    hidden: bool = False
    vendor: int = 0


def push_avps(avps: Iterable[Avp]) -> bytes:
    out = bytearray()
    for avp in avps:
        if len(avp.value) > MAX_VALUE:
            raise ValueError(f"AVP {avp.type} value of {len(avp.value)} octets does not fit 10 length bits")
        flags = (FLAG_MANDATORY if avp.mandatory else 0) | (FLAG_HIDDEN if avp.hidden else 0)
        out += struct.pack("!HHH", flags | (AVP_HEADER + len(avp.value)), avp.vendor, avp.type) + avp.value
    return bytes(out)


def pull_avps(body: bytes) -> list[Avp]:
    avps = []
    offset = 0
    while offset < len(body):
        if offset + AVP_HEADER > len(body):
            raise MalformedPacket("truncated AVP header")
        word, vendor, kind = struct.unpack_from("!HHH", body, offset)
        length = word & LENGTH_MASK
        if word & _RESERVED:
            # RFC 2661 §4.1: reserved bits MUST be 0; treat otherwise as a malformed AVP.
            raise MalformedPacket(f"AVP {kind} has reserved bits set")
        if length < AVP_HEADER or offset + length > len(body):
            raise MalformedPacket(f"AVP {kind} has bad length {length}")
        value = bytes(body[offset + AVP_HEADER : offset + length])
        avps.append(Avp(kind, value, bool(word & FLAG_MANDATORY), bool(word & FLAG_HIDDEN), vendor))
        offset += length
    return avps


def u16(kind: AvpType, value: int, mandatory: bool = True) -> Avp:
    return Avp(kind, struct.pack("!H", value), mandatory)


def u32(kind: AvpType, value: int, mandatory: bool = True) -> Avp:
    return Avp(kind, struct.pack("!I", value), mandatory)


def octets(kind: AvpType, value: bytes, mandatory: bool = True) -> Avp:
    return Avp(kind, value, mandatory)


def message_type(kind: MessageType) -> Avp:
    return u16(AvpType.MESSAGE_TYPE, kind)


def result_code(result: int, error: int | None = None, message: str = "") -> Avp:
    """RFC 2661 §4.4.2 Result Code: result, then optional error code and error message."""
    value = struct.pack("!H", result)
    if error is not None or message:
        value += struct.pack("!H", error or 0) + message.encode()[: MAX_VALUE - 4]
    return Avp(AvpType.RESULT_CODE, value)


@dataclass(frozen=True, slots=True)
class ResultCode:
    result: int
    error: int | None
    message: str


def parse_result_code(value: bytes) -> ResultCode:
    if len(value) < 2 or len(value) == 3:
        raise MalformedPacket("Result Code AVP has a bad length")
    result = struct.unpack_from("!H", value)[0]
    error = struct.unpack_from("!H", value, 2)[0] if len(value) >= 4 else None
    return ResultCode(result, error, value[4:].decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A decoded control message: its type and AVPs in wire order."""

    type: int
    avps: tuple[Avp, ...]

    def get(self, kind: AvpType) -> bytes | None:
        for avp in self.avps:
            if avp.vendor == 0 and avp.type == kind and not avp.hidden:
                return avp.value
        return None

    def u16(self, kind: AvpType) -> int | None:
        value = self.get(kind)
        if value is None:
            return None
        if len(value) != 2:
            raise MalformedPacket(f"AVP {kind.name} is not 2 octets")
        return int(struct.unpack("!H", value)[0])


def build_message(kind: MessageType, avps: Iterable[Avp]) -> bytes:
    # RFC 2661 §4.4.1: Message Type is always the first AVP.
    return push_avps([message_type(kind), *avps])


def parse_message(body: bytes) -> ControlMessage:
    avps = pull_avps(body)
    if not avps or avps[0].type != AvpType.MESSAGE_TYPE or avps[0].vendor != 0 or len(avps[0].value) != 2:
        raise MalformedPacket("control message does not start with a Message Type AVP")
    return ControlMessage(struct.unpack("!H", avps[0].value)[0], tuple(avps[1:]))
