"""The remote user's side: LAC and PPP client in one, with one tunnel and one session."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from labctl.gateway.l2tp.auth_method import AuthMethod
from labctl.gateway.l2tp.call import Call
from labctl.gateway.l2tp.constants import StopCcnResult
from labctl.gateway.l2tp.endpoint import Endpoint
from labctl.gateway.l2tp.events import SessionKey, SessionUp
from labctl.gateway.l2tp.ppp import PppConfig, PppSession
from labctl.gateway.l2tp.tunnel import Tunnel, TunnelSettings


@dataclass(frozen=True)
class ClientConfig:
    user: str
    password: str
    # Methods we accept when the LNS asks for them; the first is proposed if it asks for another.
    auth_methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAPV2, AuthMethod.CHAP_MD5, AuthMethod.PAP)
    tunnel: TunnelSettings = field(default_factory=lambda: TunnelSettings(host_name="labctl-client"))
    ppp: PppConfig = field(default_factory=PppConfig)


class L2tpClient(Endpoint):
    def __init__(self, config: ClientConfig, server: Hashable, rng: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(rng)
        self.config = config
        self.server = server
        self.tunnel: Tunnel | None = None
        self.call: Call | None = None
        self.result: SessionUp | None = None  # the assigned address, DNS and peer address once up
        self._closing = False

    def connect(self, now: float) -> None:
        """Start SCCRQ, then ICRQ and PPP once the tunnel is up."""
        if self.tunnel is not None:
            return
        self._closing = False
        tunnel_id = self._new_tunnel_id(self.server)
        self.tunnel = Tunnel(
            initiator=True,
            local_id=tunnel_id,
            peer=self.server,
            settings=self.config.tunnel,
            rng=self.rng,
            events=self._pending,
            new_ppp=self._new_ppp,
        )
        self.tunnels[(self.server, tunnel_id)] = self.tunnel
        self.tunnel.start(now)
        self.call = self.tunnel.open_call(now)
        self._collect(now)

    def close(self, now: float, reason: str = "closed by the user") -> None:
        """LCP Terminate, then CDN, then StopCCN (each step once the previous one is done)."""
        self._closing = True
        if self.call is not None and self.tunnel is not None and self.call.key.session_id in self.tunnel.calls:
            self.call.ppp.close(now, reason)
            self.tunnel.service(now)
        elif self.tunnel is not None:
            self.tunnel.close(now, StopCcnResult.GENERAL_REQUEST, reason)
        self._collect(now)

    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None:
        if peer != self.server:
            self.counters.wrong_peer += 1
            return
        super().receive_datagram(data, peer, now)

    def send_ip(self, session: SessionKey | None, packet: bytes) -> list[tuple[bytes, Hashable]]:
        key = session if session is not None else (self.call.key if self.call else None)
        return super().send_ip(key, packet) if key is not None else []

    @property
    def session(self) -> SessionKey | None:
        return self.call.key if self.call is not None else None

    def _new_ppp(self) -> PppSession:
        return PppSession(
            authenticator=False,
            config=self.config.ppp,
            rng=self.rng,
            auth_methods=self.config.auth_methods,
            user=self.config.user,
            password=self.config.password,
        )

    def _after_step(self, now: float) -> None:
        for event in self._events:
            if isinstance(event, SessionUp):
                self.result = event
        tunnel = self.tunnel
        if tunnel is None:
            return
        if tunnel.dead:
            self.tunnel = None
            self.call = None
            self.result = None
            return
        # One user, one call: when it is over, so is the tunnel (RFC 2661 §5.7 StopCCN).
        if self.call is not None and self.call.key.session_id not in tunnel.calls:
            self.call = None
            self.result = None
            tunnel.close(now, StopCcnResult.GENERAL_REQUEST, "the PPP session ended")
            self._out += [(d, tunnel.peer) for d in tunnel.take_datagrams()]
            self._events.extend(self._pending)
            self._pending.clear()

    def status(self) -> dict[str, object]:
        return {
            "role": "client",
            "user": self.config.user,
            "server": str(self.server),
            "address": self.result.address if self.result else None,
            "peer_address": self.result.peer_address if self.result else None,
            "dns": list(self.result.dns) if self.result else [],
            "tunnels": [tunnel.status() for tunnel in self.tunnels.values()],
        }
