"""Draw a topology: networks as ellipses, nodes as boxes, one edge per interface labelled with its address."""

from __future__ import annotations

from labctl.topology.model import Topology

FORMATS = ("mermaid", "dot")


def _node_id(name: str) -> str:
    return "node_" + name.replace("-", "_")


def _net_id(name: str) -> str:
    return "net_" + name.replace("-", "_")


def to_mermaid(topology: Topology) -> str:
    lines = ["graph LR"]
    for name, network in topology.networks.items():
        lines.append(f'  {_net_id(name)}(["{name}<br/>{network.subnet}"])')
    for name, node in topology.nodes.items():
        lines.append(f'  {_node_id(name)}["{name}<br/>{node.kind}"]')
    for name, node in topology.nodes.items():
        for iface in node.interfaces:
            lines.append(f'  {_node_id(name)} ---|"{iface.address}"| {_net_id(iface.network)}')
    return "\n".join(lines) + "\n"


def to_dot(topology: Topology) -> str:
    shapes = {"host": "box", "router": "box3d", "gateway": "doubleoctagon"}
    lines = [f'graph "{topology.name}" {{', "  rankdir=LR;"]
    for name, network in topology.networks.items():
        lines.append(f'  {_net_id(name)} [shape=ellipse, label="{name}\\n{network.subnet}"];')
    for name, node in topology.nodes.items():
        lines.append(f'  {_node_id(name)} [shape={shapes[node.kind]}, label="{name}\\n{node.kind}"];')
    for name, node in topology.nodes.items():
        for iface in node.interfaces:
            lines.append(f'  {_node_id(name)} -- {_net_id(iface.network)} [label="{iface.address}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_graph(topology: Topology, fmt: str) -> str:
    if fmt == "mermaid":
        return to_mermaid(topology)
    if fmt == "dot":
        return to_dot(topology)
    raise ValueError(f"unknown graph format {fmt!r}; expected one of: {', '.join(FORMATS)}")
