"""topology -> Plan: a pure function that decides everything a backend builds.

Backends only execute plans, so both backends build the same lab, and tests can check the
lab's design (names, addresses, routes, sysctls, programs) without root.
"""

from __future__ import annotations

import ipaddress

from labctl.lab.model import InterfacePlan, NetworkPlan, NodePlan, Plan, ProgramPlan, RoutePlan
from labctl.lab.naming import check_name
from labctl.topology.model import Interface, Node, Topology

FORWARDING_KINDS = frozenset({"router", "gateway"})


def make_plan(topology: Topology, lab: str | None = None) -> Plan:
    """The plan for a validated topology; `lab` defaults to the topology's name."""
    lab_name = check_name(lab or topology.name)
    nodes = tuple(_node_plan(topology, name, node) for name, node in topology.nodes.items())
    notices = tuple(
        f"gateway {node.name} has no IPsec configured yet: nothing is protected or tunnelled through it"
        for node in nodes
        if node.kind == "gateway" and node.ipsec is None
    )
    return Plan(
        lab=lab_name,
        topology=topology.name,
        networks=tuple(NetworkPlan(name, net.subnet, net.subnet6) for name, net in topology.networks.items()),
        nodes=nodes,
        notices=notices,
    )


def _node_plan(topology: Topology, name: str, node: Node) -> NodePlan:
    interfaces = tuple(_interface_plan(topology, index, iface) for index, iface in enumerate(node.interfaces))
    routes: list[RoutePlan] = []
    if node.gateway is not None:
        routes.append(RoutePlan("default", node.gateway))
    if node.gateway6 is not None:
        routes.append(RoutePlan("default", node.gateway6))
    routes += [RoutePlan(route.to, route.via) for route in node.routes]
    return NodePlan(
        name=name,
        kind=node.kind,
        interfaces=interfaces,
        routes=tuple(routes),
        sysctls=_sysctls(node, has_ipv6=any(i.address6 for i in interfaces)),
        programs=tuple(ProgramPlan(p.name, tuple(p.argv), dict(p.env)) for p in node.programs)
        + _gateway_programs(name, node),
        ipsec=node.ipsec,
    )


def _interface_plan(topology: Topology, index: int, iface: Interface) -> InterfacePlan:
    network = topology.networks[iface.network]
    subnet = ipaddress.IPv4Network(network.subnet)
    address = f"{ipaddress.IPv4Interface(iface.address).ip}/{subnet.prefixlen}"
    address6 = None
    if iface.address6 is not None and network.subnet6 is not None:
        prefix6 = ipaddress.IPv6Network(network.subnet6).prefixlen
        address6 = f"{ipaddress.IPv6Interface(iface.address6).ip}/{prefix6}"
    return InterfacePlan(iface.name or f"eth{index}", iface.network, address, address6)


def _sysctls(node: Node, has_ipv6: bool) -> dict[str, str]:
    sysctls: dict[str, str] = {}
    if node.kind in FORWARDING_KINDS:
        sysctls["net.ipv4.ip_forward"] = "1"
        if has_ipv6:
            sysctls["net.ipv6.conf.all.forwarding"] = "1"
    if has_ipv6:
        # Duplicate address detection keeps a new IPv6 address "tentative" (unusable) for about a second;
        # lab addresses are unique by validation, so skip it and let the lab work as soon as `up` returns.
        sysctls["net.ipv6.conf.all.accept_dad"] = "0"
        sysctls["net.ipv6.conf.default.accept_dad"] = "0"
    return sysctls


def _gateway_programs(name: str, node: Node) -> tuple[ProgramPlan, ...]:
    """The gateway program for a gateway with an `ipsec:` section.

    The IPsec schema and the rendering of the gateway's config arrive with the IPsec issues; until then a
    gateway runs nothing (and `make_plan` tells the person so) rather than a program that pretends.
    """
    return ()
