"""The l2tp section: gateway config parsing (errors name the field) and rendering from the l2tp-ipsec topology."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labctl.gateway.config import ConfigError, parse_config
from labctl.gateway.keying import Keying
from labctl.lab.plan import make_plan
from labctl.topology.errors import TopologyError
from labctl.topology.load import load_topology

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "l2tp-ipsec.yaml"


def _gateway_json(plan: Any, node: str) -> dict[str, Any]:
    program = next(p for p in plan.node(node).programs if p.name == "gateway")
    data: dict[str, Any] = json.loads(next(f for f in program.files if f.path == "gateway.json").content)
    return data


def _rendered(variant: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    topology = load_topology(TOPOLOGY, variant, list((overrides or {}).items()))
    plan = make_plan(topology, "t8-unit")
    return {n: _gateway_json(plan, n) for n in ("gw", "road-1", "road-2", "road-3")}


def test_the_lns_answers_any_client_and_each_client_dials_its_lns() -> None:
    configs = _rendered()
    lns = configs["gw"]
    (conn,) = lns["connections"]
    assert conn["remote"] == "%any" and conn["remote_id"] == "" and conn["version"] == 1
    assert conn["children"][0]["mode"] == "transport" and conn["children"][0]["start_action"] == "none"
    assert lns["l2tp"]["role"] == "lns" and set(lns["l2tp"]["users"]) == {"alice", "bob", "carol"}
    for node, user, local in (("road-1", "alice", "198.51.100.31"), ("road-2", "bob", "192.168.1.10")):
        cfg = configs[node]
        assert cfg["local"] == local
        assert cfg["connections"][0]["remote"] == "198.51.100.20"
        assert cfg["l2tp"] == {**cfg["l2tp"], "role": "client", "user": user, "server": "198.51.100.20",
                               "password": lns["l2tp"]["users"][user], "routes": ["10.2.0.0/24"]}
    # Everything parses as the gateway will read it, and the LNS routes nothing into its IPsec TUN device.
    parsed = {n: parse_config(c) for n, c in configs.items()}
    assert Keying(parsed["gw"]).transport_peers() == []
    assert Keying(parsed["road-1"]).transport_peers() == ["198.51.100.20/32"]
    assert [p.remote for p in Keying(parsed["gw"]).dataplane.policies] == ["0.0.0.0/0"]


def test_wrong_password_variant_changes_only_road_1() -> None:
    configs = _rendered("wrong-password")
    assert configs["road-1"]["l2tp"]["password"] == "not-alices-password"
    assert configs["road-2"]["l2tp"]["password"] == configs["gw"]["l2tp"]["users"]["bob"]


def test_passwords_left_out_are_generated_and_shared() -> None:
    configs = _rendered(overrides={"l2tp.users": {"alice": None, "bob": None, "carol": None}})
    generated = configs["gw"]["l2tp"]["users"]["alice"]
    assert len(generated) >= 16 and configs["road-1"]["l2tp"]["password"] == generated


@pytest.mark.parametrize(("override", "message"), [
    ({"l2tp.lns": "host-b"}, "expected a node of kind 'gateway'"),
    ({"l2tp.clients": {"road-1": {"user": "dave"}}}, "unknown user 'dave'"),
    ({"l2tp.clients": {"nobody": {"user": "alice"}}}, "unknown node 'nobody'"),
    ({"l2tp.local_address": "10.2.100.20"}, "inside the pool"),
    ({"l2tp.ike.version": 2}, "IKEv1"),
])
def test_topology_mistakes_are_named(override: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError) as exc:
        load_topology(TOPOLOGY, None, list(override.items()))
    assert "l2tp." in str(exc.value) and message in str(exc.value)


def _base(l2tp: dict[str, Any]) -> dict[str, Any]:
    return {"name": "g", "state_dir": ".", "local": "198.51.100.20", "l2tp": l2tp}


@pytest.mark.parametrize(("l2tp", "message"), [
    ({"role": "lac"}, "l2tp.role: expected one of 'lns', 'client'"),
    ({"role": "lns", "local_address": "10.2.100.1", "pool": ["10.2.100.9"], "users": {"a": "b"}}, "l2tp.pool"),
    ({"role": "lns", "local_address": "10.2.100.1", "pool": ["10.2.100.9", "10.2.100.1"], "users": {"a": "b"}},
     "comes before"),
    ({"role": "lns", "local_address": "10.2.100.1", "pool": ["10.2.100.9", "10.2.100.19"], "users": {}},
     "at least one user"),
    ({"role": "client", "server": "198.51.100.20", "user": "a", "password": "b", "routes": ["10.2.0.0/24"],
      "auth": ["eap"]}, "l2tp.auth[0]"),
    ({"role": "client", "server": "nowhere", "user": "a", "password": "b", "routes": ["10.2.0.0/24"]},
     "l2tp.server: expected an IPv4 address"),
    ({"role": "client", "server": "198.51.100.20", "user": "a", "password": "b", "routes": [], "x": 1},
     "l2tp.routes: at least one prefix"),
])
def test_gateway_config_errors_name_the_field(l2tp: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        parse_config(_base(l2tp))
    assert message in str(exc.value)


def test_passwords_never_appear_in_the_config_repr() -> None:
    cfg = parse_config(_base({"role": "client", "server": "198.51.100.20", "user": "alice",
                              "password": "LAB-ONLY-secret", "routes": ["10.2.0.0/24"]}))
    assert cfg.l2tp is not None and cfg.l2tp.password == "LAB-ONLY-secret"
    assert "LAB-ONLY-secret" not in repr(cfg)
