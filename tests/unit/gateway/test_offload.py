"""TCP coalescing for TUN writes and UDP GSO/GRO batching (``labctl.gateway.offload``).

The coalesced super-packet is checked the way the kernel will use it: cut it at gso_size, finish each segment's
TCP checksum from the pseudo-header sum left in the field (virtio NEEDS_CSUM contract), and compare with the
original segments byte for byte (scapy recomputes every checksum independently).
"""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from labctl.gateway.ipsec.ipv4 import internet_checksum
from labctl.gateway.offload import (
    GSO_MAX_SEGMENTS,
    PLAIN_VNET_HDR,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_TCPV4,
    VNET_HDR,
    VNET_HDR_LEN,
    GsoRuns,
    TcpCoalescer,
    gro_size,
    split_gro,
)

A, B = "10.1.0.10", "10.2.0.10"
MSS = 1348
TS = [("Timestamp", (1000, 2000))]


def seg(i: int, size: int = MSS, flags: str = "A", ack: int = 77, window: int = 500, ts: int = 1000,
        sport: int = 40000) -> bytes:
    payload = bytes((i * 7 + k) & 0xFF for k in range(size))
    return bytes(IP(src=A, dst=B, id=100 + i, flags="DF", ttl=63)
                 / TCP(sport=sport, dport=5201, seq=5000 + i * MSS, ack=ack, flags=flags, window=window,
                       options=[("NOP", None), ("NOP", None), ("Timestamp", (ts, 2000))])
                 / Raw(payload))


def resegment(frame: bytes) -> list[bytes]:
    """What the kernel makes of one TUN frame: the segments with their final checksums."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    pkt = frame[VNET_HDR_LEN:]
    if gso_type == 0:
        assert flags == 0
        return [pkt]
    assert (flags, gso_type, csum_start, csum_offset) == (VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 20, 16)
    assert internet_checksum(pkt[:20]) == 0  # the super-packet's own IP header checksum is right
    headers, data = pkt[:hdr_len], pkt[hdr_len:]
    out = []
    for n, off in enumerate(range(0, len(data), gso_size)):
        body = data[off : off + gso_size]
        ip = IP(headers + body)
        ip.len, ip.chksum = None, None
        ip[TCP].seq = IP(headers).seq + off
        ip[TCP].chksum = None
        if off + gso_size < len(data):
            ip[TCP].flags = ip[TCP].flags & ~0x08  # the kernel keeps PSH on the last segment only
        ip.id = IP(headers).id + n
        out.append(bytes(ip))
    # The pseudo-header sum we left, completed over the whole super-packet, must equal a full checksum.
    seg_all = bytearray(pkt[20:])
    pseudo = int.from_bytes(seg_all[16:18], "big")
    seg_all[16:18] = b"\0\0"
    total = (~internet_checksum(bytes(seg_all)) & 0xFFFF) + pseudo
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    full = bytes(pkt[12:20]) + b"\x00\x06" + len(seg_all).to_bytes(2, "big") + bytes(seg_all)
    assert (~total & 0xFFFF) == internet_checksum(full) or internet_checksum(full) == 0
    return out


def normal(pkt: bytes) -> bytes:
    ip = IP(pkt)
    ip.chksum = None
    ip[TCP].chksum = None
    return bytes(ip)


def test_contiguous_segments_become_one_super_packet_that_resegments_to_the_originals() -> None:
    c = TcpCoalescer()
    segments = [seg(i) for i in range(10)] + [seg(10, 300, flags="PA")]
    for s in segments:
        c.add(s)
    frames = c.flush()
    assert len(frames) == 1
    flags, gso_type, hdr_len, gso_size, _, _ = VNET_HDR.unpack_from(frames[0])
    assert (gso_type, hdr_len, gso_size) == (VNET_GSO_TCPV4, 52, MSS)
    assert IP(frames[0][VNET_HDR_LEN:]).len == 52 + 10 * MSS + 300
    got = resegment(frames[0])
    assert [normal(g) for g in got] == [normal(s) for s in segments]
    assert c.flush() == []


def test_anything_that_differs_starts_a_new_batch_and_order_is_kept() -> None:
    breaks = [seg(1, ack=78), seg(1, window=501), seg(1, ts=1001), seg(2), seg(1, flags="FA")]
    for odd in breaks:
        c = TcpCoalescer()
        c.add(seg(0))
        c.add(odd)
        frames = c.flush()
        assert [f[VNET_HDR_LEN:] for f in frames] == [seg(0), odd], odd
        assert all(f[:VNET_HDR_LEN] == PLAIN_VNET_HDR for f in frames)


def test_short_or_pushed_segment_closes_the_batch() -> None:
    c = TcpCoalescer()
    for s in (seg(0), seg(1, 100)):
        c.add(s)
    c.add(seg(2))  # would be contiguous only if the short one had been full
    frames = c.flush()
    assert len(frames) == 2 and VNET_HDR.unpack_from(frames[0])[1] == VNET_GSO_TCPV4
    assert frames[1][VNET_HDR_LEN:] == seg(2)


def test_other_traffic_passes_unchanged_with_an_empty_header() -> None:
    c = TcpCoalescer()
    others = [bytes(IP(src=A, dst=B) / ICMP() / Raw(b"ping")), bytes(IP(src=A, dst=B) / UDP() / Raw(b"u")),
              bytes(IP(src=A, dst=B, flags="MF") / TCP() / Raw(b"frag")), seg(0, 0)]
    for p in others:
        c.add(p)
    assert c.flush() == [PLAIN_VNET_HDR + p for p in others]


def test_flows_are_batched_separately() -> None:
    c = TcpCoalescer()
    for i in range(4):
        c.add(seg(i, sport=1))
        c.add(seg(i, sport=2))
    frames = c.flush()
    assert len(frames) == 2
    assert [normal(g) for g in resegment(frames[0])] == [normal(seg(i, sport=1)) for i in range(4)]


def test_super_packet_stays_below_64k() -> None:
    c = TcpCoalescer()
    for i in range(60):
        c.add(seg(i))
    frames = c.flush()
    assert len(frames) == 2
    assert all(len(f) - VNET_HDR_LEN <= 65535 for f in frames)
    assert sum(len(resegment(f)) for f in frames) == 60


def test_gso_runs_group_equal_sizes_to_one_peer() -> None:
    runs = GsoRuns()
    dest = ("198.51.100.2", 4500)
    sent = []
    for payload, d in [(b"a" * 100, dest)] * 3 + [(b"b" * 60, dest), (b"c" * 100, dest), (b"d" * 100, ("x", 1))]:
        if not runs.fits(payload, d):
            taken = runs.take()
            if taken:
                sent.append(taken)
        runs.add(payload, d)
    taken = runs.take()
    assert taken is not None
    sent.append(taken)
    assert sent == [(b"a" * 300 + b"b" * 60, 100, dest), (b"c" * 100, 100, dest), (b"d" * 100, 100, ("x", 1))]
    assert runs.take() is None
    for _ in range(GSO_MAX_SEGMENTS):
        assert runs.fits(b"e" * 10, dest) or not runs.parts
        runs.add(b"e" * 10, dest)
    assert not runs.fits(b"e" * 10, dest)


def test_gro_split_and_control_message() -> None:
    data = b"a" * 100 + b"b" * 100 + b"c" * 40
    assert split_gro(data, 100) == [b"a" * 100, b"b" * 100, b"c" * 40]
    assert split_gro(data, 0) == [data] and split_gro(b"x" * 50, 100) == [b"x" * 50]
    assert gro_size([(17, 104, (1400).to_bytes(4, "little"))]) == 1400
    assert gro_size([(0, 1, b"\0\0\0\0")]) == 0
