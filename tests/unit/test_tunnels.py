"""Tunnels in topologies: validation, variants, and the two gateway configs rendered from one tunnel.

The rendered configs are fed to two in-memory data planes (through the gateway's own config parser and keying
layer) to show that what one end sends the other accepts, for every manually keyed protection.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from labctl.gateway.config import parse_config
from labctl.gateway.keying import Keying
from labctl.lab.gateway_config import render_gateways
from labctl.lab.plan import make_plan
from labctl.topology.errors import TopologyError
from labctl.topology.load import load_topology, parse_topology
from labctl.topology.variants import parse_assignment

REPO = Path(__file__).resolve().parents[2]
S2S = REPO / "topologies" / "site-to-site.yaml"


def s2s(variant: str | None = None, **sets: Any) -> Any:
    return load_topology(S2S, variant, list(sets.items()))


def icmp(src: str, dst: str) -> bytes:
    payload = b"\x08\x00\x00\x00\x12\x34\x00\x01" + b"labctl" * 8
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, 0, 64, 1, 0, socket.inet_aton(src),
                       socket.inet_aton(dst)) + payload


def keyings(topology: Any, tmp: Path) -> dict[str, Keying]:
    out = {}
    for node, rg in render_gateways("t", topology).items():
        cfg = dict(rg.config, state_dir=str(tmp / node))
        k = Keying(parse_config(cfg))
        k.start(0.0)
        out[node] = k
    return out


@pytest.mark.parametrize("variant", ["manual-esp", "manual-ah", "manual-ah-esp", "manual-esp-udp", "manual-esp-cbc"])
def test_manual_variants_carry_traffic_both_ways(variant: str, tmp_path: Path) -> None:
    k = keyings(s2s(variant), tmp_path)
    for a, b, src, dst in (("gw-a", "gw-b", "10.1.0.10", "10.2.0.10"), ("gw-b", "gw-a", "10.2.0.10", "10.1.0.10")):
        plain = icmp(src, dst)
        sent = k[a].dataplane.outbound(plain, 1.0)
        if hasattr(sent, "payload"):  # ESP in UDP 4500
            got = k[b].dataplane.inbound_udp(sent.payload, k[a].cfg.local, 4500, k[b].cfg.local, 4500, 1.0)
        else:
            got = k[b].dataplane.inbound_ip(sent.packet, 1.0)
        assert got is not None, (variant, a, sent, k[b].dataplane.counters())
        assert got[12:20] == plain[12:20] and got[20:] == plain[20:]


def test_rendered_ends_mirror_each_other() -> None:
    r = render_gateways("t", s2s("manual-ah-esp"))
    a, b = r["gw-a"].config["manual"][0], r["gw-b"].config["manual"][0]
    assert a["local"] == b["remote"] == "198.51.100.10" and a["remote"] == b["local"] == "198.51.100.20"
    assert a["local_ts"] == b["remote_ts"] == ["10.1.0.0/24"]
    for proto in ("esp", "ah"):
        assert a[proto]["spi_out"] == b[proto]["spi_in"] and a[proto]["spi_in"] == b[proto]["spi_out"]
        assert a[proto]["integ_key_out"] == b[proto]["integ_key_in"]
    assert a["esp"]["encr_key_out"] == b["esp"]["encr_key_in"] != a["esp"]["encr_key_in"]


def test_ike_rendering_only_left_initiates_and_generated_psk_is_shared() -> None:
    r = render_gateways("t", s2s(**{"tunnels.s2s.ike.auth": {"method": "psk"}}))
    ca, cb = r["gw-a"].config["connections"][0], r["gw-b"].config["connections"][0]
    assert ca["children"][0]["start_action"] == "start" and cb["children"][0]["start_action"] == "none"
    assert ca["auth"]["psk"] == cb["auth"]["psk"] and len(ca["auth"]["psk"]) >= 24


def test_certificate_variant_issues_files_from_one_lab_ca() -> None:
    r = render_gateways("t", s2s("ikev2-cert"))
    files_a = {f.path: f for f in r["gw-a"].files}
    files_b = {f.path: f for f in r["gw-b"].files}
    assert files_a["pki/ca.pem"].content == files_b["pki/ca.pem"].content
    assert files_a["pki/s2s.key.pem"].mode == 0o600
    assert r["gw-a"].config["connections"][0]["auth"]["method"] == "pubkey"


def test_aggressive_mode_psk_is_announced() -> None:
    plan = make_plan(s2s("ikev1-aggressive"))
    assert any("Aggressive Mode with a pre-shared key" in n for n in plan.notices)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"tunnels.s2s.left": "gw-x"}, "tunnels.s2s.left: unknown node 'gw-x'"),
        ({"tunnels.s2s.left": "host-a"}, "tunnel mode needs a node of kind 'gateway'"),
        ({"tunnels.s2s.protection": "ah+esp"}, "IKEv2 negotiates one protocol per child SA"),
        ({"tunnels.s2s.encap": True, "tunnels.s2s.protection": "ah"}, "UDP encapsulation carries ESP only"),
        ({"tunnels.s2s.ike.mode": "aggressive"}, "aggressive mode exists only in IKEv1"),
        ({"tunnels.s2s.mode": "tunel"}, "tunnels.s2s.mode"),
    ],
)
def test_tunnel_errors(sets: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError) as err:
        s2s(**sets)
    assert message in str(err.value)
    assert "site-to-site.yaml" in str(err.value)


def test_wrong_manual_key_length_says_what_to_fix() -> None:
    topo = s2s("manual-esp", **{"tunnels.s2s.manual.encr": "aes256gcm16"})
    with pytest.raises(ValueError, match=r"left_to_right.encr_key \(aes256gcm16, salt included\): expected 36 bytes"):
        render_gateways("t", topo)


def test_unknown_variant_and_bad_set() -> None:
    with pytest.raises(TopologyError, match="unknown variant 'nope'; expected one of: ikev2-cert"):
        s2s("nope")
    with pytest.raises(TopologyError, match="expected PATH=VALUE"):
        parse_assignment("tunnels.s2s.protection")
    assert parse_assignment("tunnels.s2s.encap=true") == ("tunnels.s2s.encap", True)


def test_variants_do_not_leak_into_the_file_data() -> None:
    text = S2S.read_text()
    assert parse_topology(text, "x.yaml", "manual-ah").tunnels["s2s"].protection == "ah"
    assert parse_topology(text, "x.yaml").tunnels["s2s"].protection == "esp"
