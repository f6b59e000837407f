"""The topology schema: networks, nodes (host, router, gateway), interfaces, routes, node programs.

Field-level rules live here (types, names, formats); rules that relate fields to each other
(address inside its subnet, next hop reachable, ...) are in `labctl.topology.checks`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from labctl.lab.naming import NAME_PATTERN
from labctl.topology.remote_access import RemoteAccess
from labctl.topology.tunnels import Tunnel

NODE_KINDS = ("host", "router", "gateway")
FORWARDING_KINDS = frozenset({"router", "gateway"})
"""Node kinds that forward between their networks (IP forwarding on; they may masquerade)."""

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
# Linux interface names: at most 15 characters (IFNAMSIZ - 1), no '/' or whitespace.
IfName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$")]


def _parsed(parse: Callable[[str], object], expected: str) -> AfterValidator:
    """A validator that keeps the text but insists that `parse` accepts it."""

    def check(value: str) -> str:
        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not {expected}") from None
        return value

    return AfterValidator(check)


def _destination(value: str) -> object:
    return value if value == "default" else ipaddress.ip_network(value, strict=True)


Subnet4 = Annotated[str, _parsed(ipaddress.IPv4Network, "an IPv4 subnet with host bits zero, like 10.1.0.0/24")]
Subnet6 = Annotated[str, _parsed(ipaddress.IPv6Network, "an IPv6 subnet with host bits zero, like fd00:1::/64")]
Address4 = Annotated[str, _parsed(ipaddress.IPv4Interface, "an IPv4 address like 10.1.0.1 or 10.1.0.1/24")]
Address6 = Annotated[str, _parsed(ipaddress.IPv6Interface, "an IPv6 address like fd00:1::1 or fd00:1::1/64")]
Destination = Annotated[str, _parsed(_destination, "'default' or a subnet like 10.2.0.0/24")]
NextHop = Annotated[str, _parsed(ipaddress.ip_address, "an IP address like 10.1.0.1")]


class _Strict(BaseModel):
    # Unknown fields are errors: a typo ("adress") must not silently build a different lab.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(_Strict):
    subnet: Subnet4
    subnet6: Subnet6 | None = None
    description: str = ""


class Interface(_Strict):
    network: str
    address: Address4
    address6: Address6 | None = None
    name: IfName | None = None


class Route(_Strict):
    to: Destination
    via: NextHop


class Program(_Strict):
    name: Name
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)


class Node(_Strict):
    kind: Literal["host", "router", "gateway"]
    interfaces: list[Interface] = Field(min_length=1)
    gateway: NextHop | None = None
    """Next hop of the IPv4 default route."""
    gateway6: NextHop | None = None
    routes: list[Route] = Field(default_factory=list)
    programs: list[Program] = Field(default_factory=list)
    masquerade: list[str] = Field(default_factory=list)
    """Networks whose outgoing traffic this router source-NATs to its own address (nftables masquerade),
    e.g. `[internet]` for a home router in front of a LAN; checked in `labctl.topology.checks`."""
    description: str = ""


class Variant(_Strict):
    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict)
    """Dotted path -> value, e.g. {"tunnels.s2s.protection": "ah"}."""


class Topology(_Strict):
    name: Name
    description: str = ""
    networks: dict[Name, Network] = Field(min_length=1)
    nodes: dict[Name, Node] = Field(min_length=1)
    tunnels: dict[Name, Tunnel] = Field(default_factory=dict)
    """IPsec between two nodes (see `labctl.topology.tunnels`); gateways' configs are rendered from them."""
    l2tp: RemoteAccess | None = None
    """Remote users dialling into a gateway with L2TP/IPsec (see `labctl.topology.remote_access`)."""
    variants: dict[Name, Variant] = Field(default_factory=dict)
    """Named sets of overrides (see `labctl.topology.variants`), applied before validation."""
