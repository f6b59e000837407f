"""Remote access in a topology: L2TP/IPsec (RFC 3193) users dialling into a gateway that is their LNS.

    l2tp:
      lns: gw                         # a gateway: IKE responder for any client (%any) and the L2TP server
      network: internet               # where IKE/ESP reach the LNS (default: its first network)
      lan_subnets: [10.2.0.0/24]      # what the users reach through PPP (default: the LNS's other networks)
      local_address: 10.2.100.1       # the LNS end of every PPP link
      pool: [10.2.100.10, 10.2.100.99] # addresses IPCP hands out
      dns: [10.2.0.53]
      users: {alice: "LAB-ONLY-..."}  # left out (null): generated at `up`
      clients:
        road-1: {user: alice}         # a node (any kind) that dials in; password: the user's unless given
      ike: {version: 1, ...}          # IPsec transport mode for UDP 1701, IKEv1 Main Mode + PSK by default

Each client gets an IPsec transport SA with the LNS protecting its L2TP (UDP 1701), then an L2TP tunnel and
one PPP session, a TUN device with the address IPCP assigned and routes to ``lan_subnets`` through it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from labctl.topology.errors import Issue, Path
from labctl.topology.tunnels import IkeAuth, IkeSettings

if TYPE_CHECKING:
    from labctl.topology.model import Topology

Prefix = Annotated[str, AfterValidator(lambda v: str(ipaddress.IPv4Network(v, strict=True)))]
Address = Annotated[str, AfterValidator(lambda v: str(ipaddress.IPv4Address(v)))]
PppAuth = Literal["mschapv2", "chap-md5", "pap"]
PPP_AUTH: tuple[PppAuth, ...] = ("mschapv2", "chap-md5", "pap")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class L2tpClientSettings(_Strict):
    user: str
    password: str | None = None
    """Defaults to the user's password; set a different one to watch the LNS refuse it."""


def _default_ike() -> IkeSettings:
    # What native L2TP/IPsec clients (Windows, macOS, Android) speak: IKEv1 Main Mode with a pre-shared key.
    return IkeSettings(version=1, mode="main", proposals=["aes128-sha256-modp2048"], esp_proposals=["aes128-sha256"],
                       auth=IkeAuth(method="psk"))


class RemoteAccess(_Strict):
    lns: str
    network: str | None = None
    lan_subnets: list[Prefix] | None = None
    local_address: Address = "10.2.100.1"
    pool: tuple[Address, Address] = ("10.2.100.10", "10.2.100.99")
    dns: list[Address] = Field(default_factory=list)
    users: dict[str, str | None] = Field(min_length=1)
    clients: dict[str, L2tpClientSettings] = Field(min_length=1)
    auth: list[PppAuth] = Field(default_factory=lambda: list(PPP_AUTH), min_length=1)
    echo_interval: float = Field(default=10.0, gt=0)
    echo_failures: int = Field(default=3, ge=1)
    tun_mtu: int = Field(default=1400, ge=576, le=9000)
    ike: IkeSettings = Field(default_factory=_default_ike)
    description: str = ""


def lns_network(topology: Topology, ra: RemoteAccess) -> str | None:
    if ra.network is not None:
        return ra.network
    node = topology.nodes.get(ra.lns)
    return node.interfaces[0].network if node is not None else None


def lan_subnets(topology: Topology, ra: RemoteAccess) -> list[str]:
    if ra.lan_subnets is not None:
        return list(ra.lan_subnets)
    network = lns_network(topology, ra)
    return [topology.networks[i.network].subnet for i in topology.nodes[ra.lns].interfaces if i.network != network]


def check_remote_access(topology: Topology) -> Iterator[Issue]:
    ra = topology.l2tp
    if ra is None:
        return
    path: Path = ("l2tp",)
    lns = topology.nodes.get(ra.lns)
    if lns is None:
        yield Issue(path + ("lns",), f"unknown node {ra.lns!r}; expected one of: {', '.join(topology.nodes)}")
        return
    if lns.kind != "gateway":
        yield Issue(path + ("lns",), f"the LNS forwards between PPP users and its LAN: expected a node of kind "
                    f"'gateway', but {ra.lns} is a {lns.kind}")
    network = lns_network(topology, ra)
    if network is not None and all(i.network != network for i in lns.interfaces):
        yield Issue(path + ("network",), f"{ra.lns} has no interface on {network}")
    if not lan_subnets(topology, ra):
        yield Issue(path + ("lan_subnets",), f"{ra.lns} has no network besides {network} for the users to reach")
    first, last = (ipaddress.IPv4Address(a) for a in ra.pool)
    if last < first:
        yield Issue(path + ("pool",), f"the last address {last} comes before the first {first}")
    if first <= ipaddress.IPv4Address(ra.local_address) <= last:
        yield Issue(path + ("local_address",), f"{ra.local_address} is inside the pool {first}-{last}")
    for name, client in ra.clients.items():
        where = path + ("clients", name)
        if name not in topology.nodes:
            yield Issue(where, f"unknown node {name!r}; expected one of: {', '.join(topology.nodes)}")
        elif name == ra.lns:
            yield Issue(where, "the LNS cannot be its own client")
        elif name in {t.left for t in topology.tunnels.values()} | {t.right for t in topology.tunnels.values()}:
            yield Issue(where, f"{name} also ends a tunnel; a remote-access client runs only its L2TP connection")
        if client.user not in ra.users:
            yield Issue(where + ("user",), f"unknown user {client.user!r}; expected one of: {', '.join(ra.users)}")
    if ra.ike.version != 1:
        yield Issue(path + ("ike", "version"), "remote access is negotiated with IKEv1 (as native L2TP/IPsec "
                    "clients do); IKEv2 remote access is not supported yet")
    if ra.lns in {t.left for t in topology.tunnels.values()} | {t.right for t in topology.tunnels.values()}:
        yield Issue(path + ("lns",), f"{ra.lns} also ends a tunnel; an LNS next to other IKE connections is not "
                    "supported yet")
