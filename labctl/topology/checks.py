"""Rules that relate the fields of a topology to each other.

Each check returns issues (path + message) instead of raising, so one run reports every problem.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network

from labctl.topology.errors import Issue, Path, format_path
from labctl.topology.model import FORWARDING_KINDS, Node, Topology
from labctl.topology.remote_access import check_remote_access
from labctl.topology.tunnels import check_tunnels
from labctl.topology.yamlpos import KEY

AnyInterface = IPv4Interface | IPv6Interface
AnyNetwork = IPv4Network | IPv6Network

RESERVED_NODE_NAMES = frozenset({"sw"})
"""`sw` names the lab's switch namespace (labctl-<lab>-sw) that holds the bridges."""


def check_topology(topology: Topology) -> list[Issue]:
    owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Path] = {}
    issues = [*_check_networks(topology)]
    for name, node in topology.nodes.items():
        issues += _check_node(topology, name, node, owners)
    for name, node in topology.nodes.items():
        issues += _check_next_hops(topology, name, node, owners)
    issues += check_tunnels(topology)
    issues += check_remote_access(topology)
    return issues


def _subnets(topology: Topology, network: str) -> tuple[IPv4Network, IPv6Network | None]:
    spec = topology.networks[network]
    return IPv4Network(spec.subnet), IPv6Network(spec.subnet6) if spec.subnet6 else None


def _check_networks(topology: Topology) -> Iterator[Issue]:
    seen: list[tuple[str, AnyNetwork]] = []
    for name, spec in topology.networks.items():
        for field, text in (("subnet", spec.subnet), ("subnet6", spec.subnet6)):
            if text is None:
                continue
            subnet = ipaddress.ip_network(text)
            for other_name, other in seen:
                if subnet.version == other.version and subnet.overlaps(other):
                    yield Issue(("networks", name, field),
                                f"{text} overlaps network {other_name} ({other}); expected disjoint subnets")
            seen.append((name, subnet))


def _check_node(
    topology: Topology, name: str, node: Node, owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Path]
) -> Iterator[Issue]:
    path: Path = ("nodes", name)
    if name in RESERVED_NODE_NAMES:
        yield Issue(path + (KEY,), f"node name {name!r} is reserved (it names the lab's switch namespace)")
    networks_seen: dict[str, int] = {}
    names_seen: dict[str, int] = {}
    for index, iface in enumerate(node.interfaces):
        ipath = path + ("interfaces", index)
        ifname = iface.name or f"eth{index}"
        if ifname in names_seen:
            first = names_seen[ifname]
            yield Issue(ipath + ("name",), f"interface name {ifname!r} is already used by interfaces[{first}]")
        names_seen.setdefault(ifname, index)
        if iface.network not in topology.networks:
            known = ", ".join(topology.networks)
            yield Issue(ipath + ("network",), f"unknown network {iface.network!r}; expected one of: {known}")
            continue
        if iface.network in networks_seen:
            yield Issue(ipath + ("network",), f"the node already has an interface on {iface.network} "
                        f"(interfaces[{networks_seen[iface.network]}]); expected one interface per network")
        networks_seen.setdefault(iface.network, index)
        subnet4, subnet6 = _subnets(topology, iface.network)
        yield from _check_address(IPv4Interface(iface.address), iface.address, subnet4, iface.network,
                                  ipath + ("address",), owners)
        if iface.address6 is not None:
            if subnet6 is None:
                yield Issue(ipath + ("address6",), f"network {iface.network} has no subnet6; add one or drop address6")
            else:
                yield from _check_address(IPv6Interface(iface.address6), iface.address6, subnet6, iface.network,
                                          ipath + ("address6",), owners)
    for index, network in enumerate(node.masquerade):
        if node.kind not in FORWARDING_KINDS:
            yield Issue(path + ("masquerade", index), f"masquerade needs a node that forwards (router or gateway), "
                        f"but {name} is a {node.kind}")
        elif network not in networks_seen:
            attached = ", ".join(networks_seen) or "none"
            yield Issue(path + ("masquerade", index), f"{name} has no interface on {network!r}; expected one of the "
                        f"networks it is attached to: {attached}")
    program_names: set[str] = set()
    for index, program in enumerate(node.programs):
        if program.name in program_names:
            yield Issue(path + ("programs", index, "name"), f"duplicate program name {program.name!r} on this node")
        program_names.add(program.name)


def _check_address(
    address: AnyInterface, text: str, subnet: AnyNetwork, network: str, path: Path,
    owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Path],
) -> Iterator[Issue]:
    if "/" in text and address.network.prefixlen != subnet.prefixlen:
        yield Issue(path, f"{text} has prefix length /{address.network.prefixlen}, but network {network} is "
                    f"{subnet}; expected /{subnet.prefixlen} or no prefix")
    ip = address.ip
    if ip not in subnet:
        yield Issue(path, f"{ip} is outside network {network} ({subnet}); expected an address in {subnet}")
        return
    if subnet.version == 4 and subnet.prefixlen < 31 and ip in (subnet.network_address, subnet.broadcast_address):
        yield Issue(path, f"{ip} is the network or broadcast address of {subnet}; expected a host address")
        return
    if ip in owners:
        yield Issue(path, f"duplicate address {ip}: already used by {format_path(owners[ip])}")
        return
    owners[ip] = path


def _check_next_hops(
    topology: Topology, name: str, node: Node, owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Path]
) -> Iterator[Issue]:
    path: Path = ("nodes", name)
    hops: list[tuple[Path, str, str]] = []
    if node.gateway is not None:
        hops.append((path + ("gateway",), "default", node.gateway))
    if node.gateway6 is not None:
        hops.append((path + ("gateway6",), "default", node.gateway6))
    for index, route in enumerate(node.routes):
        hops.append((path + ("routes", index, "via"), route.to, route.via))

    destinations: dict[str, Path] = {}
    for hop_path, destination, via_text in hops:
        via = ipaddress.ip_address(via_text)
        if destination == "default":
            key = f"default (IPv{via.version})"
        else:
            key = str(ipaddress.ip_network(destination))
        if key in destinations:
            yield Issue(hop_path, f"a route to {destination} is already given by {format_path(destinations[key])}")
        destinations.setdefault(key, hop_path)
        if destination != "default" and ipaddress.ip_network(destination).version != via.version:
            yield Issue(hop_path, f"next hop {via} and destination {destination} are different IP versions")
            continue
        connected = [
            net for net in (_iface_subnet(topology, iface.network, via.version) for iface in node.interfaces) if net
        ]
        if not any(via in subnet for subnet in connected):
            on = ", ".join(str(s) for s in connected) or "none"
            yield Issue(hop_path, f"next hop {via} is unreachable: it is not on a network this node is attached to "
                        f"(its subnets: {on}); expected the address of a neighbour")
            continue
        owner = owners.get(via)
        if owner is None:
            yield Issue(hop_path, f"next hop {via} is unreachable: no node has this address")
        elif owner[:2] == path:
            yield Issue(hop_path, f"next hop {via} is this node's own address; expected a neighbour's address")


def _iface_subnet(topology: Topology, network: str, version: int) -> AnyNetwork | None:
    if network not in topology.networks:
        return None
    subnet4, subnet6 = _subnets(topology, network)
    return subnet4 if version == 4 else subnet6
