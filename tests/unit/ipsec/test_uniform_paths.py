"""The uniform fast paths (equal-size packets, no Python step per packet): ``DataPlane.outbound_uniform`` and
``DataPlane.inbound_ip_uniform``. They must build and accept exactly what the per-packet paths do, and on anything
else return None having changed nothing, so that the caller can hand the packets to the next path.

A first packet of each flow always takes the per-packet path (it checks the SPD and teaches the caches); the
tests do the same before a run.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP

from labctl.gateway.ipsec.dataplane import DataPlane, IpSend, UdpSend
from labctl.gateway.ipsec.sad import Lifetime

from .lab import GW_A, GW_B, gateway_pair
from .test_fastpath import segment
from .test_scapy_interop import params_ab, scapy_sa

VNET = bytes(10)  # the daemon's frames start with an (empty) virtio header
SUITES = ["aes128gcm16", "aes256gcm16", "chacha20poly1305"]


def flow(first: int, count: int, size: int = 1400) -> list[bytes]:
    """``count`` equal-size segments of one TCP flow (fastpath test helper ``segment``), numbered from ``first``."""
    return [segment(i, size) for i in range(first, first + count)]


def state(dp: DataPlane) -> tuple[object, ...]:
    """Everything a refused run must leave as it was: counters, SA counters and sequence numbers, replay windows."""
    sas = sorted(((sa.spi, sa.direction, sa.seq, sa.packets, sa.bytes, sa.replay.top, sa.replay.bitmap)
                  for sa in dp._sad.all()), key=repr)
    return (repr(dp.counters()), tuple(sas))


def payloads_of(results: list[object]) -> list[bytes]:
    out = []
    for r in results:
        assert isinstance(r, UdpSend | IpSend), r
        out.append(r.payload if isinstance(r, UdpSend) else r.packet)
    return out


def primed(encr: str, esn: bool = False, encap: bool = True, **kw: object) -> tuple[DataPlane, DataPlane]:
    a, b = gateway_pair(("esp",), "tunnel", encr=encr, esn=esn, encap=encap, **kw)  # type: ignore[arg-type]
    first = a.outbound(segment(0), 1.0)  # the per-packet path caches the flow on both sides
    got = b.inbound_udp(first.payload, GW_A, 4500, GW_B, 4500, 1.0) if isinstance(first, UdpSend) else \
        b.inbound_ip(first.packet, 1.0)  # type: ignore[union-attr]
    assert got == segment(0)
    return a, b


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encr", SUITES)
def test_outbound_uniform_udp_is_the_per_packet_esp_byte_for_byte(encr: str, esn: bool) -> None:
    a, b = primed(encr, esn)
    twin, _ = primed(encr, esn)  # the same keys and history: the per-packet reference
    packets = flow(1, 40)
    got = a.outbound_uniform([VNET + p for p in packets], len(VNET), 1.0)
    assert got is not None
    data, size, dest = got
    expected = payloads_of([twin.outbound(p, 1.0) for p in packets])
    assert data == b"".join(expected) and {len(e) for e in expected} == {size}
    assert dest == (GW_B, 4500)
    assert state(a) == state(twin)  # the same sequence numbers, counters and byte counts
    # and the peer accepts them, per packet, in order
    for i in range(40):
        assert b.inbound_udp(data[i * size : (i + 1) * size], GW_A, 4500, GW_B, 4500, 1.0) == packets[i]
    # sequence numbers go on across paths: the next per-packet packet follows the run
    nxt = a.outbound(segment(41), 1.0)
    assert isinstance(nxt, UdpSend) and int.from_bytes(nxt.payload[4:8], "big") == 42
    assert b.inbound_udp(nxt.payload, GW_A, 4500, GW_B, 4500, 1.0) == segment(41)


def test_outbound_uniform_raw_headers_match_the_per_packet_ones_but_id_and_checksum() -> None:
    a, b = primed("aes128gcm16", encap=False)
    twin, _ = primed("aes128gcm16", encap=False)
    packets = flow(1, 30, 1200)
    got = a.outbound_uniform([VNET + p for p in packets], len(VNET), 1.0)
    assert got is not None
    data, size, dest = got
    assert dest is None
    expected = payloads_of([twin.outbound(p, 1.0) for p in packets])
    for i, want in enumerate(expected):
        have = data[i * size : (i + 1) * size]
        assert len(have) == len(want) == size
        # Identification and checksum are left 0 for the kernel: it fills in the checksum of IP_HDRINCL packets, and
        # the identification unless DF is set (then 0, RFC 6864 §4.1), as tcpdump on the lab's link shows.
        assert have[4:6] == b"\0\0" and have[10:12] == b"\0\0"
        assert have[:4] + have[6:10] + have[12:] == want[:4] + want[6:10] + want[12:]
        header = IP(have)
        assert (header.tos, header.flags.DF, header.proto, header.src, header.dst) == (0x10, True, 50, GW_A, GW_B)
        # with the checksum the kernel would write, the peer takes it as it is
        fixed = bytes(IP(have[:4] + b"\0\1" + have[6:10] + b"\0\0" + have[12:]))
        assert b.inbound_ip(fixed, 1.0) == packets[i]


@pytest.mark.parametrize("encr", SUITES)
def test_outbound_uniform_packets_decrypt_in_scapy(encr: str) -> None:
    a, _ = primed(encr, encap=False)
    packets = flow(1, 8, 1001)  # an odd size: padding is not zero
    got = a.outbound_uniform([VNET + p for p in packets], len(VNET), 1.0)
    assert got is not None
    data, size, _ = got
    scapy = scapy_sa(params_ab(a, "esp"), False)
    for i in range(8):
        assert bytes(IP(bytes(scapy.decrypt(IP(data[i * size : (i + 1) * size]))))) == packets[i]


def _refused(a: DataPlane, frames: list[bytes]) -> None:
    before = state(a)
    assert a.outbound_uniform(frames, len(VNET), 1.0) is None
    assert state(a) == before


def test_outbound_uniform_refuses_what_is_not_its_case_and_changes_nothing() -> None:
    a, _ = primed("aes128gcm16")
    run = [VNET + p for p in flow(1, 10)]
    other = IP(segment(50))
    other.sport = 41000  # another flow: not cached
    _refused(a, [VNET + bytes(other)] * 3)  # an uncached flow
    _refused(a, run[:5] + [VNET + bytes(other)] + run[5:])  # two flows in one run
    _refused(a, run[:5] + [VNET + segment(6, 1300)])  # sizes differ
    fragment = IP(segment(7))
    fragment.flags = "MF"
    _refused(a, [VNET + bytes(fragment)] * 2)
    sa = next(s for s in a._sad.all() if s.direction == "out")
    sa.seq = sa.seq_max - 5  # the run would exhaust the sequence numbers: the per-packet path must say so
    _refused(a, run)
    sa.seq = 1
    sa.limit_packets = sa.packets + 5  # a packet limit falls inside the run
    _refused(a, run)


def test_outbound_uniform_refuses_a_byte_limit_inside_the_run() -> None:
    a, _ = primed("aes128gcm16", lifetime=Lifetime(soft_bytes=20_000, hard_bytes=40_000))
    _refused(a, [VNET + p for p in flow(1, 20)])  # 20 x 1400 crosses the soft limit: events come from per-packet


def test_outbound_uniform_refuses_an_esn_low_half_wrapping_inside_the_run() -> None:
    a, _ = primed("aes128gcm16", esn=True)
    sa = next(s for s in a._sad.all() if s.direction == "out")
    sa.seq = (1 << 32) - 3
    _refused(a, [VNET + p for p in flow(1, 10)])


# --- inbound_ip_uniform ---------------------------------------------------------------------------------------


def raw_run(a: DataPlane, packets: list[bytes]) -> list[bytes]:
    return payloads_of([a.outbound(p, 1.0) for p in packets])


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encr", SUITES)
def test_inbound_ip_uniform_equals_the_per_packet_path(encr: str, esn: bool) -> None:
    a, b = primed(encr, esn, encap=False)
    _, twin = primed(encr, esn, encap=False)
    packets = flow(1, 33)
    wire = raw_run(a, packets)
    got = b.inbound_ip_uniform(wire, 1.0)
    assert got is not None
    plains, stride, count, length = got
    assert (count, length) == (33, len(packets[0]))
    assert [plains[i * stride : i * stride + length] for i in range(count)] == packets
    assert [twin.inbound_ip(w, 1.0) for w in wire] == packets
    assert state(b) == state(twin)


def _in_refused(b: DataPlane, wire: list[bytes]) -> None:
    before = state(b)
    assert b.inbound_ip_uniform(wire, 1.0) is None
    assert state(b) == before


def test_inbound_ip_uniform_refuses_and_the_per_packet_path_then_counts() -> None:
    a, b = primed("aes128gcm16", encap=False)
    wire = raw_run(a, flow(1, 10))
    forged = bytearray(wire[4])
    forged[700] ^= 1
    run = wire[:4] + [bytes(forged)] + wire[5:]
    _in_refused(b, run)
    delivered = [b.inbound_ip(w, 1.0) for w in run]
    assert delivered.count(None) == 1 and b.counters()["drops"] == {"integrity": 1}
    _in_refused(b, wire)  # now every one is a replay
    assert [b.inbound_ip(w, 1.0) for w in wire[:2]] == [None, None]
    assert b.counters()["drops"] == {"integrity": 1, "replay": 2}


def test_inbound_ip_uniform_refuses_gaps_other_spis_fragments_and_bad_lengths() -> None:
    a, b = primed("aes128gcm16", encap=False)
    wire = raw_run(a, flow(1, 12))
    _in_refused(b, wire[:3] + wire[4:8])  # a gap in the sequence numbers
    _in_refused(b, [wire[1], wire[0]] + wire[2:6])  # reordered
    mf = bytearray(wire[0])
    mf[6] |= 0x20
    _in_refused(b, [bytes(mf)] + wire[1:4])
    spi = bytearray(wire[1])
    spi[23] ^= 1
    _in_refused(b, [wire[0], bytes(spi)] + wire[2:4])
    short = bytearray(wire[0])
    short[3] -= 1  # the total length says one byte less than was received
    _in_refused(b, [bytes(short)] + wire[1:4])
    # the genuine run still goes through untouched
    assert b.inbound_ip_uniform(wire, 1.0) is not None


def test_inbound_ip_uniform_refuses_a_new_inner_flow_until_the_per_packet_path_checked_it() -> None:
    a, b = primed("aes128gcm16", encap=False)
    other = IP(segment(3))
    other.sport = 41000
    new_flow = [bytes(IP(bytes(other)))] * 1
    first = raw_run(a, new_flow)
    run = raw_run(a, [bytes(other)] * 4)
    _in_refused(b, first + run[:3])
    assert b.inbound_ip(first[0], 1.0) == bytes(other)  # the SPD check, once
    assert b.inbound_ip_uniform(run, 1.0) is not None


def test_inbound_ip_uniform_refuses_outer_fragments_even_when_all_alike() -> None:
    a, b = primed("aes128gcm16", encap=False)
    wire = raw_run(a, flow(1, 4))
    fragments = []
    for w in wire:
        mf = bytearray(w)
        mf[6] |= 0x20
        fragments.append(bytes(mf))
    _in_refused(b, fragments)


def sealed_raw(a: DataPlane, plaintexts: list[bytes], first_seq: int) -> list[bytes]:
    """Raw ESP packets A's outbound SA would send, built from chosen ESP plaintexts (payload, padding, pad length,
    next header): how a broken or unusual peer's packets are made."""
    sa = next(s for s in a._sad.all() if s.direction == "out")
    out = []
    for i, plain in enumerate(plaintexts):
        seq = first_seq + i
        header = sa.spi_b + seq.to_bytes(4, "big")
        iv = seq.to_bytes(8, "big")
        esp = header + iv + sa.cipher.aead_object.encrypt(sa.cipher.salt + iv, plain, header)  # type: ignore[union-attr]
        out.append(bytes(IP(src=GW_A, dst=GW_B, proto=50, flags="DF") / esp))
    return out


@pytest.mark.parametrize(
    ("trailer", "inner_fix", "per_packet"),
    [
        (b"\x01\x03\x02\x04", None, "bad_padding"),  # padding bytes must be 1, 2, ... (RFC 4303 §2.4)
        (b"\x01\x02\x02\x3b", None, "dummy"),  # next header 59: a dummy packet
        (b"\x01\x02\x02\x29", None, "not_tunnel"),  # next header 41 in a tunnel SA
        (b"\x01\x02\x02\x04", "tfc", None),  # TFC padding before the trailer: valid, the per-packet path trims it
        (b"\x01\x02\x02\x04", "ipv6", "bad_inner"),
    ],
)
def test_inbound_ip_uniform_refuses_unusual_trailers_and_inner_packets(
    trailer: bytes, inner_fix: str | None, per_packet: str | None
) -> None:
    a, b = primed("aes128gcm16", encap=False)
    packets = flow(1, 5, 1001)
    plaintexts = []
    for p in packets:
        if inner_fix == "tfc":
            p = p + bytes(8)  # TFC padding (RFC 4303 §2.7)
        if inner_fix == "ipv6":
            p = bytes((0x65,)) + p[1:]
        plaintexts.append(p + trailer)
    wire = sealed_raw(a, plaintexts, 2)
    _in_refused(b, wire)
    delivered = [b.inbound_ip(w, 1.0) for w in wire]
    if per_packet is None:
        assert delivered == packets
    else:
        assert delivered == [None] * 5 and b.counters()["drops"] == {per_packet: 5}


def test_outbound_uniform_raw_refuses_a_run_whose_tos_differs() -> None:
    a, _ = primed("aes128gcm16", encap=False)
    run = flow(1, 6)
    other = IP(run[3])
    other.tos = 0x20  # same flow key, another TOS: the raw outer header copies each packet's own
    _refused(a, [VNET + p for p in run[:3] + [bytes(IP(bytes(other)))] + run[4:]])
