"""L2TP/IPsec checks on synthetic data: captures written with scapy (ESP transport mode encrypted by scapy's
own implementation, opened by tshark with an esp_sa table shaped like the gateways'), and status replies shaped
like the gateway's. Each rule passes on data that obeys it and FAILS on data that breaks it: a clear UDP 1701
frame, PPP in clear, raw ESP from behind a NAT, a missing session, a shared address, a wrong SA."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.isakmp import ISAKMP
from scapy.layers.l2 import Ether
from scapy.layers.l2tp import L2TP
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from labctl.checks.decryption import Flow, check_decryption
from labctl.checks.frames import Frame, read_frames
from labctl.checks.keytables import merge_tables, preferences
from labctl.checks.l2tp import (
    Client,
    SessionExpectation,
    check_l2tp_sa_state,
    check_l2tp_sessions,
    check_l2tp_wire,
    clear_l2tp,
)
from labctl.checks.sa_state import SaExpectation
from labctl.checks.wire import WireExpectation

LNS, ROAD_1, NAT = "198.51.100.20", "198.51.100.31", "198.51.100.30"
HOST_B = "10.2.0.10"
ALICE, BOB = "10.2.100.10", "10.2.100.11"
POOL = ("10.2.100.10", "10.2.100.99")
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
CLIENTS = (Client("road-1", "alice", ROAD_1, ROAD_1, False), Client("road-2", "bob", "192.168.1.10", NAT, True))
WIRE = WireExpectation(peers=frozenset({LNS, ROAD_1, NAT}), protection="esp", encap=False, ike_version=1,
                       ike_mode="main", identity_visible=False, encap_peers=frozenset({NAT}), hub=LNS)
ENC_KEY, AUTH_KEY = bytes(range(16)), bytes(range(32, 64))


def frames_of(tmp_path: Path, packets: list[Packet], prefs: list[str] | None = None) -> list[Frame]:
    pcap = tmp_path / "capture.pcap"
    wrpcap(str(pcap), packets)
    return read_frames(pcap, prefs or [])


def ike(src: str, sport: int = 500) -> Packet:
    # Main Mode (exchange 2), encrypted body (flags=1): what phases 5-6 look like on the wire.
    header = ISAKMP(init_cookie=b"\x11" * 8, resp_cookie=b"\x22" * 8, exch_type=2, next_payload=5, flags=1)
    return ETH / IP(src=src, dst=LNS) / UDP(sport=sport, dport=500) / header / Raw(b"\x77" * 64)


def esp(src: str, dst: str = LNS, udp: bool = False) -> Packet:
    outer = ETH / IP(src=src, dst=dst)
    if udp:
        outer = outer / UDP(sport=4500, dport=4500)  # RFC 3948 §2.1
    return outer / ESP(spi=0x1000, seq=1) / Raw(b"\x5a" * 48)


def l2tp_data(src: str, inner: Packet) -> Packet:
    # RFC 2661 §3.1 data message; PPP with address/control FF 03 and protocol 0x0021 (IPv4, RFC 1332).
    return IP(src=src, dst=LNS) / UDP(sport=1701, dport=1701) / L2TP(tunnel_id=1, session_id=2) / \
        Raw(b"\xff\x03\x00\x21" + bytes(inner))


def lawful() -> list[Packet]:
    return [ike(ROAD_1), ike(NAT), esp(ROAD_1), esp(LNS, ROAD_1), esp(NAT, udp=True), esp(LNS, NAT, udp=True)]


# --- wire ---

def test_only_ike_and_esp_between_the_lns_and_its_clients_passes(tmp_path: Path) -> None:
    result = check_l2tp_wire(frames_of(tmp_path, lawful()), WIRE)
    assert result.status == "pass", result.details
    assert "0 clear L2TP/PPP frame(s)" in result.observed


@pytest.mark.parametrize("leak", [
    ETH / l2tp_data(ROAD_1, IP(src=ALICE, dst=HOST_B) / ICMP(type=8)),
    ETH / IP(src=ROAD_1, dst=LNS) / UDP(sport=1701, dport=1701) / L2TP(hdr="control+length+sequence"),
    ETH / IP(src=ROAD_1, dst=LNS) / UDP(sport=40000, dport=1701) / Raw(b"\x00" * 12),
], ids=["l2tp-data-with-ppp-and-icmp", "l2tp-control", "udp-1701"])
def test_clear_l2tp_fails_the_wire_check(tmp_path: Path, leak: Packet) -> None:
    frames = frames_of(tmp_path, [*lawful(), leak])
    assert any(clear_l2tp(f) for f in frames)
    result = check_l2tp_wire(frames, WIRE)
    assert result.status == "fail"
    assert "in clear; RFC 3193 §4" in result.details[0]
    assert "1 clear L2TP/PPP frame(s)" in result.observed


def test_clear_icmp_between_a_client_and_the_lan_fails(tmp_path: Path) -> None:
    ping = ETH / IP(src=ALICE, dst=HOST_B) / ICMP(type=8)
    result = check_l2tp_wire(frames_of(tmp_path, [*lawful(), ping]), WIRE)
    assert result.status == "fail"
    assert any("cleartext on the segment" in d for d in result.details)


def test_nat_traversal_is_judged_per_client(tmp_path: Path) -> None:
    raw_from_nat = check_l2tp_wire(frames_of(tmp_path, [*lawful(), esp(NAT)]), WIRE)
    assert raw_from_nat.status == "fail"
    assert any("raw ESP although UDP encapsulation" in d for d in raw_from_nat.details)
    udp_from_direct = check_l2tp_wire(frames_of(tmp_path, [*lawful(), esp(ROAD_1, udp=True)]), WIRE)
    assert udp_from_direct.status == "fail"
    assert any("ESP in UDP although no NAT" in d for d in udp_from_direct.details)


def test_ipsec_between_two_clients_fails(tmp_path: Path) -> None:
    result = check_l2tp_wire(frames_of(tmp_path, [*lawful(), esp(ROAD_1, NAT, udp=True)]), WIRE)
    assert result.status == "fail"
    assert any(f"(each with {LNS})" in d for d in result.details)


def test_ike_from_a_port_the_nat_remapped_is_still_ike(tmp_path: Path) -> None:
    # Masquerade keeps a privileged source port privileged: 500 can become 496, which tshark calls Auto-RP.
    frames = frames_of(tmp_path, [*lawful(), ike(NAT, sport=496)])
    assert [f.after("udp") for f in frames if 496 in f.udp_ports] == ["isakmp"]
    assert check_l2tp_wire(frames, WIRE).status == "pass"


# --- decryption: L2TP inside ESP transport mode ---

def _sa(spi: int, src: str, dst: str, nat: bool) -> SecurityAssociation:
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=ENC_KEY, auth_algo="SHA2-256-128",
                               auth_key=AUTH_KEY, nat_t_header=UDP(sport=4500, dport=4500) if nat else None)


def _keys(tmp_path: Path, rows: list[tuple[str, str, int]]) -> list[str]:
    # The 8-field esp_sa record the gateways export (see /work/shared/notes/environment.md).
    gw = tmp_path / "gw"
    gw.mkdir()
    (gw / "esp_sa").write_text("".join(
        f'"IPv4","{src}","{dst}","0x{spi:08x}","AES-CBC [RFC3602]","0x{ENC_KEY.hex()}",'
        f'"HMAC-SHA-256-128 [RFC4868]","0x{AUTH_KEY.hex()}"\n' for src, dst, spi in rows))
    merge_tables([gw], tmp_path / "keys")
    return preferences(tmp_path / "keys")


def _l2tp_traffic(client: str, ppp: str, spi_out: int, spi_in: int, nat: bool, inner_kind: str = "l2tp"
                  ) -> list[Packet]:
    """Echo and TCP both ways between `ppp` and host-b inside L2TP, plus an LCP echo, in ESP transport mode."""
    up, down = _sa(spi_out, client, LNS, nat), _sa(spi_in, LNS, client, nat)
    to_lan = [IP(src=ppp, dst=HOST_B) / ICMP(type=8), IP(src=ppp, dst=HOST_B) / ICMP(type=0),
              IP(src=ppp, dst=HOST_B) / TCP(sport=40000, dport=5399)]
    to_client = [IP(src=HOST_B, dst=ppp) / ICMP(type=0), IP(src=HOST_B, dst=ppp) / ICMP(type=8),
                 IP(src=HOST_B, dst=ppp) / TCP(sport=5399, dport=40000)]
    packets = []
    for inner in to_lan:
        plain = l2tp_data(client, inner) if inner_kind == "l2tp" else IP(src=client, dst=LNS) / UDP(
            sport=5353, dport=53) / Raw(bytes(inner))
        packets.append(ETH / up.encrypt(plain))
    for inner in to_client:
        data = l2tp_data(client, inner)
        packets.append(ETH / down.encrypt(IP(src=LNS, dst=client) / data[UDP]))
    lcp = IP(src=client, dst=LNS) / UDP(sport=1701, dport=1701) / L2TP(tunnel_id=1, session_id=2) / \
        Raw(b"\xff\x03\xc0\x21\x09\x01\x00\x08\x00\x00\x00\x01")  # LCP Echo-Request (RFC 1661 §5.8)
    return [*packets, ETH / up.encrypt(lcp)]


def test_l2tp_inside_esp_carries_every_clients_traffic(tmp_path: Path) -> None:
    prefs = _keys(tmp_path, [(ROAD_1, LNS, 0x100), (LNS, ROAD_1, 0x101), (NAT, LNS, 0x200), (LNS, NAT, 0x201)])
    packets = _l2tp_traffic(ROAD_1, ALICE, 0x100, 0x101, False) + _l2tp_traffic(NAT, BOB, 0x200, 0x201, True)
    flows = [Flow(ALICE, HOST_B, 5399), Flow(BOB, HOST_B, 5399)]
    result = check_decryption(frames_of(tmp_path, packets, prefs), flows, carrier="l2tp")
    assert result.status == "pass", result.details
    assert result.observed.startswith("14/14 ESP frames decrypted")
    assert "2 L2TP message(s) of its own" in result.observed


def test_a_client_whose_traffic_is_missing_fails(tmp_path: Path) -> None:
    prefs = _keys(tmp_path, [(ROAD_1, LNS, 0x100), (LNS, ROAD_1, 0x101)])
    packets = _l2tp_traffic(ROAD_1, ALICE, 0x100, 0x101, False)
    result = check_decryption(frames_of(tmp_path, packets, prefs), [Flow(ALICE, HOST_B), Flow(BOB, HOST_B)],
                              carrier="l2tp")
    assert result.status == "fail"
    assert f"no decrypted echo-request {BOB} -> {HOST_B}" in result.details


def test_esp_that_does_not_carry_l2tp_fails(tmp_path: Path) -> None:
    prefs = _keys(tmp_path, [(ROAD_1, LNS, 0x100), (LNS, ROAD_1, 0x101)])
    packets = _l2tp_traffic(ROAD_1, ALICE, 0x100, 0x101, False, inner_kind="dns")
    result = check_decryption(frames_of(tmp_path, packets, prefs), [Flow(ALICE, HOST_B, 5399)], carrier="l2tp")
    assert result.status == "fail"
    assert any("does not carry L2TP" in d for d in result.details)


# --- sessions, as the gateways' status reports them ---

def _lns(sessions: dict[str, str]) -> dict[str, Any]:
    up = [{"user": u, "address": a, "peer": "x"} for u, a in sessions.items()]
    return {"l2tp": {"role": "lns", "sessions_up": up, "pool": {"in_use": {a: u for u, a in sessions.items()}},
                     "last_error": ""}}


def _client(user: str, address: str | None, error: str = "") -> dict[str, Any]:
    up = [{"user": user, "address": address, "peer": LNS}] if address else []
    return {"l2tp": {"role": "client", "user": user, "address": address, "sessions_up": up, "last_error": error}}


def _statuses() -> dict[str, dict[str, Any]]:
    return {"gw": _lns({"alice": ALICE, "bob": BOB}), "road-1": _client("alice", ALICE),
            "road-2": _client("bob", BOB)}


SESSIONS = SessionExpectation("gw", CLIENTS, POOL)


def test_every_user_up_with_its_own_pool_address_passes() -> None:
    result = check_l2tp_sessions(_statuses(), SESSIONS)
    assert result.status == "pass", result.details
    assert result.observed == f"gw: alice {ALICE}, bob {BOB}"


@pytest.mark.parametrize(("change", "needle"), [
    (lambda s: s.update(gw=_lns({"alice": ALICE})), "gw: no session for bob"),
    (lambda s: s.update(gw=_lns({"alice": ALICE, "bob": ALICE})), f"address {ALICE} assigned to more than one"),
    (lambda s: s.update(gw=_lns({"alice": ALICE, "bob": "10.2.200.1"})), "outside the pool"),
    (lambda s: s["gw"]["l2tp"]["pool"]["in_use"].pop(BOB), "the pool does not record"),
    (lambda s: s["gw"]["l2tp"]["sessions_up"].append({"user": "alice", "address": "10.2.100.12"}),
     "alice has 2 sessions"),
    (lambda s: s.update({"road-2": _client("bob", None, "authentication failed for bob")}),
     "road-2 (bob): no session up (authentication failed for bob)"),
    (lambda s: s.update({"road-1": _client("alice", "10.2.100.42")}), "the LNS assigned 10.2.100.10"),
    (lambda s: s.update({"road-1": _client("mallory", ALICE)}), "dials in as 'mallory'"),
    (lambda s: s.pop("gw"), "gw: no L2TP status"),
])
def test_each_session_problem_fails(change: Any, needle: str) -> None:
    statuses = copy.deepcopy(_statuses())
    change(statuses)
    result = check_l2tp_sessions(statuses, SESSIONS)
    assert result.status == "fail", needle
    assert any(needle in d for d in result.details), (needle, result.details)


# --- SA state, each client judged on its own view of the LNS ---

def _isakmp(remote: str, nat: bool) -> dict[str, Any]:
    return {"connection": "l2tp", "state": "ESTABLISHED", "mode": "main", "algorithms": "aes128-sha256-modp2048",
            "remote": remote, "nat": {"local": False, "remote": nat}}


def _gateway(isakmp: list[dict[str, Any]]) -> dict[str, Any]:
    return {"bindings": [{"name": "l2tp", "keying": "IKEv1", "state": "installed", "mode": "transport",
                          "protection": "esp", "last_error": ""}], "ike": {"v1": {"isakmp_sas": isakmp}}}


def _rows(local: str, remote: str, encap: bool) -> list[dict[str, Any]]:
    port = [4500, 4500] if encap else None
    return [{"spi": "0x1", "direction": "out", "protocol": "esp", "mode": "transport", "src": local, "dst": remote,
             "encr": "aes128", "integ": "sha256", "encap": port},
            {"spi": "0x2", "direction": "in", "protocol": "esp", "mode": "transport", "src": remote, "dst": local,
             "encr": "aes128", "integ": "sha256", "encap": port}]


SA = SaExpectation("l2tp", "IKEv1", "transport", "esp", False, "main", None, "aes128-sha256-modp2048",
                   {"esp": "aes128-sha256"})


def _sa_world() -> tuple[dict[str, Any], dict[str, Any]]:
    statuses = {"gw": _gateway([_isakmp(f"{ROAD_1}[500]", False), _isakmp(f"{NAT}[4500]", True)]),
                "road-1": _gateway([_isakmp(f"{LNS}[500]", False)]),
                "road-2": _gateway([{**_isakmp(f"{LNS}[4500]", False), "nat": {"local": True, "remote": False}}])}
    sas = {"gw": _rows(LNS, ROAD_1, False) + _rows(LNS, NAT, True), "road-1": _rows(ROAD_1, LNS, False),
           "road-2": _rows("192.168.1.10", LNS, True)}
    return statuses, sas


def test_each_client_with_its_own_encapsulation_and_nat_passes() -> None:
    statuses, sas = _sa_world()
    result = check_l2tp_sa_state(statuses, sas, "gw", CLIENTS, SA)
    assert result.status == "pass", result.details


def test_a_direct_client_with_udp_encapsulated_sas_fails() -> None:
    statuses, sas = _sa_world()
    sas["gw"] = _rows(LNS, ROAD_1, True) + _rows(LNS, NAT, True)
    result = check_l2tp_sa_state(statuses, sas, "gw", CLIENTS, SA)
    assert result.status == "fail"
    assert any(d.startswith("road-1 <-> gw: gw: esp SA") and "UDP-encapsulated" in d for d in result.details)


def test_a_natted_client_without_nat_detection_fails() -> None:
    statuses, sas = _sa_world()
    statuses["gw"]["ike"]["v1"]["isakmp_sas"][1]["nat"]["remote"] = False
    statuses["road-2"]["ike"]["v1"]["isakmp_sas"][0]["nat"]["local"] = False
    result = check_l2tp_sa_state(statuses, sas, "gw", CLIENTS, SA)
    assert result.status == "fail"
    assert any(d.startswith("road-2 <-> gw: no gateway reports a NAT") for d in result.details)


def test_a_client_without_an_isakmp_sa_on_the_lns_fails() -> None:
    statuses, sas = _sa_world()
    statuses["gw"]["ike"]["v1"]["isakmp_sas"] = statuses["gw"]["ike"]["v1"]["isakmp_sas"][1:]
    result = check_l2tp_sa_state(statuses, sas, "gw", CLIENTS, SA)
    assert result.status == "fail"
    assert any("road-1 <-> gw: gw: no established IKEv1 SA" in d for d in result.details)


REFUSING = SessionExpectation("gw", (dataclasses.replace(CLIENTS[0], refused=True), CLIENTS[1]), POOL)
AUTH_FAILED = "PPP authentication failed for user 'alice': the server refused the user name or password"


def test_a_wrong_password_refused_with_a_clear_message_passes() -> None:
    statuses = {"gw": _lns({"bob": BOB}), "road-1": _client("alice", None, AUTH_FAILED), "road-2": _client("bob", BOB)}
    result = check_l2tp_sessions(statuses, REFUSING)
    assert result.status == "pass", result.details
    assert "road-1 (alice) refused (wrong password)" in result.expected
    assert AUTH_FAILED in result.observed


@pytest.mark.parametrize(("statuses", "needle"), [
    ({"gw": _lns({"alice": ALICE, "bob": BOB}), "road-1": _client("alice", ALICE), "road-2": _client("bob", BOB)},
     "a session for alice, who is not expected to be up"),
    ({"gw": _lns({"bob": BOB}), "road-1": _client("alice", ALICE), "road-2": _client("bob", BOB)},
     "road-1 (alice): has a session, though its password is wrong"),
    ({"gw": _lns({"bob": BOB}), "road-1": _client("alice", None, "tunnel setup timed out"),
      "road-2": _client("bob", BOB)}, "does not say that authentication failed"),
])
def test_a_wrong_password_that_gets_in_or_fails_silently_fails(statuses: dict[str, Any], needle: str) -> None:
    result = check_l2tp_sessions(statuses, REFUSING)
    assert result.status == "fail"
    assert any(needle in d for d in result.details), result.details
