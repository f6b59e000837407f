"""topology -> Plan: a pure function that decides everything a backend builds.

Backends only execute plans, so both backends build the same lab, and tests can check the
lab's design (names, addresses, routes, sysctls, programs) without root.
"""

from __future__ import annotations

import ipaddress
import sys

from labctl.lab.gateway_config import CONFIG_FILE, RenderedGateway, render_gateways
from labctl.lab.model import InterfacePlan, NetworkPlan, NodePlan, Plan, ProgramPlan, RoutePlan
from labctl.lab.naming import check_name
from labctl.lab.remote_access_config import render_remote_access
from labctl.topology.model import FORWARDING_KINDS, Interface, Node, Topology


def make_plan(topology: Topology, lab: str | None = None) -> Plan:
    """The plan for a validated topology; `lab` defaults to the topology's name.

    Pure except for one thing: keys and pre-shared keys a tunnel leaves out are generated here (lab
    material, see `labctl.lab.gateway_config`), so the plan in the state directory is what the gateways use.
    """
    lab_name = check_name(lab or topology.name)
    gateways = render_gateways(lab_name, topology)
    render_remote_access(topology, gateways)  # L2TP/IPsec: the LNS and each client node run a gateway too
    nodes = tuple(_node_plan(topology, name, node, gateways.get(name)) for name, node in topology.nodes.items())
    notices = tuple(
        f"gateway {node.name} has no IPsec configured yet: nothing is protected or tunnelled through it"
        for node in nodes
        if node.kind == "gateway" and node.name not in gateways
    ) + tuple(
        # RFC 2409 §5.4 / RFC 7296 Appendix A: an observer of Aggressive Mode can test PSK guesses offline.
        f"tunnel {name} uses IKEv1 Aggressive Mode with a pre-shared key: the identities travel in clear and the "
        "PSK-derived hash can be attacked offline by anyone who sees the exchange — fine in a lab, not in production"
        for name, t in topology.tunnels.items()
        if t.keying == "ike" and t.ike.version == 1 and t.ike.mode == "aggressive" and t.ike.auth.method == "psk"
    )
    return Plan(
        lab=lab_name,
        topology=topology.name,
        networks=tuple(NetworkPlan(name, net.subnet, net.subnet6) for name, net in topology.networks.items()),
        nodes=nodes,
        notices=notices,
    )


def _node_plan(topology: Topology, name: str, node: Node, gateway: RenderedGateway | None) -> NodePlan:
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
        + ((_gateway_program(gateway),) if gateway else ()),
        masquerade=tuple(i.name for network in node.masquerade for i in interfaces if i.network == network),
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


def _gateway_program(gateway: RenderedGateway) -> ProgramPlan:
    """labctl-gateway with its rendered config. The interpreter is the one running labctl (where the gateway
    package is installed); the Docker backend maps it to the image's python3."""
    return ProgramPlan(
        name="gateway",
        argv=(sys.executable, "-m", "labctl.gateway", "run", "--config", f"{{node_dir}}/{CONFIG_FILE}",
              "--state-dir", "{run_dir}"),
        files=(gateway.config_file(), *gateway.files),
    )
