"""Events the L2TP/PPP endpoints hand to the I/O shell through ``next_event()``."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Names one PPP session: the caller's opaque peer key and our local tunnel and session ids."""

    peer: Hashable
    tunnel_id: int
    session_id: int


@dataclass(frozen=True, slots=True)
class TunnelUp:
    peer: Hashable
    tunnel_id: int
    peer_host_name: str


@dataclass(frozen=True, slots=True)
class TunnelDown:
    peer: Hashable
    tunnel_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionUp:
    """PPP reached the Network phase with IPCP open: IP packets can flow."""

    session: SessionKey
    user: str
    address: str  # the client's address (assigned by the LNS)
    peer_address: str | None  # the other end of the PPP link
    dns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionDown:
    session: SessionKey
    user: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    session: SessionKey
    user: str
    reason: str  # e.g. "PPP authentication failed for user 'alice': wrong password"


@dataclass(frozen=True, slots=True)
class EchoTimeout:
    session: SessionKey
    user: str
    reason: str


@dataclass(frozen=True, slots=True)
class IpPacket:
    """An IPv4 datagram received over PPP, to be written to the TUN device."""

    session: SessionKey
    packet: bytes


Event = TunnelUp | TunnelDown | SessionUp | SessionDown | AuthFailed | EchoTimeout | IpPacket
