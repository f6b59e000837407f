"""Every validation error of issue 2, with its file, line and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.topology import TopologyError, load_topology, parse_topology

BASE = """\
name: t
networks:
  lan-a: {subnet: 10.1.0.0/24}
  internet: {subnet: 198.51.100.0/24}
nodes:
  host-a:
    kind: host
    interfaces:
      - {network: lan-a, address: 10.1.0.10}
    gateway: 10.1.0.1
  router-a:
    kind: router
    interfaces:
      - {network: lan-a, address: 10.1.0.1}
      - {network: internet, address: 198.51.100.1}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "lab.yaml")
    return [str(issue) for issue in info.value.issues]


def test_base_is_valid() -> None:
    topology = parse_topology(BASE, "lab.yaml")
    assert list(topology.nodes) == ["host-a", "router-a"]


def test_address_outside_subnet() -> None:
    assert errors(BASE.replace("address: 10.1.0.10}", "address: 10.9.0.10}")) == [
        "lab.yaml:9:35: nodes.host-a.interfaces[0].address: 10.9.0.10 is outside network lan-a (10.1.0.0/24); "
        "expected an address in 10.1.0.0/24"
    ]


def test_duplicate_address() -> None:
    assert errors(BASE.replace("address: 10.1.0.10}", "address: 10.1.0.1}")) == [
        "lab.yaml:14:35: nodes.router-a.interfaces[0].address: duplicate address 10.1.0.1: already used by "
        "nodes.host-a.interfaces[0].address",
        # host-a's default gateway is now its own address
        "lab.yaml:10:14: nodes.host-a.gateway: next hop 10.1.0.1 is this node's own address; "
        "expected a neighbour's address",
    ]


def test_unknown_network() -> None:
    assert errors(BASE.replace("network: internet,", "network: internt,")) == [
        "lab.yaml:15:19: nodes.router-a.interfaces[1].network: unknown network 'internt'; "
        "expected one of: lan-a, internet"
    ]


def test_unknown_node_kind() -> None:
    assert errors(BASE.replace("kind: router", "kind: switch")) == [
        "lab.yaml:12:11: nodes.router-a.kind: unknown node kind 'switch'; expected one of 'host', 'router' or 'gateway'"
    ]


def test_route_via_unreachable_next_hop() -> None:
    text = BASE + "    routes:\n      - {to: 10.2.0.0/24, via: 203.0.113.1}\n"
    assert errors(text) == [
        "lab.yaml:17:32: nodes.router-a.routes[0].via: next hop 203.0.113.1 is unreachable: it is not on a network "
        "this node is attached to (its subnets: 10.1.0.0/24, 198.51.100.0/24); expected the address of a neighbour"
    ]


def test_route_via_address_nobody_has() -> None:
    assert errors(BASE.replace("gateway: 10.1.0.1", "gateway: 10.1.0.99")) == [
        "lab.yaml:10:14: nodes.host-a.gateway: next hop 10.1.0.99 is unreachable: no node has this address"
    ]


def test_duplicate_node_name() -> None:
    text = BASE + "  host-a:\n    kind: host\n    interfaces:\n      - {network: lan-a, address: 10.1.0.11}\n"
    assert errors(text) == ["lab.yaml:16:3: nodes.host-a: duplicate name 'host-a' (first defined at line 6)"]


def test_duplicate_network_name() -> None:
    text = BASE.replace("  internet: {subnet: 198.51.100.0/24}\n", "  lan-a: {subnet: 198.51.100.0/24}\n")
    assert errors(text) == ["lab.yaml:4:3: networks.lan-a: duplicate name 'lan-a' (first defined at line 3)"]


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = BASE.replace("kind: host", "kind: [host")
    (message,) = errors(text)
    assert message == (
        "lab.yaml:8:15: YAML syntax error: while parsing a flow sequence, expected ',' or ']', but got ':'"
    )


def test_unknown_field_lists_the_expected_ones() -> None:
    assert errors(BASE.replace("{network: lan-a, address: 10.1.0.10}", "{network: lan-a, adress: 10.1.0.10}")) == [
        "lab.yaml:9:9: nodes.host-a.interfaces[0].address: required field 'address' is missing",
        "lab.yaml:9:34: nodes.host-a.interfaces[0].adress: unknown field 'adress'; "
        "expected one of: network, address, address6, name",
    ]


def test_bad_address_syntax() -> None:
    assert errors(BASE.replace("address: 10.1.0.10}", "address: 10.1.0.300}")) == [
        "lab.yaml:9:35: nodes.host-a.interfaces[0].address: '10.1.0.300' is not an IPv4 address like 10.1.0.1 "
        "or 10.1.0.1/24"
    ]


def test_prefix_must_match_the_network() -> None:
    assert errors(BASE.replace("address: 10.1.0.10}", "address: 10.1.0.10/16}")) == [
        "lab.yaml:9:35: nodes.host-a.interfaces[0].address: 10.1.0.10/16 has prefix length /16, but network lan-a "
        "is 10.1.0.0/24; expected /24 or no prefix"
    ]


def test_network_and_broadcast_addresses_are_refused() -> None:
    assert errors(BASE.replace("address: 10.1.0.10}", "address: 10.1.0.255}")) == [
        "lab.yaml:9:35: nodes.host-a.interfaces[0].address: 10.1.0.255 is the network or broadcast address of "
        "10.1.0.0/24; expected a host address"
    ]


def test_overlapping_subnets() -> None:
    assert errors(BASE.replace("198.51.100.0/24", "10.1.0.0/16").replace("198.51.100.1", "10.1.1.1")) == [
        "lab.yaml:4:22: networks.internet.subnet: 10.1.0.0/16 overlaps network lan-a (10.1.0.0/24); "
        "expected disjoint subnets"
    ]


def test_invalid_node_name() -> None:
    assert errors(BASE.replace("  host-a:\n", "  Host_A:\n")) == [
        "lab.yaml:6:3: nodes.Host_A: invalid name 'Host_A': expected 1-31 characters: lower-case letters, digits "
        "and '-', starting with a letter or digit"
    ]


def test_tunnel_checks_run_with_the_others() -> None:
    text = BASE + "tunnels:\n  t1: {left: host-a, right: router-b}\n"
    assert errors(text) == [
        "lab.yaml:17:14: tunnels.t1.left: tunnel mode needs a node of kind 'gateway' (it forwards for a LAN), but "
        "host-a is a host; use mode: transport for host-to-host",
        "lab.yaml:17:29: tunnels.t1.right: unknown node 'router-b'; expected one of: host-a, router-a",
    ]


def test_reserved_node_name() -> None:
    assert errors(BASE.replace("  host-a:\n", "  sw:\n")) == [
        "lab.yaml:6:3: nodes.sw: node name 'sw' is reserved (it names the lab's switch namespace)"
    ]


def test_several_problems_are_reported_together() -> None:
    text = BASE.replace("address: 10.1.0.10}", "address: 10.9.0.10}").replace("network: internet,", "network: x,")
    assert len(errors(text)) == 2


def test_empty_file_and_not_a_mapping() -> None:
    assert errors("") == ["lab.yaml:1:1: the file is empty; expected a topology mapping"]
    assert errors("- a\n") == ["lab.yaml:1:1: expected a mapping with name, networks and nodes, got a list"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"missing\.yaml: cannot read the file: No such file or directory"):
        load_topology(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["routed", "site-to-site"])
def test_shipped_topologies_are_valid(name: str) -> None:
    from labctl.topology.catalog import resolve_topology

    assert load_topology(resolve_topology(name)).name == name


def test_duplicate_route_and_mixed_versions() -> None:
    text = BASE.replace("    gateway: 10.1.0.1\n", "    gateway: 10.1.0.1\n    routes:\n"
                        "      - {to: default, via: 10.1.0.1}\n      - {to: 10.2.0.0/24, via: 'fd00::1'}\n")
    assert errors(text) == [
        "lab.yaml:12:28: nodes.host-a.routes[0].via: a route to default is already given by nodes.host-a.gateway",
        "lab.yaml:13:32: nodes.host-a.routes[1].via: next hop fd00::1 and destination 10.2.0.0/24 are different "
        "IP versions",
    ]


def test_duplicate_interface_name_and_second_interface_on_a_network() -> None:
    text = BASE.replace("      - {network: internet, address: 198.51.100.1}\n",
                        "      - {network: lan-a, address: 10.1.0.2, name: eth0}\n")
    assert errors(text) == [
        "lab.yaml:15:51: nodes.router-a.interfaces[1].name: interface name 'eth0' is already used by interfaces[0]",
        "lab.yaml:15:19: nodes.router-a.interfaces[1].network: the node already has an interface on lan-a "
        "(interfaces[0]); expected one interface per network",
    ]
