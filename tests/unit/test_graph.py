"""Graph output of a topology (Mermaid and Graphviz dot)."""

from __future__ import annotations

import pytest

from labctl.topology import load_topology
from labctl.topology.catalog import resolve_topology
from labctl.topology.graph import render_graph

ROUTED_MERMAID = """\
graph LR
  net_lan_a(["lan-a<br/>10.1.0.0/24"])
  net_internet(["internet<br/>198.51.100.0/24"])
  net_lan_b(["lan-b<br/>10.2.0.0/24"])
  node_host_a["host-a<br/>host"]
  node_router_a["router-a<br/>router"]
  node_router_b["router-b<br/>router"]
  node_host_b["host-b<br/>host"]
  node_host_a ---|"10.1.0.10"| net_lan_a
  node_router_a ---|"10.1.0.1"| net_lan_a
  node_router_a ---|"198.51.100.10"| net_internet
  node_router_b ---|"10.2.0.1"| net_lan_b
  node_router_b ---|"198.51.100.20"| net_internet
  node_host_b ---|"10.2.0.10"| net_lan_b
"""

SITE_TO_SITE_DOT = """\
graph "site-to-site" {
  rankdir=LR;
  net_lan_a [shape=ellipse, label="lan-a\\n10.1.0.0/24"];
  net_internet [shape=ellipse, label="internet\\n198.51.100.0/24"];
  net_lan_b [shape=ellipse, label="lan-b\\n10.2.0.0/24"];
  node_host_a [shape=box, label="host-a\\nhost"];
  node_gw_a [shape=doubleoctagon, label="gw-a\\ngateway"];
  node_gw_b [shape=doubleoctagon, label="gw-b\\ngateway"];
  node_host_b [shape=box, label="host-b\\nhost"];
  node_host_a -- net_lan_a [label="10.1.0.10"];
  node_gw_a -- net_lan_a [label="10.1.0.1"];
  node_gw_a -- net_internet [label="198.51.100.10"];
  node_gw_b -- net_lan_b [label="10.2.0.1"];
  node_gw_b -- net_internet [label="198.51.100.20"];
  node_host_b -- net_lan_b [label="10.2.0.10"];
}
"""


def test_mermaid() -> None:
    assert render_graph(load_topology(resolve_topology("routed")), "mermaid") == ROUTED_MERMAID


def test_dot() -> None:
    assert render_graph(load_topology(resolve_topology("site-to-site")), "dot") == SITE_TO_SITE_DOT


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown graph format 'svg'; expected one of: mermaid, dot"):
        render_graph(load_topology(resolve_topology("routed")), "svg")
