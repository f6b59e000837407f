"""ISAKMP message codec (RFC 2408 §3), for IKEv1.

Every decoded payload keeps the exact bytes it arrived in (`raw`, generic header included): IKEv1
authenticates the SA payload body and the ID body "as received" (RFC 2409 §5) and Quick Mode hashes
the message bytes that follow HASH (RFC 2409 §5.5), so re-serialising would be wrong whenever the
peer encodes something differently from us (TV vs TLV attributes, padding, order).

Decoding raises `DecodeError` only; callers in the protocol core catch it, count and drop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from labctl.gateway.ike.v1.constants import (
    DOI_IPSEC,
    HEADER_LENGTH,
    ISAKMP_VERSION,
    SIT_IDENTITY_ONLY,
    ExchangeType,
    Flags,
    PayloadType,
)


class DecodeError(ValueError):
    """The bytes are not a well-formed ISAKMP message or payload."""


# --------------------------------------------------------------------------- attributes


@dataclass(frozen=True)
class Attribute:
    """A data attribute (RFC 2408 §3.3). `value` is an int for TV form, bytes for TLV form."""

    type: int
    value: int | bytes

    @staticmethod
    def of(attr_type: int, value: int) -> Attribute:
        """Numeric attribute in the shortest legal form (TV if it fits in 16 bits, RFC 2408 §3.3)."""
        if 0 <= value <= 0xFFFF:
            return Attribute(attr_type, value)
        length = max(1, (value.bit_length() + 7) // 8)
        length = (length + 3) // 4 * 4
        return Attribute(attr_type, value.to_bytes(length, "big"))

    def as_int(self) -> int:
        if isinstance(self.value, int):
            return self.value
        return int.from_bytes(self.value, "big")

    def encode(self) -> bytes:
        if isinstance(self.value, int):
            if not 0 <= self.value <= 0xFFFF:
                raise ValueError("TV attribute value out of range")
            return struct.pack("!HH", 0x8000 | self.type, self.value)
        return struct.pack("!HH", self.type & 0x7FFF, len(self.value)) + self.value


def decode_attributes(data: bytes) -> list[Attribute]:
    attrs: list[Attribute] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise DecodeError("truncated attribute")
        af_type, length_or_value = struct.unpack_from("!HH", data, pos)
        pos += 4
        if af_type & 0x8000:
            attrs.append(Attribute(af_type & 0x7FFF, length_or_value))
        else:
            end = pos + length_or_value
            if end > len(data):
                raise DecodeError("truncated TLV attribute")
            attrs.append(Attribute(af_type, data[pos:end]))
            pos = end
    return attrs


def encode_attributes(attrs: list[Attribute]) -> bytes:
    return b"".join(a.encode() for a in attrs)


# --------------------------------------------------------------------------- payloads


@dataclass
class Payload:
    """Base of every payload. `raw` is the payload as received (generic header included)."""

    TYPE: ClassVar[PayloadType] = PayloadType.NONE
    raw: bytes = field(default=b"", compare=False, repr=False, kw_only=True)

    @property
    def payload_type(self) -> PayloadType:
        return self.TYPE

    def body(self) -> bytes:
        """The payload body (after the 4-byte generic header)."""
        raise NotImplementedError

    def raw_body(self) -> bytes:
        """Body as received when decoded, else as we encode it."""
        return self.raw[4:] if self.raw else self.body()


@dataclass
class Transform:
    """RFC 2408 §3.6."""

    number: int
    transform_id: int
    attributes: list[Attribute] = field(default_factory=list)

    def attr(self, attr_type: int) -> Attribute | None:
        for a in self.attributes:
            if a.type == attr_type:
                return a
        return None

    def encode(self, last: bool) -> bytes:
        body = struct.pack("!BBH", self.number, self.transform_id, 0) + encode_attributes(self.attributes)
        nxt = 0 if last else PayloadType.TRANSFORM
        return struct.pack("!BBH", nxt, 0, 4 + len(body)) + body


@dataclass
class Proposal:
    """RFC 2408 §3.5."""

    number: int
    protocol: int
    spi: bytes
    transforms: list[Transform] = field(default_factory=list)

    def encode(self, last: bool) -> bytes:
        n = len(self.transforms)
        ts = b"".join(t.encode(i == n - 1) for i, t in enumerate(self.transforms))
        body = struct.pack("!BBBB", self.number, self.protocol, len(self.spi), n) + self.spi + ts
        nxt = 0 if last else PayloadType.PROPOSAL
        return struct.pack("!BBH", nxt, 0, 4 + len(body)) + body


@dataclass
class SaPayload(Payload):
    """RFC 2408 §3.4 with the IPsec DOI situation (RFC 2407 §4.2)."""

    TYPE: ClassVar[PayloadType] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)
    doi: int = DOI_IPSEC
    situation: int = SIT_IDENTITY_ONLY

    def body(self) -> bytes:
        n = len(self.proposals)
        props = b"".join(p.encode(i == n - 1) for i, p in enumerate(self.proposals))
        return struct.pack("!II", self.doi, self.situation) + props


@dataclass
class BytesPayload(Payload):
    """A payload whose body is opaque data."""

    data: bytes = b""

    def body(self) -> bytes:
        return self.data


@dataclass
class KePayload(BytesPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.KE


@dataclass
class HashPayload(BytesPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.HASH


@dataclass
class SigPayload(BytesPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.SIG


@dataclass
class NoncePayload(BytesPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.NONCE


@dataclass
class VendorIdPayload(BytesPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.VENDOR


@dataclass
class NatDPayload(BytesPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.NAT_D


@dataclass
class NatDDraftPayload(BytesPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.NAT_D_DRAFT


@dataclass
class IdPayload(Payload):
    """RFC 2408 §3.8 with the IPsec DOI fields (RFC 2407 §4.6.2)."""

    TYPE: ClassVar[PayloadType] = PayloadType.ID
    id_type: int = 0
    data: bytes = b""
    protocol: int = 0
    port: int = 0

    def body(self) -> bytes:
        return struct.pack("!BBH", self.id_type, self.protocol, self.port) + self.data


@dataclass
class NatOaPayload(Payload):
    """RFC 3947 §5.2: ID type, 3 reserved bytes, address."""

    TYPE: ClassVar[PayloadType] = PayloadType.NAT_OA
    id_type: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return struct.pack("!B3x", self.id_type) + self.data


@dataclass
class NatOaDraftPayload(NatOaPayload):
    TYPE: ClassVar[PayloadType] = PayloadType.NAT_OA_DRAFT


@dataclass
class CertPayload(Payload):
    """RFC 2408 §3.9."""

    TYPE: ClassVar[PayloadType] = PayloadType.CERT
    encoding: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass
class CertReqPayload(CertPayload):
    """RFC 2408 §3.10 (same layout as CERT)."""

    TYPE: ClassVar[PayloadType] = PayloadType.CERTREQ


@dataclass
class NotifyPayload(Payload):
    """RFC 2408 §3.14."""

    TYPE: ClassVar[PayloadType] = PayloadType.NOTIFY
    notify_type: int = 0
    protocol: int = 1
    spi: bytes = b""
    data: bytes = b""
    doi: int = DOI_IPSEC

    def body(self) -> bytes:
        return struct.pack("!IBBH", self.doi, self.protocol, len(self.spi), self.notify_type) + self.spi + self.data


@dataclass
class DeletePayload(Payload):
    """RFC 2408 §3.15."""

    TYPE: ClassVar[PayloadType] = PayloadType.DELETE
    protocol: int = 1
    spis: list[bytes] = field(default_factory=list)
    spi_size: int = 16
    doi: int = DOI_IPSEC

    def body(self) -> bytes:
        for s in self.spis:
            if len(s) != self.spi_size:
                raise ValueError("SPI size does not match")
        return struct.pack("!IBBH", self.doi, self.protocol, self.spi_size, len(self.spis)) + b"".join(self.spis)


@dataclass
class UnknownPayload(BytesPayload):
    """A payload type we do not know; kept so its bytes still count in hashes."""

    type_number: int = 0

    @property
    def payload_type(self) -> PayloadType:
        return PayloadType.NONE


# --------------------------------------------------------------------------- payload decoding


def _decode_sa(body: bytes) -> SaPayload:
    if len(body) < 8:
        raise DecodeError("SA payload too short")
    doi, situation = struct.unpack_from("!II", body, 0)
    pos = 8
    proposals: list[Proposal] = []
    nxt = PayloadType.PROPOSAL
    while nxt == PayloadType.PROPOSAL:
        if pos + 8 > len(body):
            raise DecodeError("truncated proposal")
        nxt, _, plen, number, protocol, spi_size, n_transforms = struct.unpack_from("!BBHBBBB", body, pos)
        if plen < 8 or pos + plen > len(body):
            raise DecodeError("bad proposal length")
        pbody = body[pos + 4 : pos + plen]
        spi = pbody[4 : 4 + spi_size]
        if len(spi) != spi_size:
            raise DecodeError("truncated SPI")
        tpos = 4 + spi_size
        transforms: list[Transform] = []
        tnext = PayloadType.TRANSFORM if n_transforms else 0
        while tnext == PayloadType.TRANSFORM:
            if tpos + 8 > len(pbody):
                raise DecodeError("truncated transform")
            tnext, _, tlen, tnum, tid = struct.unpack_from("!BBHBB", pbody, tpos)
            if tlen < 8 or tpos + tlen > len(pbody):
                raise DecodeError("bad transform length")
            transforms.append(Transform(tnum, tid, decode_attributes(pbody[tpos + 8 : tpos + tlen])))
            tpos += tlen
        if tnext != 0:
            raise DecodeError("bad payload type inside proposal")
        if len(transforms) != n_transforms:
            raise DecodeError("transform count mismatch")
        proposals.append(Proposal(number, protocol, spi, transforms))
        pos += plen
    if nxt != 0:
        raise DecodeError("bad payload type inside SA")
    return SaPayload(proposals=proposals, doi=doi, situation=situation)


def _decode_notify(body: bytes) -> NotifyPayload:
    if len(body) < 8:
        raise DecodeError("notify too short")
    doi, protocol, spi_size, ntype = struct.unpack_from("!IBBH", body, 0)
    if 8 + spi_size > len(body):
        raise DecodeError("notify SPI truncated")
    return NotifyPayload(
        notify_type=ntype, protocol=protocol, spi=body[8 : 8 + spi_size], data=body[8 + spi_size :], doi=doi
    )


def _decode_delete(body: bytes) -> DeletePayload:
    if len(body) < 8:
        raise DecodeError("delete too short")
    doi, protocol, spi_size, count = struct.unpack_from("!IBBH", body, 0)
    if len(body) != 8 + spi_size * count:
        raise DecodeError("delete length mismatch")
    spis = [body[8 + i * spi_size : 8 + (i + 1) * spi_size] for i in range(count)]
    return DeletePayload(protocol=protocol, spis=spis, spi_size=spi_size, doi=doi)


def _decode_id(body: bytes) -> IdPayload:
    if len(body) < 4:
        raise DecodeError("ID too short")
    id_type, protocol, port = struct.unpack_from("!BBH", body, 0)
    return IdPayload(id_type=id_type, protocol=protocol, port=port, data=body[4:])


def _decode_cert(cls: type[CertPayload], body: bytes) -> CertPayload:
    if len(body) < 1:
        raise DecodeError("CERT too short")
    return cls(encoding=body[0], data=body[1:])


def _decode_natoa(cls: type[NatOaPayload], body: bytes) -> NatOaPayload:
    if len(body) < 4:
        raise DecodeError("NAT-OA too short")
    return cls(id_type=body[0], data=body[4:])


_BYTES_PAYLOADS: dict[int, type[BytesPayload]] = {
    PayloadType.KE: KePayload,
    PayloadType.HASH: HashPayload,
    PayloadType.SIG: SigPayload,
    PayloadType.NONCE: NoncePayload,
    PayloadType.VENDOR: VendorIdPayload,
    PayloadType.NAT_D: NatDPayload,
    PayloadType.NAT_D_DRAFT: NatDDraftPayload,
}


def decode_payload(ptype: int, body: bytes) -> Payload:
    if ptype == PayloadType.SA:
        return _decode_sa(body)
    if ptype in _BYTES_PAYLOADS:
        return _BYTES_PAYLOADS[ptype](data=body)
    if ptype == PayloadType.ID:
        return _decode_id(body)
    if ptype == PayloadType.CERT:
        return _decode_cert(CertPayload, body)
    if ptype == PayloadType.CERTREQ:
        return _decode_cert(CertReqPayload, body)
    if ptype == PayloadType.NOTIFY:
        return _decode_notify(body)
    if ptype == PayloadType.DELETE:
        return _decode_delete(body)
    if ptype == PayloadType.NAT_OA:
        return _decode_natoa(NatOaPayload, body)
    if ptype == PayloadType.NAT_OA_DRAFT:
        return _decode_natoa(NatOaDraftPayload, body)
    if ptype in (PayloadType.PROPOSAL, PayloadType.TRANSFORM):
        raise DecodeError("proposal/transform outside SA")
    return UnknownPayload(data=body, type_number=ptype)


def decode_payloads(first: int, data: bytes) -> list[Payload]:
    """Walk a payload chain. Bytes after the last payload (CBC padding, RFC 2408 §3.1) are ignored."""
    payloads: list[Payload] = []
    pos = 0
    ptype = first
    while ptype != PayloadType.NONE:
        if pos + 4 > len(data):
            raise DecodeError("truncated generic payload header")
        nxt, _reserved, length = struct.unpack_from("!BBH", data, pos)
        if length < 4 or pos + length > len(data):
            raise DecodeError("bad payload length")
        raw = data[pos : pos + length]
        payload = decode_payload(ptype, raw[4:])
        payload.raw = raw
        payloads.append(payload)
        pos += length
        ptype = nxt
        if len(payloads) > 64:
            raise DecodeError("too many payloads")
    return payloads


def encode_payloads(payloads: list[Payload]) -> bytes:
    """Serialise a chain; each payload's next-payload field names the type that follows it."""
    out = bytearray()
    for i, p in enumerate(payloads):
        nxt = payloads[i + 1].payload_type if i + 1 < len(payloads) else PayloadType.NONE
        body = p.body()
        out += struct.pack("!BBH", nxt, 0, 4 + len(body)) + body
    return bytes(out)


def first_payload_type(payloads: list[Payload]) -> int:
    return payloads[0].payload_type if payloads else PayloadType.NONE


# --------------------------------------------------------------------------- header and message

P = TypeVar("P", bound=Payload)


@dataclass
class Header:
    """RFC 2408 §3.1."""

    icookie: bytes
    rcookie: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    version: int = ISAKMP_VERSION

    def encode(self, length: int) -> bytes:
        return (
            self.icookie
            + self.rcookie
            + struct.pack(
                "!BBBBII", self.next_payload, self.version, self.exchange, self.flags, self.message_id, length
            )
        )

    @staticmethod
    def decode(data: bytes) -> Header:
        if len(data) < HEADER_LENGTH:
            raise DecodeError("shorter than an ISAKMP header")
        nxt, version, exchange, flags, mid, length = struct.unpack_from("!BBBBII", data, 16)
        if version >> 4 != 1:
            raise DecodeError("not ISAKMP major version 1")
        if length != len(data):
            # Some stacks pad the UDP datagram; the header length is authoritative (RFC 2408 §3.1).
            if length < HEADER_LENGTH or length > len(data):
                raise DecodeError("header length does not match datagram")
        return Header(data[0:8], data[8:16], nxt, exchange, flags, mid, length, version)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flags.ENCRYPTION)


@dataclass
class Message:
    """A decoded message whose payloads are in clear (decrypted by the caller if needed)."""

    header: Header
    payloads: list[Payload]

    def get(self, cls: type[P]) -> P | None:
        for p in self.payloads:
            if type(p) is cls:
                return p
        return None

    def all(self, cls: type[P]) -> list[P]:
        return [p for p in self.payloads if type(p) is cls]


def encode_message(
    icookie: bytes,
    rcookie: bytes,
    exchange: ExchangeType,
    flags: int,
    message_id: int,
    payloads: list[Payload],
) -> bytes:
    """An unencrypted message."""
    body = encode_payloads(payloads)
    header = Header(icookie, rcookie, first_payload_type(payloads), exchange, flags, message_id)
    return header.encode(HEADER_LENGTH + len(body)) + body


def decode_message(data: bytes) -> Message:
    """An unencrypted message (the encryption flag must be clear)."""
    header = Header.decode(data)
    if header.encrypted:
        raise DecodeError("message is encrypted")
    return Message(header, decode_payloads(header.next_payload, data[HEADER_LENGTH : header.length]))
