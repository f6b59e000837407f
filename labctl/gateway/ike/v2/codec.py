"""IKEv2 message and payload codec (RFC 7296 §3): bytes <-> small dataclasses, no crypto.

``parse_payloads`` keeps the raw body bytes of every payload (``Payload.raw``) because AUTH is computed
over the octets as received, never over a re-serialised payload (RFC 7296 §2.15).  Parsing raises
``ParseError`` on anything malformed; the engine counts and drops those.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from labctl.gateway.ike.v2.constants import (
    ATTR_KEY_LENGTH,
    HEADER_LENGTH,
    IKE_VERSION,
    HeaderFlag,
    PayloadType,
    ProtocolId,
)


class ParseError(ValueError):
    """Malformed IKEv2 data from the network."""


# --- payload bodies ------------------------------------------------------------------------------------


@dataclass
class Transform:
    type: int
    id: int
    key_length: int | None = None  # bits, from the Key Length attribute (RFC 7296 §3.3.5)


@dataclass
class Proposal:
    num: int
    protocol: int
    spi: bytes
    transforms: list[Transform]


@dataclass
class SaPayload:
    proposals: list[Proposal]


@dataclass
class KePayload:
    group: int
    data: bytes


@dataclass
class IdPayload:
    id_type: int
    data: bytes


@dataclass
class CertPayload:
    encoding: int
    data: bytes


@dataclass
class CertReqPayload:
    encoding: int
    data: bytes


@dataclass
class AuthPayload:
    method: int
    data: bytes


@dataclass
class NoncePayload:
    nonce: bytes


@dataclass
class NotifyPayload:
    notify_type: int
    protocol: int = 0
    spi: bytes = b""
    data: bytes = b""


@dataclass
class DeletePayload:
    protocol: int
    spis: list[bytes] = field(default_factory=list)


@dataclass
class VendorPayload:
    data: bytes


@dataclass(frozen=True)
class TrafficSelector:
    ts_type: int
    ip_proto: int
    start_port: int
    end_port: int
    start_addr: bytes
    end_addr: bytes


@dataclass
class TsPayload:
    selectors: list[TrafficSelector]


@dataclass
class CpPayload:
    cfg_type: int
    attributes: list[tuple[int, bytes]]


@dataclass
class SkPayload:
    """Encrypted payload as received: IV || ciphertext || ICV, opaque until decrypted."""

    data: bytes
    inner_first: int = 0  # the SK generic header's next-payload: the first payload inside


@dataclass
class UnknownPayload:
    data: bytes


Body = (
    SaPayload | KePayload | IdPayload | CertPayload | CertReqPayload | AuthPayload | NoncePayload
    | NotifyPayload | DeletePayload | VendorPayload | TsPayload | CpPayload | SkPayload | UnknownPayload
)


@dataclass
class Payload:
    type: int
    body: Body
    critical: bool = False
    raw: bytes = b""  # body octets as received (after the 4-byte generic header)


# --- header --------------------------------------------------------------------------------------------

_HEADER = struct.Struct("!8s8sBBBBII")


@dataclass
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    version: int = IKE_VERSION

    @property
    def is_response(self) -> bool:
        return bool(self.flags & HeaderFlag.RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & HeaderFlag.INITIATOR)

    def pack(self) -> bytes:
        return _HEADER.pack(self.spi_i, self.spi_r, self.next_payload, self.version, self.exchange,
                            self.flags, self.message_id, self.length)


def parse_header(data: bytes) -> Header:
    if len(data) < HEADER_LENGTH:
        raise ParseError("shorter than an IKE header")
    spi_i, spi_r, np, version, exchange, flags, mid, length = _HEADER.unpack_from(data)
    if length != len(data):
        raise ParseError(f"header length {length} but datagram has {len(data)} bytes")
    return Header(spi_i, spi_r, np, exchange, flags, mid, length, version)


# --- body encoders/decoders ----------------------------------------------------------------------------


def _encode_transform(t: Transform, last: bool) -> bytes:
    attrs = b""
    if t.key_length is not None:
        attrs = struct.pack("!HH", 0x8000 | ATTR_KEY_LENGTH, t.key_length)  # TV format
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), t.type, 0, t.id) + attrs


def _encode_proposal(p: Proposal, last: bool) -> bytes:
    body = b"".join(_encode_transform(t, i == len(p.transforms) - 1) for i, t in enumerate(p.transforms))
    head = struct.pack("!BBHBBBB", 0 if last else 2, 0, 8 + len(p.spi) + len(body), p.num, p.protocol,
                       len(p.spi), len(p.transforms))
    return head + p.spi + body


def _decode_sa(data: bytes) -> SaPayload:
    proposals: list[Proposal] = []
    off = 0
    while off < len(data):
        if off + 8 > len(data):
            raise ParseError("truncated proposal")
        more, _r, plen, num, proto, spi_size, ntrans = struct.unpack_from("!BBHBBBB", data, off)
        if plen < 8 + spi_size or off + plen > len(data):
            raise ParseError("bad proposal length")
        spi = data[off + 8 : off + 8 + spi_size]
        toff = off + 8 + spi_size
        end = off + plen
        transforms: list[Transform] = []
        for _ in range(ntrans):
            if toff + 8 > end:
                raise ParseError("truncated transform")
            _tmore, _r2, tlen, ttype, _r3, tid = struct.unpack_from("!BBHBBH", data, toff)
            if tlen < 8 or toff + tlen > end:
                raise ParseError("bad transform length")
            key_length = None
            aoff = toff + 8
            while aoff < toff + tlen:
                if aoff + 4 > toff + tlen:
                    raise ParseError("truncated transform attribute")
                atype, aval = struct.unpack_from("!HH", data, aoff)
                if atype & 0x8000:
                    if atype & 0x7FFF == ATTR_KEY_LENGTH:
                        key_length = aval
                    aoff += 4
                else:
                    aoff += 4 + aval  # TLV attribute: none defined for IKEv2, skip it
            transforms.append(Transform(ttype, tid, key_length))
            toff += tlen
        if toff != end:
            raise ParseError("proposal length does not match its transforms")
        proposals.append(Proposal(num, proto, spi, transforms))
        off += plen
        if more == 0:
            break
    if off != len(data):
        raise ParseError("trailing bytes after the last proposal")
    return SaPayload(proposals)


def _decode_ts(data: bytes) -> TsPayload:
    if len(data) < 4:
        raise ParseError("truncated TS payload")
    count = data[0]
    off = 4
    selectors: list[TrafficSelector] = []
    for _ in range(count):
        if off + 8 > len(data):
            raise ParseError("truncated traffic selector")
        ts_type, proto, slen, sport, eport = struct.unpack_from("!BBHHH", data, off)
        alen = (slen - 8) // 2
        if slen not in (16, 40) or off + slen > len(data):
            raise ParseError("bad traffic selector length")
        start = data[off + 8 : off + 8 + alen]
        end = data[off + 8 + alen : off + slen]
        selectors.append(TrafficSelector(ts_type, proto, sport, eport, start, end))
        off += slen
    if off != len(data):
        raise ParseError("trailing bytes in TS payload")
    return TsPayload(selectors)


def encode_body(body: Body) -> bytes:
    if isinstance(body, SaPayload):
        n = len(body.proposals)
        return b"".join(_encode_proposal(p, i == n - 1) for i, p in enumerate(body.proposals))
    if isinstance(body, KePayload):
        return struct.pack("!HH", body.group, 0) + body.data
    if isinstance(body, IdPayload):
        return struct.pack("!B3x", body.id_type) + body.data
    if isinstance(body, CertPayload | CertReqPayload):
        return bytes([body.encoding]) + body.data
    if isinstance(body, AuthPayload):
        return struct.pack("!B3x", body.method) + body.data
    if isinstance(body, NoncePayload):
        return body.nonce
    if isinstance(body, NotifyPayload):
        return struct.pack("!BBH", body.protocol, len(body.spi), body.notify_type) + body.spi + body.data
    if isinstance(body, DeletePayload):
        spi_size = 0 if body.protocol == ProtocolId.IKE else 4
        return struct.pack("!BBH", body.protocol, spi_size, len(body.spis)) + b"".join(body.spis)
    if isinstance(body, TsPayload):
        out = [struct.pack("!B3x", len(body.selectors))]
        for s in body.selectors:
            out.append(struct.pack("!BBHHH", s.ts_type, s.ip_proto, 8 + 2 * len(s.start_addr), s.start_port,
                                   s.end_port) + s.start_addr + s.end_addr)
        return b"".join(out)
    if isinstance(body, CpPayload):
        attrs = b"".join(struct.pack("!HH", t & 0x7FFF, len(v)) + v for t, v in body.attributes)
        return struct.pack("!B3x", body.cfg_type) + attrs
    return body.data  # VendorPayload, SkPayload, UnknownPayload


def decode_body(ptype: int, data: bytes) -> Body:
    if ptype == PayloadType.SA:
        return _decode_sa(data)
    if ptype == PayloadType.KE:
        if len(data) < 4:
            raise ParseError("truncated KE payload")
        return KePayload(struct.unpack_from("!H", data)[0], data[4:])
    if ptype in (PayloadType.IDi, PayloadType.IDr):
        if len(data) < 4:
            raise ParseError("truncated ID payload")
        return IdPayload(data[0], data[4:])
    if ptype in (PayloadType.CERT, PayloadType.CERTREQ):
        if len(data) < 1:
            raise ParseError("empty CERT payload")
        cls = CertPayload if ptype == PayloadType.CERT else CertReqPayload
        return cls(data[0], data[1:])
    if ptype == PayloadType.AUTH:
        if len(data) < 4:
            raise ParseError("truncated AUTH payload")
        return AuthPayload(data[0], data[4:])
    if ptype == PayloadType.NONCE:
        # RFC 7296 §3.9: between 16 and 256 octets.
        if not 16 <= len(data) <= 256:
            raise ParseError("nonce length outside 16..256")
        return NoncePayload(data)
    if ptype == PayloadType.NOTIFY:
        if len(data) < 4 or len(data) < 4 + data[1]:
            raise ParseError("truncated Notify payload")
        proto, spi_size, ntype = struct.unpack_from("!BBH", data)
        return NotifyPayload(ntype, proto, data[4 : 4 + spi_size], data[4 + spi_size :])
    if ptype == PayloadType.DELETE:
        if len(data) < 4:
            raise ParseError("truncated Delete payload")
        proto, spi_size, count = struct.unpack_from("!BBH", data)
        if len(data) != 4 + spi_size * count:
            raise ParseError("Delete payload length does not match its SPIs")
        return DeletePayload(proto, [data[4 + i * spi_size : 4 + (i + 1) * spi_size] for i in range(count)])
    if ptype == PayloadType.VENDOR:
        return VendorPayload(data)
    if ptype in (PayloadType.TSi, PayloadType.TSr):
        return _decode_ts(data)
    if ptype == PayloadType.CP:
        if len(data) < 4:
            raise ParseError("truncated CP payload")
        attrs: list[tuple[int, bytes]] = []
        off = 4
        while off < len(data):
            if off + 4 > len(data):
                raise ParseError("truncated CP attribute")
            atype, alen = struct.unpack_from("!HH", data, off)
            if off + 4 + alen > len(data):
                raise ParseError("truncated CP attribute value")
            attrs.append((atype & 0x7FFF, data[off + 4 : off + 4 + alen]))
            off += 4 + alen
        return CpPayload(data[0], attrs)
    if ptype == PayloadType.SK:
        return SkPayload(data)
    return UnknownPayload(data)


# --- payload chains ------------------------------------------------------------------------------------

_KNOWN = {int(t) for t in PayloadType} - {PayloadType.NONE, PayloadType.SKF, PayloadType.EAP}


def parse_payloads(first: int, data: bytes) -> list[Payload]:
    """Walk a payload chain.  The SK payload, if present, is the last one (RFC 7296 §3.14)."""
    out: list[Payload] = []
    ptype = first
    off = 0
    while ptype != PayloadType.NONE:
        if off + 4 > len(data):
            raise ParseError("truncated generic payload header")
        nxt, flags, plen = struct.unpack_from("!BBH", data, off)
        if plen < 4 or off + plen > len(data):
            raise ParseError(f"payload {ptype} has bad length {plen}")
        body = data[off + 4 : off + plen]
        critical = bool(flags & 0x80)
        if ptype not in _KNOWN and critical:
            # RFC 7296 §2.5: an unknown critical payload makes the whole message unacceptable.
            raise ParseError(f"unsupported critical payload {ptype}")
        off += plen
        if ptype == PayloadType.SK:
            # RFC 7296 §3.14: SK is the last payload; its next-payload field names the first inner one.
            out.append(Payload(ptype, SkPayload(body, nxt), critical, body))
            break
        out.append(Payload(ptype, decode_body(ptype, body), critical, body))
        ptype = nxt
    if off != len(data):
        raise ParseError("trailing bytes after the last payload")
    return out


def encode_payloads(payloads: list[Payload], last_next: int = PayloadType.NONE) -> bytes:
    """Serialise a chain; ``last_next`` is the next-payload value of the final one (used for SK)."""
    parts: list[bytes] = []
    for i, p in enumerate(payloads):
        body = encode_body(p.body)
        nxt = payloads[i + 1].type if i + 1 < len(payloads) else last_next
        parts.append(struct.pack("!BBH", nxt, 0x80 if p.critical else 0, 4 + len(body)) + body)
    return b"".join(parts)


@dataclass
class Message:
    header: Header
    payloads: list[Payload]
    raw: bytes = b""

    def find(self, ptype: int) -> Payload | None:
        for p in self.payloads:
            if p.type == ptype:
                return p
        return None

    def find_all(self, ptype: int) -> list[Payload]:
        return [p for p in self.payloads if p.type == ptype]

    def notifies(self) -> list[NotifyPayload]:
        return [p.body for p in self.payloads if isinstance(p.body, NotifyPayload)]

    def notify(self, ntype: int) -> NotifyPayload | None:
        for n in self.notifies():
            if n.notify_type == ntype:
                return n
        return None


def parse_message(data: bytes) -> Message:
    """Header and outer payloads; an SK payload stays opaque (``SkPayload``) until decrypted."""
    header = parse_header(data)
    if header.version >> 4 != IKE_VERSION >> 4:
        raise ParseError(f"IKE major version {header.version >> 4}")
    return Message(header, parse_payloads(header.next_payload, data[HEADER_LENGTH:]), data)


def encode_message(header: Header, payloads: list[Payload]) -> bytes:
    """Unencrypted message (IKE_SA_INIT, or error replies that are sent in clear)."""
    body = encode_payloads(payloads)
    header.next_payload = payloads[0].type if payloads else PayloadType.NONE
    header.length = HEADER_LENGTH + len(body)
    return header.pack() + body
