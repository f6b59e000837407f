"""The plan derived from a topology: interface names, addresses, routes, sysctls, programs, notices."""

from __future__ import annotations

import json

import pytest

from labctl.lab.model import InterfacePlan, NetworkPlan, NodePlan, Plan, ProgramPlan, RoutePlan, plan_from_dict
from labctl.lab.plan import make_plan
from labctl.topology import load_topology, parse_topology
from labctl.topology.catalog import resolve_topology


def test_routed_plan() -> None:
    plan = make_plan(load_topology(resolve_topology("routed")))
    assert plan == Plan(
        lab="routed",
        topology="routed",
        networks=(
            NetworkPlan("lan-a", "10.1.0.0/24"),
            NetworkPlan("internet", "198.51.100.0/24"),
            NetworkPlan("lan-b", "10.2.0.0/24"),
        ),
        nodes=(
            NodePlan("host-a", "host", (InterfacePlan("eth0", "lan-a", "10.1.0.10/24"),),
                     routes=(RoutePlan("default", "10.1.0.1"),)),
            NodePlan("router-a", "router",
                     (InterfacePlan("eth0", "lan-a", "10.1.0.1/24"),
                      InterfacePlan("eth1", "internet", "198.51.100.10/24")),
                     routes=(RoutePlan("10.2.0.0/24", "198.51.100.20"),),
                     sysctls={"net.ipv4.ip_forward": "1"}),
            NodePlan("router-b", "router",
                     (InterfacePlan("eth0", "lan-b", "10.2.0.1/24"),
                      InterfacePlan("eth1", "internet", "198.51.100.20/24")),
                     routes=(RoutePlan("10.1.0.0/24", "198.51.100.10"),),
                     sysctls={"net.ipv4.ip_forward": "1"}),
            NodePlan("host-b", "host", (InterfacePlan("eth0", "lan-b", "10.2.0.10/24"),),
                     routes=(RoutePlan("default", "10.2.0.1"),)),
        ),
    )


def test_site_to_site_has_no_route_between_the_lans_and_runs_a_gateway_on_each_end() -> None:
    plan = make_plan(load_topology(resolve_topology("site-to-site")), "t2-x")
    assert plan.lab == "t2-x"
    for name in ("gw-a", "gw-b"):
        gateway = plan.node(name)
        assert gateway.kind == "gateway"
        assert gateway.routes == ()  # LAN to LAN only through the tunnel
        assert gateway.sysctls == {"net.ipv4.ip_forward": "1"}
        (program,) = gateway.programs
        assert program.name == "gateway"
        assert program.argv[1:] == ("-m", "labctl.gateway", "run", "--config", "{node_dir}/gateway.json",
                                    "--state-dir", "{run_dir}")
        config = json.loads(next(f for f in program.files if f.path == "gateway.json").content)
        assert config["name"] == name and config["connections"][0]["version"] == 2
    assert plan.notices == ()


def test_a_gateway_without_a_tunnel_is_announced() -> None:
    text = resolve_topology("site-to-site").read_text()
    topology = parse_topology(text.split("\ntunnels:")[0], "s2s-without-tunnels.yaml")
    plan = make_plan(topology, "t2-x")
    assert plan.node("gw-a").programs == ()
    assert plan.notices == (
        "gateway gw-a has no IPsec configured yet: nothing is protected or tunnelled through it",
        "gateway gw-b has no IPsec configured yet: nothing is protected or tunnelled through it",
    )


def test_ipv6_named_interfaces_and_programs() -> None:
    topology = parse_topology("""\
name: six
networks:
  a: {subnet: 10.0.0.0/24, subnet6: "fd00:a::/64"}
  b: {subnet: 10.0.1.0/24}
nodes:
  r:
    kind: router
    interfaces:
      - {network: a, address: 10.0.0.1/24, address6: "fd00:a::1", name: lan}
      - {network: b, address: 10.0.1.1}
  h:
    kind: host
    interfaces:
      - {network: a, address: 10.0.0.2, address6: "fd00:a::2"}
    gateway: 10.0.0.1
    gateway6: "fd00:a::1"
    routes:
      - {to: 10.0.1.0/24, via: 10.0.0.1}
    programs:
      - {name: web, argv: [python3, -m, http.server], env: {A: "1"}}
""")
    plan = make_plan(topology)
    router = plan.node("r")
    assert router.interfaces == (
        InterfacePlan("lan", "a", "10.0.0.1/24", "fd00:a::1/64"),
        InterfacePlan("eth1", "b", "10.0.1.1/24"),
    )
    assert router.sysctls == {
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "1",
        "net.ipv6.conf.all.accept_dad": "0",
        "net.ipv6.conf.default.accept_dad": "0",
    }
    host = plan.node("h")
    assert host.routes == (
        RoutePlan("default", "10.0.0.1"),
        RoutePlan("default", "fd00:a::1"),
        RoutePlan("10.0.1.0/24", "10.0.0.1"),
    )
    assert host.programs == (ProgramPlan("web", ("python3", "-m", "http.server"), {"A": "1"}),)
    assert "net.ipv4.ip_forward" not in host.sysctls
    assert plan.notices == ()


def test_plan_round_trips_through_its_dict() -> None:
    plan = make_plan(load_topology(resolve_topology("site-to-site")))
    assert plan_from_dict(plan.to_dict()) == plan


def test_lab_name_is_checked() -> None:
    with pytest.raises(ValueError, match="invalid lab name 'Bad Name'"):
        make_plan(load_topology(resolve_topology("routed")), "Bad Name")


def test_a_tunnel_gives_both_gateways_the_gateway_program() -> None:
    text = resolve_topology("site-to-site").read_text()
    base = text.split("\ntunnels:")[0]
    plan = make_plan(parse_topology(base + "\ntunnels:\n  s2s: {left: gw-a, right: gw-b, keying: manual}\n"))
    assert plan.notices == ()
    for name in ("gw-a", "gw-b"):
        (program,) = plan.node(name).programs
        assert program.name == "gateway"
        assert program.argv[1:] == ("-m", "labctl.gateway", "run", "--config", "{node_dir}/gateway.json",
                                    "--state-dir", "{run_dir}")
        (config,) = program.files
        assert config.path == "gateway.json"
        assert config.mode == 0o600  # it holds the tunnel's keys
        assert f'"name": "{name}"' in config.content
    assert plan.node("host-a").programs == ()
