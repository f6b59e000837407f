"""L2TP/IPsec (RFC 3193) between the data plane and the L2TP/PPP core: the LNS of a gateway, or a remote user.

Sans-I/O like the cores it joins: the daemon (through ``l2tp_io``) hands in decapsulated packets, packets read
from the PPP TUN device and ``now``; it takes out protected packets to send, packets to write to the TUN
device and address changes for it.

Why L2TP is taken from the data plane and never from a kernel socket: only a packet that came out of an IPsec
SA may reach the LNS (RFC 3193 §4: the point of L2TP/IPsec). The daemon offers every decapsulated UDP packet
for port 1701 here, together with the packet it came in (so we know the SA); L2TP that arrives in clear lands
on a socket whose only job is to count and drop it (``refuse_clear``).

Peers: one %any transport policy serves every client, so clients are told apart by their SA, not by the inner
5-tuple: two users behind one NAT both send from 10.x:1701, but through different SAs whose outer UDP ports
differ. The peer key is (reqid, outer address, outer UDP port, inner UDP port); it survives rekeys (the new SA
has the same outer endpoint), and replies leave through the newest outbound SA to that endpoint.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from labctl.gateway.ipsec import ipv4
from labctl.gateway.ipsec.dataplane import DataPlane, Dropped, OutboundResult
from labctl.gateway.ipsec.sad import SecurityAssociation
from labctl.gateway.l2tp import (
    PORT,
    AuthFailed,
    AuthMethod,
    ClientConfig,
    EchoTimeout,
    IpPacket,
    L2tpClient,
    L2tpServer,
    PppConfig,
    ServerConfig,
    SessionDown,
    SessionKey,
    SessionUp,
    TunnelDown,
    TunnelSettings,
    TunnelUp,
)
from labctl.gateway.l2tp_config import L2tpConfig

log = logging.getLogger("labctl.gateway.l2tp")

PORT_BYTES = PORT.to_bytes(2, "big")
NATT_PORT = 4500
RECONNECT_DELAY = 5.0  # a client whose tunnel failed (not its password) tries again after this


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent an L2TP datagram: the SA's policy (reqid), its outer endpoint and the inner UDP source port."""

    reqid: int
    address: str
    port: int  # the outer UDP port of ESP-in-UDP, 0 for plain ESP
    inner_port: int = PORT

    def __str__(self) -> str:
        outer = f"{self.address}:{self.port}" if self.port else self.address
        return f"{outer} (udp {self.inner_port})"


@dataclass(frozen=True, slots=True)
class AddressUp:
    """The client's PPP link got ``address`` (peer ``peer_address``): configure the TUN device and routes."""

    address: str
    peer_address: str | None


@dataclass(frozen=True, slots=True)
class AddressDown:
    address: str


LinkChange = AddressUp | AddressDown


@dataclass
class SessionInfo:
    user: str
    address: str
    peer: str


class L2tpService:
    """The LNS (``cfg.role == "lns"``) or the remote user's client, over ``dp``'s transport-mode SAs."""

    def __init__(self, cfg: L2tpConfig, local: str, reqid: int, dp: DataPlane,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self.cfg = cfg
        self.local = local
        self.local_b = socket.inet_aton(local)
        self.reqid = reqid
        self.dp = dp
        self.counters: Counter[str] = Counter()
        self.sessions: dict[SessionKey, SessionInfo] = {}
        self.last_error = ""
        self._out: list[OutboundResult] = []
        self._tun: list[bytes] = []
        self._links: list[LinkChange] = []
        self._ident = int.from_bytes(rng(2), "big")
        ppp = PppConfig(mru=cfg.tun.mtu, echo_interval=cfg.echo_interval, echo_failures=cfg.echo_failures)
        methods = tuple(AuthMethod.from_label(label) for label in cfg.auth)
        self.server: L2tpServer | None = None
        self.client: L2tpClient | None = None
        self._server_peer: Peer | None = None
        self._retry_at: float | None = 0.0  # client: when to (re)connect; None: do not (e.g. refused password)
        if cfg.role == "lns":
            self.server = L2tpServer(ServerConfig(
                users=cfg.users,
                local_address=ipaddress.IPv4Address(cfg.local_address),
                pool_first=ipaddress.IPv4Address(cfg.pool_first),
                pool_last=ipaddress.IPv4Address(cfg.pool_last),
                dns=tuple(ipaddress.IPv4Address(d) for d in cfg.dns),
                auth_methods=methods,
                tunnel=TunnelSettings(host_name="labctl-lns", hello_interval=cfg.hello_interval),
                ppp=ppp,
            ), rng=rng)
        else:
            self._server_peer = Peer(reqid, cfg.server, 0)
            self.client = L2tpClient(ClientConfig(
                user=cfg.user, password=cfg.password, auth_methods=methods,
                tunnel=TunnelSettings(host_name="labctl-client", hello_interval=cfg.hello_interval), ppp=ppp,
            ), self._server_peer, rng=rng)

    @property
    def endpoint(self) -> L2tpServer | L2tpClient:
        ep = self.server or self.client
        assert ep is not None  # noqa: S101 - one of the two, by construction
        return ep

    # --- packets in ------------------------------------------------------------------------------------------
    def take_udp(self, plain: bytes, esp_payload: bytes, now: float) -> bool:
        """A packet the data plane decapsulated from ESP-in-UDP ``esp_payload``: True when it was L2TP (ours)."""
        if not _is_l2tp(plain):
            return False
        self._receive(plain, self.dp.inbound_sa(int.from_bytes(esp_payload[:4], "big"), None), now)
        return True

    def take_raw(self, plain: bytes, outer: bytes, now: float) -> bool:
        """A packet the data plane decapsulated from raw ESP/AH packet ``outer``: True when it was L2TP."""
        if not _is_l2tp(plain):
            return False
        ihl = ipv4.header_length(outer)
        at = ihl + 4 if outer[9] == ipv4.PROTO_AH else ihl
        spi = int.from_bytes(outer[at:at + 4], "big") if ihl and len(outer) >= at + 4 else 0
        self._receive(plain, self.dp.inbound_sa(spi, outer[16:20]), now)
        return True

    def refuse_clear(self, src: tuple[str, int]) -> None:
        """L2TP that reached UDP 1701 outside any SA: never processed (RFC 3193 §4), only counted."""
        self.counters["refused_clear"] += 1
        if self.counters["refused_clear"] == 1 or self.counters["refused_clear"] % 100 == 0:
            log.warning("refused L2TP in clear from %s:%d (%d so far): L2TP is accepted only inside IPsec",
                        src[0], src[1], self.counters["refused_clear"])

    def _receive(self, plain: bytes, sa: SecurityAssociation | None, now: float) -> None:
        ihl = ipv4.header_length(plain)
        if sa is None or plain[16:20] != self.local_b:
            self.counters["no_sa"] += 1
            return
        sport, _dport, length = struct.unpack_from("!HHH", plain, ihl)
        if length < 8 or ihl + length > len(plain):
            self.counters["malformed"] += 1
            return
        peer = self._peer_of(sa, sport)
        if peer is None:
            self.counters["wrong_peer"] += 1
            return
        self.counters["in"] += 1
        self.endpoint.receive_datagram(plain[ihl + 8:ihl + length], peer, now)
        self._after(now)

    def _peer_of(self, sa: SecurityAssociation, sport: int) -> Peer | None:
        if self._server_peer is not None:
            # The client talks to its LNS only, through whichever SA it holds with it.
            return self._server_peer if sa.src == self.cfg.server else None
        port = sa.encap[0] if sa.encap else 0  # an inbound SA's encap is (peer's port, our port)
        return Peer(sa.reqid, sa.src, port, sport)

    def from_tun(self, packet: bytes, now: float) -> None:
        """An IPv4 packet read from the PPP TUN device: send it over the PPP session it is for."""
        if ipv4.header_length(packet) == 0:
            self.counters["tun_malformed"] += 1
            return
        if self.server is not None:
            session = self.server.session_for(socket.inet_ntoa(packet[16:20]))
            if session is None:
                self.counters["tun_no_session"] += 1
                return
            datagrams = self.server.send_ip(session, packet)
        else:
            assert self.client is not None  # noqa: S101
            datagrams = self.client.send_ip(None, packet)
        if not datagrams:
            self.counters["tun_no_session"] += 1
        self._send(datagrams, now)

    # --- time ------------------------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        timers = [t for t in (self.endpoint.get_timer(), self._client_retry()) if t is not None]
        return min(timers) if timers else None

    def _client_retry(self) -> float | None:
        client = self.client
        return self._retry_at if client is not None and client.tunnel is None else None

    def handle_timer(self, now: float) -> None:
        timer = self.endpoint.get_timer()
        if timer is not None and timer <= now:
            self.endpoint.handle_timer(now)
        self._connect_if_due(now)
        self._after(now)

    def _connect_if_due(self, now: float) -> None:
        client = self.client
        if client is None or client.tunnel is not None or self._retry_at is None or now < self._retry_at:
            return
        if self._sa_to(self._server_peer) is None:
            # IKE has not finished yet: L2TP starts once the transport SA exists (nothing leaves in clear).
            self._retry_at = now + 0.5
            return
        log.info("connecting to the LNS %s as %s", self.cfg.server, self.cfg.user)
        client.connect(now)

    def close(self, now: float) -> None:
        if self.server is not None:
            self.server.close(now)
        elif self.client is not None:
            self._retry_at = None
            self.client.close(now)
        self._after(now)

    # --- packets out -----------------------------------------------------------------------------------------
    def _after(self, now: float) -> None:
        ep = self.endpoint
        self._send(ep.datagrams_to_send(), now)
        while (ev := ep.next_event()) is not None:
            self._on_event(ev, now)
        self._send(ep.datagrams_to_send(), now)

    def _on_event(self, ev: object, now: float) -> None:
        if isinstance(ev, IpPacket):
            info = self.sessions.get(ev.session)
            # A client may only send from the address IPCP gave it (no spoofing LAN-B or another user).
            if self.server is not None and (info is None or socket.inet_ntoa(ev.packet[12:16]) != info.address):
                self.counters["spoofed"] += 1
                return
            self._tun.append(ev.packet)
        elif isinstance(ev, SessionUp):
            self.sessions[ev.session] = SessionInfo(ev.user, ev.address, str(ev.session.peer))
            log.info("PPP session up: user %s, address %s, peer %s", ev.user, ev.address, ev.session.peer)
            if self.client is not None:
                self._links.append(AddressUp(ev.address, ev.peer_address))
        elif isinstance(ev, SessionDown | AuthFailed | EchoTimeout):
            self._session_over(ev, now)
        elif isinstance(ev, TunnelUp):
            log.info("L2TP tunnel %d up with %s (%s)", ev.tunnel_id, ev.peer, ev.peer_host_name)
        elif isinstance(ev, TunnelDown):
            log.info("L2TP tunnel %d with %s down: %s", ev.tunnel_id, ev.peer, ev.reason)
            if self.client is not None and self._retry_at is not None:
                self._retry_at = now + RECONNECT_DELAY

    def _session_over(self, ev: SessionDown | AuthFailed | EchoTimeout, now: float) -> None:
        info = self.sessions.pop(ev.session, None)
        kind = {SessionDown: "down", AuthFailed: "authentication failed", EchoTimeout: "echo timeout"}[type(ev)]
        self.counters[f"sessions_{kind.replace(' ', '_')}"] += 1
        self.last_error = ev.reason if not isinstance(ev, SessionDown) else self.last_error
        log.warning("PPP session of %s (%s) %s: %s", ev.user or "?", info.address if info else "no address",
                    kind, ev.reason)
        if self.client is not None:
            if info is not None:
                self._links.append(AddressDown(info.address))
            if isinstance(ev, AuthFailed):
                self._retry_at = None  # a refused password does not get better by repeating it

    def _send(self, datagrams: list[tuple[bytes, Hashable]], now: float) -> None:
        for data, peer in datagrams:
            if not isinstance(peer, Peer):
                continue
            sa = self._sa_to(peer)
            if sa is None:
                self.counters["out_no_sa"] += 1
                continue
            result = self.dp.outbound_via(sa, self._udp_packet(data, peer), now)
            if isinstance(result, Dropped):
                self.counters[f"out_{result.reason}"] += 1
                continue
            self.counters["out"] += 1
            self._out.append(result)

    def _sa_to(self, peer: Peer | None) -> SecurityAssociation | None:
        if peer is None:
            return None
        dp = self.dp
        if self.client is not None:
            # Whether IKE floated to 4500 is only known once it ran: take either.
            return dp.outbound_sa_to(peer.reqid, peer.address, None) or dp.outbound_sa_to(
                peer.reqid, peer.address, NATT_PORT)
        return dp.outbound_sa_to(peer.reqid, peer.address, peer.port or None)

    def _udp_packet(self, payload: bytes, peer: Peer) -> bytes:
        dst = socket.inet_aton(peer.address)
        length = 8 + len(payload)
        udp = bytearray(struct.pack("!HHHH", PORT, peer.inner_port, length, 0) + payload)
        # RFC 768: checksum over the pseudo-header; a result of 0 is sent as 0xFFFF.
        checksum = ipv4.internet_checksum(self.local_b + dst + bytes((0, ipv4.PROTO_UDP)) + length.to_bytes(2, "big")
                                          + udp) or 0xFFFF
        struct.pack_into("!H", udp, 6, checksum)
        self._ident = (self._ident + 1) & 0xFFFF
        return ipv4.build_header(self.local_b, dst, ipv4.PROTO_UDP, length, self._ident) + bytes(udp)

    # --- what the I/O shell collects ---------------------------------------------------------------------------
    def take_outbound(self) -> list[OutboundResult]:
        out, self._out = self._out, []
        return out

    def take_tun_writes(self) -> list[bytes]:
        out, self._tun = self._tun, []
        return out

    def take_link_changes(self) -> list[LinkChange]:
        out, self._links = self._links, []
        return out

    def status(self) -> dict[str, Any]:
        """JSON-ready: role, sessions (user, address, peer), the core's tunnels and PPP state, counters."""
        return {
            **self.endpoint.status(),
            "tun": self.cfg.tun.name,
            "sessions_up": [
                {"user": s.user, "address": s.address, "peer": s.peer} for s in self.sessions.values()
            ],
            "counters": dict(self.counters),
            "last_error": self.last_error,
        }


def _is_l2tp(plain: bytes) -> bool:
    """UDP to port 1701 (the L2TP port, RFC 2661 §8.1)."""
    ihl = ipv4.header_length(plain)
    return bool(ihl) and plain[9] == ipv4.PROTO_UDP and len(plain) >= ihl + 8 and plain[ihl + 2:ihl + 4] == PORT_BYTES
