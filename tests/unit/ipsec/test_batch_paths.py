"""The batch fast paths of the ESP data plane: the same result as the per-packet paths, or None and nothing changed.

``ReplayWindow.fresh_run``/``update_run``, ``DataPlane.inbound_udp_batch``/``inbound_ip_batch``/``inbound_udp_uniform``
and ``DataPlane.outbound_batch`` exist only for speed. Each test here runs two identical gateways side by side: the
reference takes every packet through the per-packet path (which test_fastpath and test_scapy_interop check against
scapy), the twin takes the same packets through the batch path. Output bytes, counters, SA counters, replay windows
and events must come out identical. When the batch path refuses (returns None) the twin's state must be exactly what
it was, and the per-packet path on the same input must then give the reference's result and drop reasons.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from labctl.gateway.ipsec.dataplane import DataPlane, Dropped, IpSend, UdpSend
from labctl.gateway.ipsec.events import HardExpired, SeqExhausted, SoftExpired
from labctl.gateway.ipsec.ipv4 import build_header, internet_checksum
from labctl.gateway.ipsec.replay import ReplayWindow
from labctl.gateway.ipsec.sad import Lifetime, SaParams, SecurityAssociation
from labctl.gateway.ipsec.spd import Policy

from .lab import ENCAP, GW_A, GW_B, HOST_A, HOST_B, NET_A, NET_B, SPI_AB, SPI_BA, gateway_pair, policies, sa_params
from .test_scapy_interop import scapy_sa

NOW = 1.0
SALTED = ["aes128gcm16", "aes256gcm16", "chacha20poly1305"]  # the AEADs with a salt: the batch paths' suites
ALL_SALTED = [*SALTED, "aes128ccm16", "aes256ccm8"]  # CCM too (3-byte salt; an 8-byte ICV): A's packets only
GW_A_B = bytes([198, 51, 100, 1])
GW_B_B = bytes([203, 0, 113, 2])


# ---- replay window: fresh_run / update_run against the per-packet infer / check / update ----------------------------

WINDOWS = [0, 1, 2, 31, 32, 63, 64, 65, 128, 1024, 4096]


def window_at(size: int, top: int, esn: bool = False, seed: int = 0) -> ReplayWindow:
    """A window whose top is ``top``, with a random set of older packets received, built by ``update`` only."""
    w = ReplayWindow(size, esn)
    if top:
        rnd = random.Random(seed * 7919 + top)
        low = max(1, top - size + 1)
        older = rnd.sample(range(low, top), min(30, max(0, top - low)))
        for seq in [top, *older]:
            if w.check(seq):
                w.update(seq)
    assert w.top == top
    return w


def copy_window(w: ReplayWindow) -> ReplayWindow:
    c = ReplayWindow(w.size, w.esn)
    c.top, c.bitmap = w.top, w.bitmap
    return c


def per_packet_run(w: ReplayWindow, first: int, count: int) -> None:
    for seq in range(first, first + count):
        assert w.check(seq)
        w.update(seq)


def same_window(run: ReplayWindow, ref: ReplayWindow) -> None:
    assert run.top == ref.top
    if run.size:
        assert run.bitmap == ref.bitmap, (run.size, run.top)
    else:
        # A disabled window (size 0) never reads its bitmap; update() leaves 1 there, update_run() 0 (see the report
        # of this test file's author). What must agree is what check() answers.
        for seq in (ref.top - 1, ref.top, ref.top + 1):
            assert run.check(seq) == ref.check(seq)


@pytest.mark.parametrize("size", WINDOWS)
def test_update_run_equals_update_per_packet(size: int) -> None:
    tops = [0, 1, 5, 100, 4095, 4096, 5000, (1 << 32) - 10, (1 << 32) + 7]
    gaps = sorted({g for g in (1, 2, 3, size - 1, size, size + 1, 2 * size + 3, 5000) if g > 0})
    counts = sorted({c for c in (1, 2, 3, size - 1, size, size + 1, 2 * size + 1) if c > 0})
    cases = 0
    for top in tops:
        base = window_at(size, top, seed=size)
        for gap in gaps:
            for count in counts:
                ref, run = copy_window(base), copy_window(base)
                per_packet_run(ref, top + gap, count)
                run.update_run(top + gap, count)
                same_window(run, ref)
                # And the window then answers every later check the same way.
                for seq in (run.top - size, run.top - size + 1, run.top - count, run.top, run.top + 1):
                    if seq > 0:
                        assert run.check(seq) == ref.check(seq)
                cases += 1
    assert cases > 100


@settings(max_examples=300, deadline=None)
@given(
    size=st.sampled_from(WINDOWS),
    esn=st.booleans(),
    top=st.one_of(st.integers(0, 10_000), st.integers((1 << 32) - 5000, (1 << 32) + 5000),
                  st.integers(0, (1 << 40))),
    low=st.one_of(st.integers(0, 10_100), st.integers(0xFFFFFFFF - 6000, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
    count=st.integers(0, 300),
    seed=st.integers(0, 3),
    near=st.booleans(),
    delta=st.integers(-5000, 5000),
)
def test_fresh_run_and_update_run_agree_with_the_per_packet_steps(size: int, esn: bool, top: int, low: int,
                                                                    count: int, seed: int, near: bool,
                                                                    delta: int) -> None:
    if not esn:
        top &= 0xFFFFFFFF
    if near:  # the low half of a sequence number close to the window's top, on either side
        low = (top + delta) & 0xFFFFFFFF
    base = window_at(size, top, esn, seed)
    untouched = (base.top, base.bitmap)
    first = base.fresh_run(low, count)
    assert (base.top, base.bitmap) == untouched
    inferred = base.infer(low)
    expected = inferred if count >= 1 and low + count - 1 <= 0xFFFFFFFF and inferred and inferred > top else None
    assert first == expected
    if first is None:
        return
    # Every packet of the run, taken per packet (infer, check, update), is accepted with the consecutive numbers.
    ref = copy_window(base)
    for i in range(count):
        seq = ref.infer(low + i)
        assert seq == first + i
        assert ref.check(seq)
        ref.update(seq)
    run = copy_window(base)
    run.update_run(first, count)
    same_window(run, ref)


def test_fresh_run_refuses_what_is_not_strictly_above_the_window() -> None:
    w = window_at(64, 100)
    assert w.fresh_run(101, 1) == 101 and w.fresh_run(101, 50) == 101
    assert w.fresh_run(100, 1) is None  # the top itself
    assert w.fresh_run(99, 5) is None  # starts inside the window, though it ends above
    assert w.fresh_run(60, 1) is None  # in the window and not yet seen: the per-packet check would take it
    assert w.fresh_run(1, 1) is None  # below the window
    assert w.fresh_run(101, 0) is None and w.fresh_run(101, -1) is None  # no packets
    assert ReplayWindow(64).fresh_run(0, 3) is None  # sequence number 0 is never valid (RFC 4303 §3.3.3)
    assert ReplayWindow(64).fresh_run(1, 3) == 1
    assert (w.top, w.bitmap) == (window_at(64, 100).top, window_at(64, 100).bitmap)  # fresh_run never changes it


@pytest.mark.parametrize("esn", [False, True])
def test_fresh_run_refuses_runs_crossing_2_to_the_32(esn: bool) -> None:
    top = (1 << 32) - 100
    w = window_at(64, top, esn)
    assert w.fresh_run(0xFFFFFFF0, 16) == 0xFFFFFFF0
    assert w.fresh_run(0xFFFFFFF0, 17) is None  # its last packet's low half wraps to 0
    assert w.fresh_run(0xFFFFFFFF, 1) == 0xFFFFFFFF
    assert w.fresh_run(0xFFFFFFFF, 2) is None


def test_fresh_run_with_esn_infers_the_high_bits_like_infer() -> None:
    # RFC 4303 Appendix A2: case A (window within one 2^32 subspace) and case B (window spanning two).
    w = window_at(64, (5 << 32) | 1000, esn=True)
    assert w.fresh_run(1001, 10) == (5 << 32) | 1001 == w.infer(1001)
    assert w.fresh_run(3, 10) == (6 << 32) | 3 == w.infer(3)  # far below top_low: the next subspace
    w = window_at(64, (5 << 32) | 10, esn=True)  # window spans (4 << 32) | ... and (5 << 32) | 0..10
    assert w.infer(0xFFFFFFF0) == (4 << 32) | 0xFFFFFFF0
    assert w.fresh_run(0xFFFFFFF0, 3) is None  # that is below top: not a fresh run
    assert w.fresh_run(11, 5) == (5 << 32) | 11 == w.infer(11)
    assert w.fresh_run(0, 1) is None  # (5 << 32) | 0 is inside the window
    w = window_at(64, 0xFFFFFFF0, esn=True)
    assert w.fresh_run(0, 4) == 1 << 32  # low half 0 is valid once the high half is not 0
    assert w.fresh_run(0xFFFFFFF5, 11) == 0xFFFFFFF5
    assert ReplayWindow(64, esn=True).fresh_run(0, 1) is None


# ---- the inbound batch paths ------------------------------------------------------------------------------------


def in_sa(dp: DataPlane, spi: int = SPI_AB["esp"]) -> SecurityAssociation:
    return next(sa for sa in dp._sad.all() if sa.direction == "in" and sa.spi == spi)


def out_sa(dp: DataPlane, spi: int = SPI_AB["esp"]) -> SecurityAssociation:
    return next(sa for sa in dp._sad.all() if sa.direction == "out" and sa.spi == spi)


def snapshot(dp: DataPlane) -> dict[str, object]:
    """Everything the packet paths may change: counters, every SA's counters and window, events, learned flows."""
    sas = sorted(
        ((sa.direction, sa.spi, sa.dst), (sa.seq, sa.packets, sa.bytes, sa.replay.top, sa.replay.bitmap,
                                          sa.replay_drops, sa.integrity_failures, sa.decrypt_failures, sa.pad_errors,
                                          sa.last_used, sa.soft_done, sa.expired))
        for sa in dp._sad.all()
    )
    return {
        "counters": dp.counters(),
        "sas": sas,
        "events": list(dp._events),
        "ident": dp._ident,
        "allowed": sorted(sorted(flows) for flows in dp._allowed_flows.values() if flows),
    }


def tcp(i: int, size: int = 1000, sport: int = 40000, flags: str = "A", tos: int = 0, df: bool = True,
        src: str = HOST_A, mf: bool = False) -> bytes:
    """An IPv4 TCP segment of ``size`` bytes (headers included) of the flow src:sport -> HOST_B:5201."""
    payload = bytes((i * 3 + k) & 0xFF for k in range(size - 40))
    frag = (2 if df else 0) | (1 if mf else 0)  # DF, MF
    return bytes(IP(src=src, dst=HOST_B, id=i & 0xFFFF, flags=frag, tos=tos)
                 / TCP(sport=sport, dport=5201, seq=(1000 + 1400 * i) & 0xFFFFFFFF, flags=flags) / Raw(payload))


def udp(i: int, size: int = 300) -> bytes:
    return bytes(IP(src=HOST_A, dst=HOST_B, id=i) / UDP(sport=5353, dport=53) / Raw(bytes((i + k) & 0xFF
                                                                                         for k in range(size - 28))))


def icmp(i: int, size: int = 84) -> bytes:
    return bytes(IP(src=HOST_A, dst=HOST_B, id=i) / ICMP(id=7, seq=i) / Raw(bytes(size - 28)))


def varied_sizes(n: int, seed: int = 0) -> list[int]:
    """Inner sizes covering every padding length (an odd step walks all residues mod 4)."""
    return [60 + (seed * 97 + i * 211) % 1340 for i in range(n)]


def esp_bytes(p: SaParams, seq: int, plain: bytes) -> bytes:
    """ESP (SPI to ICV) for a salted AEAD SA, built here with ``cryptography`` directly: RFC 4106 §3-5, RFC 7634."""
    key, salt = p.encr_key[:-4], p.encr_key[-4:]
    aead = ChaCha20Poly1305(key) if p.encr == "chacha20poly1305" else AESGCM(key)
    iv = seq.to_bytes(8, "big")
    header = p.spi.to_bytes(4, "big") + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    aad = p.spi.to_bytes(4, "big") + iv if p.esn else header
    return header + iv + aead.encrypt(salt + iv, plain, aad)


def esp_plain(inner: bytes, pad: int | None = None, nh: int = 4, padding: bytes | None = None,
              tfc: bytes = b"") -> bytes:
    """inner || TFC padding || padding || pad length || next header (RFC 4303 §2.4-2.7), default padding 1, 2, ..."""
    body = inner + tfc
    if pad is None:
        pad = -(len(body) + 2) % 4
    return body + (bytes(range(1, pad + 1)) if padding is None else padding) + bytes((pad, nh))


class Twins:
    """Gateway A (the sender) and two identical receivers B: ``ref`` per packet only, ``dut`` via the batch paths."""

    def __init__(self, encr: str = "aes128gcm16", esn: bool = False, encap: bool = False, window: int = 64,
                 lifetime: Lifetime | None = None, esn_start: int = (1 << 32) + 3) -> None:
        self.encap = encap
        self.a, _ = gateway_pair(encr=encr, esn=esn, encap=encap)
        self.ref = gateway_pair(encr=encr, esn=esn, encap=encap, window=window, lifetime=lifetime)[1]
        self.dut = gateway_pair(encr=encr, esn=esn, encap=encap, window=window, lifetime=lifetime)[1]
        self.dut._ident = self.ref._ident  # drawn from os.urandom; only B's own outbound packets use it
        self.params = out_sa(self.a).params
        self.ident = 0
        if esn:
            # Past 2^32 packets: the high half is in the AAD but not on the wire (RFC 4304).
            out_sa(self.a).seq = esn_start
            for b in (self.ref, self.dut):
                in_sa(b).replay.top = esn_start - 2
                in_sa(b).replay.bitmap = 1

    def seal(self, packets: list[bytes]) -> list[bytes]:
        """A's per-packet outbound: the wire form B receives (UDP payloads, or whole IPv4 packets)."""
        wire = []
        for p in packets:
            r = self.a.outbound(p, NOW)
            if self.encap:
                assert isinstance(r, UdpSend), r
                wire.append(r.payload)
            else:
                assert isinstance(r, IpSend), r
                wire.append(r.packet)
        return wire

    def wrap(self, esp: bytes) -> bytes:
        if self.encap:
            return esp
        self.ident += 1
        return build_header(GW_A_B, GW_B_B, 50, len(esp), self.ident) + esp

    def craft(self, plains: list[bytes], first: int | None = None, spi: int | None = None) -> list[bytes]:
        """ESP packets built here (not by A) with consecutive sequence numbers from just above B's window."""
        p = self.params if spi is None else dataclasses.replace(self.params, spi=spi)
        seq = in_sa(self.ref).replay.top + 1 if first is None else first
        return [self.wrap(esp_bytes(p, seq + i, plain)) for i, plain in enumerate(plains)]

    def top(self) -> int:
        return in_sa(self.ref).replay.top

    def warm(self, packets: list[bytes]) -> None:
        """First packets of each flow, per packet on both receivers: the SPD check the batch paths rely on."""
        wire = self.seal(packets)
        assert per_packet(self.ref, wire, self.encap) == packets
        assert per_packet(self.dut, wire, self.encap) == packets
        assert snapshot(self.dut) == snapshot(self.ref)


def per_packet(dp: DataPlane, wire: list[bytes], encap: bool, now: float = NOW) -> list[bytes | None]:
    if encap:
        return [dp.inbound_udp(w, GW_A, ENCAP[0], GW_B, ENCAP[1], now) for w in wire]
    return [dp.inbound_ip(w, now) for w in wire]


def check_trailer(rest: bytes) -> None:
    """What follows an inner packet of a batch result: its ESP trailer (no TFC padding: §2.4, §2.6)."""
    assert len(rest) >= 2 and rest[-1] == 4 and rest[-2] == len(rest) - 2
    assert rest[:-2] == bytes(range(1, len(rest) - 1))


def via_batch(dp: DataPlane, wire: list[bytes], encap: bool, now: float = NOW) -> list[bytes] | None:
    got = dp.inbound_udp_batch(wire, now) if encap else dp.inbound_ip_batch(wire, now)
    if got is None:
        return None
    plains, lengths = got
    assert len(plains) == len(lengths) == len(wire)
    for p, n in zip(plains, lengths, strict=True):
        check_trailer(p[n:])
    return [p[:n] for p, n in zip(plains, lengths, strict=True)]


def via_uniform(dp: DataPlane, wire: list[bytes], encap: bool, now: float = NOW) -> list[bytes] | None:
    assert encap, "the uniform path is for UDP GRO receives"
    data = b"".join(wire)
    got = dp.inbound_udp_uniform(data, len(wire[0]), now)
    if got is None:
        return None
    plains, stride, count, length = got
    assert count == len(wire) and len(plains) == stride * count
    out = []
    for i in range(count):
        check_trailer(plains[i * stride + length : (i + 1) * stride])
        out.append(plains[i * stride : i * stride + length])
    return out


Path = Callable[[DataPlane, list[bytes], bool, float], "list[bytes] | None"]
PATHS: dict[str, Path] = {"batch": via_batch, "uniform": via_uniform}
# (encapsulation, batch API): raw ESP only has the batch path.
ROUTES = [pytest.param(False, "batch", id="raw-batch"), pytest.param(True, "batch", id="udp-batch"),
          pytest.param(True, "uniform", id="udp-uniform")]


def same_as_per_packet(t: Twins, wire: list[bytes], path: str, now: float = NOW) -> list[bytes | None]:
    """The batch path takes the run and ends exactly where the per-packet path does."""
    ref = per_packet(t.ref, wire, t.encap, now)
    got = PATHS[path](t.dut, wire, t.encap, now)
    assert got is not None, ("batch path refused", t.dut.counters())
    assert got == ref
    assert snapshot(t.dut) == snapshot(t.ref)
    return ref


def refused(t: Twins, wire: list[bytes], path: str, now: float = NOW) -> list[bytes | None]:
    """The batch path refuses the run with nothing changed; the per-packet path then does what the reference did."""
    before = snapshot(t.dut)
    assert PATHS[path](t.dut, wire, t.encap, now) is None
    assert snapshot(t.dut) == before
    ref = per_packet(t.ref, wire, t.encap, now)
    assert per_packet(t.dut, wire, t.encap, now) == ref
    assert snapshot(t.dut) == snapshot(t.ref)
    return ref


def new_drops(t: Twins, before: dict[str, int]) -> dict[str, int]:
    drops = t.ref.counters()["drops"]
    assert isinstance(drops, dict)
    return {k: v - before.get(k, 0) for k, v in drops.items() if v != before.get(k, 0)}


def drops_now(t: Twins) -> dict[str, int]:
    drops = t.ref.counters()["drops"]
    assert isinstance(drops, dict)
    return dict(drops)


@pytest.mark.parametrize("n", [2, 7, 50])
@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encr", ALL_SALTED)
def test_batch_of_one_tcp_flow_equals_per_packet(encr: str, esn: bool, encap: bool, n: int) -> None:
    t = Twins(encr, esn, encap)
    t.warm([tcp(0)])
    for run in range(3):  # consecutive runs: the window slides on from where the batch left it
        packets = [tcp(1 + run * n + i, size) for i, size in enumerate(varied_sizes(n, run))]
        assert same_as_per_packet(t, t.seal(packets), "batch", now=2.0 + run) == packets
    assert in_sa(t.dut).packets == 1 + 3 * n
    assert t.dut.counters()["dropped"] == 0


@pytest.mark.parametrize("n", [2, 16, 45])
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encr", ALL_SALTED)
def test_uniform_run_of_one_tcp_flow_equals_per_packet(encr: str, esn: bool, n: int) -> None:
    t = Twins(encr, esn, encap=True)
    t.warm([tcp(0)])
    for run, size in enumerate((1400, 1001, 538)):  # each padding length
        packets = [tcp(1 + run * n + i, size) for i in range(n)]
        assert same_as_per_packet(t, t.seal(packets), "uniform", now=2.0 + run) == packets
    assert in_sa(t.dut).packets == 1 + 3 * n


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_batch_and_per_packet_runs_mix(encap: bool, path: str) -> None:
    t = Twins("aes256gcm16", encap=encap)
    t.warm([tcp(0)])
    i = 1
    for count in (2, 1, 5, 3, 1, 40, 2):
        packets = [tcp(i + k) for k in range(count)]
        i += count
        wire = t.seal(packets)
        if count == 1:
            assert per_packet(t.ref, wire, encap) == per_packet(t.dut, wire, encap) == packets
            assert snapshot(t.dut) == snapshot(t.ref)
        else:
            assert same_as_per_packet(t, wire, path) == packets


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_mixed_flows_in_one_run(encap: bool, path: str) -> None:
    t = Twins("chacha20poly1305", encap=encap)
    size = 300 if path == "uniform" else None  # the uniform path needs equal sizes; the others get varied ones
    flows: list[Callable[[int], bytes]] = [
        lambda i: tcp(i, size or 1000 + i % 4, sport=40000),
        lambda i: tcp(i, size or 640 + i % 4, sport=40001),
        lambda i: udp(i, size or 200 + i % 4),
        lambda i: icmp(i, size or 84 + i % 4),
    ]
    t.warm([f(0) for f in flows])
    for run in range(3):
        packets = [flows[k % 4](1 + run * 100 + k) for k in range(4 * (run + 1))]
        assert same_as_per_packet(t, t.seal(packets), path, now=2.0 + run) == packets
    # Two TCP flows interleaved, nothing else.
    packets = [flows[k % 2](500 + k) for k in range(12)]
    assert same_as_per_packet(t, t.seal(packets), path) == packets


@pytest.mark.parametrize("window", [1, 2, 32, 4096])
@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_window_sizes(encap: bool, path: str, window: int) -> None:
    t = Twins(encap=encap, window=window)
    t.warm([tcp(0)])
    wire = t.seal([tcp(i) for i in range(1, 40)])
    # Leave gaps per packet first, so that the batch must shift a window with holes in it.
    for k in (3, 1, 7):
        assert per_packet(t.ref, [wire[k]], encap) == per_packet(t.dut, [wire[k]], encap)
    assert same_as_per_packet(t, wire[8:30], path) == [tcp(i) for i in range(9, 31)]
    assert same_as_per_packet(t, wire[30:], path) == [tcp(i) for i in range(31, 40)]


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_crafted_runs_with_longer_padding_are_taken(encap: bool, path: str) -> None:
    # Built by our own encoder (not A) and with more padding than needed (RFC 4303 §2.4 allows up to 255 bytes).
    t = Twins(encap=encap)
    t.warm([tcp(0)])
    inners = [tcp(i, 1000) for i in range(1, 6)]
    for pads in ((2, 2, 2, 2, 2), (6, 6, 6, 6, 6), (254, 254, 254, 254, 254), (2, 6, 10, 254, 2)):
        if path == "uniform" and len(set(pads)) > 1:
            continue
        wire = t.craft([esp_plain(p, pad) for p, pad in zip(inners, pads, strict=True)])
        assert same_as_per_packet(t, wire, path) == inners


# -- refusals: None, nothing changed, then the per-packet path --


@pytest.mark.parametrize("where", ["spi", "seq", "iv", "body", "tag"])
@pytest.mark.parametrize("victim", [0, 3, 5])
@pytest.mark.parametrize(("encap", "path"), ROUTES)
@pytest.mark.parametrize("encr", ["aes128gcm16", "chacha20poly1305"])
def test_one_tampered_byte_refuses_the_run(encr: str, encap: bool, path: str, victim: int, where: str) -> None:
    t = Twins(encr, encap=encap)
    t.warm([tcp(0)])
    packets = [tcp(i) for i in range(1, 7)]
    wire = t.seal(packets)
    forged = bytearray(wire[victim])
    base = 0 if encap else 20
    offset = {"spi": 1, "seq": 4, "iv": 12, "body": 100, "tag": len(forged) - 1 - base}[where]
    forged[base + offset] ^= 0x01
    wire[victim] = bytes(forged)
    before = drops_now(t)
    got = refused(t, wire, path)
    assert got == [None if k == victim else p for k, p in enumerate(packets)]
    assert new_drops(t, before) == {"unknown_spi" if where == "spi" else "integrity": 1}
    # The forgery moved nothing: later runs batch again.
    assert same_as_per_packet(t, t.seal([tcp(7), tcp(8)]), path) == [tcp(7), tcp(8)]


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_replays_refuse_the_run(encap: bool, path: str) -> None:
    t = Twins(encap=encap)
    warm = [tcp(0), tcp(1), tcp(2)]
    warm_wire = t.seal(warm)
    assert per_packet(t.ref, warm_wire, encap) == per_packet(t.dut, warm_wire, encap) == warm
    wire = t.seal([tcp(i) for i in range(3, 12)])
    cases = [
        (warm_wire, [None] * 3),  # a whole run replayed
        ([warm_wire[2], wire[0], wire[1]], [None, tcp(3), tcp(4)]),  # consecutive, but the first is the window's top
        ([wire[2], wire[3], wire[3], wire[4]], [tcp(5), tcp(6), None, tcp(7)]),  # a duplicate inside the run
    ]
    for run, delivered in cases:
        before = drops_now(t)
        assert refused(t, run, path) == delivered
        assert new_drops(t, before) == {"replay": delivered.count(None)}
    assert same_as_per_packet(t, wire[5:8], path) == [tcp(i) for i in range(8, 11)]
    before = drops_now(t)
    assert refused(t, wire[5:8], path) == [None] * 3  # the same run again
    assert new_drops(t, before) == {"replay": 3}
    assert t.ref.counters()["replay_drops"] == 8


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_gaps_and_reordering_refuse_the_run(encap: bool, path: str) -> None:
    t = Twins(encap=encap)
    t.warm([tcp(0)])
    packets = [tcp(i) for i in range(1, 13)]
    wire = t.seal(packets)
    order = [[1, 0, 2], [3, 5, 6], [4, 8, 7], [9, 10, 11]]  # reordered, a gap, both, then in order again
    for run in order[:3]:
        got = refused(t, [wire[k] for k in run], path)
        assert got == [packets[k] for k in run]  # the per-packet path takes them all: they are in the window
    assert same_as_per_packet(t, [wire[k] for k in order[3]], path) == [packets[k] for k in order[3]]
    assert t.dut.counters()["dropped"] == 0


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_another_spi_in_the_run_refuses_it(encap: bool, path: str) -> None:
    t = Twins(encap=encap)
    t.warm([tcp(0)])
    old = t.seal([tcp(i) for i in range(1, 5)])
    # A rekey: a second SA (same policy) on both sides; A now sends on the new one.
    udp_encap = ENCAP if encap else None
    rekeyed = sa_params("esp", "tunnel", 0xC001, GW_A, GW_B, "aes128gcm16", None, encap=udp_encap)
    t.a.add_sa(rekeyed, "out", 0.0)
    for b in (t.ref, t.dut):
        b.add_sa(rekeyed, "in", 0.0)
    new = t.seal([tcp(i) for i in range(5, 9)])
    assert new[0][(0 if encap else 20):][:4] == (0xC001).to_bytes(4, "big")
    assert refused(t, [*old[:2], new[0]], path) == [tcp(1), tcp(2), tcp(5)]
    assert refused(t, [new[1], old[2], new[2]], path) == [tcp(6), tcp(3), tcp(7)]
    # An SPI nobody knows, in a run of good ones: crafted with the old SA's key and the next sequence number, so that
    # only its SPI is wrong (an opener that did not look at each packet's SPI would verify its tag).
    before = drops_now(t)
    stray = t.craft([esp_plain(tcp(50))], first=t.top() + 2, spi=0xDEAD)[0]
    assert refused(t, [old[3], stray], path) == [tcp(4), None]
    assert new_drops(t, before) == {"unknown_spi": 1}
    # Each SA alone batches again (the new one's flow was checked per packet above).
    assert same_as_per_packet(t, t.seal([tcp(i) for i in range(9, 12)]), path) == [tcp(i) for i in range(9, 12)]


def bad_plains(kind: str, inner: bytes) -> tuple[bytes, bytes | None, dict[str, int]]:
    """(ESP plaintext of one defective packet, the size of ``esp_plain(inner)``; what the per-packet path delivers
    from it; the drop it counts)."""
    good = esp_plain(inner)
    pad = good[-2]
    assert pad > 0
    if kind == "padding_content":
        return good[: -2 - pad] + bytes(pad) + good[-2:], None, {"bad_padding": 1}  # zeros, not 1, 2, ... (§2.4)
    if kind == "pad_length":
        return good[:-2] + bytes((255, 4)), None, {"bad_padding": 1}  # a pad length the bytes before do not match
    if kind == "dummy":
        return good[:-1] + bytes((59,)), None, {"dummy": 1}  # RFC 4303 §2.6: a dummy packet
    if kind == "next_header":
        return good[:-1] + bytes((41,)), None, {"not_tunnel": 1}  # IPv6 in an IPv4 tunnel SA
    if kind == "tfc":
        # RFC 4303 §2.7: TFC padding after the inner packet; the per-packet path delivers the packet trimmed.
        short = IP(inner)
        short[Raw].load = short[Raw].load[:-8]
        short.len = short.chksum = None
        short[TCP].chksum = None
        trimmed = bytes(short)
        return esp_plain(trimmed, tfc=bytes(8)), trimmed, {}
    if kind == "ip_options":
        # An inner header with options: not the batch paths' layout, but a valid packet of the same flow.
        with_opt = bytes(IP(src=HOST_A, dst=HOST_B, id=1, flags="DF", options=[b"\x01\x01\x01\x01"])
                         / TCP(sport=40000, dport=5201, seq=77, flags="A") / Raw(bytes(len(inner) - 44)))
        assert len(with_opt) == len(inner) and with_opt[0] == 0x46
        return esp_plain(with_opt), with_opt, {}
    if kind == "long_total":
        # The inner total length claims more than the plaintext holds.
        data = bytearray(inner)
        data[2:4] = (len(inner) + 1).to_bytes(2, "big")
        return esp_plain(bytes(data)), None, {"bad_inner": 1}
    raise AssertionError(kind)


BAD_KINDS = ["padding_content", "pad_length", "dummy", "next_header", "tfc", "ip_options", "long_total"]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("victim", [0, 2, 4])
@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_a_bad_trailer_or_inner_header_refuses_the_run(encap: bool, path: str, victim: int, kind: str) -> None:
    t = Twins("aes256gcm16", esn=True, encap=encap)
    t.warm([tcp(0)])
    inners = [tcp(i, 1000) for i in range(1, 6)]
    plains = [esp_plain(p) for p in inners]
    plains[victim], delivered, drops = bad_plains(kind, inners[victim])
    assert len(plains[victim]) == len(plains[0])  # the same size, so that the uniform path sees it too
    before = drops_now(t)
    got = refused(t, t.craft(plains), path)
    assert got == [delivered if k == victim else p for k, p in enumerate(inners)]
    assert new_drops(t, before) == drops
    if kind == "padding_content" or kind == "pad_length":
        assert in_sa(t.ref).pad_errors == 1


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_a_new_flow_in_the_run_refuses_it(encap: bool, path: str) -> None:
    t = Twins(encap=encap)
    t.warm([tcp(0)])
    wire = t.seal([tcp(1), tcp(2), tcp(3, sport=40001), tcp(4)])
    assert refused(t, wire, path) == [tcp(1), tcp(2), tcp(3, sport=40001), tcp(4)]
    # Now checked against the SPD per packet, the flow is known: the batch path takes it.
    wire = t.seal([tcp(5), tcp(6, sport=40001), tcp(7)])
    assert same_as_per_packet(t, wire, path) == [tcp(5), tcp(6, sport=40001), tcp(7)]
    # A flow no policy of this SA admits (A would never send it: crafted with A's keys).
    before = drops_now(t)
    outsider = tcp(8, src="10.9.0.1")
    assert refused(t, t.craft([esp_plain(tcp(8)), esp_plain(outsider), esp_plain(tcp(9))]), path) == \
        [tcp(8), None, tcp(9)]
    assert new_drops(t, before) == {"policy_mismatch": 1}


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_a_flow_of_another_policy_refuses_the_run(encap: bool, path: str) -> None:
    # B admits port 5201 through reqid 1 (this SA) and port 22 through reqid 2: a port 22 flow on this SA is refused.
    t = Twins(encap=encap)
    for b in (t.ref, t.dut):
        b.set_policies([Policy("b-5201", NET_B, NET_A, proto=6, local_ports=(5201, 5201)),
                        Policy("b-22", NET_B, NET_A, proto=6, local_ports=(22, 22), reqid=2)])
    t.warm([tcp(0)])
    to22 = bytes(IP(src=HOST_A, dst=HOST_B) / TCP(sport=40000, dport=22, flags="A") / Raw(bytes(960)))
    before = drops_now(t)
    assert refused(t, t.craft([esp_plain(tcp(1)), esp_plain(to22), esp_plain(tcp(2))]), path) == \
        [tcp(1), None, tcp(2)]
    assert new_drops(t, before) == {"policy_mismatch": 1}


def last_fragment(i: int, size: int = 1000) -> bytes:
    """A non-initial, last fragment (offset, no MF) from host A to host B: no ports in it (RFC 4301 §4.4.1.1)."""
    return bytes(IP(src=HOST_A, dst=HOST_B, id=i, proto=6, frag=185) / Raw(bytes(size - 20)))


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_an_inner_fragment_refuses_the_run(encap: bool, path: str) -> None:
    t = Twins(encap=encap)
    t.warm([tcp(0)])
    fragment = tcp(2, mf=True)  # a first fragment of the known flow: A seals it on its general path
    wire = t.seal([tcp(1), fragment, tcp(3)])
    got = refused(t, wire, path)
    assert got == [tcp(1), fragment, tcp(3)]  # the general path takes it (its ports match the policy)
    assert same_as_per_packet(t, t.seal([tcp(4), tcp(5)]), path) == [tcp(4), tcp(5)]
    # A last fragment (offset set, MF clear), alone and in a run of its kind.
    assert refused(t, t.seal([tcp(6), last_fragment(6), tcp(7)]), path) == [tcp(6), last_fragment(6), tcp(7)]
    assert refused(t, t.seal([last_fragment(8), last_fragment(9)]), path) == [last_fragment(8), last_fragment(9)]
    assert t.ref.counters()["dropped"] == 0


@pytest.mark.parametrize("size", [20, 21, 23])
@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_inner_packets_too_short_for_a_flow_key_refuse_the_run(encap: bool, path: str, size: int) -> None:
    # Valid IPv4 packets (no payload, or a few bytes of one) that the per-packet path delivers; the batch paths
    # read 24 bytes of each for its flow key, so they must leave them alone.
    t = Twins(encap=encap)
    tiny = [bytes(IP(src=HOST_A, dst=HOST_B, id=i, proto=1) / Raw(bytes(size - 20))) for i in range(4)]
    t.warm([tcp(0), tiny[0]])
    assert refused(t, t.craft([esp_plain(p) for p in tiny[1:]]), path) == tiny[1:]
    if path == "batch":
        assert refused(t, t.craft([esp_plain(tcp(1)), esp_plain(tiny[1])]), path) == [tcp(1), tiny[1]]
    assert t.ref.counters()["dropped"] == 0


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_fragments_that_look_like_a_known_flow_are_refused(encap: bool, path: str) -> None:
    # B admits TCP to port 5201 only. A non-initial fragment carries no ports (RFC 4301 §4.4.1.1: OPAQUE), so the
    # per-packet path refuses it; here its payload starts with the bytes of the known flow's ports, so a flow key
    # read from bytes 20..24 would find it allowed: the batch paths must not take fragments at all.
    t = Twins(encap=encap)
    for b in (t.ref, t.dut):
        b.set_policies([Policy("b-5201", NET_B, NET_A, proto=6, local_ports=(5201, 5201))])
    t.warm([tcp(0)])

    def fake(i: int, mf: bool = False) -> bytes:
        body = (40000).to_bytes(2, "big") + (5201).to_bytes(2, "big") + bytes(976)
        return bytes(IP(src=HOST_A, dst=HOST_B, id=i, proto=6, frag=185, flags="MF" if mf else 0) / Raw(body))

    before = drops_now(t)
    assert refused(t, t.craft([esp_plain(fake(1)), esp_plain(fake(2, mf=True))]), path) == [None, None]
    assert refused(t, t.craft([esp_plain(tcp(3)), esp_plain(fake(4)), esp_plain(tcp(5))]), path) == \
        [tcp(3), None, tcp(5)]
    assert new_drops(t, before) == {"policy_mismatch": 3}


@pytest.mark.parametrize("size", [20, 21, 22, 23])
@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_packets_too_short_for_ports_are_refused(encap: bool, path: str, size: int) -> None:
    # A TCP packet of under 24 bytes has no ports (OPAQUE): B's port-restricted policy refuses it per packet. Its ESP
    # trailer (padding 1, 2, ..., pad length, next header 4) follows it where the rest of the ports would be; B
    # admits exactly the flow those bytes spell, so a flow key taken from 24 bytes would find it allowed.
    t = Twins(encap=encap)
    tiny = [bytes(IP(src=HOST_A, dst=HOST_B, id=i, proto=6) / Raw(bytes((1, 2, 2))[: size - 20])) for i in range(3)]
    plains = [esp_plain(p) for p in tiny]
    sport, dport = int.from_bytes(plains[0][20:22], "big"), int.from_bytes(plains[0][22:24], "big")
    for b in (t.ref, t.dut):
        b.set_policies([Policy("b-one-port", NET_B, NET_A, proto=6, local_ports=(dport, dport))])
    known = bytes(IP(src=HOST_A, dst=HOST_B) / TCP(sport=sport, dport=dport, flags="A") / Raw(bytes(100)))
    t.warm([known])
    assert plains[0][9:10] + plains[0][12:24] == known[9:10] + known[12:24]
    before = drops_now(t)
    assert refused(t, t.craft(plains), path) == [None] * 3
    assert new_drops(t, before) == {"policy_mismatch": 3}


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_a_truncated_packet_refuses_the_run(encap: bool, path: str) -> None:
    t = Twins(encap=encap)
    t.warm([tcp(0)])
    wire = t.seal([tcp(1), tcp(2)])
    short = t.craft([b""])[0]  # SPI, sequence number, IV and a tag over nothing: no trailer at all
    before = drops_now(t)
    if path == "uniform":
        runs = [[short, short]]
    else:
        runs = [[wire[0], short], [short, wire[1]]]
    for run in runs:
        refused(t, run, path)
    assert new_drops(t, before) == {"truncated": sum(run.count(short) for run in runs)}
    # Authentic, but the plaintext is a trailer and nothing else: no inner packet.
    empty = t.craft([esp_plain(b""), esp_plain(b"")])
    before = drops_now(t)
    refused(t, empty, path)
    assert new_drops(t, before) == {"bad_inner": 2}


@pytest.mark.parametrize("limit", ["soft_packets", "hard_packets", "soft_bytes", "hard_bytes"])
@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_a_lifetime_limit_within_the_run_refuses_it(encap: bool, path: str, limit: str) -> None:
    warm, n, size = 3, 6, 1000
    in_run = warm + n if "packets" in limit else (warm + n) * size  # reached by the run's last packet
    # One above: reached by no packet of the run, so the run batches.
    t = Twins(encap=encap, lifetime=Lifetime(**{limit: in_run + (1 if "packets" in limit else size)}))
    t.warm([tcp(i, size) for i in range(warm)])
    assert same_as_per_packet(t, t.seal([tcp(i, size) for i in range(warm, warm + n)]), path)
    assert t.ref.poll_events() == t.dut.poll_events() == []
    # Reached by the last packet: refused, and the per-packet path fires the event.
    t = Twins(encap=encap, lifetime=Lifetime(**{limit: in_run}))
    t.warm([tcp(i, size) for i in range(warm)])
    got = refused(t, t.seal([tcp(i, size) for i in range(warm, warm + n)]), path)
    events = t.dut.poll_events()
    assert events == t.ref.poll_events()
    if limit.startswith("soft"):
        assert got == [tcp(i, size) for i in range(warm, warm + n)]
        assert [type(e) for e in events] == [SoftExpired]
    else:
        assert got == [tcp(i, size) for i in range(warm, warm + n - 1)] + [None]
        assert [type(e) for e in events] == [HardExpired]
        assert drops_now(t) == {"sa_expired": 1}


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_an_expired_sa_refuses_the_run(encap: bool, path: str) -> None:
    t = Twins(encap=encap, lifetime=Lifetime(soft_seconds=5, hard_seconds=10))
    t.warm([tcp(0)])
    wire = t.seal([tcp(i) for i in range(1, 5)])
    # Past the soft deadline: refused; per packet the first fires SoftExpired and all are taken.
    assert refused(t, wire[:2], path, now=6.0) == [tcp(1), tcp(2)]
    assert [type(e) for e in t.dut.poll_events()] == [type(e) for e in t.ref.poll_events()] == [SoftExpired]
    # Past the hard deadline, before the timer ran: refused; per packet the SA expires and is removed.
    assert refused(t, wire[2:], path, now=10.0) == [None, None]
    assert [type(e) for e in t.dut.poll_events()] == [type(e) for e in t.ref.poll_events()] == [HardExpired]
    assert drops_now(t) == {"sa_expired": 1, "unknown_spi": 1}
    assert PATHS[path](t.dut, wire[2:], encap, 11.0) is None  # the SA is gone
    assert snapshot(t.dut) == snapshot(t.ref)


@pytest.mark.parametrize(("encap", "path"), ROUTES)
def test_an_sa_removed_by_the_timer_refuses_the_run(encap: bool, path: str) -> None:
    t = Twins(encap=encap, lifetime=Lifetime(hard_seconds=10))
    t.warm([tcp(0)])
    wire = t.seal([tcp(i) for i in range(1, 4)])
    assert same_as_per_packet(t, wire[:2], path) == [tcp(1), tcp(2)]
    for b in (t.ref, t.dut):
        b.handle_timer(10.0)
    assert [type(e) for e in t.dut.poll_events()] == [type(e) for e in t.ref.poll_events()] == [HardExpired] * 2
    assert refused(t, [wire[2], wire[2]], path, now=10.5) == [None, None]
    assert drops_now(t) == {"unknown_spi": 2}


@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
def test_an_esn_run_crossing_the_low_half_goes_per_packet(encap: bool) -> None:
    t = Twins("aes128gcm16", esn=True, encap=encap, esn_start=(1 << 32) - 4)
    t.warm([tcp(0)])
    wire = t.seal([tcp(i) for i in range(1, 8)])  # sequence numbers 2^32 - 2 .. 2^32 + 4
    assert refused(t, wire, "batch") == [tcp(i) for i in range(1, 8)]
    assert t.top() == (1 << 32) + 4
    if encap:
        t2 = Twins("aes128gcm16", esn=True, encap=encap, esn_start=(1 << 32) - 4)
        t2.warm([tcp(0)])
        assert refused(t2, t2.seal([tcp(i) for i in range(1, 8)]), "uniform") == [tcp(i) for i in range(1, 8)]
    # Right after the boundary, runs batch again.
    assert same_as_per_packet(t, t.seal([tcp(i) for i in range(8, 12)]), "batch") == [tcp(i) for i in range(8, 12)]


def test_uniform_path_refuses_a_buffer_that_is_not_whole_datagrams() -> None:
    t = Twins(encap=True)
    t.warm([tcp(0)])
    wire = t.seal([tcp(1), tcp(2), tcp(3, 900)])  # the last datagram is shorter (UDP GRO allows that)
    before = snapshot(t.dut)
    data = b"".join(wire)
    assert t.dut.inbound_udp_uniform(data, len(wire[0]), NOW) is None
    assert t.dut.inbound_udp_uniform(data[: 2 * len(wire[0])], len(wire[0]) - 4, NOW) is None  # cut at a wrong size
    assert snapshot(t.dut) == before
    assert same_as_per_packet(t, wire, "batch") == [tcp(1), tcp(2), tcp(3, 900)]


def test_non_esp_datagrams_are_refused_by_the_udp_batch_paths() -> None:
    t = Twins(encap=True)
    t.warm([tcp(0)])
    ike = b"\0\0\0\0" + bytes(60)
    before = snapshot(t.dut)
    assert t.dut.inbound_udp_batch([ike, ike], NOW) is None
    assert t.dut.inbound_udp_uniform(ike + ike, len(ike), NOW) is None
    assert t.dut.inbound_udp_batch([b"\xff", b"\xff"], NOW) is None  # keepalives
    good = t.seal([tcp(1)])[0]
    assert t.dut.inbound_udp_batch([good, b"\xff"], NOW) is None
    assert t.dut.inbound_udp_batch([good, ike], NOW) is None
    assert snapshot(t.dut) == before


def test_raw_batch_refuses_other_outer_headers() -> None:
    t = Twins(encap=False)
    t.warm([tcp(0)])
    wire = t.seal([tcp(1), tcp(2)])
    before = snapshot(t.dut)
    second = bytearray(wire[1])
    variants = []
    for index, value in ((6, 0x20), (7, 0x01), (9, 51), (0, 0x46)):  # MF, an offset, AH, options
        v = bytearray(second)
        v[index] = value if index != 6 else v[index] | value
        variants.append(bytes(v))
    longer = second + b"junk"  # the total length no longer matches
    other_dst = bytearray(second)
    other_dst[19] ^= 1
    for v in (*variants, bytes(longer), bytes(other_dst)):
        assert t.dut.inbound_ip_batch([wire[0], v], NOW) is None
    assert snapshot(t.dut) == before
    assert same_as_per_packet(t, wire, "batch") == [tcp(1), tcp(2)]


# ---- the outbound batch path ------------------------------------------------------------------------------------


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes  # deterministic on purpose: two twins must draw the same bytes


def gateway_a(encr: str = "aes128gcm16", esn: bool = False, encap: bool = False, lifetime: Lifetime | None = None,
              second_sa: bool = False) -> DataPlane:
    """Gateway A as in lab.gateway_pair, but with a deterministic rng (the outer IP identification starts from it).
    ``second_sa``: also a policy for 10.3.0.0/16 served by its own SA (reqid 2)."""
    pols = policies("a", "tunnel", ("esp",))
    if second_sa:
        pols.append(Policy("a-to-c", NET_A, "10.3.0.0/16", "protect", reqid=2, protocols=("esp",)))
    a = DataPlane(pols, rng=seeded_rng(7))
    udp_encap = ENCAP if encap else None
    a.add_sa(sa_params("esp", "tunnel", SPI_AB["esp"], GW_A, GW_B, encr, None, esn, udp_encap, 64, lifetime), "out",
             0.0)
    a.add_sa(sa_params("esp", "tunnel", SPI_BA["esp"], GW_B, GW_A, encr, None, esn, udp_encap, 64, lifetime), "in",
             0.0)
    if second_sa:
        p = sa_params("esp", "tunnel", 0xA002, GW_A, GW_B, encr, None, esn, udp_encap, 64, lifetime)
        a.add_sa(dataclasses.replace(p, reqid=2), "out", 0.0)
    return a


def sealed(results: list[object], encap: bool) -> tuple[list[bytes], tuple[str, int] | None]:
    """Per-packet outbound results as outbound_batch would give them."""
    if encap:
        assert all(isinstance(r, UdpSend) for r in results), results
        dests = {(r.dst, r.dport, r.sport) for r in results if isinstance(r, UdpSend)}
        assert dests == {(GW_B, ENCAP[1], ENCAP[0])}
        return [r.payload for r in results if isinstance(r, UdpSend)], (GW_B, ENCAP[1])
    assert all(isinstance(r, IpSend) for r in results), results
    return [r.packet for r in results if isinstance(r, IpSend)], None


class OutTwins:
    def __init__(self, **kw: object) -> None:
        self.encap = bool(kw.get("encap"))
        self.ref = gateway_a(**kw)  # type: ignore[arg-type]
        self.dut = gateway_a(**kw)  # type: ignore[arg-type]
        assert snapshot(self.ref) == snapshot(self.dut)

    def per_packet(self, packets: list[bytes], now: float = NOW) -> list[object]:
        ref = [self.ref.outbound(p, now) for p in packets]
        assert [self.dut.outbound(p, now) for p in packets] == ref
        assert snapshot(self.dut) == snapshot(self.ref)
        return ref

    def same(self, packets: list[bytes], now: float = NOW) -> list[bytes]:
        got = self.dut.outbound_batch(packets, now)
        assert got is not None, ("batch path refused", self.dut.counters())
        expected = sealed([self.ref.outbound(p, now) for p in packets], self.encap)
        assert got == expected
        assert snapshot(self.dut) == snapshot(self.ref)
        return got[0]

    def refused(self, packets: list[bytes], now: float = NOW) -> list[object]:
        before = snapshot(self.dut)
        assert self.dut.outbound_batch(packets, now) is None
        assert snapshot(self.dut) == before
        return self.per_packet(packets, now)


def flow(port: int, dst: str = HOST_B) -> Callable[[int, int], bytes]:
    return lambda i, size=1000: bytes(IP(src=HOST_A, dst=dst, id=i, flags="DF")
                                      / TCP(sport=port, dport=5201, seq=i * 1000) / Raw(bytes(size - 40)))


@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encr", ALL_SALTED)
def test_outbound_batch_equals_per_packet(encr: str, esn: bool, encap: bool) -> None:
    t = OutTwins(encr=encr, esn=esn, encap=encap)
    if esn:
        for a in (t.ref, t.dut):
            out_sa(a).seq = (1 << 32) - 20  # runs below cross the low half's wrap: the sealer packs each number
    f1, f2 = flow(40000), flow(40001)
    u = lambda i, size=300: udp(i, size)  # noqa: E731
    t.per_packet([f1(0), f2(0), u(0)])  # cache the flows
    i = 1
    for count in (2, 7, 1, 50, 3, 1, 13):  # batch and per-packet runs mixed: sequence numbers continue across both
        sizes = varied_sizes(count, i)
        packets = [(f1, f2, u)[k % 3](i + k, sizes[k] if k % 3 != 2 else 60 + sizes[k] % 400) for k in range(count)]
        i += count
        if count == 1:
            t.per_packet(packets)
        else:
            t.same(packets)
    assert out_sa(t.dut).seq == out_sa(t.ref).seq == (((1 << 32) - 20) if esn else 0) + i + 2


def test_outbound_batch_raw_outer_headers() -> None:
    t = OutTwins(encap=False)
    f = flow(40000)
    t.per_packet([f(0)])
    for a in (t.ref, t.dut):
        a._ident = 0xFFFD  # the identification wraps inside the run
    packets = []
    for i in range(1, 9):
        p = IP(f(i))
        p.tos = (0x10, 0xB8, 0x00, 0x03)[i % 4]
        p.flags = "DF" if i % 3 else 0
        p.chksum = None
        packets.append(bytes(p))
    out = t.same(packets)
    for k, (inner, outer) in enumerate(zip(packets, out, strict=True)):
        h = IP(outer)
        assert (h.src, h.dst, h.proto, h.len, h.ihl) == (GW_A, GW_B, 50, len(outer), 5)
        assert h.tos == inner[1]  # copied (RFC 4301 §5.1.2.1)
        assert bool(h.flags.DF) == bool(inner[6] & 0x40)
        assert h.id == (0xFFFD + k + 1) & 0xFFFF
        assert internet_checksum(outer[:20]) == 0
    assert t.dut._ident == (0xFFFD + 8) & 0xFFFF


@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
def test_outbound_batch_refusals_change_nothing(encap: bool) -> None:
    t = OutTwins(encap=encap, second_sa=True)
    f1, f2, other_sa = flow(40000), flow(40001), flow(40000, dst="10.3.0.9")
    t.per_packet([f1(0), other_sa(0)])
    t.refused([f1(1), f2(1), f1(2)])  # f2 is not cached yet
    t.same([f1(3), f2(2), f1(4)])  # now it is
    t.refused([f1(5), other_sa(1)])  # two SAs in one run
    t.same([other_sa(2), other_sa(3)])  # each SA alone: fine
    ping = icmp(1)
    t.per_packet([ping])
    t.refused([f1(6), ping])  # ICMP: no ports, not a batch flow
    fragment = bytes(IP(src=HOST_A, dst=HOST_B, flags="MF") / TCP(sport=40000, dport=5201) / Raw(bytes(500)))
    t.refused([f1(7), fragment])
    options = bytes(IP(src=HOST_A, dst=HOST_B, options=[b"\x01\x01\x01\x01"]) / TCP(sport=40000, dport=5201))
    t.refused([f1(8), options])
    assert t.ref.counters()["dropped"] == 0
    assert out_sa(t.dut).seq == 15 and out_sa(t.dut, 0xA002).seq == 4


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
def test_outbound_batch_refuses_near_sequence_exhaustion(esn: bool) -> None:
    t = OutTwins(esn=esn)
    f = flow(40000)
    t.per_packet([f(0)])
    seq_max = out_sa(t.ref).seq_max
    for a in (t.ref, t.dut):
        out_sa(a).seq = seq_max - 8
    t.same([f(i) for i in range(1, 6)])  # up to seq_max - 3: fine
    got = t.refused([f(i) for i in range(6, 11)])  # would need seq_max + 2
    assert [type(r) for r in got] == [IpSend] * 3 + [Dropped] * 2
    assert got[3] == Dropped("seq_exhausted")
    events = t.dut.poll_events()
    assert events == t.ref.poll_events() and [type(e) for e in events] == [SeqExhausted]
    t.refused([f(11), f(12)])  # exhausted: never batched


@pytest.mark.parametrize("limit", ["soft_packets", "hard_packets", "soft_bytes", "hard_bytes"])
def test_outbound_batch_refuses_when_a_limit_is_due(limit: str) -> None:
    warm, n, size = 2, 5, 1000
    in_run = warm + n if "packets" in limit else (warm + n) * size
    f = flow(40000)
    t = OutTwins(lifetime=Lifetime(**{limit: in_run + (1 if "packets" in limit else size)}))
    t.per_packet([f(i, size) for i in range(warm)])
    t.same([f(i, size) for i in range(warm, warm + n)])
    assert t.ref.poll_events() == t.dut.poll_events() == []
    t = OutTwins(lifetime=Lifetime(**{limit: in_run}))
    t.per_packet([f(i, size) for i in range(warm)])
    got = t.refused([f(i, size) for i in range(warm, warm + n)])
    events = t.dut.poll_events()
    assert events == t.ref.poll_events()
    assert type(events[0]) is (SoftExpired if limit.startswith("soft") else HardExpired)
    if limit.startswith("hard"):
        assert got[-1] == Dropped("sa_expired")


def test_outbound_batch_refuses_past_a_deadline() -> None:
    t = OutTwins(lifetime=Lifetime(soft_seconds=5, hard_seconds=10))
    f = flow(40000)
    t.per_packet([f(0)])
    t.same([f(1), f(2)], now=4.9)
    t.refused([f(3), f(4)], now=5.0)
    assert [type(e) for e in t.dut.poll_events()] == [type(e) for e in t.ref.poll_events()] == [SoftExpired]
    t.same([f(5), f(6)], now=9.0)  # the soft limit fired: only the hard one is left
    got = t.refused([f(7), f(8)], now=10.0)
    assert got[0] == Dropped("sa_expired") and got[1] == Dropped("no_sa")


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
def test_outbound_batch_packets_decrypt_in_scapy_and_in_the_inbound_batch_path(encap: bool, esn: bool) -> None:
    a = gateway_a(esn=esn, encap=encap)
    _, b = gateway_pair(esn=esn, encap=encap)
    if esn:
        out_sa(a).seq = (1 << 32) + 3
        in_sa(b).replay.top = (1 << 32) + 1
    f = flow(40000)
    assert per_packet(b, sealed([a.outbound(f(0), NOW)], encap)[0], encap) == [f(0)]  # B learns the flow
    packets = [f(i, 100 + 37 * i) for i in range(1, 12)]
    got = a.outbound_batch(packets, NOW)
    assert got is not None
    esp, dest = got
    scapy = scapy_sa(out_sa(a).params, encap)
    kw = {"esn_en": True, "esn": 1} if esn else {}
    for inner, e in zip(packets, esp, strict=True):
        wire = (IP(bytes(IP(src=GW_A, dst=GW_B) / UDP(sport=ENCAP[0], dport=ENCAP[1], chksum=0) / Raw(e)))
                if encap else IP(e))
        assert bytes(IP(bytes(scapy.decrypt(wire, **kw)))) == inner
    assert via_batch(b, esp, encap) == packets
    assert b.counters()["in_packets"] == 12 and b.counters()["dropped"] == 0
