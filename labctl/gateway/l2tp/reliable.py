"""Reliable delivery of L2TP control messages (RFC 2661 §5.8): Ns/Nr, window, retransmission, ZLB."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from labctl.gateway.l2tp.header import L2tpHeader, push_control

# RFC 2661 §5.8: a peer that sends no Receive Window Size AVP has a window of 4.
DEFAULT_PEER_WINDOW = 4


@dataclass(frozen=True, slots=True)
class RetransmitConfig:
    initial_timeout: float = 1.0  # RFC 2661 §5.8 recommends 1 s
    max_timeout: float = 8.0  # and doubling up to at least 8 s
    max_retransmits: int = 5  # then the tunnel is declared dead
    receive_window: int = 8  # what we announce in our Receive Window Size AVP


def seq_before(a: int, b: int) -> bool:
    """RFC 2661 §5.8: 16-bit sequence comparison; ``a`` comes before ``b`` within half the space."""
    return 0 < ((b - a) & 0xFFFF) < 0x8000


@dataclass(slots=True)
class _Outgoing:
    ns: int
    tunnel_id: int
    session_id: int
    body: bytes
    deadline: float = 0.0
    retransmits: int = 0


class ControlChannel:
    """One tunnel's control channel. ``queue`` messages, feed ``receive``, drain ``take_datagrams``."""

    def __init__(self, config: RetransmitConfig) -> None:
        self.config = config
        self.ns = 0  # Ns of the next new message we send
        self.nr = 0  # Ns we expect next from the peer
        self.peer_window = DEFAULT_PEER_WINDOW
        self.peer_tunnel_id = 0
        self.failed = False
        self.retransmissions = 0
        self.duplicates = 0
        self._unacked: list[_Outgoing] = []
        self._waiting: deque[_Outgoing] = deque()
        self._early: dict[int, tuple[L2tpHeader, bytes]] = {}
        self._ack_needed = False
        self._out: list[bytes] = []

    @property
    def idle(self) -> bool:
        """Everything we sent has been acknowledged."""
        return not self._unacked and not self._waiting

    def queue(self, session_id: int, body: bytes, now: float, tunnel_id: int | None = None) -> None:
        item = _Outgoing(self.ns, self.peer_tunnel_id if tunnel_id is None else tunnel_id, session_id, body)
        self.ns = (self.ns + 1) & 0xFFFF
        self._waiting.append(item)
        self._pump(now)

    def receive(self, header: L2tpHeader, body: bytes, now: float) -> list[tuple[L2tpHeader, bytes]]:
        """Process Ns/Nr of a received message; return the messages now deliverable, in order."""
        if header.ns is None or header.nr is None:
            return []  # pull_header refuses such control messages; never trust that blindly
        self._acknowledge(header.nr, now)
        if not body:
            return []  # RFC 2661 §5.8: a ZLB only acknowledges
        self._ack_needed = True
        if header.ns == self.nr:
            delivered = [(header, body)]
            self.nr = (self.nr + 1) & 0xFFFF
            while self.nr in self._early:
                delivered.append(self._early.pop(self.nr))
                self.nr = (self.nr + 1) & 0xFFFF
            return delivered
        if seq_before(header.ns, self.nr):
            # RFC 2661 §5.8: a duplicate is acknowledged again (our ack was lost) and discarded.
            self.duplicates += 1
            return []
        if ((header.ns - self.nr) & 0xFFFF) < self.config.receive_window:
            self._early[header.ns] = (header, body)  # out of order, inside our window: keep it
        return []

    def _acknowledge(self, nr: int, now: float) -> None:
        # An Nr outside [oldest unacknowledged, next to send] acknowledges nothing we sent: ignore it.
        base = self._unacked[0].ns if self._unacked else self.ns
        if (nr - base) & 0xFFFF > (self.ns - base) & 0xFFFF:
            return
        self._unacked = [item for item in self._unacked if not seq_before(item.ns, nr)]
        self._pump(now)

    def _pump(self, now: float) -> None:
        while self._waiting and len(self._unacked) < self.peer_window:
            item = self._waiting.popleft()
            item.deadline = now + self.config.initial_timeout
            self._unacked.append(item)
            self._transmit(item)

    def _transmit(self, item: _Outgoing) -> None:
        # Nr is always current, so every (re)transmission also acknowledges what we have received.
        self._out.append(push_control(item.tunnel_id, item.session_id, item.ns, self.nr, item.body))
        self._ack_needed = False

    def take_datagrams(self) -> list[bytes]:
        if self._ack_needed:
            # RFC 2661 §5.8: nothing to piggyback the acknowledgement on, so send a ZLB.
            self._out.append(push_control(self.peer_tunnel_id, 0, self.ns, self.nr, b""))
            self._ack_needed = False
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return min((item.deadline for item in self._unacked), default=None)

    def handle_timer(self, now: float) -> None:
        for item in self._unacked:
            if item.deadline > now:
                continue
            if item.retransmits >= self.config.max_retransmits:
                # RFC 2661 §5.8: the peer is unreachable; the tunnel and its sessions must be cleaned up.
                self.failed = True
                self._unacked.clear()
                self._waiting.clear()
                return
            item.retransmits += 1
            self.retransmissions += 1
            backoff = self.config.initial_timeout * (2**item.retransmits)
            item.deadline = now + min(backoff, self.config.max_timeout)
            self._transmit(item)
