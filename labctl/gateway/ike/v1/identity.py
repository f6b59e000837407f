"""Identities (phase-1 ID payloads) and traffic selectors (phase-2 IDci/IDcr), RFC 2407 §4.6.2."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from cryptography import x509

from labctl.gateway.ike.v1.codec import IdPayload
from labctl.gateway.ike.v1.constants import IdType


def identity_payload(text: str, default_addr: str, cert_der_subject: bytes | None = None) -> IdPayload:
    """strongSwan-like spelling: an IPv4 address, "@fqdn", "user@fqdn", a DN ("CN=..."), or a name."""
    if not text:
        if cert_der_subject is not None:
            return IdPayload(id_type=IdType.DER_ASN1_DN, data=cert_der_subject)
        text = default_addr
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        pass
    else:
        return IdPayload(id_type=IdType.IPV4_ADDR, data=addr.packed)
    if text.startswith("@"):
        return IdPayload(id_type=IdType.FQDN, data=text[1:].encode())
    if "@" in text:
        return IdPayload(id_type=IdType.USER_FQDN, data=text.encode())
    if "=" in text:
        return IdPayload(id_type=IdType.DER_ASN1_DN, data=dn_der(text))
    return IdPayload(id_type=IdType.FQDN, data=text.encode())


def dn_der(text: str) -> bytes:
    """A DN written like strongSwan ("C=CH, O=Lab, CN=moon", most significant first) as DER."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    # RFC 4514 strings list the most specific RDN first; strongSwan's spelling is the reverse.
    name = x509.Name.from_rfc4514_string(",".join(reversed(parts)))
    return name.public_bytes()


def identity_text(p: IdPayload, cert: x509.Certificate | None = None) -> str:
    """Human-readable identity, for status and events (a DN is shown from the peer's certificate)."""
    if p.id_type == IdType.IPV4_ADDR and len(p.data) == 4:
        return str(ipaddress.IPv4Address(p.data))
    if p.id_type in (IdType.FQDN, IdType.USER_FQDN, IdType.KEY_ID):
        return p.data.decode("utf-8", "replace")
    if p.id_type == IdType.DER_ASN1_DN and (rdns := dn_attributes(p.data)) is not None:
        return ", ".join("+".join(f"{_DN_NAMES.get(oid, oid.hex())}={value}" for oid, value in rdn) for rdn in rdns)
    return f"type{p.id_type}:{p.data.hex()}"


# The attribute types people write in a DN (RFC 4519), by their DER-encoded OID.
_DN_NAMES = {bytes.fromhex("550403"): "CN", bytes.fromhex("55040a"): "O", bytes.fromhex("55040b"): "OU",
             bytes.fromhex("550406"): "C", bytes.fromhex("550407"): "L", bytes.fromhex("550408"): "ST"}


def identity_matches(expected: str, got: IdPayload) -> bool:
    """Does the identity the peer sent match the configured remote id ("" or "%any" matches all)?"""
    if expected in ("", "%any"):
        return True
    want = identity_payload(expected, "")
    if want.id_type != got.id_type:
        return False
    if want.id_type == IdType.DER_ASN1_DN:
        # RFC 5280 §7.1: names are compared attribute by attribute, not byte by byte; strongSwan encodes a
        # configured DN with PrintableString where a certificate (and `dn_der`) may use UTF8String.
        ours, theirs = dn_attributes(want.data), dn_attributes(got.data)
        return ours is not None and ours == theirs
    return want.data == got.data


_DN_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


def _der_items(data: bytes) -> list[tuple[int, bytes]] | None:
    """The (tag, content) pairs of consecutive DER TLVs; None if they do not parse exactly."""
    items, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            return None
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 3 or i + n > len(data):
                return None
            length = int.from_bytes(data[i:i + n], "big")
            i += n
        if i + length > len(data):
            return None
        items.append((tag, data[i:i + length]))
        i += length
    return items


def dn_attributes(der: bytes) -> tuple[tuple[tuple[bytes, str], ...], ...] | None:
    """A DER Name as RDNs of (OID bytes, value text), ignoring the string type; None if malformed."""
    top = _der_items(der)
    if top is None or len(top) != 1 or top[0][0] != 0x30:
        return None
    rdns = _der_items(top[0][1])
    if rdns is None:
        return None
    out = []
    for tag, content in rdns:
        atvs = _der_items(content)
        if tag != 0x31 or not atvs:
            return None
        rdn = []
        for atv_tag, atv in atvs:
            parts = _der_items(atv)
            if atv_tag != 0x30 or parts is None or len(parts) != 2 or parts[0][0] != 0x06:
                return None
            (_, oid), (vtag, value) = parts
            codec = _DN_STRING_CODECS.get(vtag)
            try:
                text = value.decode(codec) if codec else value.hex()
            except UnicodeDecodeError:
                return None
            rdn.append((oid, text))
        out.append(tuple(sorted(rdn)))
    return tuple(out)


# --------------------------------------------------------------------------- traffic selectors


@dataclass(frozen=True)
class Selector:
    """An IPv4 range with an optional IP protocol and port (0 = any)."""

    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address
    protocol: int = 0
    port: int = 0

    @staticmethod
    def from_prefix(text: str, protocol: int = 0, port: int = 0) -> Selector:
        net = ipaddress.IPv4Network(text, strict=False)
        return Selector(net.network_address, net.broadcast_address, protocol, port)

    def contains(self, other: Selector) -> bool:
        return (self.first <= other.first and other.last <= self.last
                and self.protocol in (0, other.protocol) and self.port in (0, other.port))

    def __str__(self) -> str:
        nets = list(ipaddress.summarize_address_range(self.first, self.last))
        text = str(nets[0]) if len(nets) == 1 else f"{self.first}-{self.last}"
        if self.protocol:
            text += f"[{self.protocol}/{self.port or ''}]".replace("/]", "]")
        return text

    def to_id(self) -> IdPayload:
        """RFC 2407 §4.6.2: a single address, a subnet (address + mask) or a range."""
        if self.first == self.last:
            return IdPayload(id_type=IdType.IPV4_ADDR, data=self.first.packed, protocol=self.protocol, port=self.port)
        nets = list(ipaddress.summarize_address_range(self.first, self.last))
        if len(nets) == 1:
            return IdPayload(id_type=IdType.IPV4_ADDR_SUBNET, data=nets[0].network_address.packed
                             + nets[0].netmask.packed, protocol=self.protocol, port=self.port)
        return IdPayload(id_type=IdType.IPV4_ADDR_RANGE, data=self.first.packed + self.last.packed,
                         protocol=self.protocol, port=self.port)

    @staticmethod
    def from_id(p: IdPayload) -> Selector | None:
        """None when the ID is not an IPv4 selector we understand (answer INVALID_ID_INFORMATION)."""
        d = p.data
        if p.id_type == IdType.IPV4_ADDR and len(d) == 4:
            a = ipaddress.IPv4Address(d)
            return Selector(a, a, p.protocol, p.port)
        if p.id_type == IdType.IPV4_ADDR_SUBNET and len(d) == 8:
            try:
                net = ipaddress.IPv4Network(
                    (ipaddress.IPv4Address(d[:4]), str(ipaddress.IPv4Address(d[4:]))), strict=False)
            except ValueError:
                return None
            return Selector(net.network_address, net.broadcast_address, p.protocol, p.port)
        if p.id_type == IdType.IPV4_ADDR_RANGE and len(d) == 8:
            first, last = ipaddress.IPv4Address(d[:4]), ipaddress.IPv4Address(d[4:])
            if first > last:
                return None
            return Selector(first, last, p.protocol, p.port)
        return None


def address_selector(addr: str) -> Selector:
    a = ipaddress.IPv4Address(addr)
    return Selector(a, a)


def nat_oa_address(addr: str) -> bytes:
    return ipaddress.IPv4Address(addr).packed


def addr_bytes(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def port_bytes(port: int) -> bytes:
    return struct.pack("!H", port)
