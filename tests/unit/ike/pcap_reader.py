"""Minimal pcap / pcapng reader for the test vectors: UDP payloads of Ethernet/IPv4 frames, in order."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path


def _frames_pcap(data: bytes) -> list[bytes]:
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    off = 24
    frames = []
    while off + 16 <= len(data):
        _ts, _us, incl, _orig = struct.unpack_from(endian + "IIII", data, off)
        frames.append(data[off + 16 : off + 16 + incl])
        off += 16 + incl
    return frames


def _frames_pcapng(data: bytes) -> list[bytes]:
    off = 0
    frames = []
    endian = "<"
    while off + 12 <= len(data):
        if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            endian = "<" if data[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack_from(endian + "II", data, off)
        if btype == 6:  # Enhanced Packet Block
            caplen = struct.unpack_from(endian + "I", data, off + 20)[0]
            frames.append(data[off + 28 : off + 28 + caplen])
        off += blen
    return frames


def udp_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    frames = _frames_pcapng(data) if data[:4] == b"\x0a\x0d\x0d\x0a" else _frames_pcap(data)
    out = []
    for f in frames:
        ethertype = struct.unpack_from("!H", f, 12)[0]
        if ethertype != 0x0800:
            raise ValueError(f"{path.name}: not Ethernet/IPv4")
        ip = f[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        if ip[9] != 17:
            raise ValueError(f"{path.name}: not UDP")
        udp = ip[ihl:total]
        out.append(udp[8:])
    return out
