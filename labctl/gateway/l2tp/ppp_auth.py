"""PPP authentication: PAP (RFC 1334), CHAP-MD5 (RFC 1994), MS-CHAPv2 (RFC 2759).

``Authenticator`` runs on the LNS and checks a users table; ``AuthPeer`` runs on the client.
Both are driven by the PPP session: ``start``, ``receive``, ``handle_timer``; they report one result.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from labctl.gateway.l2tp.auth_method import AuthMethod
from labctl.gateway.l2tp.chap import chap_md5_response
from labctl.gateway.l2tp.errors import MalformedPacket
from labctl.gateway.l2tp.mschapv2 import (
    check_authenticator_response,
    generate_authenticator_response,
    generate_nt_response,
)
from labctl.gateway.l2tp.ppp_frame import PROTO_CHAP, PROTO_PAP, ControlPacket

# RFC 1334 §2.2 (PAP) and RFC 1994 §4 (CHAP) codes.
PAP_REQUEST, PAP_ACK, PAP_NAK = 1, 2, 3
CHAP_CHALLENGE, CHAP_RESPONSE, CHAP_SUCCESS, CHAP_FAILURE = 1, 2, 3, 4

# RFC 2759 §4: the 49-octet Response value is Peer-Challenge, 8 reserved zeros, NT-Response, Flags.
_MSCHAPV2_RESPONSE_SIZE = 49
_CHALLENGE_SIZE = 16

SendAuth = Callable[[int, ControlPacket], None]


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    user: str
    reason: str = ""


def _prefixed(data: bytes, offset: int) -> tuple[bytes, int]:
    """An octet string preceded by its one-octet length (PAP fields, CHAP Value)."""
    if offset >= len(data):
        raise MalformedPacket("missing length octet")
    end = offset + 1 + data[offset]
    if end > len(data):
        raise MalformedPacket("field runs past the packet")
    return data[offset + 1 : end], end


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def failure_reason(user: str, why: str) -> str:
    return f"PPP authentication failed for user {user!r}: {why}"


class Authenticator:
    """The LNS side: challenge (CHAP) or wait for credentials (PAP), check them against ``users``."""

    def __init__(
        self,
        method: AuthMethod,
        users: Mapping[str, str],
        name: str,
        rng: Callable[[int], bytes],
        send: SendAuth,
        *,
        retry_interval: float = 3.0,
        max_challenges: int = 10,
        timeout: float = 30.0,
    ) -> None:
        self.method = method
        self.users = users
        self.name = name.encode()
        self.rng = rng
        self._send = send
        self.retry_interval = retry_interval
        self.max_challenges = max_challenges
        self.timeout = timeout
        self.result: AuthResult | None = None
        self._challenge = b""
        self._identifier = int.from_bytes(rng(1), "big")
        self._challenges_sent = 0
        self._deadline: float | None = None
        self._give_up: float | None = None
        self._verdict: ControlPacket | None = None  # resent if the peer repeats its answer

    def start(self, now: float) -> None:
        self._give_up = now + self.timeout
        if self.method is not AuthMethod.PAP:
            self._challenge = self.rng(_CHALLENGE_SIZE)
            self._send_challenge(now)

    def get_timer(self) -> float | None:
        if self.result is not None:
            return None
        deadlines = [d for d in (self._deadline, self._give_up) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.result is not None:
            return
        if self._give_up is not None and now >= self._give_up:
            self.result = AuthResult(False, "", "PPP authentication timed out: the client sent no credentials")
            return
        if self._deadline is not None and now >= self._deadline:
            # RFC 1994 §4.1: the authenticator retransmits the Challenge until it gets a Response.
            if self._challenges_sent >= self.max_challenges:
                self.result = AuthResult(False, "", "PPP authentication timed out: no answer to CHAP challenge")
                return
            self._send_challenge(now)

    def _send_challenge(self, now: float) -> None:
        self._challenges_sent += 1
        value = bytes([len(self._challenge)]) + self._challenge + self.name
        self._send(PROTO_CHAP, ControlPacket(CHAP_CHALLENGE, self._identifier, value))
        self._deadline = now + self.retry_interval

    def receive(self, protocol: int, packet: ControlPacket, now: float) -> None:
        if self._verdict is not None:
            # RFC 1994 §4.2 / RFC 1334 §2.2.1: a repeated request means our verdict was lost; repeat it.
            if packet.identifier == self._verdict.identifier and packet.code in (PAP_REQUEST, CHAP_RESPONSE):
                self._send(protocol, self._verdict)
            return
        if protocol == PROTO_PAP and self.method is AuthMethod.PAP and packet.code == PAP_REQUEST:
            self._check_pap(packet)
        elif protocol == PROTO_CHAP and self.method is not AuthMethod.PAP and packet.code == CHAP_RESPONSE:
            if packet.identifier != self._identifier:
                return  # RFC 1994 §4.1: a Response must echo the Challenge's Identifier
            self._check_chap(packet)

    def _password(self, user: str) -> str | None:
        return self.users.get(user)

    def _check_pap(self, packet: ControlPacket) -> None:
        peer_id, offset = _prefixed(packet.data, 0)
        password, _ = _prefixed(packet.data, offset)
        user = _text(peer_id)
        expected = self._password(user)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password)
        message = b"Login ok" if ok else b"Authentication failed"
        verdict = ControlPacket(PAP_ACK if ok else PAP_NAK, packet.identifier, bytes([len(message)]) + message)
        self._finish(PROTO_PAP, verdict, user, ok, expected is None)

    def _check_chap(self, packet: ControlPacket) -> None:
        value, offset = _prefixed(packet.data, 0)
        user = _text(packet.data[offset:])
        expected = self._password(user)
        if self.method is AuthMethod.CHAP_MD5:
            ok = expected is not None and hmac.compare_digest(
                chap_md5_response(packet.identifier, expected.encode(), self._challenge), value
            )
            message = b"Welcome" if ok else b"Authentication failed"
        else:
            if len(value) != _MSCHAPV2_RESPONSE_SIZE:
                raise MalformedPacket("MS-CHAPv2 Response value is not 49 octets")
            peer_challenge, nt_response = value[:16], value[24:48]
            ok = expected is not None and hmac.compare_digest(
                generate_nt_response(self._challenge, peer_challenge, user, expected), nt_response
            )
            if ok and expected is not None:
                # RFC 2759 §5: Success carries the authenticator response, proving we know the password.
                auth = generate_authenticator_response(expected, nt_response, peer_challenge, self._challenge, user)
                message = f"{auth} M=Welcome".encode()
            else:
                # RFC 2759 §6: E=691 is "authentication failure"; R=0: no retry on this challenge.
                message = f"E=691 R=0 C={self._challenge.hex().upper()} V=3 M=Authentication failed".encode()
        verdict = ControlPacket(CHAP_SUCCESS if ok else CHAP_FAILURE, packet.identifier, message)
        self._finish(PROTO_CHAP, verdict, user, ok, expected is None)

    def _finish(self, protocol: int, verdict: ControlPacket, user: str, ok: bool, unknown: bool) -> None:
        self._verdict = verdict
        self._deadline = None
        self._send(protocol, verdict)
        if ok:
            self.result = AuthResult(True, user)
        else:
            why = "unknown user" if unknown else "wrong password"
            self.result = AuthResult(False, user, failure_reason(user, why))


class AuthPeer:
    """The client side: answer challenges (CHAP) or send credentials until acknowledged (PAP)."""

    def __init__(
        self,
        method: AuthMethod,
        user: str,
        password: str,
        rng: Callable[[int], bytes],
        send: SendAuth,
        *,
        retry_interval: float = 3.0,
        max_tries: int = 10,
    ) -> None:
        self.method = method
        self.user = user
        self.password = password
        self.rng = rng
        self._send = send
        self.retry_interval = retry_interval
        self.max_tries = max_tries
        self.result: AuthResult | None = None
        self._pending: tuple[int, ControlPacket] | None = None  # last request/response, resent on timeout
        self._tries = 0
        self._deadline: float | None = None
        self._identifier = int.from_bytes(rng(1), "big")
        self._peer_challenge = b""
        self._nt_response = b""
        self._auth_challenge = b""

    def start(self, now: float) -> None:
        if self.method is AuthMethod.PAP:
            user, password = self.user.encode(), self.password.encode()
            data = bytes([len(user)]) + user + bytes([len(password)]) + password
            self._transmit(PROTO_PAP, ControlPacket(PAP_REQUEST, self._identifier, data), now)

    def get_timer(self) -> float | None:
        return None if self.result is not None else self._deadline

    def handle_timer(self, now: float) -> None:
        if self.result is not None or self._deadline is None or now < self._deadline:
            return
        if self._tries >= self.max_tries or self._pending is None:
            self.result = AuthResult(False, self.user, failure_reason(self.user, "the server did not answer"))
            return
        # RFC 1334 §2.2.1: PAP requests are retransmitted until acknowledged. For CHAP the authenticator
        # retransmits challenges; we also repeat our Response so a lost Success is sent again (RFC 1994 §4.2).
        self._transmit(*self._pending, now)

    def _transmit(self, protocol: int, packet: ControlPacket, now: float) -> None:
        self._pending = (protocol, packet)
        self._tries += 1
        self._deadline = now + self.retry_interval
        self._send(protocol, packet)

    def receive(self, protocol: int, packet: ControlPacket, now: float) -> None:
        if self.result is not None:
            return
        if protocol == PROTO_PAP and self.method is AuthMethod.PAP:
            self._receive_pap(packet)
        elif protocol == PROTO_CHAP and self.method is not AuthMethod.PAP:
            if packet.code == CHAP_CHALLENGE:
                self._answer_challenge(packet, now)
            elif packet.code in (CHAP_SUCCESS, CHAP_FAILURE):
                self._receive_chap_verdict(packet)

    def _receive_pap(self, packet: ControlPacket) -> None:
        if packet.code not in (PAP_ACK, PAP_NAK) or self._pending is None:
            return
        if packet.identifier != self._pending[1].identifier:
            return
        if packet.code == PAP_ACK:
            self.result = AuthResult(True, self.user)
        else:
            message, _ = _prefixed(packet.data, 0) if packet.data else (b"", 0)
            self.result = AuthResult(False, self.user, self._refused(message))

    def _answer_challenge(self, packet: ControlPacket, now: float) -> None:
        challenge, _ = _prefixed(packet.data, 0)
        name = self.user.encode()
        if self.method is AuthMethod.CHAP_MD5:
            value = chap_md5_response(packet.identifier, self.password.encode(), challenge)
        else:
            if len(challenge) != _CHALLENGE_SIZE:
                raise MalformedPacket("MS-CHAPv2 challenge is not 16 octets")
            if challenge != self._auth_challenge:
                self._auth_challenge = challenge
                self._peer_challenge = self.rng(_CHALLENGE_SIZE)
                self._nt_response = generate_nt_response(challenge, self._peer_challenge, self.user, self.password)
            value = self._peer_challenge + bytes(8) + self._nt_response + b"\x00"
        response = ControlPacket(CHAP_RESPONSE, packet.identifier, bytes([len(value)]) + value + name)
        self._tries = 0
        self._transmit(PROTO_CHAP, response, now)

    def _receive_chap_verdict(self, packet: ControlPacket) -> None:
        if self._pending is None or packet.identifier != self._pending[1].identifier:
            return
        message = packet.data
        if packet.code == CHAP_FAILURE:
            self.result = AuthResult(False, self.user, self._refused(message))
            return
        if self.method is AuthMethod.MSCHAPV2 and not check_authenticator_response(
            self.password, self._nt_response, self._peer_challenge, self._auth_challenge, self.user, _text(message)
        ):
            # RFC 2759 §5: mutual authentication; a server that cannot prove the password is refused.
            self.result = AuthResult(
                False, self.user, failure_reason(self.user, "the server's MS-CHAPv2 authenticator response is wrong")
            )
            return
        self.result = AuthResult(True, self.user)

    def _refused(self, message: bytes) -> str:
        detail = _text(message).strip()
        why = "the server refused the user name or password"
        return failure_reason(self.user, f"{why} ({detail})" if detail else why)
