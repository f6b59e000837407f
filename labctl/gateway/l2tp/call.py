"""One L2TP session (an incoming call, RFC 2661 §7.4) and the PPP link it carries."""

from __future__ import annotations

from enum import Enum

from labctl.gateway.l2tp.events import (
    AuthFailed,
    EchoTimeout,
    Event,
    IpPacket,
    SessionDown,
    SessionKey,
    SessionUp,
)
from labctl.gateway.l2tp.ppp import (
    PppAuthenticated,
    PppAuthFailed,
    PppEchoTimeout,
    PppFinished,
    PppIpPacket,
    PppNetworkUp,
    PppSession,
)


class CallState(Enum):
    """RFC 2661 §7.4.1 (LAC) and §7.4.2 (LNS) incoming call states, plus the wait for the tunnel."""

    WAIT_TUNNEL = "wait-tunnel"
    WAIT_REPLY = "wait-reply"  # LAC: ICRQ sent
    WAIT_CONNECT = "wait-connect"  # LNS: ICRP sent
    ESTABLISHED = "established"
    CLOSED = "closed"


class Call:
    def __init__(self, key: SessionKey, ppp: PppSession, *, lac: bool, peer_id: int = 0) -> None:
        self.key = key
        self.ppp = ppp
        self.lac = lac
        self.peer_id = peer_id
        self.state = CallState.WAIT_TUNNEL
        self.up = False
        self.finished: str | None = None  # set when PPP is over: the call must be disconnected
        self.echo_timed_out = False

    @property
    def local_id(self) -> int:
        return self.key.session_id

    @property
    def user(self) -> str:
        return self.ppp.auth_user

    def take_events(self, events: list[Event]) -> None:
        """Translate what PPP reported into public events (and note when the link is finished)."""
        for event in self.ppp.events:
            if isinstance(event, PppIpPacket):
                events.append(IpPacket(self.key, event.packet))
            elif isinstance(event, PppNetworkUp):
                self.up = True
                events.append(
                    SessionUp(
                        self.key,
                        self.user,
                        str(event.address),
                        str(event.peer_address) if event.peer_address else None,
                        tuple(str(d) for d in event.dns),
                    )
                )
            elif isinstance(event, PppAuthFailed):
                events.append(AuthFailed(self.key, event.user, event.reason))
            elif isinstance(event, PppEchoTimeout):
                self.echo_timed_out = True
                events.append(EchoTimeout(self.key, self.user, f"no answer to {event.unanswered} LCP echo requests"))
            elif isinstance(event, PppFinished):
                self.finished = event.reason
            elif isinstance(event, PppAuthenticated):
                pass  # the user name is read from the PPP session when needed
        self.ppp.events.clear()

    def teardown(self, now: float, reason: str, events: list[Event]) -> None:
        """The call is gone (CDN sent or received, or the tunnel closed)."""
        if self.state is CallState.CLOSED:
            return
        self.state = CallState.CLOSED
        self.ppp.lower_down(now)
        self.ppp.events.clear()
        self.ppp.outbox.clear()
        events.append(SessionDown(self.key, self.user, reason))

    def status(self) -> dict[str, object]:
        return {
            "session_id": self.local_id,
            "peer_session_id": self.peer_id,
            "state": self.state.value,
            **self.ppp.status(),
        }
