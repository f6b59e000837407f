"""Split UDP GSO super-packets in a capture back into the datagrams a wire would carry.

The gateway sends runs of equal-size ESP-in-UDP datagrams with one `sendmsg` (UDP_SEGMENT). Between two
network namespaces (veth + bridge) nothing segments them, so a capture on the bridge holds one oversized
UDP datagram per run — which no dissector can decrypt, because ESP has no length field (RFC 4303 §2) and
the receiver's kernel splits the run at the sender's segment size. This finds that size from the data
itself: the next segment starts where the same SPI appears with the next sequence number (RFC 4303 §2.2).
Only classic pcap files with Ethernet frames (what tcpdump -w writes) are rewritten; others are left alone.
"""

from __future__ import annotations

import struct
from pathlib import Path

from labctl.gateway.ipsec.ipv4 import internet_checksum

NATT_PORT = 4500
_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
LINKTYPE_ETHERNET = 1
ETH_HEADER = 14
ETHERTYPE_IPV4 = b"\x08\x00"
UDP_HEADER = 8
ESP_HEADER = 8  # SPI + sequence number


def segment_size(payload: bytes) -> int | None:
    """The GSO segment size of a run of ESP packets in one UDP payload, or None when it is a single packet."""
    if len(payload) < 2 * ESP_HEADER or payload[:4] == b"\0\0\0\0":  # RFC 3948 §2.2: non-ESP marker = IKE
        return None
    spi = payload[:4]
    seq = int.from_bytes(payload[4:8], "big")
    start = payload.find(spi, ESP_HEADER)
    while start != -1:
        # Every segment boundary must hold the same SPI and the next sequence number.
        if all(payload[o:o + 4] == spi and int.from_bytes(payload[o + 4:o + 8], "big") == (seq + k) & 0xFFFFFFFF
               for k, o in enumerate(range(0, len(payload), start))):
            return start
        start = payload.find(spi, start + 1)
    return None


def split_frame(frame: bytes) -> list[bytes]:
    """One Ethernet frame, or the frames a UDP GSO super-packet of ESP-in-UDP stands for."""
    if len(frame) < ETH_HEADER + 20 + UDP_HEADER or frame[12:14] != ETHERTYPE_IPV4:
        return [frame]
    ip = frame[ETH_HEADER:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17 or len(ip) < ihl + UDP_HEADER:
        return [frame]
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    if NATT_PORT not in (sport, dport):
        return [frame]
    payload = ip[ihl + UDP_HEADER:struct.unpack("!H", ip[2:4])[0]]
    size = segment_size(payload)
    if size is None:
        return [frame]
    frames = []
    for offset in range(0, len(payload), size):
        chunk = payload[offset:offset + size]
        header = bytearray(ip[:ihl])
        struct.pack_into("!H", header, 2, ihl + UDP_HEADER + len(chunk))
        struct.pack_into("!H", header, 10, 0)
        struct.pack_into("!H", header, 10, internet_checksum(header))
        # RFC 3948 §2.1: the UDP checksum of ESP-in-UDP SHOULD be sent as zero.
        udp = struct.pack("!HHHH", sport, dport, UDP_HEADER + len(chunk), 0)
        frames.append(frame[:ETH_HEADER] + bytes(header) + udp + chunk)
    return frames


def split_gso(pcap: Path) -> int:
    """Rewrite `pcap` in place with every GSO super-packet split; returns how many were split."""
    data = pcap.read_bytes()
    endian = _PCAP_MAGIC.get(data[:4])
    if endian is None or len(data) < 24 or struct.unpack(f"{endian}I", data[20:24])[0] != LINKTYPE_ETHERNET:
        return 0
    out = [data[:24]]
    split = 0
    pos = 24
    while pos + 16 <= len(data):
        ts_sec, ts_frac, caplen, origlen = struct.unpack(f"{endian}IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + caplen]
        pos += 16 + caplen
        pieces = split_frame(frame) if caplen == origlen else [frame]
        split += len(pieces) > 1
        for piece in pieces:
            length = len(piece) if len(pieces) > 1 else origlen
            out.append(struct.pack(f"{endian}IIII", ts_sec, ts_frac, len(piece), length) + piece)
    if split:
        pcap.write_bytes(b"".join(out))
    return split
