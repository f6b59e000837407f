"""The coalescer's batch entry points (``TcpCoalescer.add_run``/``add_uniform``) and ``GsoRuns.load``.

``add_run`` and ``add_uniform`` exist only for speed: fed a run of decrypted packets (each still followed by its ESP
trailer), they must write what feeding the same packets one by one to ``add`` writes. Two checks for every case:

- equivalence: the frames equal those of ``add`` + ``flush`` on a fresh coalescer (exactly, byte for byte);
- the kernel's view: each frame, cut at gso_size the way Linux segments a GSO_TCPV4 super-packet (IP length, ID + n,
  TCP sequence number, PSH only on the last segment, the TCP checksum completed from the pseudo-header seed left in
  the field: the virtio NEEDS_CSUM contract), gives back exactly the original packets, in order per flow.

Where the batch path's framing legitimately differs from ``add``'s — a run following a pending per-packet batch of
the same flow is not merged into it, and the run's frames are out at once rather than left pending — only the second
check applies (the per-flow order is what TCP needs; frames of different flows may interleave differently).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from labctl.gateway.offload import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    PLAIN_VNET_HDR,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_TCPV4,
    VNET_HDR,
    VNET_HDR_LEN,
    GsoRuns,
    TcpCoalescer,
    split_gro,
)

SRC, DST = bytes([10, 1, 0, 10]), bytes([10, 2, 0, 10])
MSS = 1348
ACK, PSH, FIN, SYN = 0x10, 0x08, 0x01, 0x02


def fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_sum(data: bytes | bytearray) -> int:
    """RFC 1071: the ones' complement sum of the 16-bit words (not complemented), written out word by word."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return fold(sum(data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)))


def checksum(data: bytes | bytearray) -> int:
    return ~ones_sum(data) & 0xFFFF


def pseudo_header(ip: bytes | bytearray, tcp_len: int) -> bytes:
    return bytes(ip[12:20]) + bytes((0, 6)) + tcp_len.to_bytes(2, "big")  # RFC 793 §3.1


def ip_tcp(payload: bytes, seq: int, ident: int, *, flags: int = ACK, sport: int = 40000, tos: int = 0,
           ttl: int = 63, df: bool = True, ack: int = 77, window: int = 500, ts: int | None = 1000, urg: int = 0,
           src: bytes = SRC, proto: int = 6, frag: int = 0) -> bytes:
    """An IPv4 + TCP segment (timestamps option unless ``ts`` is None) with both checksums right."""
    options = b"\x01\x01\x08\x0a" + ts.to_bytes(4, "big") + (2000).to_bytes(4, "big") if ts is not None else b""
    hlen = 20 + len(options)
    tcp = bytearray(sport.to_bytes(2, "big") + (5201).to_bytes(2, "big") + seq.to_bytes(4, "big")
                    + ack.to_bytes(4, "big") + bytes(((hlen // 4) << 4, flags)) + window.to_bytes(2, "big")
                    + b"\0\0" + urg.to_bytes(2, "big") + options)
    total = 20 + len(tcp) + len(payload)
    ip = bytearray(bytes((0x45, tos)) + total.to_bytes(2, "big") + ident.to_bytes(2, "big")
                   + ((0x4000 if df else 0) | frag).to_bytes(2, "big") + bytes((ttl, proto)) + b"\0\0" + src + DST)
    ip[10:12] = checksum(ip).to_bytes(2, "big")
    tcp[16:18] = checksum(pseudo_header(ip, len(tcp) + len(payload)) + tcp + payload).to_bytes(2, "big")
    return bytes(ip + tcp + payload)


def test_the_segment_builder_agrees_with_scapy() -> None:
    pkt = ip_tcp(bytes(range(200)), 5000, 9, flags=ACK | PSH, tos=0x10)
    again = IP(pkt)
    del again.chksum, again[TCP].chksum, again.len
    assert bytes(again) == pkt
    assert (again.ttl, again.tos, again[TCP].seq, again[TCP].options[2][0]) == (63, 0x10, 5000, "Timestamp")


class Flow:
    """Consecutive TCP segments of one flow (sequence numbers and IP IDs count on, as a sender's would)."""

    def __init__(self, sport: int = 40000, seq: int = 5000, ident: int = 100) -> None:
        self.sport, self.seq, self.ident = sport, seq, ident

    def __call__(self, size: int = MSS, **kw: object) -> bytes:
        payload = bytes((self.seq + k) & 0xFF for k in range(size))
        pkt = ip_tcp(payload, self.seq, self.ident, sport=self.sport, **kw)  # type: ignore[arg-type]
        self.seq = (self.seq + size) & 0xFFFFFFFF
        self.ident = (self.ident + 1) & 0xFFFF
        return pkt

    def skip(self, n: int) -> None:
        self.seq = (self.seq + n) & 0xFFFFFFFF


def trailer(n: int, pad: int | None = None) -> bytes:
    """An ESP trailer as the data plane leaves it after an inner packet of ``n`` bytes."""
    pad = -(n + 2) % 4 if pad is None else pad
    return bytes(range(1, pad + 1)) + bytes((pad, 4))


# ---- the kernel's view of a TUN frame --------------------------------------------------------------------------


def kernel_segments(frame: bytes) -> list[bytes]:
    """What Linux makes of a TUN frame with a virtio_net_hdr: the packet itself, or for GSO_TCPV4 the segments it
    cuts (tcp_gso_segment / inet_gso_segment): every gso_size bytes of payload, the headers copied with the IP total
    length, ID (+1 per segment) and checksum redone, the TCP sequence number advanced, PSH/FIN kept on the last
    segment only, and the TCP checksum completed per NEEDS_CSUM (virtio 1.x §5.1.6.2): the field holds the
    pseudo-header sum, adjusted for each segment's length, and the sum from csum_start on is complemented into it."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    pkt = frame[VNET_HDR_LEN:]
    if gso_type == 0:
        assert (flags, hdr_len, gso_size, csum_start, csum_offset) == (0, 0, 0, 0, 0)
        assert frame[:VNET_HDR_LEN] == PLAIN_VNET_HDR
        return [pkt]
    assert (flags, gso_type, csum_start, csum_offset) == (VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 20, 16)
    assert pkt[0] == 0x45 and pkt[9] == 6 and not (pkt[6] & 0x3F or pkt[7])
    assert hdr_len == 20 + (pkt[32] >> 4) * 4
    assert int.from_bytes(pkt[2:4], "big") == len(pkt) <= 65535
    assert checksum(pkt[:20]) == 0  # the stack checks the super-packet's own IP header
    # The seed: the pseudo-header sum for the whole super-packet's TCP length, not complemented.
    seed = int.from_bytes(pkt[36:38], "big")
    assert seed == ones_sum(pseudo_header(pkt, len(pkt) - 20))
    data = pkt[hdr_len:]
    assert 0 < gso_size < len(data)  # a super-packet holds at least two segments
    ip0, tcp0 = pkt[:20], pkt[20:hdr_len]
    ident, seq = int.from_bytes(ip0[4:6], "big"), int.from_bytes(tcp0[4:8], "big")
    out = []
    for n, off in enumerate(range(0, len(data), gso_size)):
        body = data[off : off + gso_size]
        last = off + gso_size >= len(data)
        total = hdr_len + len(body)
        ip = bytearray(ip0)
        ip[2:4] = total.to_bytes(2, "big")
        ip[4:6] = ((ident + n) & 0xFFFF).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = checksum(ip).to_bytes(2, "big")
        tcp = bytearray(tcp0)
        tcp[4:8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
        if not last:
            tcp[13] &= ~(PSH | FIN) & 0xFF
        # The kernel's length adjustment in ones' complement: minus the old TCP length, plus this segment's.
        tcp[16:18] = fold(seed + (~(len(pkt) - 20) & 0xFFFF) + (total - 20)).to_bytes(2, "big")
        tcp[16:18] = checksum(tcp + body).to_bytes(2, "big")  # NEEDS_CSUM: sum from csum_start, complemented
        segment = bytes(ip + tcp + body)
        assert checksum(pseudo_header(ip, total - 20) + segment[20:]) == 0  # the receiver's check passes
        out.append(segment)
    return out


def meaning(p: bytes) -> bytes:
    """A TCP segment without URG has no urgent pointer (RFC 793 §3.1): neither add() nor Linux GRO compares it, so
    a segment merged into a super-packet comes back with the first one's. Zero it (and redo the checksum)."""
    if p[0] != 0x45 or p[9] != 6 or p[6] & 0x3F or p[7] or len(p) < 40 or p[33] & 0x20 or p[38:40] == b"\0\0":
        return p
    tcp = bytearray(p[20:])
    tcp[18:20] = tcp[16:18] = b"\0\0"
    tcp[16:18] = checksum(pseudo_header(p, len(tcp)) + tcp).to_bytes(2, "big")
    return p[:20] + bytes(tcp)


def by_flow(packets: list[bytes]) -> dict[bytes, list[bytes]]:
    """Packets grouped as the coalescer keeps their order: per TCP/UDP flow; fragments (whose bytes 20..24 are not
    ports, or which add() writes at once, see test_add_lets_a_fragment_overtake_its_flows_pending_segments) apart."""
    flows: dict[bytes, list[bytes]] = {}
    for p in packets:
        key = p[9:10] + p[12:24] if not (p[6] & 0x3F or p[7]) else b"fragment"
        flows.setdefault(key, []).append(meaning(p))
    return flows


def kernel_view(frames: list[bytes]) -> list[bytes]:
    return [seg for f in frames for seg in kernel_segments(f)]


def one_by_one(packets: list[bytes], pending: list[bytes] | None = None) -> list[bytes]:
    c = TcpCoalescer()
    for p in [*(pending or []), *packets]:
        c.add(p)
    return c.flush()


def as_run(packets: list[bytes], pending: list[bytes] | None = None, pads: list[int] | None = None) -> list[bytes]:
    c = TcpCoalescer()
    for p in pending or []:
        c.add(p)
    padded = [p + trailer(len(p), pads[i] if pads else None) for i, p in enumerate(packets)]
    c.add_run(padded, [len(p) for p in packets])
    return c.flush()


def as_uniform(packets: list[bytes], pending: list[bytes] | None = None) -> list[bytes]:
    length = len(packets[0])
    assert all(len(p) == length for p in packets)
    c = TcpCoalescer()
    for p in pending or []:
        c.add(p)
    tail = trailer(length)
    c.add_uniform(b"".join(p + tail for p in packets), length + len(tail), len(packets), length)
    return c.flush()


def check(packets: list[bytes], pending: list[bytes] | None = None, equal: bool = True,
          supers: int | None = None, kernel: bool = True) -> list[bytes]:
    """The run's frames (add_run, and add_uniform when the sizes are equal) against add(), and against the
    originals as the kernel sees them (``kernel``: False where add() itself merges what it should not, see
    test_add_merges_segments_whose_df_differs)."""
    expected = one_by_one(packets, pending)
    originals = by_flow([*(pending or []), *packets])
    if kernel:
        assert by_flow(kernel_view(expected)) == originals  # add() itself, as a sanity check of kernel_segments
    runs = [as_run(packets, pending)]
    if len({len(p) for p in packets}) == 1:
        runs.append(as_uniform(packets, pending))
    for frames in runs:
        if equal:
            assert frames == expected
        if kernel:
            assert by_flow(kernel_view(frames)) == originals
        if supers is not None:
            assert sum(VNET_HDR.unpack_from(f)[1] == VNET_GSO_TCPV4 for f in frames) == supers
    return runs[0]


# ---- add_run / add_uniform against add ---------------------------------------------------------------------------


def test_one_flow_of_full_segments_is_one_super_packet() -> None:
    f = Flow()
    frames = check([f() for _ in range(20)], supers=1)
    assert len(frames) == 1
    assert VNET_HDR.unpack_from(frames[0]) == (VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 52, MSS, 20, 16)


def test_a_shorter_last_segment_joins_the_super_packet() -> None:
    f = Flow()
    assert len(check([*(f() for _ in range(10)), f(300)], supers=1)) == 1


def test_psh_on_the_last_segment() -> None:
    f = Flow()
    frames = check([*(f() for _ in range(10)), f(flags=ACK | PSH)], supers=1)
    assert frames[0][VNET_HDR_LEN + 33] == ACK | PSH  # the super-packet carries it (the kernel keeps it last)


def test_psh_on_a_shorter_last_segment() -> None:
    f = Flow()
    check([*(f() for _ in range(10)), f(77, flags=ACK | PSH)], supers=1)


def test_psh_in_the_middle_ends_a_super_packet() -> None:
    f = Flow()
    frames = check([*(f() for _ in range(5)), f(flags=ACK | PSH), *(f() for _ in range(5))], supers=2)
    assert len(frames) == 2


def test_psh_everywhere() -> None:
    f = Flow()
    frames = check([f(flags=ACK | PSH) for _ in range(4)], supers=0)
    assert len(frames) == 4


def test_a_short_segment_in_the_middle_ends_a_super_packet() -> None:
    f = Flow()
    check([*(f() for _ in range(5)), f(300), *(f() for _ in range(5))], supers=2)


def test_a_longer_segment_after_a_short_one_starts_another() -> None:
    f = Flow()
    check([f(500), f(500), f(MSS), f(MSS), f(700), f(MSS), f(100), f(100)], supers=3)
    check([f(500), f(MSS), f(MSS), f(MSS)], supers=1)  # the first one alone: it is shorter than what follows


def test_two_flows_interleaved() -> None:
    f, g = Flow(40000), Flow(40001, seq=77_000, ident=9000)
    check([p for _ in range(8) for p in (f(), g())], supers=2)
    check([p for _ in range(8) for p in (f(), g(600))], supers=2)


def test_a_sequence_gap() -> None:
    f = Flow()
    packets = [f() for _ in range(5)]
    f.skip(MSS)
    check([*packets, *(f() for _ in range(5))], supers=2)
    f.skip(-3 * MSS)
    check([f(), f(), f()])  # backwards (a retransmission)


FIELDS: list[dict[str, object]] = [
    {"ttl": 62}, {"tos": 0x10}, {"window": 501}, {"ack": 78}, {"ts": 1001}, {"ts": None}, {"df": False},
    {"urg": 5},
]


@pytest.mark.parametrize("field", FIELDS, ids=[next(iter(f)) + "=" + str(next(iter(f.values()))) for f in FIELDS])
@pytest.mark.parametrize("where", [0, 3, 7])
def test_a_segment_that_differs_in_a_compared_field(field: dict[str, object], where: int) -> None:
    f = Flow()
    check([f(**(field if i == where else {})) for i in range(8)], kernel="df" not in field)  # type: ignore[arg-type]


def test_add_merges_segments_whose_df_differs() -> None:
    # Not the batch path (it refuses such a run and hands it to add()): add() does not compare DF, so a segment
    # without DF in a run of DF segments is merged and comes back out of the kernel with DF set. Linux GRO does not
    # merge these (inet_gro_receive flushes when DF differs). Recorded here as add()'s current behaviour.
    f = Flow()
    packets = [f(df=i != 3) for i in range(6)]
    frames = one_by_one(packets)
    assert len(frames) == 1
    back = kernel_view(frames)
    assert back[3] != packets[3] and back[3][6] & 0x40 and not packets[3][6] & 0x40


def udp_packet(size: int = 200) -> bytes:
    return bytes(IP(src="10.1.0.10", dst="10.2.0.10") / UDP(sport=53, dport=5353) / Raw(bytes(size - 28)))


@pytest.mark.parametrize("where", [0, 2, 5])
@pytest.mark.parametrize("odd", ["icmp", "udp", "fragment", "offset", "bare_ack", "syn", "fin", "rst", "urg",
                                 "options", "other_proto_same_ports"])
def test_packets_that_are_not_plain_tcp_segments_in_the_run(odd: str, where: int) -> None:
    # The odd one sits where the flow's sender would have put it: its sequence number continues the flow's.
    f = Flow()
    other = {
        "icmp": lambda: bytes(IP(src="10.1.0.10", dst="10.2.0.10") / ICMP() / Raw(bytes(MSS))),
        "udp": lambda: udp_packet(),
        "fragment": lambda: f(frag=0x2000),  # MF
        "offset": lambda: f(frag=0x0010),
        "bare_ack": lambda: f(0),
        "syn": lambda: f(flags=SYN | ACK),
        "fin": lambda: f(flags=FIN | ACK),
        "rst": lambda: f(flags=0x04 | ACK),
        "urg": lambda: f(flags=0x20 | ACK, urg=10),
        "options": lambda: bytes(IP(src="10.1.0.10", dst="10.2.0.10", options=[b"\x01\x01\x01\x01"])
                                 / TCP(sport=40000, dport=5201, flags="A") / Raw(bytes(MSS))),
        "other_proto_same_ports": lambda: f(proto=17),
    }[odd]
    packets = [other() if i == where else f() for i in range(7)]
    check(packets)


def test_add_lets_a_fragment_overtake_its_flows_pending_segments() -> None:
    # add()'s current behaviour (the batch path falls back to it for such a run, so both agree): a fragment of a TCP
    # flow is written at once, before that flow's segments still pending in the coalescer.
    f = Flow()
    packets = [f(), f()]
    fragment = ip_tcp(bytes(MSS), f.seq, 7, frag=0x2000)
    frames = one_by_one([*packets, fragment])
    assert frames[0] == PLAIN_VNET_HDR + fragment and kernel_view(frames[1:]) == packets
    assert as_run([*packets, fragment]) == frames


def test_pending_batch_of_the_same_flow_leaves_first() -> None:
    # add() would merge the run into the pending batch; add_run writes the pending batch first, then the run's own
    # super-packets: a different framing, the same segments in the same order.
    f = Flow()
    pending = [f() for _ in range(3)]
    run = [f() for _ in range(6)]
    frames = check(run, pending=pending, equal=False)
    assert len(frames) == 2 and kernel_view(frames[:1]) == pending and kernel_view(frames[1:]) == run
    assert len(one_by_one(run, pending)) == 1
    # A single pending segment leaves as it came.
    f = Flow()
    pending = [f()]
    frames = check([f() for _ in range(4)], pending=pending, equal=False)
    assert frames[0] == PLAIN_VNET_HDR + pending[0]


def test_pending_batch_of_another_flow() -> None:
    f, g = Flow(40000), Flow(40001, seq=9, ident=1)
    check([f() for _ in range(5)], pending=[g(), g()], equal=False)  # per flow the same, across flows reordered


def test_a_closed_pending_batch_then_a_run() -> None:
    f = Flow()
    pending = [f(), f(300)]  # closed by the short segment
    check([f() for _ in range(4)], pending=pending)  # add() starts a new batch too: the frames are equal


def test_runs_beyond_64k_are_split() -> None:
    f = Flow()
    frames = check([f() for _ in range(60)], supers=2)  # 52 + 60 * 1348 bytes: two super-packets
    assert all(len(fr) - VNET_HDR_LEN <= 65535 for fr in frames)
    f = Flow()
    most = (65535 - 52) // MSS  # full segments that fit in one
    room = 65535 - 52 - most * MSS  # what is left for a shorter last one
    check([f() for _ in range(most)], supers=1)
    frames = check([f() for _ in range(most + 1)], supers=1)
    assert len(frames) == 2 and frames[1][:VNET_HDR_LEN] == PLAIN_VNET_HDR
    f = Flow()
    frames = check([*(f() for _ in range(most)), f(room)], supers=1)  # exactly 65535 bytes
    assert len(frames) == 1 and len(frames[0]) == VNET_HDR_LEN + 65535
    f = Flow()
    frames = check([*(f() for _ in range(most)), f(room + 1)], supers=1)  # one byte too many
    assert len(frames) == 2 and frames[1][:VNET_HDR_LEN] == PLAIN_VNET_HDR
    f = Flow()
    check([f() for _ in range(3 * most + 5)], supers=4)


def test_sequence_numbers_wrapping_inside_the_run() -> None:
    f = Flow(seq=0xFFFFFFFF - 3 * MSS)
    check([f() for _ in range(8)])


def test_tiny_runs() -> None:
    f = Flow()
    check([f()])
    check([f(), f()], supers=1)
    assert as_run([]) == [] and one_by_one([]) == []


def test_trailers_of_any_length_are_never_written() -> None:
    f = Flow()
    packets = [f() for _ in range(5)]
    c = TcpCoalescer()
    c.add_run([p + trailer(len(p), pad) for p, pad in zip(packets, (2, 6, 254, 10, 2), strict=True)],
              [len(p) for p in packets])
    assert c.flush() == one_by_one(packets)


def test_uniform_stride_with_longer_padding() -> None:
    f = Flow()
    packets = [f() for _ in range(5)]
    tail = trailer(MSS + 52, 6)
    c = TcpCoalescer()
    c.add_uniform(b"".join(p + tail for p in packets), len(packets[0]) + len(tail), 5, len(packets[0]))
    assert c.flush() == one_by_one(packets)


def test_after_a_run_the_coalescer_carries_on() -> None:
    f = Flow()
    c = TcpCoalescer()
    run = [f() for _ in range(4)]
    c.add_run([p + trailer(len(p)) for p in run], [len(p) for p in run])
    later = [f() for _ in range(3)]
    for p in later:
        c.add(p)
    frames = c.flush()
    assert kernel_view(frames) == run + later
    assert c.flush() == []


# ---- randomized: add_run / add_uniform against add ---------------------------------------------------------------

PERTURB = ["ttl", "tos", "window", "ack", "ts", "df", "urg", "gap", "back", "fin", "syn", "udp", "tiny"]


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """(a run of segments of one or two flows with random sizes, PSH and perturbations, whether DF varies in it)"""
    two_flows = draw(st.integers(0, 3)) == 0
    noisy = draw(st.booleans())  # else only what the batch path itself takes: sizes and PSH vary
    uniform = draw(st.booleans())  # equal sizes: add_uniform is checked too
    count = draw(st.integers(1, 60))
    flows = [Flow(40000, seq=draw(st.sampled_from([5000, 5000, 5000, 0xFFFFFFFF - 20 * MSS]))),
             Flow(40001, seq=1, ident=7)]
    base = draw(st.sampled_from([MSS, 1000, 536]))
    packets = []
    df_mixed = False
    for _ in range(count):
        f = flows[draw(st.integers(0, 1)) if two_flows else 0]
        size = base if uniform else draw(st.sampled_from([base, base, base, base, 1, 300, base + 8]))
        kw: dict[str, object] = {}
        if draw(st.integers(0, 9)) == 0:
            kw["flags"] = ACK | PSH
        if noisy and draw(st.integers(0, 14)) == 0:
            what = draw(st.sampled_from(PERTURB))
            if what == "udp":
                packets.append(udp_packet(size + 52))
                continue
            if what in ("gap", "back"):
                f.skip(size if what == "gap" else -2 * size)
            elif what == "fin":
                kw["flags"] = ACK | FIN
            elif what == "syn":
                kw["flags"] = ACK | SYN
            elif what == "tiny":
                size = 0
            else:
                kw[what] = {"ttl": 1, "tos": 4, "window": 9, "ack": 5, "ts": None, "df": False, "urg": 3}[what]
                df_mixed |= what == "df"
        packets.append(f(size, **kw))
    return packets, df_mixed


@settings(max_examples=250, deadline=None)
@given(runs())
def test_randomized_runs_match_add_and_resegment_to_the_originals(case: tuple[list[bytes], bool]) -> None:
    packets, df_mixed = case
    check(packets, kernel=not df_mixed)


@settings(max_examples=60, deadline=None)
@given(runs(), st.integers(1, 4))
def test_randomized_runs_after_pending_packets(case: tuple[list[bytes], bool], pending_count: int) -> None:
    packets, df_mixed = case
    if len(packets) > pending_count:
        check(packets[pending_count:], pending=packets[:pending_count], equal=False, kernel=not df_mixed)


# ---- GsoRuns.load --------------------------------------------------------------------------------------------------

DEST = ("198.51.100.2", 4500)


def state(r: GsoRuns) -> tuple[object, ...]:
    return (r.dest, r.size, list(r.parts), r.total)


def loads(payloads: list[bytes]) -> bool:
    r = GsoRuns()
    before = state(r)
    if not r.load(payloads, DEST):
        assert state(r) == before
        return False
    taken = r.take()
    assert taken is not None
    data, size, dest = taken
    assert dest == DEST and size == len(payloads[0])
    assert split_gro(data, size) == payloads  # what the kernel's UDP_SEGMENT cut gives back
    assert r.take() is None
    return True


def test_gso_load_takes_equal_sizes_with_a_shorter_last() -> None:
    assert loads([b"a" * 1400] * 3)
    assert loads([b"a" * 1400] * 3 + [b"b" * 200])
    assert loads([b"a" * 1400, b"b"])
    assert loads([b"x" * 100])
    assert loads([bytes([i]) * 1000 for i in range(GSO_MAX_SEGMENTS)])
    assert loads([b"z" * 1300] * 50)  # exactly GSO_MAX_BYTES
    assert 1300 * 50 == GSO_MAX_BYTES


def test_gso_load_refuses_what_one_send_cannot_carry() -> None:
    assert not loads([b"a" * 100] * (GSO_MAX_SEGMENTS + 1))
    assert not loads([b"a" * 1300] * 50 + [b"b"])  # one byte over GSO_MAX_BYTES
    assert not loads([b"a" * 1400] * 46 + [b"b" * 1000])  # 65400 bytes
    assert not loads([b"a" * 100, b"b" * 101])  # a longer last one
    assert not loads([b"a" * 100] * 3 + [b"b" * 101])


def test_gso_load_refuses_a_run_in_progress() -> None:
    r = GsoRuns()
    r.add(b"a" * 100, DEST)
    before = state(r)
    assert not r.load([b"b" * 100, b"b" * 100], DEST)
    assert state(r) == before
    assert r.take() == (b"a" * 100, 100, DEST)


def test_gso_load_then_fits_no_more() -> None:
    r = GsoRuns()
    assert r.load([b"a" * 100, b"b" * 60], DEST)
    assert not r.fits(b"c" * 60, DEST)  # a shorter datagram already ended the run
    r = GsoRuns()
    assert r.load([b"a" * 100] * 2, DEST)
    assert r.fits(b"c" * 100, DEST) and not r.fits(b"c" * 100, ("x", 1))

