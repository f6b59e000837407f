"""One L2TP control connection (RFC 2661 §7.2) with its sessions, for either end.

The initiator (the client/LAC) sends SCCRQ and opens calls with ICRQ; the responder (the LNS)
answers. Reliable delivery is in ``reliable.py``; PPP is in ``ppp.py``; this module moves messages
between them and keeps the state.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum

from labctl.gateway.l2tp.avp import (
    Avp,
    ControlMessage,
    build_message,
    octets,
    parse_message,
    parse_result_code,
    result_code,
    u16,
    u32,
)
from labctl.gateway.l2tp.call import Call, CallState
from labctl.gateway.l2tp.constants import (
    CDN_TEXT,
    KNOWN_AVP_TYPES,
    REQUIRED_AVPS,
    STOPCCN_TEXT,
    TUNNEL_MESSAGES,
    AvpType,
    CdnResult,
    ErrorCode,
    MessageType,
    StopCcnResult,
)
from labctl.gateway.l2tp.errors import MalformedPacket
from labctl.gateway.l2tp.events import Event, SessionKey, TunnelDown, TunnelUp
from labctl.gateway.l2tp.header import L2tpHeader, push_data
from labctl.gateway.l2tp.ppp import PppSession
from labctl.gateway.l2tp.reliable import ControlChannel, RetransmitConfig

PROTOCOL_VERSION = b"\x01\x00"  # RFC 2661 §4.4.3: version 1, revision 0
FRAMING_SYNC_ASYNC = 3  # RFC 2661 §4.4.3 Framing Capabilities: synchronous and asynchronous
FRAMING_SYNC = 1  # RFC 2661 §4.4.5 Framing Type
CONNECT_SPEED = 100_000_000  # nominal: there is no real line behind a virtual call
CHALLENGE_SIZE = 16


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    host_name: str = "labctl"
    vendor_name: str = "labctl"
    secret: bytes | None = None  # tunnel authentication (RFC 2661 §5.1.1); None: not used
    hello_interval: float = 60.0  # RFC 2661 §6.5 keepalive after this much silence
    stop_hold: float = 31.0  # RFC 2661 §5.7: keep state after StopCCN for one retransmission cycle
    retransmit: RetransmitConfig = field(default_factory=RetransmitConfig)


class TunnelState(Enum):
    """RFC 2661 §7.2.1 states, plus closing (StopCCN sent or received) and dead (forgotten)."""

    IDLE = "idle"
    WAIT_CTL_REPLY = "wait-ctl-reply"
    WAIT_CTL_CONN = "wait-ctl-conn"
    ESTABLISHED = "established"
    CLOSING = "closing"
    DEAD = "dead"


def tunnel_auth_response(message_type: MessageType, secret: bytes, challenge: bytes) -> bytes:
    """RFC 2661 §4.4.3 Challenge Response: MD5 over (message type octet, secret, challenge), as CHAP."""
    return hashlib.md5(bytes([message_type]) + secret + challenge).digest()  # noqa: S324


def _describe_result(message: ControlMessage, texts: dict[int, str]) -> str:
    """The Result Code AVP (RFC 2661 §4.4.2) in words, with the peer's own message if any."""
    value = message.get(AvpType.RESULT_CODE)
    result = parse_result_code(value) if value is not None else None
    if result is None:
        return "no reason given"
    text = texts.get(result.result, f"result code {result.result}")
    return f"{text}: {result.message}" if result.message else text


@dataclass
class TunnelCounters:
    malformed: int = 0
    unexpected: int = 0
    data_dropped: int = 0


class Tunnel:
    def __init__(
        self,
        *,
        initiator: bool,
        local_id: int,
        peer: Hashable,
        settings: TunnelSettings,
        rng: Callable[[int], bytes],
        events: list[Event],
        new_ppp: Callable[[], PppSession],
        on_call_closed: Callable[[Call], None] = lambda call: None,
    ) -> None:
        self.initiator = initiator
        self.local_id = local_id
        self.peer = peer
        self.settings = settings
        self.rng = rng
        self.events = events
        self.new_ppp = new_ppp
        self.on_call_closed = on_call_closed
        self.channel = ControlChannel(settings.retransmit)
        self.state = TunnelState.IDLE
        self.peer_host_name = ""
        self.calls: dict[int, Call] = {}
        self.counters = TunnelCounters()
        self.close_reason = ""
        self._challenge = b""
        self._last_rx = 0.0
        self._hold_until: float | None = None
        # RFC 2661 §5.7: the sender of StopCCN may go once it is acknowledged; the receiver holds state
        # for a while to acknowledge retransmissions of it.
        self._done_when_acked = False
        self._serial = 0
        self._out: list[bytes] = []

    @property
    def peer_id(self) -> int:
        return self.channel.peer_tunnel_id

    @property
    def dead(self) -> bool:
        return self.state is TunnelState.DEAD

    # --- entry points --------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Initiator: send SCCRQ (RFC 2661 §7.2.1 idle -> wait-ctl-reply)."""
        self._last_rx = now
        avps = self._identity_avps()
        if self.settings.secret is not None:
            self._challenge = self.rng(CHALLENGE_SIZE)
            avps.append(octets(AvpType.CHALLENGE, self._challenge))
        self.state = TunnelState.WAIT_CTL_REPLY
        self._send(MessageType.SCCRQ, avps, now, tunnel_id=0)

    def receive_control(self, header: L2tpHeader, body: bytes, now: float) -> None:
        self._last_rx = now
        for message_header, message_body in self.channel.receive(header, body, now):
            self._handle(message_header, message_body, now)
        self.service(now)

    def receive_data(self, header: L2tpHeader, payload: bytes, now: float) -> None:
        call = self.calls.get(header.session_id)
        if call is None or call.state is not CallState.ESTABLISHED:
            # RFC 2661 §7.4: data for a session that is not established is discarded.
            self.counters.data_dropped += 1
            return
        call.ppp.receive_frame(payload, now)
        self.service(now)

    def open_call(self, now: float) -> Call:
        """Initiator: a new incoming call (ICRQ) once the tunnel is up."""
        call = Call(self._new_key(), self.new_ppp(), lac=True)
        self.calls[call.local_id] = call
        if self.state is TunnelState.ESTABLISHED:
            self._send_icrq(call, now)
        return call

    def send_ip(self, call: Call, packet: bytes) -> bytes | None:
        frame = call.ppp.encapsulate_ip(packet)
        if frame is None or call.state is not CallState.ESTABLISHED:
            return None
        return push_data(self.peer_id, call.peer_id, frame)

    def close(self, now: float, result: int, message: str, error: int | None = None) -> None:
        """Send StopCCN (RFC 2661 §5.7); every session of the tunnel ends with it."""
        if self.state in (TunnelState.CLOSING, TunnelState.DEAD):
            return
        reason = f"tunnel closed by us: {message or STOPCCN_TEXT.get(result, str(result))}"
        self._end_calls(now, reason)
        if self.peer_id == 0:
            self._die(reason)
            return
        avps = [u16(AvpType.ASSIGNED_TUNNEL_ID, self.local_id), result_code(result, error, message)]
        self._send(MessageType.STOPCCN, avps, now)
        self._closing(now, reason)
        self._done_when_acked = True

    def close_call(self, call: Call, now: float, result: int, message: str, reason: str) -> None:
        """Send CDN (RFC 2661 §6.14) and forget the call."""
        if call.state is CallState.CLOSED:
            return
        if call.state is not CallState.WAIT_TUNNEL and self.state is TunnelState.ESTABLISHED:
            avps = [result_code(result, None, message), u16(AvpType.ASSIGNED_SESSION_ID, call.local_id)]
            self._send(MessageType.CDN, avps, now, session_id=call.peer_id)
        self._forget_call(call, now, reason)

    def take_datagrams(self) -> list[bytes]:
        out = self.channel.take_datagrams() + self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        deadlines = [self.channel.get_timer(), self._hold_until]
        if self.state is TunnelState.ESTABLISHED:
            deadlines.append(self._last_rx + self.settings.hello_interval)
        deadlines += [call.ppp.get_timer() for call in self.calls.values()]
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        self.channel.handle_timer(now)
        if self.channel.failed and not self.dead:
            reason = "the peer stopped answering L2TP control messages"
            self._end_calls(now, f"tunnel lost: {reason}")
            self._die(reason)
            return
        if self._hold_until is not None and now >= self._hold_until:
            self._die(self.close_reason)
            return
        if self.state is TunnelState.ESTABLISHED and now >= self._last_rx + self.settings.hello_interval:
            if self.channel.idle:
                # RFC 2661 §6.5: HELLO after a silent period; its delivery proves the peer is alive.
                self._send(MessageType.HELLO, [], now)
            self._last_rx = now
        for call in list(self.calls.values()):
            call.ppp.handle_timer(now)
        self.service(now)

    # --- message handling ----------------------------------------------------------------------

    def _handle(self, header: L2tpHeader, body: bytes, now: float) -> None:
        try:
            message = parse_message(body)
        except MalformedPacket:
            self.counters.malformed += 1
            return
        try:
            kind = MessageType(message.type)
        except ValueError:
            kind = None
        is_tunnel_message = kind in TUNNEL_MESSAGES or (kind is None and header.session_id == 0)
        unknown = [
            avp
            for avp in message.avps
            if avp.mandatory and (avp.vendor != 0 or avp.type not in KNOWN_AVP_TYPES or avp.hidden)
        ]
        if kind is None or unknown:
            # RFC 2661 §4.1 / §4.4.1: an unrecognised mandatory AVP (or message type) ends the session
            # or tunnel it belongs to. We do not decode hidden AVPs, so a hidden mandatory one counts.
            what = f"message type {message.type}" if kind is None else f"AVP {unknown[0].type}"
            self._refuse(header, is_tunnel_message, f"unknown mandatory {what}", ErrorCode.UNKNOWN_MANDATORY_AVP, now)
            return
        missing = [avp.name for avp in REQUIRED_AVPS.get(kind, ()) if message.get(avp) is None]
        if missing:
            self._refuse(
                header, is_tunnel_message, f"{kind.name} without {', '.join(missing)}", ErrorCode.BAD_VALUE, now
            )
            return
        handler = self._HANDLERS.get(kind)
        try:
            if handler is None:
                self.counters.unexpected += 1  # WEN, SLI, outgoing calls: not used over IPsec
            else:
                handler(self, header, message, now)
        except MalformedPacket:
            self._refuse(header, is_tunnel_message, f"malformed {kind.name}", ErrorCode.BAD_LENGTH, now)

    def _refuse(self, header: L2tpHeader, tunnel_level: bool, message: str, error: int, now: float) -> None:
        self.counters.malformed += 1
        call = self.calls.get(header.session_id)
        if tunnel_level or call is None:
            self.close(now, StopCcnResult.GENERAL_ERROR, message, error)
        else:
            self.close_call(call, now, CdnResult.GENERAL_ERROR, message, f"call refused: {message}")

    def _on_sccrq(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        if self.initiator or self.state is not TunnelState.IDLE:
            self.counters.unexpected += 1
            return
        if not self._accept_peer(message, now):
            return
        avps = self._identity_avps()
        if not self._answer_challenge(message, MessageType.SCCRP, avps, now):
            return
        if self.settings.secret is not None:
            self._challenge = self.rng(CHALLENGE_SIZE)
            avps.append(octets(AvpType.CHALLENGE, self._challenge))
        self.state = TunnelState.WAIT_CTL_CONN
        self._send(MessageType.SCCRP, avps, now)

    def _on_sccrp(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        if not self.initiator or self.state is not TunnelState.WAIT_CTL_REPLY:
            self.counters.unexpected += 1
            return
        if not self._accept_peer(message, now):
            return
        if not self._response_ok(MessageType.SCCRP, message):
            self.close(now, StopCcnResult.NOT_AUTHORIZED, "tunnel authentication failed: wrong secret")
            return
        avps: list[Avp] = []
        if not self._answer_challenge(message, MessageType.SCCCN, avps, now):
            return
        self._send(MessageType.SCCCN, avps, now)
        self._established(now)

    def _on_scccn(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        if self.initiator or self.state is not TunnelState.WAIT_CTL_CONN:
            self.counters.unexpected += 1
            return
        if not self._response_ok(MessageType.SCCCN, message):
            self.close(now, StopCcnResult.NOT_AUTHORIZED, "tunnel authentication failed: wrong secret")
            return
        self._established(now)

    def _on_stopccn(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        reason = f"tunnel closed by the peer ({_describe_result(message, STOPCCN_TEXT)})"
        self._end_calls(now, reason)
        if self.state is not TunnelState.CLOSING:
            self._closing(now, reason)

    def _on_hello(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        pass  # RFC 2661 §6.5: only its acknowledgement matters, and the channel sends that

    def _on_icrq(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        peer_session = message.u16(AvpType.ASSIGNED_SESSION_ID)
        if self.initiator or self.state is not TunnelState.ESTABLISHED or not peer_session:
            self.counters.unexpected += 1
            return
        if any(call.peer_id == peer_session for call in self.calls.values()):
            self.counters.unexpected += 1
            return
        call = Call(self._new_key(), self.new_ppp(), lac=False, peer_id=peer_session)
        self.calls[call.local_id] = call
        call.state = CallState.WAIT_CONNECT
        self._send(MessageType.ICRP, [u16(AvpType.ASSIGNED_SESSION_ID, call.local_id)], now, session_id=peer_session)

    def _on_icrp(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        call = self.calls.get(header.session_id)
        peer_session = message.u16(AvpType.ASSIGNED_SESSION_ID)
        if call is None or call.state is not CallState.WAIT_REPLY or not peer_session:
            self.counters.unexpected += 1
            return
        call.peer_id = peer_session
        avps = [u32(AvpType.TX_CONNECT_SPEED, CONNECT_SPEED), u32(AvpType.FRAMING_TYPE, FRAMING_SYNC)]
        self._send(MessageType.ICCN, avps, now, session_id=peer_session)
        call.state = CallState.ESTABLISHED
        call.ppp.start(now)

    def _on_iccn(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        call = self.calls.get(header.session_id)
        if call is None or call.state is not CallState.WAIT_CONNECT:
            self.counters.unexpected += 1
            return
        call.state = CallState.ESTABLISHED
        call.ppp.start(now)

    def _on_cdn(self, header: L2tpHeader, message: ControlMessage, now: float) -> None:
        call = self.calls.get(header.session_id)
        if call is None:
            # RFC 2661 §6.14: a CDN sent before the peer learnt our id names the call by its own id.
            peer_session = message.u16(AvpType.ASSIGNED_SESSION_ID)
            call = next((c for c in self.calls.values() if c.peer_id == peer_session), None)
        if call is None:
            self.counters.unexpected += 1
            return
        self._forget_call(call, now, f"call disconnected by the peer ({_describe_result(message, CDN_TEXT)})")

    _HANDLERS: dict[MessageType, Callable[[Tunnel, L2tpHeader, ControlMessage, float], None]] = {
        MessageType.SCCRQ: _on_sccrq,
        MessageType.SCCRP: _on_sccrp,
        MessageType.SCCCN: _on_scccn,
        MessageType.STOPCCN: _on_stopccn,
        MessageType.HELLO: _on_hello,
        MessageType.ICRQ: _on_icrq,
        MessageType.ICRP: _on_icrp,
        MessageType.ICCN: _on_iccn,
        MessageType.CDN: _on_cdn,
    }

    # --- helpers -------------------------------------------------------------------------------

    def _identity_avps(self) -> list[Avp]:
        return [
            octets(AvpType.PROTOCOL_VERSION, PROTOCOL_VERSION),
            octets(AvpType.HOST_NAME, self.settings.host_name.encode()),
            u32(AvpType.FRAMING_CAPABILITIES, FRAMING_SYNC_ASYNC),
            u16(AvpType.ASSIGNED_TUNNEL_ID, self.local_id),
            u16(AvpType.RECEIVE_WINDOW_SIZE, self.settings.retransmit.receive_window),
            octets(AvpType.VENDOR_NAME, self.settings.vendor_name.encode(), mandatory=False),
        ]

    def _accept_peer(self, message: ControlMessage, now: float) -> bool:
        """Learn the peer's tunnel id and window from SCCRQ/SCCRP; refuse other protocol versions."""
        self._learn_peer(message)
        if message.get(AvpType.PROTOCOL_VERSION) != PROTOCOL_VERSION:
            self.close(now, StopCcnResult.BAD_PROTOCOL_VERSION, "only L2TP version 1.0 (RFC 2661) is spoken")
            return False
        return True

    def _answer_challenge(self, message: ControlMessage, reply: MessageType, avps: list[Avp], now: float) -> bool:
        """RFC 2661 §5.1.1: answer the peer's Challenge AVP in our reply, or refuse without a secret."""
        challenge = message.get(AvpType.CHALLENGE)
        if challenge is None:
            return True
        if self.settings.secret is None:
            self.close(now, StopCcnResult.NOT_AUTHORIZED, "the peer asks for a tunnel secret; none is set")
            return False
        avps.append(octets(AvpType.CHALLENGE_RESPONSE, tunnel_auth_response(reply, self.settings.secret, challenge)))
        return True

    def _learn_peer(self, message: ControlMessage) -> None:
        peer_tunnel = message.u16(AvpType.ASSIGNED_TUNNEL_ID)
        if not peer_tunnel:
            raise MalformedPacket("Assigned Tunnel ID 0")
        self.channel.peer_tunnel_id = peer_tunnel
        window = message.u16(AvpType.RECEIVE_WINDOW_SIZE)
        if window:
            self.channel.peer_window = window
        self.peer_host_name = (message.get(AvpType.HOST_NAME) or b"").decode("utf-8", "replace")

    def _response_ok(self, kind: MessageType, message: ControlMessage) -> bool:
        if self.settings.secret is None or not self._challenge:
            return True
        received = message.get(AvpType.CHALLENGE_RESPONSE) or b""
        expected = tunnel_auth_response(kind, self.settings.secret, self._challenge)
        return hmac.compare_digest(expected, received)

    def _established(self, now: float) -> None:
        self.state = TunnelState.ESTABLISHED
        self.events.append(TunnelUp(self.peer, self.local_id, self.peer_host_name))
        for call in self.calls.values():
            if call.state is CallState.WAIT_TUNNEL:
                self._send_icrq(call, now)

    def _send_icrq(self, call: Call, now: float) -> None:
        self._serial = (self._serial + 1) & 0xFFFFFFFF
        avps = [u16(AvpType.ASSIGNED_SESSION_ID, call.local_id), u32(AvpType.CALL_SERIAL_NUMBER, self._serial)]
        call.state = CallState.WAIT_REPLY
        self._send(MessageType.ICRQ, avps, now)

    def _send(
        self, kind: MessageType, avps: list[Avp], now: float, session_id: int = 0, tunnel_id: int | None = None
    ) -> None:
        self.channel.queue(session_id, build_message(kind, avps), now, tunnel_id)

    def _new_key(self) -> SessionKey:
        while True:
            session_id = int.from_bytes(self.rng(2), "big")
            if session_id and session_id not in self.calls:
                return SessionKey(self.peer, self.local_id, session_id)

    def service(self, now: float) -> None:
        """Move PPP output to the data channel; turn finished PPP links into CDNs."""
        if self.state is TunnelState.CLOSING and self._done_when_acked and self.channel.idle:
            self._die(self.close_reason)
            return
        for call in list(self.calls.values()):
            for frame in call.ppp.outbox:
                if call.state is CallState.ESTABLISHED:
                    self._out.append(push_data(self.peer_id, call.peer_id, frame))
            call.ppp.outbox.clear()
            call.take_events(self.events)
            if call.finished is not None:
                result = CdnResult.LOST_CARRIER if call.echo_timed_out else CdnResult.ADMINISTRATIVE
                self.close_call(call, now, result, call.finished, call.finished)

    def _forget_call(self, call: Call, now: float, reason: str) -> None:
        call.teardown(now, reason, self.events)
        self.calls.pop(call.local_id, None)
        self.on_call_closed(call)

    def _end_calls(self, now: float, reason: str) -> None:
        for call in list(self.calls.values()):
            self._forget_call(call, now, reason)

    def _closing(self, now: float, reason: str) -> None:
        self.state = TunnelState.CLOSING
        self.close_reason = reason
        self._hold_until = now + self.settings.stop_hold
        self.events.append(TunnelDown(self.peer, self.local_id, reason))

    def _die(self, reason: str) -> None:
        if self.state is not TunnelState.CLOSING:
            self.events.append(TunnelDown(self.peer, self.local_id, reason))
        self.state = TunnelState.DEAD
        self._hold_until = None

    def status(self) -> dict[str, object]:
        return {
            "peer": str(self.peer),
            "tunnel_id": self.local_id,
            "peer_tunnel_id": self.peer_id,
            "peer_host_name": self.peer_host_name,
            "state": self.state.value,
            "retransmissions": self.channel.retransmissions,
            "sessions": [call.status() for call in self.calls.values()],
        }
