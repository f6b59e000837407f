"""The plan: everything a backend needs to build a lab, derived from a topology by `labctl.lab.plan`.

Plans are plain frozen dataclasses so that every backend executes the same thing and a test can
compare a plan with an expected one. `to_dict` / `plan_from_dict` keep a plan in the lab's state
directory, so `down` and `status` work from what was actually built, not from a file that may
have changed since.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    subnet: str
    subnet6: str | None = None


@dataclass(frozen=True)
class InterfacePlan:
    name: str
    """Interface name inside the node (eth0, eth1, ... unless the topology names it)."""
    network: str
    address: str
    """IPv4 address with prefix length, e.g. 10.1.0.10/24."""
    address6: str | None = None


@dataclass(frozen=True)
class RoutePlan:
    destination: str
    """A CIDR prefix, or "default"."""
    via: str


@dataclass(frozen=True)
class FilePlan:
    path: str
    """Relative to the node's directory in the lab's state directory."""
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class ProgramPlan:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    files: tuple[FilePlan, ...] = ()
    """Files written before the program starts (config files); `{node_dir}` in argv is replaced by their directory."""


@dataclass(frozen=True)
class NodePlan:
    name: str
    kind: str
    interfaces: tuple[InterfacePlan, ...]
    routes: tuple[RoutePlan, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    programs: tuple[ProgramPlan, ...] = ()
    masquerade: tuple[str, ...] = ()
    """Interfaces whose outgoing traffic is source-NATed (nftables masquerade), applied after the node exists."""


@dataclass(frozen=True)
class Plan:
    lab: str
    topology: str
    networks: tuple[NetworkPlan, ...]
    nodes: tuple[NodePlan, ...]
    notices: tuple[str, ...] = ()
    """Things a person must be told at `up` (e.g. a gateway without IPsec)."""

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def network(self, name: str) -> NetworkPlan:
        for network in self.networks:
            if network.name == name:
                return network
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_from_dict(data: dict[str, Any]) -> Plan:
    def program(p: dict[str, Any]) -> ProgramPlan:
        return ProgramPlan(
            name=p["name"],
            argv=tuple(p["argv"]),
            env=dict(p.get("env", {})),
            files=tuple(FilePlan(**f) for f in p.get("files", ())),
        )

    def node(n: dict[str, Any]) -> NodePlan:
        return NodePlan(
            name=n["name"],
            kind=n["kind"],
            interfaces=tuple(InterfacePlan(**i) for i in n["interfaces"]),
            routes=tuple(RoutePlan(**r) for r in n.get("routes", ())),
            sysctls=dict(n.get("sysctls", {})),
            programs=tuple(program(p) for p in n.get("programs", ())),
            masquerade=tuple(n.get("masquerade", ())),
        )

    return Plan(
        lab=data["lab"],
        topology=data["topology"],
        networks=tuple(NetworkPlan(**n) for n in data["networks"]),
        nodes=tuple(node(n) for n in data["nodes"]),
        notices=tuple(data.get("notices", ())),
    )
