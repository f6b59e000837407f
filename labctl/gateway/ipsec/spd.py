"""The security policy database (RFC 4301 §4.4.1): an ordered list, first match wins.

A policy's selectors are written from our side: ``local`` is the prefix of our protected addresses, ``remote``
the peer's. An outbound packet matches when its source is in ``local`` and its destination in ``remote``; an
inbound (decapsulated) packet when its source is in ``remote`` and its destination in ``local``.

Ports are those of TCP, UDP and SCTP on initial fragments. Other protocols and non-initial fragments carry no
usable ports (RFC 4301 §4.4.1.1 "OPAQUE") and only match policies whose port ranges are the whole range.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from . import ipv4

Action = Literal["protect", "bypass", "discard"]
ANY_PORTS = (0, 65535)
OPAQUE = -1
_PORT_PROTOCOLS = frozenset({ipv4.PROTO_TCP, ipv4.PROTO_UDP, 132})


@dataclass(frozen=True)
class Policy:
    """One SPD entry. For ``protect``, ``reqid`` names the SAs that serve it and ``protocols`` the order they are
    applied outbound: ``("esp",)``, ``("ah",)`` or ``("esp", "ah")`` for ESP inside AH (RFC 4301 §4.5)."""

    name: str
    local: str
    remote: str
    action: Action = "protect"
    proto: int = 0  # 0 = any protocol
    local_ports: tuple[int, int] = ANY_PORTS
    remote_ports: tuple[int, int] = ANY_PORTS
    reqid: int = 1
    protocols: tuple[str, ...] = ("esp",)

    def __post_init__(self) -> None:
        if self.action not in ("protect", "bypass", "discard"):
            raise ValueError(f"policy {self.name}: action must be protect, bypass or discard, got {self.action!r}")
        if self.action == "protect" and self.protocols not in (("esp",), ("ah",), ("esp", "ah")):
            raise ValueError(f"policy {self.name}: protocols must be (esp), (ah) or (esp, ah), got {self.protocols}")
        for label, ports in (("local_ports", self.local_ports), ("remote_ports", self.remote_ports)):
            if not 0 <= ports[0] <= ports[1] <= 65535:
                raise ValueError(f"policy {self.name}: {label} must be (low, high) within 0..65535, got {ports}")
        if not 0 <= self.proto <= 255:
            raise ValueError(f"policy {self.name}: proto must be 0..255, got {self.proto}")
        for label, prefix in (("local", self.local), ("remote", self.remote)):
            try:
                ipaddress.IPv4Network(prefix, strict=False)
            except ValueError as exc:
                raise ValueError(f"policy {self.name}: {label}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Compiled:
    local_net: int
    local_mask: int
    remote_net: int
    remote_mask: int
    proto: int
    local_lo: int
    local_hi: int
    remote_lo: int
    remote_hi: int
    any_ports: bool
    policy: Policy


def _net(prefix: str) -> tuple[int, int]:
    net = ipaddress.IPv4Network(prefix, strict=False)
    return int(net.network_address), int(net.netmask)


def _compile(p: Policy) -> _Compiled:
    ln, lm = _net(p.local)
    rn, rm = _net(p.remote)
    any_ports = p.local_ports == ANY_PORTS and p.remote_ports == ANY_PORTS
    return _Compiled(ln, lm, rn, rm, p.proto, *p.local_ports, *p.remote_ports, any_ports, p)


def flow_of(packet: bytes, ihl: int) -> tuple[int, int, int, int, int]:
    """(source, destination, protocol, source port, destination port) of an IPv4 packet, ports OPAQUE when
    the packet has none we can read."""
    src = int.from_bytes(packet[12:16], "big")
    dst = int.from_bytes(packet[16:20], "big")
    proto = packet[9]
    if (
        proto in _PORT_PROTOCOLS
        and not ipv4.WORD.unpack_from(packet, 6)[0] & ipv4.FRAG_OFFSET_MASK
        and len(packet) >= ihl + 4
    ):
        sport, dport = ipv4.PORTS.unpack_from(packet, ihl)
        return src, dst, proto, sport, dport
    return src, dst, proto, OPAQUE, OPAQUE


class Spd:
    """Ordered policies with first-match lookup in both directions."""

    def __init__(self, policies: list[Policy] | tuple[Policy, ...] = ()) -> None:
        self._compiled: list[_Compiled] = []
        self.set(policies)

    @property
    def policies(self) -> list[Policy]:
        return [c.policy for c in self._compiled]

    def set(self, policies: list[Policy] | tuple[Policy, ...]) -> None:
        names = [p.name for p in policies]
        if len(set(names)) != len(names):
            raise ValueError(f"policy names must be unique: {names}")
        self._compiled = [_compile(p) for p in policies]

    def add(self, policy: Policy, index: int | None = None) -> None:
        if any(c.policy.name == policy.name for c in self._compiled):
            raise ValueError(f"a policy named {policy.name!r} already exists")
        compiled = _compile(policy)
        if index is None:
            self._compiled.append(compiled)
        else:
            self._compiled.insert(index, compiled)

    def remove(self, name: str) -> bool:
        before = len(self._compiled)
        self._compiled = [c for c in self._compiled if c.policy.name != name]
        return len(self._compiled) != before

    def lookup(self, local: int, remote: int, proto: int, local_port: int, remote_port: int) -> Policy | None:
        """First policy whose selectors match, with the addresses and ports already put as (ours, peer's)."""
        for c in self._compiled:
            if (
                local & c.local_mask == c.local_net
                and remote & c.remote_mask == c.remote_net
                and (not c.proto or c.proto == proto)
                and (
                    c.any_ports
                    or (
                        local_port != OPAQUE
                        and c.local_lo <= local_port <= c.local_hi
                        and c.remote_lo <= remote_port <= c.remote_hi
                    )
                )
            ):
                return c.policy
        return None

    def lookup_outbound(self, packet: bytes, ihl: int) -> Policy | None:
        src, dst, proto, sport, dport = flow_of(packet, ihl)
        return self.lookup(src, dst, proto, sport, dport)

    def lookup_inbound(self, packet: bytes, ihl: int) -> Policy | None:
        src, dst, proto, sport, dport = flow_of(packet, ihl)
        return self.lookup(dst, src, proto, dport, sport)
