"""The PPP option negotiation automaton (RFC 1661 §4), shared by LCP and IPCP.

Everything that decides a state transition is in the table ``_TRANSITIONS`` below, copied in shape
from RFC 1661 §4.1; the class only applies it. What each option means is left to a ``Policy``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Protocol

from labctl.gateway.l2tp.errors import MalformedPacket
from labctl.gateway.l2tp.ppp_frame import (
    CODE_REJECT,
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    TERMINATE_ACK,
    TERMINATE_REQUEST,
    ControlPacket,
    Option,
    pull_options,
    push_options,
)


class State(IntEnum):
    """RFC 1661 §4.2 states, numbered as in its table."""

    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


# RFC 1661 §4.1 state transition table: event -> one cell per state, "actions/next" or None ("-",
# cannot happen: ignored). The 'r' (restart) and 'p' (passive) options are not used here.
_TABLE: dict[str, tuple[str | None, ...]] = {
    #          Initial  Starting     Closed       Stopped           Closing  Stopping
    #          Req-Sent       Ack-Rcvd       Ack-Sent       Opened
    "up": ("/2", "irc,scr/6", None, None, None, None, None, None, None, None),
    "down": (None, None, "/0", "tls/1", "/0", "/1", "/1", "/1", "/1", "tld/1"),
    "open": ("tls/1", "/1", "irc,scr/6", "/3", "/5", "/5", "/6", "/7", "/8", "/9"),
    "close": ("/0", "tlf/0", "/2", "/2", "/4", "/4", "irc,str/4", "irc,str/4", "irc,str/4", "tld,irc,str/4"),
    "to+": (None, None, None, None, "str/4", "str/5", "scr/6", "scr/6", "scr/8", None),
    "to-": (None, None, None, None, "tlf/2", "tlf/3", "tlf/3", "tlf/3", "tlf/3", None),
    "rcr+": (None, None, "sta/2", "irc,scr,sca/8", "/4", "/5", "sca/8", "sca,tlu/9", "sca/8", "tld,scr,sca/8"),
    "rcr-": (None, None, "sta/2", "irc,scr,scn/6", "/4", "/5", "scn/6", "scn/7", "scn/6", "tld,scr,scn/6"),
    "rca": (None, None, "sta/2", "sta/3", "/4", "/5", "irc/7", "scr/6", "irc,tlu/9", "tld,scr/6"),
    "rcn": (None, None, "sta/2", "sta/3", "/4", "/5", "irc,scr/6", "scr/6", "irc,scr/8", "tld,scr/6"),
    "rtr": (None, None, "sta/2", "sta/3", "sta/4", "sta/5", "sta/6", "sta/6", "sta/6", "tld,zrc,sta/5"),
    "rta": (None, None, "/2", "/3", "tlf/2", "tlf/3", "/6", "/6", "/8", "tld,scr/6"),
    "ruc": (None, None, "scj/2", "scj/3", "scj/4", "scj/5", "scj/6", "scj/7", "scj/8", "scj/9"),
    "rxj+": (None, None, "/2", "/3", "/4", "/5", "/6", "/6", "/8", "/9"),
    "rxj-": (None, None, "tlf/2", "tlf/3", "tlf/2", "tlf/3", "tlf/3", "tlf/3", "tlf/3", "tld,irc,str/5"),
}


def _parse_cell(cell: str | None) -> tuple[tuple[str, ...], State] | None:
    if cell is None:
        return None
    actions, _, target = cell.partition("/")
    return tuple(a for a in actions.split(",") if a), State(int(target))


_TRANSITIONS: dict[str, tuple[tuple[tuple[str, ...], State] | None, ...]] = {
    event: tuple(_parse_cell(cell) for cell in cells) for event, cells in _TABLE.items()
}

# RFC 1661 §4.6: the restart timer runs only while a request is outstanding.
_TIMED_STATES = {State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT}


class Policy(Protocol):
    """What one protocol (LCP, IPCP) wants from the negotiation, and what it accepts."""

    def build_request(self) -> list[Option]: ...

    def check_request(self, options: list[Option]) -> tuple[int, list[Option]]:
        """Return (CONFIGURE_ACK, options) or (CONFIGURE_NAK | CONFIGURE_REJECT, offending options)."""
        ...

    def received_ack(self, options: list[Option]) -> None: ...

    def received_nak(self, options: list[Option]) -> None: ...

    def received_reject(self, options: list[Option]) -> None: ...


class LayerEvents(Protocol):
    """This-Layer-Up/-Down/-Started/-Finished (RFC 1661 §4.4) as seen by the layer above."""

    def layer_up(self, now: float) -> None: ...

    def layer_down(self, now: float) -> None: ...

    def layer_finished(self, now: float) -> None: ...


SendPacket = Callable[[ControlPacket], None]


class OptionFsm:
    """One RFC 1661 automaton. ``send`` receives each control packet to transmit."""

    def __init__(
        self,
        policy: Policy,
        layer: LayerEvents,
        send: SendPacket,
        *,
        restart_interval: float = 3.0,
        max_configure: int = 10,
        max_terminate: int = 2,
        max_failure: int = 5,
    ) -> None:
        self.policy = policy
        self.layer = layer
        self._send = send
        self.state = State.INITIAL
        self.restart_interval = restart_interval
        self.max_configure = max_configure
        self.max_terminate = max_terminate
        self.max_failure = max_failure
        self._restart_count = 0
        self._failures = 0
        self._deadline: float | None = None
        self._identifier = 0
        self._sent_request: list[Option] = []
        self._reply: ControlPacket | None = None  # the answer to the Configure-Request being handled
        self._peer_packet: ControlPacket | None = None
        self.terminate_reason = b""

    # --- administrative and lower-layer events -------------------------------------------------

    def up(self, now: float) -> None:
        self._apply("up", now)

    def down(self, now: float) -> None:
        self._apply("down", now)

    def open(self, now: float) -> None:
        self._apply("open", now)

    def close(self, now: float, reason: bytes = b"") -> None:
        self.terminate_reason = reason
        self._apply("close", now)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        self._deadline = None
        self._apply("to+" if self._restart_count > 0 else "to-", now)

    def peer_rejected_protocol(self, now: float) -> None:
        """A Protocol-Reject for our protocol: RXJ- for LCP, as the link cannot work without it."""
        self._apply("rxj-", now)

    # --- received packets ----------------------------------------------------------------------

    def receive(self, packet: ControlPacket, now: float) -> bool:
        """Handle codes 1-7; return False for any other code so the caller can handle it."""
        code = packet.code
        self._peer_packet = packet
        try:
            if code == CONFIGURE_REQUEST:
                self._receive_request(packet, now)
            elif code in (CONFIGURE_ACK, CONFIGURE_NAK, CONFIGURE_REJECT):
                self._receive_reply(packet, now)
            elif code == TERMINATE_REQUEST:
                self._apply("rtr", now)
            elif code == TERMINATE_ACK:
                self._apply("rta", now)
            elif code == CODE_REJECT:
                self._receive_code_reject(packet, now)
            else:
                return False
        finally:
            self._peer_packet = None
        return True

    def reject_code(self, packet: bytes, now: float) -> None:
        """RUC: a code this protocol does not know (RFC 1661 §5.6)."""
        self._peer_packet = ControlPacket(0, 0, packet)
        self._apply("ruc", now)

    def _receive_request(self, packet: ControlPacket, now: float) -> None:
        try:
            options = pull_options(packet.data)
        except MalformedPacket:
            # RFC 1661 §5.1: a request that cannot be parsed is not answered; the peer will retry.
            return
        verdict, reply_options = self.policy.check_request(options)
        if verdict == CONFIGURE_NAK:
            self._failures += 1
            if self._failures > self.max_failure:
                # RFC 1661 §4.6 Max-Failure: stop naking; reject what keeps failing so we converge.
                verdict = CONFIGURE_REJECT
        elif verdict == CONFIGURE_ACK:
            self._failures = 0
        self._reply = ControlPacket(verdict, packet.identifier, push_options(reply_options))
        self._apply("rcr+" if verdict == CONFIGURE_ACK else "rcr-", now)

    def _receive_reply(self, packet: ControlPacket, now: float) -> None:
        # RFC 1661 §5.2-5.4: a reply whose Identifier does not match the last request is discarded.
        if packet.identifier != self._identifier or self.state in (State.INITIAL, State.STARTING):
            return
        try:
            options = pull_options(packet.data)
        except MalformedPacket:
            return
        if packet.code == CONFIGURE_ACK:
            # RFC 1661 §5.2: the acknowledged options must be exactly those we sent.
            if options != self._sent_request:
                return
            self.policy.received_ack(options)
            self._apply("rca", now)
        elif packet.code == CONFIGURE_NAK:
            self.policy.received_nak(options)
            self._apply("rcn", now)
        else:
            self.policy.received_reject(options)
            self._apply("rcn", now)

    def _receive_code_reject(self, packet: ControlPacket, now: float) -> None:
        # RFC 1661 §5.6: a rejected Configure/Terminate code would be catastrophic (RXJ-); any other
        # code is an optional extension the peer does not have (RXJ+).
        rejected_code = packet.data[0] if packet.data else 0
        self._apply("rxj-" if 1 <= rejected_code <= 7 else "rxj+", now)

    # --- the table -----------------------------------------------------------------------------

    def _apply(self, event: str, now: float) -> None:
        cell = _TRANSITIONS[event][self.state]
        if cell is None:
            return
        actions, target = cell
        for action in actions:
            self._do(action, now, target)
        self.state = target
        if target not in _TIMED_STATES:
            self._deadline = None
        if "tlu" in actions:
            self.layer.layer_up(now)
        if "tlf" in actions:
            self.layer.layer_finished(now)

    def _do(self, action: str, now: float, target: State) -> None:
        if action == "irc":
            closing = target in (State.CLOSING, State.STOPPING)
            self._restart_count = self.max_terminate if closing else self.max_configure
        elif action == "zrc":
            self._restart_count = 0
            self._deadline = now + self.restart_interval
        elif action == "scr":
            self._identifier = (self._identifier + 1) & 0xFF
            self._sent_request = self.policy.build_request()
            self._send(ControlPacket(CONFIGURE_REQUEST, self._identifier, push_options(self._sent_request)))
            self._arm(now)
        elif action == "sca" or action == "scn":
            if self._reply is not None:
                self._send(self._reply)
        elif action == "str":
            self._identifier = (self._identifier + 1) & 0xFF
            self._send(ControlPacket(TERMINATE_REQUEST, self._identifier, self.terminate_reason))
            self._arm(now)
        elif action == "sta":
            identifier = self._peer_packet.identifier if self._peer_packet else 0
            self._send(ControlPacket(TERMINATE_ACK, identifier))
        elif action == "scj":
            rejected = self._peer_packet.data if self._peer_packet else b""
            self._identifier = (self._identifier + 1) & 0xFF
            self._send(ControlPacket(CODE_REJECT, self._identifier, rejected))
        elif action == "tld":
            self.layer.layer_down(now)
        # tls/tlu/tlf are signalled after the state changes (see _apply): the layer above may read it.

    def _arm(self, now: float) -> None:
        self._restart_count -= 1
        self._deadline = now + self.restart_interval
