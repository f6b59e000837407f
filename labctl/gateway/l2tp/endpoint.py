"""What the LNS and the client share: the sans-I/O surface (aioquic style) over a set of tunnels."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from labctl.gateway.l2tp.call import Call
from labctl.gateway.l2tp.errors import MalformedPacket
from labctl.gateway.l2tp.events import Event, SessionKey
from labctl.gateway.l2tp.header import L2tpHeader, pull_header
from labctl.gateway.l2tp.tunnel import Tunnel

Datagram = tuple[bytes, Hashable]


@dataclass
class EndpointCounters:
    malformed: int = 0
    unknown_tunnel: int = 0
    wrong_peer: int = 0


class Endpoint:
    def __init__(self, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.rng = rng
        self.tunnels: dict[tuple[Hashable, int], Tunnel] = {}
        self.counters = EndpointCounters()
        self._events: deque[Event] = deque()
        self._pending: list[Event] = []  # tunnels append here; moved to _events after each step
        self._out: list[Datagram] = []

    # --- the sans-I/O surface --------------------------------------------------------------------

    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None:
        """One UDP payload from ``peer`` (an opaque key chosen by the caller, e.g. the SA and address)."""
        try:
            header, body = pull_header(data)
        except MalformedPacket:
            self.counters.malformed += 1
            return
        tunnel = self._tunnel_for(header, body, peer, now)
        if tunnel is None:
            self.counters.unknown_tunnel += 1
        elif header.control:
            tunnel.receive_control(header, body, now)
        else:
            tunnel.receive_data(header, body, now)
        self._collect(now)

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return min((t for t in (tunnel.get_timer() for tunnel in self.tunnels.values()) if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for tunnel in list(self.tunnels.values()):
            timer = tunnel.get_timer()
            if timer is not None and timer <= now:
                tunnel.handle_timer(now)
        self._collect(now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def send_ip(self, session: SessionKey, packet: bytes) -> list[Datagram]:
        """Wrap an IPv4 packet from the TUN side for ``session``; empty if the session cannot carry it."""
        found = self._find(session)
        if found is None:
            return []
        tunnel, call = found
        datagram = tunnel.send_ip(call, packet)
        return [(datagram, tunnel.peer)] if datagram is not None else []

    # --- shared plumbing -------------------------------------------------------------------------

    def _tunnel_for(self, header: L2tpHeader, body: bytes, peer: Hashable, now: float) -> Tunnel | None:
        return self.tunnels.get((peer, header.tunnel_id))

    def _find(self, session: SessionKey) -> tuple[Tunnel, Call] | None:
        tunnel = self.tunnels.get((session.peer, session.tunnel_id))
        call = tunnel.calls.get(session.session_id) if tunnel else None
        return (tunnel, call) if tunnel is not None and call is not None else None

    def _new_tunnel_id(self, peer: Hashable) -> int:
        while True:
            tunnel_id = int.from_bytes(self.rng(2), "big")
            if tunnel_id and (peer, tunnel_id) not in self.tunnels:
                return tunnel_id

    def _collect(self, now: float) -> None:
        for key, tunnel in list(self.tunnels.items()):
            self._out += [(datagram, tunnel.peer) for datagram in tunnel.take_datagrams()]
            if tunnel.dead:
                self._forget_tunnel(key, tunnel)
        self._events.extend(self._pending)
        self._pending.clear()
        self._after_step(now)

    def _forget_tunnel(self, key: tuple[Hashable, int], tunnel: Tunnel) -> None:
        del self.tunnels[key]

    def _after_step(self, now: float) -> None:
        """Hook for the roles: react to what happened during one step."""
