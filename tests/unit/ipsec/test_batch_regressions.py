"""Regressions: bugs the differential tests of the batch paths (test_batch_paths.py) found in their first version.

1. GsoRuns.load took a run with a short datagram in the middle; one UDP_SEGMENT send of it is cut at the first
   size, so the peer got corrupt datagrams (seen on the wire: the netns matrix's udp-encap-ikev2 row had 3 ESP
   frames that did not decrypt).
2. The coalescer read a TCP header byte of a 24-byte packet: an authenticated peer could stop the daemon.
"""
from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from labctl.gateway.ipsec.dataplane import UdpSend
from labctl.gateway.ipsec.replay import ReplayWindow
from labctl.gateway.offload import GsoRuns, TcpCoalescer, split_gro

from .lab import ENCAP, GW_A, GW_B, HOST_A, HOST_B, gateway_pair

DEST = ("203.0.113.2", 4500)


def test_gso_load_refuses_a_short_datagram_in_the_middle() -> None:
    # GsoRuns.load only counted how many payloads have the first one's size, so [100, 50, 100] passes; one
    # UDP_SEGMENT send of that is cut by the kernel at 100 bytes: [100, 50 + 50 of the third, 50].
    payloads = [b"a" * 100, b"b" * 50, b"c" * 100]
    r = GsoRuns()
    loaded = r.load(payloads, DEST)
    if loaded:
        data, size, _ = r.take()  # type: ignore[misc]
        assert split_gro(data, size) == payloads, split_gro(data, size)
    assert not loaded


def test_gso_load_end_to_end_bulk_segment_ack_bulk() -> None:
    # As the daemon met it: one TUN drain of a cached flow, [1400, bare ACK, 1400] -> outbound_batch ->
    # Gateway._send_datagrams -> GsoRuns.load accepts -> the peer gets two corrupt datagrams.
    a, _ = gateway_pair(encap=True)
    def seg(i: int, size: int) -> bytes:
        return bytes(IP(src=HOST_A, dst=HOST_B, id=i) / TCP(sport=1, dport=2, flags="A") / Raw(bytes(size - 40)))
    assert isinstance(a.outbound(seg(0, 1400), 1.0), UdpSend)
    sealed = a.outbound_batch([seg(1, 1400), seg(2, 40), seg(3, 1400)], 1.0)
    assert sealed is not None
    esp, dest = sealed
    r = GsoRuns()
    if r.load(esp, dest):
        data, size, _ = r.take()  # type: ignore[misc]
        assert split_gro(data, size) == esp


def test_add_run_with_a_short_first_packet_does_not_raise() -> None:
    # _run_frames read first[32] (the TCP data offset) before checking the length; the data plane's batch
    # paths deliver inner packets down to 24 bytes, whose buffer (packet + ESP trailer) is 28..32 bytes.
    pkt = bytes(IP(src=HOST_A, dst=HOST_B, proto=6) / Raw(b"\x9c\x40\x14\x51"))  # 24 bytes: the ports only
    assert len(pkt) == 24
    c = TcpCoalescer()
    c.add_run([pkt + b"\x01\x02\x02\x04"] * 2, [24, 24])  # it raised IndexError
    assert c.flush() == [bytes(10) + pkt] * 2


def test_udp_gro_run_of_24_byte_tcp_packets_end_to_end() -> None:
    # End to end: an authenticated peer sends two 24-byte TCP packets of an admitted flow in one UDP GRO
    # receive; inbound_udp_batch takes them, then Gateway._on_udp4500 calls coalescer.add_run(*opened), which
    # raised IndexError; nothing caught it up to Gateway.loop, so the daemon died.
    a, b = gateway_pair(encap=True)
    pkts = [bytes(IP(src=HOST_A, dst=HOST_B, id=i, proto=6) / Raw(b"\x9c\x40\x14\x51")) for i in range(3)]
    wire = [a.outbound(p, 1.0) for p in pkts]
    payloads = [w.payload for w in wire if isinstance(w, UdpSend)]
    assert b.inbound_udp(payloads[0], GW_A, ENCAP[0], GW_B, ENCAP[1], 1.0) == pkts[0]  # the flow is admitted
    opened = b.inbound_udp_batch(payloads[1:], 1.0)
    assert opened is not None
    TcpCoalescer().add_run(*opened)


def test_update_run_on_a_disabled_window_leaves_the_same_bitmap_as_update() -> None:
    # With replay window 0, update() leaves bitmap 1; update_run() left 0 (check() never reads it).
    ref, run = ReplayWindow(0), ReplayWindow(0)
    for seq in (5, 6, 7):
        ref.update(seq)
    run.update_run(5, 3)
    assert (run.top, run.bitmap) == (ref.top, ref.bitmap)


def test_outbound_batch_on_a_malformed_frame_returns_none() -> None:
    # outbound_batch indexed p[0] and p[9] before any length check (outside its try), so an empty or
    # < 10-byte frame in a TUN drain raises IndexError instead of returning None.
    a, _ = gateway_pair()
    assert a.outbound_batch([b"", b"E"], 1.0) is None
    assert a.outbound_batch([b"E\x00\x00\x05"], 1.0) is None
