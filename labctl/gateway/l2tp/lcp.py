"""LCP option policy (RFC 1661 §6): MRU, magic number, authentication protocol."""

from __future__ import annotations

import struct
from collections.abc import Callable

from labctl.gateway.l2tp.auth_method import AuthMethod
from labctl.gateway.l2tp.ppp_frame import CONFIGURE_ACK, CONFIGURE_NAK, CONFIGURE_REJECT, Option

OPT_MRU = 1
OPT_ACCM = 2
OPT_AUTH = 3
OPT_MAGIC = 5

MIN_MRU = 128
# RFC 1661 §6.4: after this many requests in a row carrying our own magic number, the link is looped.
LOOP_LIMIT = 5


def _new_magic(rng: Callable[[int], bytes]) -> int:
    # RFC 1661 §6.4: zero is not a valid magic number.
    while True:
        magic = int.from_bytes(rng(4), "big")
        if magic:
            return magic


class LcpPolicy:
    """Our side of LCP. As authenticator we ask for one of ``auth_methods``; as peer we accept them."""

    def __init__(
        self,
        *,
        authenticator: bool,
        auth_methods: tuple[AuthMethod, ...],
        mru: int,
        rng: Callable[[int], bytes],
    ) -> None:
        self.authenticator = authenticator
        self.auth_candidates = list(auth_methods)
        self.rng = rng
        self.mru = mru
        self.magic = _new_magic(rng)
        self.peer_magic = 0
        self.peer_mru = 1500  # RFC 1661 §6.1 default
        self.auth: AuthMethod | None = None  # the method agreed on
        self.failure: str | None = None  # why negotiation cannot succeed, in plain words
        self.loop_count = 0
        self._send_mru = True
        self._send_magic = True

    def build_request(self) -> list[Option]:
        options = []
        if self._send_mru:
            options.append(Option(OPT_MRU, struct.pack("!H", self.mru)))
        if self.authenticator and self.auth_candidates:
            options.append(Option(OPT_AUTH, self.auth_candidates[0].value))
        if self._send_magic:
            options.append(Option(OPT_MAGIC, struct.pack("!I", self.magic)))
        return options

    def check_request(self, options: list[Option]) -> tuple[int, list[Option]]:
        naks: list[Option] = []
        rejects: list[Option] = []
        accepted_auth: AuthMethod | None = None
        for option in options:
            if option.type == OPT_MRU and len(option.data) == 2:
                if struct.unpack("!H", option.data)[0] < MIN_MRU:
                    naks.append(Option(OPT_MRU, struct.pack("!H", self.mru)))
            elif option.type == OPT_ACCM and len(option.data) == 4:
                pass  # RFC 2661 §2: no async HDLC on L2TP, so the map is meaningless; accept and ignore.
            elif option.type == OPT_AUTH and not self.authenticator:
                method = AuthMethod.from_option(option.data)
                if method in self.auth_candidates:
                    accepted_auth = method
                elif self.auth_candidates:
                    # RFC 1661 §6.2: Nak an unacceptable protocol with the one we want instead.
                    naks.append(Option(OPT_AUTH, self.auth_candidates[0].value))
                else:
                    rejects.append(option)
            elif option.type == OPT_MAGIC and len(option.data) == 4:
                magic = struct.unpack("!I", option.data)[0]
                if magic == 0 or magic == self.magic:
                    # RFC 1661 §6.4: our own number coming back may mean a looped link; both sides pick
                    # new numbers, and a loop shows itself by repeating.
                    if magic == self.magic:
                        self.loop_count += 1
                        if self.loop_count >= LOOP_LIMIT:
                            self.failure = "the link is looped back (LCP magic number keeps coming back)"
                        self.magic = _new_magic(self.rng)
                    naks.append(Option(OPT_MAGIC, struct.pack("!I", _new_magic(self.rng))))
            else:
                # Includes Authentication-Protocol sent to the authenticator (we do not authenticate
                # ourselves to clients), PFC/ACFC (we keep full headers) and anything unknown.
                rejects.append(option)
        # RFC 1661 §5.4/§5.3: Reject takes precedence over Nak; each lists only the offending options.
        if rejects:
            return CONFIGURE_REJECT, rejects
        if naks:
            return CONFIGURE_NAK, naks
        for option in options:
            if option.type == OPT_MRU:
                self.peer_mru = struct.unpack("!H", option.data)[0]
            elif option.type == OPT_MAGIC:
                self.peer_magic = struct.unpack("!I", option.data)[0]
                self.loop_count = 0
        if not self.authenticator:
            self.auth = accepted_auth
        return CONFIGURE_ACK, options

    def received_ack(self, options: list[Option]) -> None:
        if self.authenticator:
            self.auth = self.auth_candidates[0] if self.auth_candidates else None

    def received_nak(self, options: list[Option]) -> None:
        for option in options:
            if option.type == OPT_MRU and len(option.data) == 2:
                suggested = struct.unpack("!H", option.data)[0]
                if suggested >= MIN_MRU:
                    self.mru = min(self.mru, suggested)
            elif option.type == OPT_MAGIC:
                self.magic = _new_magic(self.rng)
            elif option.type == OPT_AUTH and self.authenticator:
                self._peer_wants_auth(AuthMethod.from_option(option.data))

    def received_reject(self, options: list[Option]) -> None:
        for option in options:
            if option.type == OPT_MRU:
                self._send_mru = False
            elif option.type == OPT_MAGIC:
                self._send_magic = False
            elif option.type == OPT_AUTH and self.authenticator:
                self.auth_candidates.clear()
                self.failure = "the client refuses to authenticate"

    def _peer_wants_auth(self, method: AuthMethod | None) -> None:
        if method is not None and method in self.auth_candidates:
            self.auth_candidates.remove(method)
            self.auth_candidates.insert(0, method)
            return
        if self.auth_candidates:
            self.auth_candidates.pop(0)
        if not self.auth_candidates:
            self.failure = "no authentication method acceptable to both sides"
