"""The DataPlane facade: two gateways back to back, SPD/SAD behaviour, lifetimes, events, counters."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from labctl.gateway.ipsec.dataplane import Bypass, DataPlane, Dropped, IpSend, UdpSend
from labctl.gateway.ipsec.events import Acquire, HardExpired, SeqExhausted, SoftExpired
from labctl.gateway.ipsec.natt import KEEPALIVE, NON_ESP_MARKER, classify_udp4500, fix_transport_checksum
from labctl.gateway.ipsec.sad import Lifetime
from labctl.gateway.ipsec.spd import Policy

from .lab import ENCAP, GW_A, GW_B, HOST_A, HOST_B, gateway_pair, sa_params

PING = bytes(IP(src=HOST_A, dst=HOST_B) / ICMP(id=1, seq=1) / Raw(b"x" * 56))


def deliver(a: DataPlane, b: DataPlane, packet: bytes, now: float = 1.0) -> bytes | None:
    result = a.outbound(packet, now)
    if isinstance(result, Dropped):
        return None
    if isinstance(result, UdpSend):
        return b.inbound_udp(result.payload, GW_A, result.sport, GW_B, result.dport, now)
    assert isinstance(result, IpSend), result
    return b.inbound_ip(result.packet, now)


@pytest.mark.parametrize("protocols", [("esp",), ("ah",), ("esp", "ah")], ids=["esp", "ah", "esp+ah"])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_round_trip_both_ways(protocols: tuple[str, ...], mode: str) -> None:
    a, b = gateway_pair(protocols, mode, encr="aes256", integ="sha256")
    src, dst = (HOST_A, HOST_B) if mode == "tunnel" else (GW_A, GW_B)
    packet = bytes(IP(src=src, dst=dst) / UDP(sport=1000, dport=2000) / Raw(b"hello"))
    got = deliver(a, b, packet)
    assert got is not None and IP(got)[Raw].load == b"hello"
    reply = bytes(IP(src=dst, dst=src) / UDP(sport=2000, dport=1000) / Raw(b"back"))
    assert deliver(b, a, reply) is not None
    assert a.counters()["out_packets"] == 1 and a.counters()["in_packets"] == 1


def test_esp_tunnel_outer_header_and_wire_format() -> None:
    a, _ = gateway_pair()
    result = a.outbound(PING, 1.0)
    assert isinstance(result, IpSend)
    outer = IP(result.packet)
    assert (outer.src, outer.dst, outer.proto) == (GW_A, GW_B, 50)
    assert outer.len == len(result.packet)
    assert IP(bytes(outer)).chksum == outer.chksum  # scapy recomputes and agrees
    assert b"x" * 56 not in result.packet  # the payload is not in clear


def test_gcm_ivs_never_repeat() -> None:
    a, _ = gateway_pair()
    ivs = set()
    for _ in range(200):
        result = a.outbound(PING, 1.0)
        assert isinstance(result, IpSend)
        ivs.add(result.packet[28:36])
    assert len(ivs) == 200


def test_fail_closed_without_sa_raises_acquire_once_per_interval() -> None:
    dp = DataPlane([Policy("p", "10.1.0.0/16", "10.2.0.0/16", reqid=7)])
    assert dp.outbound(PING, 1.0) == Dropped("no_sa")
    assert dp.outbound(PING, 1.5) == Dropped("no_sa")
    assert dp.outbound(PING, 2.6) == Dropped("no_sa")
    events = dp.poll_events()
    assert events == [Acquire("p", 7, HOST_A, HOST_B, 1)] * 2
    assert dp.counters()["drops"] == {"no_sa": 3}


def test_no_policy_is_dropped_and_bypass_only_when_configured() -> None:
    dp = DataPlane([Policy("dns", "10.1.0.0/16", "0.0.0.0/0", "bypass", proto=17, remote_ports=(53, 53))])
    assert dp.outbound(PING, 1.0) == Dropped("no_policy")
    dns = bytes(IP(src=HOST_A, dst="192.0.2.53") / UDP(sport=3333, dport=53) / Raw(b"q"))
    assert dp.outbound(dns, 1.0) == Bypass(dns)
    dp.add_policy(Policy("drop-all", "0.0.0.0/0", "0.0.0.0/0", "discard"), index=0)
    assert dp.outbound(dns, 1.0) == Dropped("policy_discard")


def test_policies_are_first_match_with_ports() -> None:
    a, b = gateway_pair()
    a.add_policy(Policy("no-ssh", "10.1.0.0/16", "10.2.0.0/16", "discard", proto=6, remote_ports=(22, 22)), 0)
    ssh = bytes(IP(src=HOST_A, dst=HOST_B) / TCP(sport=5555, dport=22))
    web = bytes(IP(src=HOST_A, dst=HOST_B) / TCP(sport=5555, dport=80))
    assert a.outbound(ssh, 1.0) == Dropped("policy_discard")
    assert isinstance(a.outbound(web, 1.0), IpSend)


def test_tampered_truncated_and_replayed_packets_are_counted() -> None:
    a, b = gateway_pair(encr="aes128", integ="sha256")
    result = a.outbound(PING, 1.0)
    assert isinstance(result, IpSend)
    packet = bytearray(result.packet)
    packet[-20] ^= 0x40
    assert b.inbound_ip(bytes(packet), 1.0) is None
    assert b.inbound_ip(result.packet[:30], 1.0) is None
    assert b.inbound_ip(result.packet, 1.0) is not None
    assert b.inbound_ip(result.packet, 1.0) is None
    counters = b.counters()
    assert counters["integrity_failures"] == 1 and counters["replay_drops"] == 1
    assert counters["drops"] == {"integrity": 1, "malformed": 1, "replay": 1}


def test_unknown_spi_and_wrong_destination_are_dropped() -> None:
    a, b = gateway_pair()
    result = a.outbound(PING, 1.0)
    assert isinstance(result, IpSend)
    wrong_dst = bytes(IP(result.packet)).replace(bytes([203, 0, 113, 2]), bytes([203, 0, 113, 9]), 1)
    assert b.inbound_ip(wrong_dst, 1.0) is None
    assert b.counters()["drops"] == {"unknown_spi": 1}


def test_inbound_policy_check_rejects_packets_outside_the_selectors() -> None:
    # B accepts only 10.2.0.0/16 <- 10.1.0.0/16; A is misconfigured to tunnel traffic from another prefix.
    a, b = gateway_pair()
    a.set_policies([Policy("wide", "0.0.0.0/0", "10.2.0.0/16")])
    spoofed = bytes(IP(src="172.16.0.1", dst=HOST_B) / ICMP())
    assert deliver(a, b, spoofed) is None
    assert b.counters()["drops"] == {"policy_mismatch": 1}


def test_bundle_must_arrive_through_all_its_sas() -> None:
    # B's policy demands ESP inside AH; a packet protected by ESP alone must not be accepted (RFC 4301 §5.2).
    a, b = gateway_pair(("esp", "ah"), "tunnel", encr="aes256", integ="sha256")
    a.set_policies([Policy("esp-only", "10.1.0.0/16", "10.2.0.0/16", protocols=("esp",))])
    assert deliver(a, b, PING) is None
    assert b.counters()["drops"] == {"policy_mismatch": 1}


def test_sequence_numbers_never_wrap() -> None:
    a, b = gateway_pair()
    out = next(sa for sa in a._sad.all() if sa.direction == "out")
    out.seq = 0xFFFFFFFE
    assert isinstance(a.outbound(PING, 1.0), IpSend)  # carries 0xFFFFFFFF, the last one
    assert a.outbound(PING, 1.0) == Dropped("seq_exhausted")
    assert a.outbound(PING, 1.0) == Dropped("seq_exhausted")
    assert a.poll_events() == [SeqExhausted(out.spi, "esp", 1)]


def test_esn_sa_continues_past_2_to_the_32() -> None:
    a, b = gateway_pair(esn=True)
    out = next(sa for sa in a._sad.all() if sa.direction == "out")
    inb = next(sa for sa in b._sad.all() if sa.direction == "in")
    out.seq = inb.replay.top = 0xFFFFFFFE
    for _ in range(3):
        assert deliver(a, b, PING) is not None
    assert inb.replay.top == (1 << 32) + 1


def test_lifetimes_soft_then_hard_by_packets_and_bytes() -> None:
    a, b = gateway_pair(lifetime=Lifetime(soft_packets=2, hard_packets=4))
    for _ in range(3):
        assert deliver(a, b, PING) is not None
    events = a.poll_events()
    assert [type(e) for e in events] == [SoftExpired]
    assert events[0].reason == "packets" and events[0].direction == "out"
    assert deliver(a, b, PING) is None  # the 4th packet reaches the hard limit: not sent
    assert [type(e) for e in a.poll_events()] == [HardExpired]
    assert a.outbound(PING, 2.0) == Dropped("no_sa")  # the SA is gone: fail closed
    assert any(isinstance(e, Acquire) for e in a.poll_events())

    a, b = gateway_pair(lifetime=Lifetime(soft_bytes=len(PING) * 2, hard_bytes=len(PING) * 10))
    deliver(a, b, PING)
    deliver(a, b, PING)
    assert [e.reason for e in a.poll_events() if isinstance(e, SoftExpired)] == ["bytes"]


def test_lifetimes_in_seconds_use_the_given_clock() -> None:
    a, b = gateway_pair(lifetime=Lifetime(soft_seconds=10, hard_seconds=20), now=100.0)
    assert a.next_deadline() == 110.0
    a.handle_timer(105.0)
    assert a.poll_events() == []
    a.handle_timer(110.0)
    assert {type(e) for e in a.poll_events()} == {SoftExpired}
    assert a.next_deadline() == 120.0
    a.handle_timer(121.0)
    assert {type(e) for e in a.poll_events()} == {HardExpired}
    assert a.sa_status(121.0) == []


def test_rekey_uses_the_newest_outbound_sa() -> None:
    a, b = gateway_pair()
    newer = sa_params("esp", "tunnel", 0xA002, GW_A, GW_B, "aes128gcm16", None)
    a.add_sa(newer, "out", 5.0)
    b.add_sa(newer, "in", 5.0)
    result = a.outbound(PING, 6.0)
    assert isinstance(result, IpSend) and result.packet[20:24] == (0xA002).to_bytes(4, "big")
    assert b.inbound_ip(result.packet, 6.0) is not None
    assert a.remove_sa(0xA002, "out")
    result = a.outbound(PING, 7.0)
    assert isinstance(result, IpSend) and result.packet[20:24] == (0xA001).to_bytes(4, "big")


def test_add_sa_refuses_inconsistent_parameters() -> None:
    dp = DataPlane()
    with pytest.raises(ValueError, match="integrity"):
        dp.add_sa(sa_params("esp", "tunnel", 0x1000, GW_A, GW_B, "aes128", None), "out", 0.0)
    with pytest.raises(ValueError, match="AEAD"):
        dp.add_sa(sa_params("esp", "tunnel", 0x1000, GW_A, GW_B, "aes128gcm16", "sha1"), "out", 0.0)
    with pytest.raises(ValueError, match="UDP"):
        dp.add_sa(sa_params("ah", "tunnel", 0x1000, GW_A, GW_B, None, "sha1", encap=ENCAP), "out", 0.0)
    with pytest.raises(ValueError, match="reserved"):
        dp.add_sa(sa_params("esp", "tunnel", 0x10, GW_A, GW_B, "aes128gcm16", None), "out", 0.0)


def test_udp_encapsulation_and_the_4500_demultiplexer() -> None:
    a, b = gateway_pair(encap=True)
    result = a.outbound(PING, 1.0)
    assert isinstance(result, UdpSend) and (result.dst, result.dport, result.sport) == (GW_B, 4500, 4500)
    assert classify_udp4500(result.payload) == "esp"
    assert classify_udp4500(KEEPALIVE) == "keepalive"
    assert classify_udp4500(NON_ESP_MARKER + bytes(28)) == "ike"
    assert classify_udp4500(b"\x01\x02") == "invalid"
    assert b.inbound_udp(KEEPALIVE, GW_A, 4500, GW_B, 4500, 1.0) is None
    assert b.inbound_udp(NON_ESP_MARKER + bytes(28), GW_A, 4500, GW_B, 4500, 1.0) is None
    assert b.inbound_udp(result.payload, "192.0.2.99", 31000, "10.0.0.2", 4500, 1.0) == PING  # behind NATs
    assert b.counters()["keepalives"] == 1 and b.counters()["drops"] == {"ike_on_dataplane": 1}


def test_transport_mode_natt_checksums_are_fixed() -> None:
    # RFC 3948 §3.1.2: after NAT the sender's TCP/UDP checksum covers the wrong addresses.
    udp = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / Raw(b"data"))
    assert fix_transport_checksum(udp, 20)[26:28] == b"\x00\x00"
    tcp = IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2, chksum=0x1234) / Raw(b"data")
    fixed = IP(fix_transport_checksum(bytes(tcp), 20))
    assert (
        fixed[TCP].chksum
        == IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2) / Raw(b"data")))[TCP].chksum
    )

    a, b = gateway_pair(mode="transport", encap=True)
    packet = bytes(IP(src=GW_A, dst=GW_B) / UDP(sport=7, dport=9) / Raw(b"natted"))
    result = a.outbound(packet, 1.0)
    assert isinstance(result, UdpSend)
    got = b.inbound_udp(result.payload, GW_A, 4500, GW_B, 4500, 1.0)
    assert got is not None and IP(got)[UDP].chksum == 0 and IP(got)[Raw].load == b"natted"


def test_status_and_wireshark_lines() -> None:
    a, _ = gateway_pair(encr="aes256", integ="sha512")
    a.outbound(PING, 1.0)
    status = {s["spi"]: s for s in a.sa_status(2.0)}
    assert status["0x0000a001"]["packets"] == 1 and status["0x0000a001"]["encr"] == "aes256"
    assert all("key" not in k for s in status.values() for k in s)
    lines = a.esp_sa_uat_lines()
    assert len(lines) == 2
    fields = lines[0].split(",")
    assert len(fields) == 8 and fields[4] == '"AES-CBC [RFC3602]"' and fields[6] == '"HMAC-SHA-512-256 [RFC4868]"'
    gcm, _ = gateway_pair(encr="aes128gcm16")
    assert '"AES-GCM with 16 octet ICV [RFC4106]"' in gcm.esp_sa_uat_lines()[0]
    assert gcm.esp_sa_uat_lines()[0].endswith('"NULL",""')
