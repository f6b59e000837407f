"""The LNS: many tunnels and sessions, a users table and an address pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from labctl.gateway.l2tp.auth_method import AuthMethod
from labctl.gateway.l2tp.avp import parse_message
from labctl.gateway.l2tp.call import Call
from labctl.gateway.l2tp.constants import AvpType, CdnResult, MessageType, StopCcnResult
from labctl.gateway.l2tp.endpoint import Endpoint
from labctl.gateway.l2tp.errors import MalformedPacket
from labctl.gateway.l2tp.events import SessionKey
from labctl.gateway.l2tp.header import L2tpHeader
from labctl.gateway.l2tp.pool import AddressPool
from labctl.gateway.l2tp.ppp import PppConfig, PppSession
from labctl.gateway.l2tp.tunnel import Tunnel, TunnelSettings


@dataclass(frozen=True)
class ServerConfig:
    users: Mapping[str, str]  # user name -> password
    local_address: IPv4Address  # the LNS end of every PPP link
    pool_first: IPv4Address
    pool_last: IPv4Address
    dns: tuple[IPv4Address, ...] = ()
    auth_methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAPV2, AuthMethod.CHAP_MD5, AuthMethod.PAP)
    tunnel: TunnelSettings = field(default_factory=lambda: TunnelSettings(host_name="labctl-lns"))
    ppp: PppConfig = field(default_factory=PppConfig)


class L2tpServer(Endpoint):
    def __init__(self, config: ServerConfig, rng: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(rng)
        if not config.auth_methods:
            raise ValueError("the LNS needs at least one PPP authentication method")
        self.config = config
        self.pool = AddressPool(config.pool_first, config.pool_last, exclude=(config.local_address,))
        self._by_peer_tunnel: dict[tuple[Hashable, int], int] = {}  # (peer, their tunnel id) -> ours

    def _tunnel_for(self, header: L2tpHeader, body: bytes, peer: Hashable, now: float) -> Tunnel | None:
        if header.tunnel_id != 0 or not header.control:
            return self.tunnels.get((peer, header.tunnel_id))
        # Tunnel id 0: only an SCCRQ (RFC 2661 §3.1). A repeated SCCRQ (our SCCRP was lost) goes to the
        # tunnel it already created, recognised by the peer and its Assigned Tunnel ID.
        try:
            message = parse_message(body)
            peer_tunnel = message.u16(AvpType.ASSIGNED_TUNNEL_ID)
        except MalformedPacket:
            return None
        if message.type != MessageType.SCCRQ or not peer_tunnel:
            return None
        existing = self._by_peer_tunnel.get((peer, peer_tunnel))
        if existing is not None:
            return self.tunnels.get((peer, existing))
        local_id = self._new_tunnel_id(peer)
        tunnel = Tunnel(
            initiator=False,
            local_id=local_id,
            peer=peer,
            settings=self.config.tunnel,
            rng=self.rng,
            events=self._pending,
            new_ppp=self._new_ppp,
            on_call_closed=self._release,
        )
        self.tunnels[(peer, local_id)] = tunnel
        self._by_peer_tunnel[(peer, peer_tunnel)] = local_id
        return tunnel

    def _new_ppp(self) -> PppSession:
        return PppSession(
            authenticator=True,
            config=self.config.ppp,
            rng=self.rng,
            auth_methods=self.config.auth_methods,
            name=self.config.tunnel.host_name,
            users=self.config.users,
            allocate=self.pool.allocate,
            local_address=self.config.local_address,
            dns=self.config.dns,
        )

    def _release(self, call: Call) -> None:
        if call.ppp.address is not None:
            self.pool.release(call.ppp.address)

    def _forget_tunnel(self, key: tuple[Hashable, int], tunnel: Tunnel) -> None:
        super()._forget_tunnel(key, tunnel)
        self._by_peer_tunnel.pop((tunnel.peer, tunnel.peer_id), None)

    def close_session(self, session: SessionKey, now: float, reason: str = "closed by the administrator") -> None:
        """Disconnect one user: LCP Terminate, then CDN."""
        found = self._find(session)
        if found is not None:
            found[1].ppp.close(now, reason)
            found[0].service(now)
        self._collect(now)

    def session_for(self, address: IPv4Address | str) -> SessionKey | None:
        """The session whose client was assigned ``address`` (to route a packet read from the TUN device)."""
        wanted = IPv4Address(address)
        for tunnel in self.tunnels.values():
            for call in tunnel.calls.values():
                if call.up and call.ppp.address == wanted:
                    return call.key
        return None

    def close(self, now: float, reason: str = "the LNS is shutting down") -> None:
        for tunnel in list(self.tunnels.values()):
            tunnel.close(now, StopCcnResult.SHUTTING_DOWN, reason)
        self._collect(now)

    def status(self) -> dict[str, object]:
        return {
            "role": "lns",
            "tunnels": [tunnel.status() for tunnel in self.tunnels.values()],
            "pool": self.pool.status(),
        }


__all__ = ["CdnResult", "L2tpServer", "ServerConfig"]
