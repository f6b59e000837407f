"""The IPsec part of a topology: tunnels between two nodes, each keyed by IKE or by hand.

A tunnel is described once, from the `left` node's point of view (`left` initiates); labctl renders the
gateway configuration of both ends from it, so the two sides can never disagree about keys, SPIs,
selectors or algorithms.

    tunnels:
      s2s:
        left: gw-a                  # initiator
        right: gw-b
        network: internet           # the network whose addresses carry IKE/ESP (default: the one both share)
        left_network: home          # NAT-T: left is on this network, behind a router masquerading `network`
        left_subnets: [10.1.0.0/24] # tunnel mode: what each side protects (default: its other networks)
        right_subnets: [10.2.0.0/24]
        mode: tunnel                # tunnel | transport
        protection: esp             # esp | ah | ah+esp
        encap: false                # force ESP-in-UDP (RFC 3948) even without a NAT
        keying: ike                 # ike | manual
        ike: {version: 2, ...}      # see IkeSettings
        manual: {encr: ..., ...}    # see ManualSettings
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from labctl.topology.errors import Issue, Path

if TYPE_CHECKING:
    from labctl.topology.model import Topology

Hex = Annotated[str, StringConstraints(pattern=r"^(0x)?([0-9a-fA-F]{2}:?)+$")]


def _spi(value: int | str) -> int:
    spi = int(value, 0) if isinstance(value, str) else value
    # RFC 4303 §2.1: SPI values 1..255 are reserved by IANA and 0 is never sent.
    if not 0x100 <= spi <= 0xFFFFFFFF:
        raise ValueError(f"{value!r} is not an SPI in 0x100..0xffffffff (RFC 4303 §2.1)")
    return spi


Spi = Annotated[int | str, AfterValidator(_spi)]
Prefix = Annotated[str, AfterValidator(lambda v: str(ipaddress.IPv4Network(v, strict=True)))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManualDirection(_Strict):
    """The SA that one side sends with."""

    spi: Spi
    encr_key: Hex | None = None
    integ_key: Hex | None = None
    ah_spi: Spi | None = None
    ah_key: Hex | None = None


class ManualSettings(_Strict):
    """Static keys, like `ip xfrm state add`. Keys left out are generated at `up` and exported for Wireshark."""

    encr: str = "aes128gcm16"
    integ: str | None = None
    ah_integ: str = "sha256"
    left_to_right: ManualDirection = ManualDirection(spi=0x1000A001, ah_spi=0x1000A0A1)
    right_to_left: ManualDirection = ManualDirection(spi=0x1000B001, ah_spi=0x1000B0A1)
    replay_window: int = Field(default=64, ge=0, le=4096)
    esn: bool = False


class IkeAuth(_Strict):
    method: Literal["psk", "pubkey"] = "psk"
    psk: str | None = None
    """Pre-shared key; left out: generated at `up`. Shipped topologies mark theirs as lab-only."""
    key_type: Literal["rsa", "ecdsa"] = "ecdsa"
    """pubkey: the lab CA issues each end a certificate with this key type."""


class IkeSettings(_Strict):
    version: Literal[1, 2] = 2
    mode: Literal["main", "aggressive"] = "main"
    """IKEv1 phase 1 exchange."""
    proposals: list[str] = Field(default_factory=lambda: ["aes128gcm16-prfsha256-ecp256"])
    esp_proposals: list[str] = Field(default_factory=lambda: ["aes128gcm16"])
    auth: IkeAuth = IkeAuth()
    left_id: str | None = None
    right_id: str | None = None
    rekey_time: float = Field(default=14400, gt=0)
    child_rekey_time: float = Field(default=3600, gt=0)
    child_life_time: float = Field(default=0, ge=0)
    child_rekey_bytes: int = Field(default=0, ge=0)
    """Rekey a child SA after this much traffic (soft volume lifetime, counted by the data plane); 0: never."""
    child_rekey_packets: int = Field(default=0, ge=0)
    dpd_delay: float = Field(default=0, ge=0)
    dpd_action: Literal["restart", "clear", "none"] = "restart"
    start_action: Literal["start", "trap", "none"] = "start"
    allow_legacy: bool = False


class Tunnel(_Strict):
    left: str
    right: str
    network: str | None = None
    left_network: str | None = None
    """NAT-T: the left end sits on this network behind a router that masquerades `network` (see
    `nat_router`); it speaks from its own address there and the right end sees it at the router's."""
    left_subnets: list[Prefix] | None = None
    right_subnets: list[Prefix] | None = None
    mode: Literal["tunnel", "transport"] = "tunnel"
    protection: Literal["esp", "ah", "ah+esp"] = "esp"
    encap: bool = False
    keying: Literal["ike", "manual"] = "ike"
    ike: IkeSettings = IkeSettings()
    manual: ManualSettings = ManualSettings()
    tun_mtu: int | None = Field(default=None, ge=576, le=9000)
    """MTU of the gateway's TUN device; default: what fits a 1500-byte path after the worst-case overhead of this
    tunnel's protection, so full-size packets are never dropped after encapsulation (see `default_tun_mtu`)."""
    description: str = ""


PATH_MTU = 1500
# Worst cases per layer: ESP = header 8 + IV 16 (CBC) + padding 15 + pad length/next header 2 + ICV 32 (SHA-512);
# AH = 12 + ICV 32 (RFC 4302 §2); outer IPv4 header 20 in tunnel mode; UDP 8 (RFC 3948).
_ESP_OVERHEAD = 8 + 16 + 15 + 2 + 32
_AH_OVERHEAD = 12 + 32


def default_tun_mtu(tunnel: Tunnel) -> int:
    if tunnel.tun_mtu is not None:
        return tunnel.tun_mtu
    overhead = (20 if tunnel.mode == "tunnel" else 0) + (8 if tunnel.encap else 0)
    overhead += _ESP_OVERHEAD if "esp" in tunnel.protection else 0
    overhead += _AH_OVERHEAD if "ah" in tunnel.protection else 0
    return min(1400, (PATH_MTU - overhead) // 8 * 8)


def endpoint_network(topology: Topology, tunnel: Tunnel) -> str | None:
    """The network both ends share (the one named, or the only/first common one)."""
    if tunnel.network is not None:
        return tunnel.network
    left = topology.nodes.get(tunnel.left)
    right = topology.nodes.get(tunnel.right)
    if left is None or right is None:
        return None
    right_nets = {i.network for i in right.interfaces}
    common = [i.network for i in left.interfaces if i.network in right_nets]
    return common[0] if common else None


def nat_router(topology: Topology, tunnel: Tunnel) -> str | None:
    """The router between `left_network` and `network` that masquerades `network`; None when there is none."""
    if tunnel.left_network is None or tunnel.network is None:
        return None
    for name, node in topology.nodes.items():
        attached = {i.network for i in node.interfaces}
        if {tunnel.left_network, tunnel.network} <= attached and tunnel.network in node.masquerade:
            return name
    return None


def peer_sees(topology: Topology, tunnel: Tunnel, side: Literal["left", "right"]) -> str:
    """The address the other end sends to and receives from for `side`: behind a NAT, the router's address."""
    network = endpoint_network(topology, tunnel)
    if network is None:
        raise KeyError(f"{tunnel.left} and {tunnel.right} share no network")
    if side == "left" and tunnel.left_network is not None:
        router = nat_router(topology, tunnel)
        if router is None:
            raise KeyError(f"no router masquerades {network} for {tunnel.left_network}")
        return endpoint_address(topology, router, network)
    return endpoint_address(topology, getattr(tunnel, side), network)


def endpoint_address(topology: Topology, node: str, network: str) -> str:
    for iface in topology.nodes[node].interfaces:
        if iface.network == network:
            return str(ipaddress.IPv4Interface(iface.address).ip)
    raise KeyError(f"{node} has no interface on {network}")


def protected_subnets(topology: Topology, tunnel: Tunnel, side: Literal["left", "right"]) -> list[str]:
    explicit = tunnel.left_subnets if side == "left" else tunnel.right_subnets
    if explicit is not None:
        return list(explicit)
    node = tunnel.left if side == "left" else tunnel.right
    outside = {endpoint_network(topology, tunnel), tunnel.left_network if side == "left" else None}
    return [topology.networks[i.network].subnet for i in topology.nodes[node].interfaces if i.network not in outside]


def check_tunnels(topology: Topology) -> Iterator[Issue]:
    for name, t in topology.tunnels.items():
        path: Path = ("tunnels", name)
        ok = True
        for side in ("left", "right"):
            node_name = getattr(t, side)
            node = topology.nodes.get(node_name)
            if node is None:
                ok = False
                yield Issue(path + (side,), f"unknown node {node_name!r}; expected one of: {', '.join(topology.nodes)}")
            elif t.mode == "tunnel" and node.kind != "gateway":
                yield Issue(path + (side,), f"tunnel mode needs a node of kind 'gateway' (it forwards for a LAN), "
                            f"but {node_name} is a {node.kind}; use mode: transport for host-to-host")
        if t.left == t.right:
            yield Issue(path + ("right",), "left and right must be different nodes")
        if not ok:
            continue
        network = endpoint_network(topology, t)
        if network is None:
            yield Issue(path, f"{t.left} and {t.right} share no network; expected them on a common one "
                        "(or set `network`, and `left_network` for a left end behind a NAT)")
            continue
        for side in ("left", "right"):
            node_name = getattr(t, side)
            own = t.left_network if side == "left" and t.left_network is not None else network
            if all(i.network != own for i in topology.nodes[node_name].interfaces):
                yield Issue(path + ("left_network" if own != network else "network",),
                            f"{node_name} has no interface on {own}")
        if t.left_network is not None and nat_router(topology, t) is None:
            yield Issue(path + ("left_network",), f"no router joins {t.left_network} to {network} with "
                        f"`masquerade: [{network}]`; expected one (the NAT that {t.left} sits behind)")
        if t.mode == "tunnel":
            for side in ("left", "right"):
                if not protected_subnets(topology, t, side):  # type: ignore[arg-type]
                    yield Issue(path + (f"{side}_subnets",), f"{getattr(t, side)} has no network besides {network} "
                                "to protect; expected at least one subnet")
        if t.encap and t.protection != "esp":
            yield Issue(path + ("encap",), "UDP encapsulation carries ESP only (RFC 3948); AH cannot cross a NAT")
        if t.keying == "ike":
            if t.ike.version == 2 and t.protection == "ah+esp":
                yield Issue(path + ("protection",), "IKEv2 negotiates one protocol per child SA (RFC 7296 §3.3); "
                            "AH+ESP needs keying: manual")
            if t.ike.version == 1 and t.protection == "ah+esp":
                yield Issue(path + ("protection",), "AH+ESP bundles over IKEv1 are not supported yet; "
                            "use keying: manual")
            if t.ike.version == 2 and t.ike.mode == "aggressive":
                yield Issue(path + ("ike", "mode"), "aggressive mode exists only in IKEv1; set ike.version: 1")
