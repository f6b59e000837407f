"""Write UDP datagrams into a libpcap file (LINKTYPE_RAW: IPv4 packets) for tshark to dissect."""

from __future__ import annotations

import struct
from pathlib import Path

LINKTYPE_RAW = 101


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    src_b = bytes(int(x) for x in src.split("."))
    dst_b = bytes(int(x) for x in dst.split("."))
    udp_len = 8 + len(payload)
    pseudo = src_b + dst_b + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0, 64, 17, 0, src_b, dst_b)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for timestamp, packet in packets:
            seconds = int(timestamp)
            micros = int((timestamp - seconds) * 1_000_000)
            f.write(struct.pack("<IIII", seconds, micros, len(packet), len(packet)) + packet)
