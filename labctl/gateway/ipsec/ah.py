"""AH packet protection (RFC 4302) for IPv4, per SA.

AH authenticates the IP header too, so unlike ESP it works on whole IPv4 packets: ``seal_ah`` takes the packet
to protect (tunnel: the inner packet; transport: the packet itself) and returns the packet to send;
``open_ah`` takes a received packet whose protocol is 51 and returns the packet AH protected.

The ICV covers the IP header with its mutable fields zeroed (RFC 4302 §3.3.3.1.1.1: TOS, flags and fragment
offset, TTL, header checksum, and mutable options), the AH header with a zero ICV, and the payload; with ESN
the high 32 bits of the sequence number are appended for the computation only (§3.3.3.2.1).
"""

from __future__ import annotations

import struct

from . import ipv4
from .errors import PacketDropped
from .sad import SecurityAssociation
from .transforms import Integrity

_AH = struct.Struct("!BBHII")  # next header, payload length (32-bit words - 2), reserved, SPI, sequence
_U32 = struct.Struct("!I")
AH_FIXED_LEN = 12
_ZEROS = bytes(64)
# Options that keep their value in transit (RFC 4302 Appendix A.1); every other option is zeroed whole.
# Type octets: EOL, NOP, Security, Extended Security, Commercial Security, Router Alert, SDMDD.
IMMUTABLE_OPTIONS = frozenset({0, 1, 130, 133, 134, 148, 149})


def zeroed_header(header: bytes) -> bytearray:
    """Copy of an IPv4 header as AH authenticates it; PacketDropped on malformed options."""
    h = bytearray(header)
    h[1] = 0  # TOS (DSCP/ECN)
    h[6] = h[7] = 0  # flags + fragment offset
    h[8] = 0  # TTL
    h[10] = h[11] = 0  # header checksum
    i, end = 20, len(h)
    while i < end:
        kind = h[i]
        if kind == 0:  # End of Option List: the rest is padding
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end or h[i + 1] < 2 or i + h[i + 1] > end:
            raise PacketDropped("bad_ip_options")
        length = h[i + 1]
        if kind not in IMMUTABLE_OPTIONS:
            h[i : i + length] = bytes(length)
        i += length
    return h


def seal_ah(
    sa: SecurityAssociation, packet: bytes, ihl: int, seq: int, ident: int, tunnel: bool | None = None
) -> bytes:
    """Protect ``packet`` (a whole IPv4 packet with header length ``ihl``). ``tunnel=False`` applies a tunnel-mode
    SA in transport form, over an outer header another SA of the bundle already built (RFC 4301 §4.5)."""
    integ: Integrity = sa.integ  # type: ignore[assignment]  # every AH SA has one (checked when built)
    icv_len = integ.icv_len
    ah_len = AH_FIXED_LEN + icv_len  # all our ICVs are multiples of 4 bytes, as IPv4 needs (§2.6)
    if sa.tunnel if tunnel is None else tunnel:
        payload = packet
        next_header = ipv4.PROTO_IPIP
        # RFC 4301 §5.1.2.1: outer TOS copied from the inner header; DF copied too (the default of §8.1).
        df = ipv4.WORD.unpack_from(packet, 6)[0] & ipv4.FLAG_DF
        outer = ipv4.build_header(sa.src_b, sa.dst_b, ipv4.PROTO_AH, ah_len + len(payload), ident, packet[1], df)
    else:
        payload = packet[ihl:]
        next_header = packet[9]
        outer = ipv4.rewrite_header(packet[:ihl], ipv4.PROTO_AH, ah_len + len(payload))
    ah = _AH.pack(next_header, ah_len // 4 - 2, 0, sa.spi, seq & 0xFFFFFFFF)
    signed = zeroed_header(outer) + ah + _ZEROS[:icv_len] + payload
    if sa.esn:
        signed += _U32.pack(seq >> 32)
    return outer + ah + integ.compute(bytes(signed)) + payload


def open_ah(sa: SecurityAssociation, packet: bytes, ihl: int, tunnel: bool | None = None) -> tuple[bytes, int, int]:
    """Verify; returns (resulting IPv4 packet, its protocol, full sequence number) or raises PacketDropped.
    ``tunnel=False``: a tunnel-mode SA applied in transport form over a bundle's outer header (see seal_ah)."""
    integ: Integrity = sa.integ  # type: ignore[assignment]
    icv_len = integ.icv_len
    if len(packet) < ihl + AH_FIXED_LEN:
        raise PacketDropped("truncated")
    next_header, plen, _reserved, _spi, seq_low = _AH.unpack_from(packet, ihl)
    ah_len = (plen + 2) * 4
    if ah_len != AH_FIXED_LEN + icv_len or ihl + ah_len > len(packet):
        raise PacketDropped("malformed")
    replay = sa.replay
    seq = replay.infer(seq_low)
    if seq is None or not replay.check(seq):
        sa.replay_drops += 1
        raise PacketDropped("replay")
    body = ihl + ah_len
    signed = zeroed_header(packet[:ihl]) + packet[ihl : ihl + AH_FIXED_LEN] + _ZEROS[:icv_len] + packet[body:]
    if sa.esn:
        signed += _U32.pack(seq >> 32)
    if not integ.verify(bytes(signed), packet[ihl + AH_FIXED_LEN : body]):
        sa.integrity_failures += 1
        raise PacketDropped("integrity")
    replay.update(seq)
    payload = packet[body:]
    if sa.tunnel if tunnel is None else tunnel:
        if next_header != ipv4.PROTO_IPIP:
            raise PacketDropped("not_tunnel")
        return payload, next_header, seq
    return ipv4.rewrite_header(packet[:ihl], next_header, len(payload)) + payload, next_header, seq
