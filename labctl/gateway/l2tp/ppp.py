"""One PPP link (RFC 1661 §3.2 phases): LCP, then authentication, then IPCP, then IPv4 datagrams.

Sans-I/O: ``receive_frame(frame, now)`` in; PPP frames in ``outbox`` and ``PppEvent``s in ``events``
out; one deadline from ``get_timer()``. The L2TP session that owns the link moves the frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address

from labctl.gateway.l2tp.auth_method import AuthMethod
from labctl.gateway.l2tp.errors import MalformedPacket
from labctl.gateway.l2tp.ipcp import IpcpClientPolicy, IpcpServerPolicy
from labctl.gateway.l2tp.lcp import LcpPolicy
from labctl.gateway.l2tp.ppp_auth import Authenticator, AuthPeer, AuthResult
from labctl.gateway.l2tp.ppp_frame import (
    DISCARD_REQUEST,
    ECHO_REPLY,
    ECHO_REQUEST,
    PROTO_CHAP,
    PROTO_IPCP,
    PROTO_IPV4,
    PROTO_LCP,
    PROTO_PAP,
    PROTOCOL_REJECT,
    ControlPacket,
    pull_frame,
    pull_packet,
    push_frame,
    push_packet,
)
from labctl.gateway.l2tp.ppp_fsm import OptionFsm, State


class Phase(Enum):
    """RFC 1661 §3.2 link phases."""

    DEAD = "dead"
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    NETWORK = "network"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class PppConfig:
    mru: int = 1400
    echo_interval: float = 10.0  # seconds between LCP Echo-Requests once the link is open
    echo_failures: int = 3  # unanswered echoes in a row before the link is declared dead
    restart_interval: float = 3.0  # RFC 1661 §4.6 Restart timer
    max_configure: int = 10
    max_terminate: int = 2
    auth_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class PppAuthenticated:
    user: str


@dataclass(frozen=True, slots=True)
class PppAuthFailed:
    user: str
    reason: str


@dataclass(frozen=True, slots=True)
class PppNetworkUp:
    address: IPv4Address
    peer_address: IPv4Address | None
    dns: tuple[IPv4Address, ...]


@dataclass(frozen=True, slots=True)
class PppEchoTimeout:
    unanswered: int


@dataclass(frozen=True, slots=True)
class PppFinished:
    """The link is dead (RFC 1661 This-Layer-Finished of LCP); the L2TP session should go too."""

    reason: str


@dataclass(frozen=True, slots=True)
class PppIpPacket:
    packet: bytes


PppEvent = PppAuthenticated | PppAuthFailed | PppNetworkUp | PppEchoTimeout | PppFinished | PppIpPacket


@dataclass
class PppCounters:
    malformed: int = 0
    protocol_rejects_sent: int = 0
    ip_in: int = 0
    ip_out: int = 0
    echo_sent: int = 0
    discarded: int = field(default=0)


class _Layer:
    """Routes This-Layer-Up/Down/Finished of one automaton to the session."""

    def __init__(
        self, up: Callable[[float], None], down: Callable[[float], None], finished: Callable[[float], None]
    ) -> None:
        self.layer_up = up
        self.layer_down = down
        self.layer_finished = finished


AllocateAddress = Callable[[str], IPv4Address | None]


class PppSession:
    """A PPP link in one of two roles: the LNS (authenticator, assigns addresses) or the client."""

    def __init__(
        self,
        *,
        authenticator: bool,
        config: PppConfig,
        rng: Callable[[int], bytes],
        auth_methods: tuple[AuthMethod, ...],
        name: str = "labctl",
        users: Mapping[str, str] | None = None,
        allocate: AllocateAddress | None = None,
        local_address: IPv4Address | None = None,
        dns: tuple[IPv4Address, ...] = (),
        user: str = "",
        password: str = "",
    ) -> None:
        self.authenticator = authenticator
        self.config = config
        self.rng = rng
        self.name = name
        self.users = users or {}
        self.allocate = allocate
        self.local_address = local_address
        self.dns = dns
        self.user = user
        self.password = password
        self.phase = Phase.DEAD
        self.outbox: list[bytes] = []
        self.events: list[PppEvent] = []
        self.counters = PppCounters()
        self.address: IPv4Address | None = None  # the client's address (assigned by us or to us)
        self.peer_address: IPv4Address | None = None
        self.auth_user = user
        self.finished_reason = ""
        self.lcp_policy = LcpPolicy(authenticator=authenticator, auth_methods=auth_methods, mru=config.mru, rng=rng)
        self.lcp = self._fsm(PROTO_LCP, self.lcp_policy, self._lcp_up, self._lcp_down, self._lcp_finished)
        self.ipcp: OptionFsm | None = None
        self.ipcp_client: IpcpClientPolicy | None = None
        self._auth_server: Authenticator | None = None
        self._auth_peer: AuthPeer | None = None
        self._echo_deadline: float | None = None
        self._echo_unanswered = 0
        self._echo_identifier = 0
        self._lcp_identifier = 0
        self._announced: PppNetworkUp | None = None

    def _fsm(
        self,
        protocol: int,
        policy: LcpPolicy | IpcpServerPolicy | IpcpClientPolicy,
        up: Callable[[float], None],
        down: Callable[[float], None],
        finished: Callable[[float], None],
    ) -> OptionFsm:
        return OptionFsm(
            policy,
            _Layer(up, down, finished),
            lambda packet: self._send(protocol, packet),
            restart_interval=self.config.restart_interval,
            max_configure=self.config.max_configure,
            max_terminate=self.config.max_terminate,
        )

    # --- driven by the L2TP session --------------------------------------------------------------

    def start(self, now: float) -> None:
        """The L2TP session is established: the lower layer is up (RFC 1661 §3.3 Establish phase)."""
        self.phase = Phase.ESTABLISH
        self.lcp.open(now)
        self.lcp.up(now)

    def close(self, now: float, reason: str) -> None:
        """Administrative close: LCP Terminate-Request, then ``PppFinished`` (RFC 1661 §3.7)."""
        self.finished_reason = self.finished_reason or reason
        if self.phase in (Phase.DEAD, Phase.TERMINATE):
            return
        self.phase = Phase.TERMINATE
        self.lcp.close(now, reason.encode()[:64])

    def lower_down(self, now: float) -> None:
        """The L2TP session is gone: no Terminate exchange is possible."""
        self.lcp.down(now)
        self.phase = Phase.DEAD

    def receive_frame(self, frame: bytes, now: float) -> None:
        try:
            protocol, information = pull_frame(frame)
            self._dispatch(protocol, information, now)
        except MalformedPacket:
            self.counters.malformed += 1

    def encapsulate_ip(self, packet: bytes) -> bytes | None:
        """A PPP frame for an outgoing IPv4 datagram, or None while IPCP is not open (RFC 1661 §3.5)."""
        if self.ipcp is None or self.ipcp.state != State.OPENED:
            return None
        self.counters.ip_out += 1
        return push_frame(PROTO_IPV4, packet)

    def get_timer(self) -> float | None:
        deadlines = [self.lcp.get_timer(), self._echo_deadline]
        if self.ipcp is not None:
            deadlines.append(self.ipcp.get_timer())
        for auth in (self._auth_server, self._auth_peer):
            if auth is not None and self.phase == Phase.AUTHENTICATE:
                deadlines.append(auth.get_timer())
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        self.lcp.handle_timer(now)
        if self.ipcp is not None:
            self.ipcp.handle_timer(now)
        if self.phase == Phase.AUTHENTICATE:
            auth = self._auth_server or self._auth_peer
            if auth is not None:
                auth.handle_timer(now)
                self._check_auth(now)
        if self._echo_deadline is not None and now >= self._echo_deadline:
            self._echo_tick(now)

    # --- frames in -------------------------------------------------------------------------------

    def _dispatch(self, protocol: int, information: bytes, now: float) -> None:
        if protocol == PROTO_LCP:
            self._receive_lcp(pull_packet(information), information, now)
            self._check_lcp_failure(now)
            return
        # RFC 1661 §3.4-3.5: before LCP is open, only LCP is meaningful; drop everything else.
        if self.lcp.state != State.OPENED:
            self.counters.discarded += 1
            return
        if protocol in (PROTO_PAP, PROTO_CHAP):
            self._receive_auth(protocol, pull_packet(information), now)
        elif protocol == PROTO_IPCP:
            self._receive_ipcp(information, now)
        elif protocol == PROTO_IPV4:
            if self.ipcp is not None and self.ipcp.state == State.OPENED:
                self.counters.ip_in += 1
                self.events.append(PppIpPacket(information))
            else:
                self.counters.discarded += 1
        else:
            self._protocol_reject(protocol, information)

    def _receive_lcp(self, packet: ControlPacket, raw: bytes, now: float) -> None:
        if self.lcp.receive(packet, now):
            return
        if packet.code == ECHO_REQUEST:
            # RFC 1661 §5.8: answer only in the Opened state, with our own magic number.
            if self.lcp.state == State.OPENED and len(packet.data) >= 4:
                reply = struct.pack("!I", self.lcp_policy.magic) + packet.data[4:]
                self._send(PROTO_LCP, ControlPacket(ECHO_REPLY, packet.identifier, reply))
        elif packet.code == ECHO_REPLY:
            if len(packet.data) >= 4 and struct.unpack_from("!I", packet.data)[0] != self.lcp_policy.magic:
                self._echo_unanswered = 0
        elif packet.code == PROTOCOL_REJECT:
            self._receive_protocol_reject(packet, now)
        elif packet.code == DISCARD_REQUEST:
            pass  # RFC 1661 §5.9: silently discarded
        else:
            self.lcp.reject_code(raw, now)

    def _receive_protocol_reject(self, packet: ControlPacket, now: float) -> None:
        if len(packet.data) < 2:
            raise MalformedPacket("Protocol-Reject without a protocol")
        rejected = struct.unpack_from("!H", packet.data)[0]
        # RFC 1661 §5.7: a rejected NCP is stopped (RXJ- on that automaton); LCP itself cannot be rejected.
        if rejected == PROTO_IPCP and self.ipcp is not None:
            self.ipcp.peer_rejected_protocol(now)

    def _receive_auth(self, protocol: int, packet: ControlPacket, now: float) -> None:
        if self.phase != Phase.AUTHENTICATE and self._auth_server is None:
            self.counters.discarded += 1
            return
        auth = self._auth_server or self._auth_peer
        if auth is None:
            # RFC 1661 §5.7: an authentication protocol we did not negotiate is rejected.
            self._protocol_reject(protocol, push_packet(packet))
            return
        auth.receive(protocol, packet, now)
        self._check_auth(now)

    def _receive_ipcp(self, information: bytes, now: float) -> None:
        if self.phase != Phase.NETWORK or self.ipcp is None:
            # RFC 1661 §3.4: NCP packets before the Network phase are silently discarded.
            self.counters.discarded += 1
            return
        packet = pull_packet(information)
        if not self.ipcp.receive(packet, now):
            self.ipcp.reject_code(information, now)

    def _protocol_reject(self, protocol: int, information: bytes) -> None:
        # RFC 1661 §5.7: Rejected-Information is truncated to fit the peer's MRU.
        room = max(0, self.lcp_policy.peer_mru - 6)
        data = struct.pack("!H", protocol) + information[:room]
        self._lcp_identifier = (self._lcp_identifier + 1) & 0xFF
        self.counters.protocol_rejects_sent += 1
        self._send(PROTO_LCP, ControlPacket(PROTOCOL_REJECT, self._lcp_identifier, data))

    def _send(self, protocol: int, packet: ControlPacket) -> None:
        self.outbox.append(push_frame(protocol, push_packet(packet)))

    # --- phase changes ---------------------------------------------------------------------------

    def _check_lcp_failure(self, now: float) -> None:
        if self.lcp_policy.failure and self.phase == Phase.ESTABLISH:
            self.close(now, self.lcp_policy.failure)

    def _lcp_up(self, now: float) -> None:
        self.phase = Phase.AUTHENTICATE
        self._echo_unanswered = 0
        self._echo_deadline = now + self.config.echo_interval
        method = self.lcp_policy.auth
        if self.authenticator:
            if method is None:
                self.close(now, "no authentication method agreed")
                return
            self._auth_server = Authenticator(
                method,
                self.users,
                self.name,
                self.rng,
                self._send,
                retry_interval=self.config.restart_interval,
                timeout=self.config.auth_timeout,
            )
            self._auth_server.start(now)
        elif method is not None:
            self._auth_peer = AuthPeer(
                method, self.user, self.password, self.rng, self._send, retry_interval=self.config.restart_interval
            )
            self._auth_peer.start(now)
        else:
            self._start_network(now)  # RFC 1661 §3.5: no authentication asked for, go straight on

    def _lcp_down(self, now: float) -> None:
        self._echo_deadline = None
        if self.ipcp is not None:
            self.ipcp.down(now)
        if self.phase != Phase.DEAD:
            self.phase = Phase.TERMINATE

    def _lcp_finished(self, now: float) -> None:
        self.phase = Phase.DEAD
        self._echo_deadline = None
        self.events.append(PppFinished(self.finished_reason or "the PPP link was closed"))

    def _check_auth(self, now: float) -> None:
        auth = self._auth_server or self._auth_peer
        if auth is None or auth.result is None or self.phase != Phase.AUTHENTICATE:
            return
        result: AuthResult = auth.result
        if result.ok:
            self.auth_user = result.user
            self.events.append(PppAuthenticated(result.user))
            self._start_network(now)
        else:
            self.events.append(PppAuthFailed(result.user or self.user, result.reason))
            # RFC 1661 §3.6: a failed authentication moves to the Terminate phase.
            self.close(now, result.reason)

    def _start_network(self, now: float) -> None:
        if self.authenticator:
            assigned = self.allocate(self.auth_user) if self.allocate else None
            if assigned is None or self.local_address is None:
                self.close(now, "no address left in the pool")
                return
            self.address = assigned
            self.peer_address = self.local_address
            policy: IpcpServerPolicy | IpcpClientPolicy = IpcpServerPolicy(self.local_address, assigned, self.dns)
        else:
            self.ipcp_client = policy = IpcpClientPolicy()
        self.phase = Phase.NETWORK
        self.ipcp = self._fsm(PROTO_IPCP, policy, self._ipcp_up, lambda now: None, lambda now: None)
        self.ipcp.open(now)
        self.ipcp.up(now)

    def _ipcp_up(self, now: float) -> None:
        if self.ipcp_client is not None:
            self.address = self.ipcp_client.address
            self.peer_address = self.ipcp_client.peer_address
            dns = self.ipcp_client.dns_servers()
        else:
            dns = self.dns
        if self.address is None:
            return
        up = PppNetworkUp(self.address, self.peer_address, dns)
        # A lost Configure-Ack makes IPCP renegotiate (RFC 1661 §4.1, Opened + RCR): only a changed
        # result is news to the layer above.
        if up != self._announced:
            self._announced = up
            self.events.append(up)

    # --- keepalive -------------------------------------------------------------------------------

    def _echo_tick(self, now: float) -> None:
        if self.lcp.state != State.OPENED:
            self._echo_deadline = None
            return
        if self._echo_unanswered >= self.config.echo_failures:
            self._echo_deadline = None
            self.events.append(PppEchoTimeout(self._echo_unanswered))
            # The peer is gone: no Terminate exchange can complete, so finish at once.
            self.finished_reason = f"LCP echo timeout: {self._echo_unanswered} echo requests unanswered"
            self.lower_down(now)
            self.events.append(PppFinished(self.finished_reason))
            return
        self._echo_identifier = (self._echo_identifier + 1) & 0xFF
        self._echo_unanswered += 1
        self.counters.echo_sent += 1
        data = struct.pack("!I", self.lcp_policy.magic)
        self._send(PROTO_LCP, ControlPacket(ECHO_REQUEST, self._echo_identifier, data))
        self._echo_deadline = now + self.config.echo_interval

    def status(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "lcp": self.lcp.state.name.lower(),
            "ipcp": self.ipcp.state.name.lower() if self.ipcp else None,
            "auth": self.lcp_policy.auth.label if self.lcp_policy.auth else None,
            "user": self.auth_user or None,
            "address": str(self.address) if self.address else None,
            "peer_address": str(self.peer_address) if self.peer_address else None,
        }
