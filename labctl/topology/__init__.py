"""Topology files: schema, loading with file:line errors, cross-field checks, shipped topologies, graphs."""

from labctl.topology.errors import Issue, TopologyError
from labctl.topology.load import load_topology, parse_topology
from labctl.topology.model import Interface, Network, Node, Route, Topology

__all__ = ["Interface", "Issue", "Network", "Node", "Route", "Topology", "TopologyError", "load_topology",
           "parse_topology"]
