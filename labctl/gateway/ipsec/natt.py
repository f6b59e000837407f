"""UDP encapsulation of ESP (RFC 3948): what arrives on UDP 4500, and the transport-mode checksum fix.

On port 4500 three things share one socket (RFC 3948 §2): ESP packets (first 4 bytes = a non-zero SPI),
IKE messages (prefixed by the 4-byte non-ESP marker of zeros) and NAT keepalives (the single byte 0xFF, §2.3).
The daemon calls :func:`classify_udp4500` and hands ``"ike"`` datagrams, marker stripped, to IKE.
"""

from __future__ import annotations

from typing import Literal

from . import ipv4

NAT_T_PORT = 4500
NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"

Udp4500Kind = Literal["esp", "ike", "keepalive", "invalid"]


def classify_udp4500(payload: bytes) -> Udp4500Kind:
    """Which of the three kinds of datagram this is (RFC 3948 §2.1-2.3)."""
    if payload == KEEPALIVE:
        return "keepalive"
    if len(payload) < 8:
        return "invalid"  # shorter than an ESP header, and IKE needs a 28-byte header after the marker
    if payload[:4] == NON_ESP_MARKER:
        return "ike"
    return "esp"


def strip_non_esp_marker(payload: bytes) -> bytes:
    """The IKE message inside a ``"ike"`` datagram."""
    return payload[4:]


def add_non_esp_marker(ike_message: bytes) -> bytes:
    """What IKE sends on port 4500 (RFC 3948 §2.2)."""
    return NON_ESP_MARKER + ike_message


def fix_transport_checksum(packet: bytes, ihl: int) -> bytes:
    """Make a decapsulated transport-mode TCP/UDP packet acceptable after NAT (RFC 3948 §3.1.2).

    The sender computed the checksum over addresses a NAT has since rewritten. UDP over IPv4 may simply carry
    no checksum (zero); TCP's is recomputed over the addresses in the rebuilt header.
    """
    proto = packet[9]
    if proto == ipv4.PROTO_UDP:
        if len(packet) < ihl + 8:
            return packet
        return packet[: ihl + 6] + b"\x00\x00" + packet[ihl + 8 :]
    if proto == ipv4.PROTO_TCP:
        if len(packet) < ihl + 20:
            return packet
        segment = bytearray(packet[ihl:])
        segment[16] = segment[17] = 0
        pseudo = packet[12:20] + bytes((0, ipv4.PROTO_TCP)) + len(segment).to_bytes(2, "big")
        ipv4.WORD.pack_into(segment, 16, ipv4.internet_checksum(pseudo + segment))
        return packet[:ihl] + bytes(segment)
    return packet
