"""The wire and fail-closed evaluators, fed synthetic captures written with scapy and dissected by tshark.

Each rule is shown to pass on a capture that obeys it and to FAIL on one that breaks it (a cleartext packet
between the LANs on the internet segment must fail both the wire and the fail-closed check)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import AH, ESP
from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_ID
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from labctl.checks.frames import Frame, read_frames
from labctl.checks.wire import WireExpectation, check_no_cleartext, check_wire

GW_A, GW_B = "198.51.100.10", "198.51.100.20"
HOST_A, HOST_B = "10.1.0.10", "10.2.0.10"
PEERS = frozenset({GW_A, GW_B})
LANS = ("10.1.0.0/24", "10.2.0.0/24")
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def esp(src: str = GW_A, dst: str = GW_B, spi: int = 0x1000, seq: int = 1) -> Packet:
    return ETH / IP(src=src, dst=dst) / ESP(spi=spi, seq=seq) / Raw(b"\x5a" * 48)


def esp_in_udp(src: str = GW_A, dst: str = GW_B) -> Packet:
    return ETH / IP(src=src, dst=dst) / UDP(sport=4500, dport=4500) / ESP(spi=0x1000, seq=1) / Raw(b"\x5a" * 48)


def ah_tunnel(inner: Packet, src: str = GW_A, dst: str = GW_B) -> Packet:
    # RFC 4302 §2.2: payload length in 32-bit words minus 2; 12 bytes of header + a 16-byte ICV -> 5.
    return ETH / IP(src=src, dst=dst) / AH(spi=0x2000, seq=1, nh=4, payloadlen=5, icv=b"\0" * 16) / inner


def ike_v1(exchange: int, with_id: bool) -> Packet:
    header = ISAKMP(init_cookie=b"\x11" * 8, resp_cookie=b"\x22" * 8, exch_type=exchange,
                    next_payload=5 if with_id else 0, flags=0 if with_id else 1)
    body = ISAKMP_payload_ID(IDtype=1, IdentData=GW_A) if with_id else Raw(b"\x77" * 64)
    return ETH / IP(src=GW_A, dst=GW_B) / UDP(sport=500, dport=500) / header / body


def ike_v2() -> Packet:
    # IKE_SA_INIT (34) header only, version 2.0: enough for tshark to call it IKEv2.
    header = ISAKMP(init_cookie=b"\x11" * 8, resp_cookie=b"\0" * 8, exch_type=34, version=0x20, next_payload=0)
    return ETH / IP(src=GW_A, dst=GW_B) / UDP(sport=500, dport=500) / header


def cleartext_icmp() -> Packet:
    return ETH / IP(src=HOST_A, dst=HOST_B) / ICMP(type=8)


def frames_of(tmp_path: Path, packets: list[Packet]) -> list[Frame]:
    pcap = tmp_path / "capture.pcap"
    wrpcap(str(pcap), packets)
    return read_frames(pcap)


def manual_esp(**kw: object) -> WireExpectation:
    args: dict[str, object] = {"peers": PEERS, "protection": "esp", "encap": False, "ike_version": None}
    args.update(kw)
    return WireExpectation(**args)  # type: ignore[arg-type]


def test_esp_between_the_gateways_passes(tmp_path: Path) -> None:
    result = check_wire(frames_of(tmp_path, [ETH / ARP(), esp(), esp(GW_B, GW_A, 0x1001)]), manual_esp())
    assert result.status == "pass", result.details
    assert result.observed == "2 esp"


def test_a_cleartext_packet_between_the_lans_fails_the_wire_check(tmp_path: Path) -> None:
    result = check_wire(frames_of(tmp_path, [esp(), cleartext_icmp(), esp(GW_B, GW_A)]), manual_esp())
    assert result.status == "fail"
    assert any("cleartext on the segment" in d and f"{HOST_A} -> {HOST_B}" in d for d in result.details)


def test_a_cleartext_packet_between_the_lans_fails_the_fail_closed_check(tmp_path: Path) -> None:
    frames = frames_of(tmp_path, [esp(), cleartext_icmp()])
    result = check_no_cleartext(frames, LANS)
    assert result.status == "fail"
    assert result.details == (f"protected traffic crossed in clear: frame 2: {HOST_A} -> {HOST_B} ip:icmp",)


def test_icmp_errors_quoting_esp_are_no_leak(tmp_path: Path) -> None:
    # A stopped gateway answers ESP with "protocol unreachable" (RFC 792); it quotes only the ESP header.
    error = ETH / IP(src=GW_B, dst=GW_A) / ICMP(type=3, code=2) / IP(src=GW_A, dst=GW_B, proto=50) / Raw(b"\0" * 8)
    assert check_no_cleartext(frames_of(tmp_path, [esp(), error]), LANS).status == "pass"
    assert check_no_cleartext(frames_of(tmp_path, [error, cleartext_icmp()]), LANS).status == "fail"


def test_transport_mode_fail_closed_protects_the_hosts_themselves(tmp_path: Path) -> None:
    plain = ETH / IP(src=GW_A, dst=GW_B) / TCP(sport=40000, dport=5399, flags="S")
    result = check_no_cleartext(frames_of(tmp_path, [esp(), plain]), (f"{GW_A}/32", f"{GW_B}/32"))
    assert result.status == "fail"


def test_ipsec_to_a_third_address_fails(tmp_path: Path) -> None:
    result = check_wire(frames_of(tmp_path, [esp(), esp(GW_A, "198.51.100.99")]), manual_esp())
    assert result.status == "fail"
    assert any("outside the ends" in d for d in result.details)


def test_no_ipsec_at_all_fails(tmp_path: Path) -> None:
    result = check_wire(frames_of(tmp_path, [ETH / ARP()]), manual_esp())
    assert result.status == "fail"
    assert any("no ESP or AH frame" in d for d in result.details)


def test_ah_must_show_its_inner_packet_and_esp_must_not(tmp_path: Path) -> None:
    frames = frames_of(tmp_path, [ah_tunnel(IP(src=HOST_A, dst=HOST_B) / ICMP())])
    assert check_wire(frames, manual_esp(protection="ah")).status == "pass"
    wrong = check_wire(frames, manual_esp(protection="esp"))
    assert wrong.status == "fail"
    assert any("AH where ESP was expected" in d for d in wrong.details)
    esp_frames = frames_of(tmp_path, [esp()])
    assert any("ESP where AH was expected" in d for d in check_wire(esp_frames, manual_esp(protection="ah")).details)


def test_ah_esp_bundle_needs_esp_inside_ah(tmp_path: Path) -> None:
    bundle = ETH / IP(src=GW_A, dst=GW_B) / AH(spi=0x2000, seq=1, nh=50, payloadlen=5, icv=b"\0" * 16) / \
        ESP(spi=0x1000, seq=1) / Raw(b"\x5a" * 48)
    nested = ah_tunnel(IP(src=GW_A, dst=GW_B) / ESP(spi=0x1000, seq=1) / Raw(b"\x5a" * 48))
    assert check_wire(frames_of(tmp_path, [bundle, nested]), manual_esp(protection="ah+esp")).status == "pass"
    plain_ah = frames_of(tmp_path, [ah_tunnel(IP(src=HOST_A, dst=HOST_B) / ICMP())])
    assert check_wire(plain_ah, manual_esp(protection="ah+esp")).status == "fail"


def test_udp_encapsulation_is_judged_both_ways(tmp_path: Path) -> None:
    keepalive = ETH / IP(src=GW_A, dst=GW_B) / UDP(sport=4500, dport=4500) / Raw(b"\xff")
    encapsulated = frames_of(tmp_path, [esp_in_udp(), keepalive])
    assert check_wire(encapsulated, manual_esp(encap=True)).status == "pass"
    assert any("ESP in UDP although" in d for d in check_wire(encapsulated, manual_esp()).details)
    raw = frames_of(tmp_path, [esp()])
    assert any("raw ESP although" in d for d in check_wire(raw, manual_esp(encap=True)).details)


def test_aggressive_mode_identity_is_readable_main_mode_is_not(tmp_path: Path) -> None:
    aggressive = frames_of(tmp_path, [ike_v1(4, with_id=True), esp()])
    expect_am = manual_esp(ike_version=1, ike_mode="aggressive", identity_visible=True)
    assert check_wire(aggressive, expect_am).status == "pass"
    leak = check_wire(aggressive, manual_esp(ike_version=1, ike_mode="aggressive", identity_visible=False))
    assert leak.status == "fail" and any("identity readable in clear" in d for d in leak.details)

    main = frames_of(tmp_path, [ike_v1(2, with_id=False), esp()])
    assert check_wire(main, manual_esp(ike_version=1, ike_mode="main", identity_visible=False)).status == "pass"
    hidden = check_wire(main, manual_esp(ike_version=1, ike_mode="main", identity_visible=True))
    assert hidden.status == "fail" and any("no identity payload readable" in d for d in hidden.details)
    wrong_mode = check_wire(main, manual_esp(ike_version=1, ike_mode="aggressive"))
    assert any("no aggressive mode exchange" in d for d in wrong_mode.details)


def test_ike_version_and_presence(tmp_path: Path) -> None:
    v2 = frames_of(tmp_path, [ike_v2(), esp()])
    assert check_wire(v2, manual_esp(ike_version=2, identity_visible=False)).status == "pass"
    assert any("expected only 0x10" in d for d in check_wire(v2, manual_esp(ike_version=1)).details)
    # Manual keys: IKE on the wire is a finding; IKE keying: missing IKE is one.
    assert any("keyed by hand" in d for d in check_wire(v2, manual_esp()).details)
    assert any("no IKEv2 message" in d for d in check_wire(frames_of(tmp_path, [esp()]),
                                                           manual_esp(ike_version=2)).details)


@pytest.mark.parametrize("packet", [
    ETH / IP(src=GW_A, dst=GW_B) / UDP(sport=1701, dport=1701) / Raw(b"\xc8\x02"),  # clear L2TP
    ETH / IP(src=GW_A, dst=GW_B) / TCP(sport=22, dport=22),
])
def test_anything_else_between_the_gateways_is_cleartext(tmp_path: Path, packet: Packet) -> None:
    assert check_wire(frames_of(tmp_path, [esp(), packet]), manual_esp()).status == "fail"
