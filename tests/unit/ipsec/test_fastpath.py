"""The compiled ESP tunnel fast path (``fastpath.py``): same wire format and the same checks as the general path.

The first packet of a flow takes the general path and teaches the flow cache; later packets take the compiled
route. So every test here sends several packets of one flow and checks the later ones as hard as the first:
scapy (an independent ESP implementation) decrypts what we send and builds what we accept, replays and
forgeries are refused, and caches follow SA and policy changes.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.ipsec import ESP
from scapy.layers.ipsec import SecurityAssociation as ScapySA
from scapy.packet import Raw

from labctl.gateway.ipsec.dataplane import DataPlane, Dropped, IpSend, UdpSend
from labctl.gateway.ipsec.fastpath import compile_opener, compile_sealer, flow_key, outer_header_builder
from labctl.gateway.ipsec.ipv4 import build_header
from labctl.gateway.ipsec.sad import Lifetime, SaParams, SecurityAssociation
from labctl.gateway.ipsec.spd import Policy

from .lab import ENCAP, GW_A, GW_B, HOST_A, HOST_B, SPI_AB, gateway_pair, sa_params
from .test_scapy_interop import SCAPY_INTEG, params_ab, scapy_crypt, scapy_sa

FAST_SUITES = [("aes128gcm16", None), ("aes256gcm16", None), ("aes128ccm16", None), ("chacha20poly1305", None),
               ("aes128", "sha256"), ("aes256", "sha1"), ("aes192", "sha512")]


def segment(i: int, size: int = 1400) -> bytes:
    """One TCP segment of a bulk flow host A -> host B (sizes vary to cover every padding length)."""
    payload = bytes((i + k) & 0xFF for k in range(size - 52))
    return bytes(IP(src=HOST_A, dst=HOST_B, id=i, flags="DF", tos=0x10) / TCP(sport=40000, dport=5201, seq=1000 + i)
                 / Raw(payload))


def wire_of(result: IpSend | UdpSend | Dropped) -> IP:
    if isinstance(result, UdpSend):
        return IP(bytes(IP(src=GW_A, dst=GW_B) / UDP(sport=result.sport, dport=result.dport, chksum=0)
                        / Raw(result.payload)))
    assert isinstance(result, IpSend), result
    return IP(result.packet)


def receive(b: DataPlane, result: IpSend | UdpSend | Dropped) -> bytes | None:
    if isinstance(result, UdpSend):
        return b.inbound_udp(result.payload, GW_A, result.sport, GW_B, result.dport, 1.0)
    assert isinstance(result, IpSend), result
    return b.inbound_ip(result.packet, 1.0)


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
@pytest.mark.parametrize(("encr", "integ"), FAST_SUITES)
def test_fast_path_packets_decrypt_in_scapy_and_round_trip(encr: str, integ: str | None, encap: bool,
                                                           esn: bool) -> None:
    a, b = gateway_pair(("esp",), "tunnel", encr=encr, integ=integ, encap=encap, esn=esn)
    out_sa = next(sa for sa in a._sad.all() if sa.direction == "out")
    assert compile_sealer(out_sa, lambda n: bytes(n)) is not None  # these suites are the compiled ones
    if esn:
        out_sa.seq = (1 << 32) + 3  # the high half enters the ICV/AAD but not the wire (RFC 4304)
        in_sa = next(sa for sa in b._sad.all() if sa.direction == "in")
        in_sa.replay.top = (1 << 32) + 1
    scapy = scapy_sa(params_ab(a, "esp"), encap)
    ivs = set()
    for i in range(20):
        original = segment(i, 1380 + i)
        result = a.outbound(original, 1.0)
        wire = wire_of(result)
        assert (wire.src, wire.dst, wire.len) == (GW_A, GW_B, len(bytes(wire)))
        if not encap:
            assert (wire.tos, wire.flags.DF, wire.proto) == (0x10, True, 50)  # copied from the inner header
            assert IP(bytes(wire)).chksum == wire.chksum  # scapy recomputes the outer checksum and agrees
        esp = wire[ESP] if not encap else ESP(bytes(wire[UDP].payload))
        ivs.add(bytes(esp.data[:16]))
        kw = {"esn_en": True, "esn": 1} if esn else {}
        clear = scapy.decrypt(wire, **kw)
        assert bytes(IP(bytes(clear))) == original
        assert receive(b, result) == original, b.counters()
    assert len(ivs) == 20
    assert a.counters()["out_packets"] == b.counters()["in_packets"] == 20
    assert b.counters()["dropped"] == 0


@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
@pytest.mark.parametrize(("encr", "integ"), FAST_SUITES)
def test_scapy_packets_accepted_by_the_fast_path(encr: str, integ: str | None, encap: bool) -> None:
    a, b = gateway_pair(("esp",), "tunnel", encr=encr, integ=integ, encap=encap)
    p = params_ab(a, "esp")
    crypt, icv = scapy_crypt(encr)
    sa = ScapySA(ESP, spi=p.spi, crypt_algo=crypt, crypt_key=p.encr_key, crypt_icv_size=icv,
                 auth_algo=SCAPY_INTEG[integ] if integ else "NULL", auth_key=p.integ_key or None,
                 tunnel_header=IP(src=GW_A, dst=GW_B),
                 nat_t_header=UDP(sport=ENCAP[0], dport=ENCAP[1], chksum=0) if encap else None)
    for i in range(10):
        original = segment(i, 1000 + 7 * i)
        wire = bytes(sa.encrypt(IP(original)))
        got = b.inbound_udp(wire[28:], GW_A, 4500, GW_B, 4500, 1.0) if encap else b.inbound_ip(wire, 1.0)
        assert got == original, b.counters()


@pytest.mark.parametrize("encap", [False, True], ids=["raw", "udp"])
@pytest.mark.parametrize(("encr", "integ"), [("aes128gcm16", None), ("aes128", "sha256")])
def test_fast_path_refuses_replays_and_forgeries(encr: str, integ: str | None, encap: bool) -> None:
    a, b = gateway_pair(("esp",), "tunnel", encr=encr, integ=integ, encap=encap)
    results = [a.outbound(segment(i), 1.0) for i in range(5)]
    for r in results[:3]:
        assert receive(b, r) is not None
    assert receive(b, results[1]) is None  # a replay of an accepted packet
    assert b.counters()["drops"] == {"replay": 1}
    for offset in (8, 20, 600, -1):  # IV, ciphertext, deep ciphertext, last ICV byte
        r = results[3]
        if isinstance(r, UdpSend):
            data = bytearray(r.payload)
            data[offset] ^= 1
            forged: UdpSend | IpSend = UdpSend(bytes(data), r.dst, r.dport, r.sport)
        else:
            assert isinstance(r, IpSend)
            data = bytearray(r.packet)
            data[20 + offset if offset >= 0 else offset] ^= 1
            forged = IpSend(bytes(data))
        assert receive(b, forged) is None
    assert b.counters()["drops"] == {"replay": 1, "integrity": 4}
    # The genuine packets still pass afterwards: a forgery moves neither the window nor (CBC) the cipher state.
    assert receive(b, results[3]) is not None and receive(b, results[4]) is not None
    assert receive(b, results[0]) is None  # old but within the window and already seen


def test_new_outbound_sa_and_removed_sa_are_followed_at_once() -> None:
    a, b = gateway_pair()
    assert isinstance(a.outbound(segment(0), 1.0), IpSend)
    assert isinstance(a.outbound(segment(1), 1.0), IpSend)  # now cached
    rekeyed = sa_params("esp", "tunnel", 0xC001, GW_A, GW_B, "aes128gcm16", None)
    a.add_sa(rekeyed, "out", 1.0)
    b.add_sa(rekeyed, "in", 1.0)
    result = a.outbound(segment(2), 1.0)
    assert isinstance(result, IpSend) and result.packet[20:24] == (0xC001).to_bytes(4, "big")
    assert b.inbound_ip(result.packet, 1.0) == segment(2)
    a.remove_sa(0xC001, "out")
    a.remove_sa(SPI_AB["esp"], "out")
    assert a.outbound(segment(3), 1.0) == Dropped("no_sa")
    b.remove_sa(0xC001, "in")
    assert b.inbound_ip(result.packet, 1.0) is None and b.counters()["drops"] == {"unknown_spi": 1}


def test_policy_changes_are_followed_both_ways() -> None:
    a, b = gateway_pair()
    for i in range(3):
        assert receive(b, a.outbound(segment(i), 1.0)) is not None
    a.add_policy(Policy("stop-5201", "10.1.0.0/16", "10.2.0.0/16", "discard", proto=6, remote_ports=(5201, 5201)), 0)
    assert a.outbound(segment(3), 1.0) == Dropped("policy_discard")
    a.remove_policy("stop-5201")
    result = a.outbound(segment(4), 1.0)
    b.set_policies([Policy("other", "10.9.0.0/16", "10.1.0.0/16")])
    assert receive(b, result) is None and b.counters()["drops"] == {"policy_mismatch": 1}


def test_inbound_policy_is_checked_per_flow_on_the_fast_path() -> None:
    # B only admits TCP to port 5201; a cached route for one flow must not let another flow through.
    a, b = gateway_pair()
    b.set_policies([Policy("b-5201", "10.2.0.0/16", "10.1.0.0/16", proto=6, local_ports=(5201, 5201))])
    for i in range(3):
        assert receive(b, a.outbound(segment(i), 1.0)) is not None
    other = bytes(IP(src=HOST_A, dst=HOST_B) / TCP(sport=40000, dport=22) / Raw(b"x" * 100))
    assert receive(b, a.outbound(other, 1.0)) is None
    assert b.counters()["drops"] == {"policy_mismatch": 1}


def test_lifetimes_fire_on_the_fast_path_as_on_the_general_one() -> None:
    a, b = gateway_pair(lifetime=Lifetime(soft_packets=5, hard_packets=8))
    sent = [a.outbound(segment(i), 1.0) for i in range(10)]
    assert [isinstance(r, IpSend) for r in sent] == [True] * 7 + [False] * 3
    assert [type(e).__name__ for e in a.poll_events()] == ["SoftExpired", "HardExpired", "Acquire"]
    got = [receive(b, r) for r in sent[:7]]
    assert all(g is not None for g in got)
    assert [type(e).__name__ for e in b.poll_events()] == ["SoftExpired"]


def test_sequence_exhaustion_on_the_fast_path() -> None:
    a, _ = gateway_pair()
    out = next(sa for sa in a._sad.all() if sa.direction == "out")
    a.outbound(segment(0), 1.0)
    out.seq = 0xFFFFFFFE
    assert isinstance(a.outbound(segment(1), 1.0), IpSend)
    assert a.outbound(segment(2), 1.0) == Dropped("seq_exhausted")
    assert [type(e).__name__ for e in a.poll_events()] == ["SeqExhausted"]


def test_outer_header_builder_matches_the_general_header() -> None:
    src, dst = bytes([198, 51, 100, 1]), bytes([203, 0, 113, 2])
    build = outer_header_builder(src, dst)
    for total, ident, tos, flags in ((1500, 1, 0, 0x4000), (40, 0xFFFF, 0xFC, 0), (65535, 0x1234, 3, 0x4000)):
        assert build(total, ident, tos, flags) == build_header(src, dst, 50, total - 20, ident, tos, flags)


def test_flow_key_only_for_plain_unfragmented_headers() -> None:
    tcp = bytes(IP(src=HOST_A, dst=HOST_B) / TCP(sport=1, dport=2))
    assert flow_key(tcp) == tcp[9:10] + tcp[12:24]
    icmp_like = bytes(IP(src=HOST_A, dst=HOST_B, proto=1) / Raw(b"\x08\x00\x12\x34abcd"))
    assert flow_key(icmp_like) == icmp_like[9:10] + icmp_like[12:20]  # ICMP's checksum is not a selector
    assert flow_key(bytes(IP(src=HOST_A, dst=HOST_B, flags="MF") / TCP())) is None
    assert flow_key(bytes(IP(src=HOST_A, dst=HOST_B, frag=3) / TCP())) is None
    assert flow_key(bytes(IP(src=HOST_A, dst=HOST_B, options=[b"\x01\x01\x01\x01"]) / TCP())) is None
    assert flow_key(b"\x45" + bytes(10)) is None


def test_suites_outside_the_fast_path_are_not_compiled() -> None:
    def sa(protocol: str, mode: str, encr: str | None, integ: str | None) -> SecurityAssociation:
        return SecurityAssociation(sa_params(protocol, mode, 0x1001, GW_A, GW_B, encr, integ), "out", 0.0)

    for s in (sa("esp", "transport", "aes128gcm16", None), sa("ah", "tunnel", None, "sha256"),
              sa("esp", "tunnel", "aes128gcm8", None), sa("esp", "tunnel", "aes128ctr", "sha256"),
              sa("esp", "tunnel", "3des", "sha1"), sa("esp", "tunnel", "null", "sha256")):
        assert compile_sealer(s, lambda n: bytes(n)) is None and compile_opener(s) is None


def test_cbc_ivs_are_fresh_with_a_constant_rng() -> None:
    # Even a degenerate generator cannot make the IV repeat: it is E_K(previous block xor R), so it chains.
    params: SaParams = sa_params("esp", "tunnel", 0x1001, GW_A, GW_B, "aes128", "sha256")
    seal = compile_sealer(SecurityAssociation(params, "out", 0.0), lambda n: bytes(n))
    assert seal is not None
    ivs = {seal(segment(0), seq)[8:24] for seq in range(1, 50)}
    assert len(ivs) == 49


@pytest.mark.parametrize(("encr", "integ"), [("aes128gcm16", None), ("aes128", "sha256")])
def test_flows_sharing_an_sa_share_its_sequence_numbers(encr: str, integ: str | None) -> None:
    a, b = gateway_pair(("esp",), "tunnel", encr=encr, integ=integ)
    flows = [bytes(IP(src=HOST_A, dst=HOST_B) / TCP(sport=port, dport=5201) / Raw(b"z" * 500)) for port in (1, 2, 3)]
    seqs = []
    for i in range(12):
        result = a.outbound(flows[i % 3], 1.0)
        assert isinstance(result, IpSend)
        seqs.append(int.from_bytes(result.packet[24:28], "big"))
        assert b.inbound_ip(result.packet, 1.0) == flows[i % 3]
    assert seqs == list(range(1, 13))
    assert len(a._out_sealers) == 1 and len(a._out_routes) == 3
