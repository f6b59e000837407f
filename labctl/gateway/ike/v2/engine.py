"""The IKEv2 engine: every IKE SA of one gateway, driven by datagrams, commands and time (sans-I/O).

See ``labctl.gateway.ike.v2`` for how a driver uses it.  Exchanges (RFC 7296): IKE_SA_INIT (§1.2, cookies
§2.6, INVALID_KE §1.3), IKE_AUTH (§1.2, §2.15), CREATE_CHILD_SA (§1.3, rekeying §2.8, collisions §2.8.1),
INFORMATIONAL (§1.4, liveness §2.4).  Retransmission and message IDs: §2.1-§2.3.  NAT-T: §2.23.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from labctl.gateway.ike import dh as dhmod
from labctl.gateway.ike.certs import WallClock
from labctl.gateway.ike.v2 import auth as authmod
from labctl.gateway.ike.v2 import proposals as props
from labctl.gateway.ike.v2 import ts as tsmod
from labctl.gateway.ike.v2.ciphers import IntegrityError
from labctl.gateway.ike.v2.codec import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    Header,
    IdPayload,
    KePayload,
    Message,
    NoncePayload,
    NotifyPayload,
    ParseError,
    Payload,
    Proposal,
    SaPayload,
    SkPayload,
    TsPayload,
    encode_body,
    encode_message,
    encode_payloads,
    parse_message,
    parse_payloads,
)
from labctl.gateway.ike.v2.config import ChildConfig, ConnectionConfig
from labctl.gateway.ike.v2.constants import (
    ERROR_NOTIFY_LIMIT,
    HEADER_LENGTH,
    NATT_PORT,
    AuthMethod,
    CertEncoding,
    ExchangeType,
    HeaderFlag,
    Notify,
    PayloadType,
    ProtocolId,
    notify_name,
)
from labctl.gateway.ike.v2.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaFailed,
    ChildSaRekeyed,
    ChildSaUp,
    Event,
    IkeSaDown,
    IkeSaUp,
    PeerDead,
    ProposalMismatch,
    SaDirection,
)
from labctl.gateway.ike.v2.keymat import child_keys, ike_keys, rekey_skeyseed, skeyseed
from labctl.gateway.ike.v2.state import Addr, ChildSa, ChildState, IkeSa, IkeState, Request

Rng = Callable[[int], bytes]
NONCE_LEN = 32
HALF_OPEN_TIMEOUT = 30.0  # strongSwan's charon.half_open_timeout
RETRY_LATER = 2.0  # after TEMPORARY_FAILURE (RFC 7296 §2.25)
_PROTO_NAME: dict[int, str] = {ProtocolId.ESP: "esp", ProtocolId.AH: "ah"}


class Ikev2Engine:
    def __init__(self, connections: list[ConnectionConfig], rng: Rng = os.urandom,
                 cookie_threshold: int | None = 30, wall_clock: WallClock | None = None) -> None:
        self.connections = {c.name: c for c in connections}
        self.rng = rng
        # Calendar time (timezone-aware UTC) for certificate validity (RFC 5280 §4.1.2.5); the monotonic `now`
        # cannot tell dates. Without it certificate authentication fails closed.
        self.wall_clock = wall_clock
        self.cookie_threshold = cookie_threshold  # half-open SAs before cookies are demanded (§2.6)
        self.force_cookies = False
        self._cookie_secret = rng(32)
        self._sas: dict[bytes, IkeSa] = {}
        self._half_open: dict[tuple[bytes, Addr], IkeSa] = {}
        self._out: list[tuple[bytes, Addr, Addr]] = []
        self._events: deque[Event] = deque()
        self._creds: dict[str, authmod.Credentials] = {}
        self.counters: dict[str, int] = {"malformed": 0, "unknown_spi": 0, "integrity": 0, "bad_message_id": 0,
                                         "retransmits_answered": 0, "retransmits_sent": 0, "cookies_sent": 0}
        self.last_error: dict[str, str] = {}

    # ================================================================ driver API ===========================
    def start(self, now: float) -> None:
        """Initiate every connection whose own or any child's start_action is ``start``."""
        for conn in self.connections.values():
            if conn.start_action == "start" or any(c.start_action == "start" for c in conn.children):
                self.initiate(conn.name, now)

    def initiate(self, conn_name: str, now: float, child: str | None = None) -> None:
        conn = self.connections[conn_name]
        wanted = [child] if child else [c.name for c in conn.children]
        sa = self._sa_for_conn(conn_name)
        if sa is not None:
            for name in wanted:
                self._want_child(sa, name, now)
            return
        self._start_ike(conn, wanted, now)

    def acquire(self, conn_name: str, child: str | None, now: float) -> None:
        """A packet hit a trap policy without an SA: bring up that child (and the IKE SA if needed)."""
        self.initiate(conn_name, now, child)

    def terminate(self, conn_name: str, now: float) -> None:
        for sa in [s for s in self._unique_sas() if s.conn.name == conn_name]:
            if sa.state in (IkeState.ESTABLISHED, IkeState.REKEYED) and sa.keys is not None:
                self._close_children(sa, "terminated by request")
                sa.state = IkeState.DELETING
                sa.queue.clear()
                sa.outstanding = None
                self._send_request(sa, ExchangeType.INFORMATIONAL,
                                   [Payload(PayloadType.DELETE, DeletePayload(ProtocolId.IKE))],
                                   self._on_ike_delete_response_for(sa), "delete-ike", now)
                self._emit(IkeSaDown(conn_name, sa.spi_i.hex(), sa.spi_r.hex(), "terminated by request"))
            else:
                self._remove_sa(sa, "terminated by request")

    def rekey(self, conn_name: str, what: str, now: float) -> None:
        """``what``: ``ike``, a child name, or ``child`` for every child of the connection."""
        sa = self._sa_for_conn(conn_name)
        if sa is None:
            return
        if what == "ike":
            self._queue(sa, "rekey-ike", {}, now)
            return
        for c in list(sa.children):
            if c.state == ChildState.INSTALLED and what in ("child", c.cfg.name):
                self._queue(sa, "rekey-child", {"child": c}, now)

    def sa_limit_reached(self, spi: int, now: float, hard: bool = False) -> None:
        """The data plane reports a child SA near its byte/packet/sequence limit (soft) or past it (hard)."""
        for sa in self._sas.values():
            for c in sa.children:
                if spi in (c.spi_in, c.spi_out) and c.state == ChildState.INSTALLED:
                    if hard:
                        self._queue(sa, "delete-child", {"child": c}, now)
                    else:
                        self._queue(sa, "rekey-child", {"child": c}, now)
                    return

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr, Addr]]:
        """(IKE message, source, destination).  From port 4500 the caller prepends the 4-byte non-ESP
        marker (RFC 3948 §2.2); on receive it strips it before ``receive_datagram``."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times: list[float] = []
        for sa in self._unique_sas():
            if sa.outstanding is not None:
                times.append(sa.outstanding.next_retransmit)
            for t in (sa.rekey_at, sa.expire_at):
                if t is not None:
                    times.append(t)
            if sa.state == IkeState.INIT_DONE:
                times.append(sa.created + HALF_OPEN_TIMEOUT)
            if sa.state == IkeState.ESTABLISHED and sa.conn.dpd_delay > 0 and sa.outstanding is None \
                    and not sa.queue:
                times.append(sa.last_heard + sa.conn.dpd_delay)
            if sa.queue and sa.outstanding is None:
                times.append(min(float(ctx.get("not_before", 0.0)) for _k, ctx in sa.queue))
            for c in sa.children:
                for t in (c.rekey_at, c.expire_at):
                    if t is not None:
                        times.append(t)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for sa in self._unique_sas():
            if sa.state != IkeState.CLOSED:
                self._timers_for(sa, now)

    def _unique_sas(self) -> list[IkeSa]:
        seen: dict[int, IkeSa] = {}
        for sa in self._sas.values():
            seen.setdefault(id(sa), sa)
        return list(seen.values())

    def _sa_for_conn(self, conn_name: str) -> IkeSa | None:
        live = [s for s in self._unique_sas() if s.conn.name == conn_name and s.state in (
            IkeState.ESTABLISHED, IkeState.INIT_SENT, IkeState.AUTH_SENT, IkeState.INIT_DONE)]
        live.sort(key=lambda s: (s.state != IkeState.ESTABLISHED, -s.created))
        return live[0] if live else None

    # ================================================================ status ===============================
    def status(self) -> dict[str, Any]:
        sas = []
        for sa in self._unique_sas():
            sas.append({
                "conn": sa.conn.name, "state": sa.state.value, "initiator": sa.initiator,
                "spi_i": sa.spi_i.hex(), "spi_r": sa.spi_r.hex(),
                "local": f"{sa.local[0]}[{sa.local[1]}]", "remote": f"{sa.remote[0]}[{sa.remote[1]}]",
                "local_id": sa.local_id, "remote_id": sa.remote_id,
                "algorithms": sa.algs.describe() if sa.algs else "",
                "nat_local": sa.nat_local, "nat_remote": sa.nat_remote, "encap_forced": sa.conn.encap,
                "rekey_at": sa.rekey_at, "expire_at": sa.expire_at,
                "children": [self._child_status(c) for c in sa.children],
            })
        return {"ike_sas": sas, "last_error": dict(self.last_error), "counters": dict(self.counters)}

    @staticmethod
    def _child_status(c: ChildSa) -> dict[str, Any]:
        return {"name": c.cfg.name, "state": c.state.value, "protocol": _PROTO_NAME.get(c.protocol, "?"),
                "mode": c.mode, "spi_in": f"{c.spi_in:08x}", "spi_out": f"{c.spi_out:08x}",
                "algorithms": c.algs.describe(), "local_ts": [tsmod.ts_text(t) for t in c.local_ts],
                "remote_ts": [tsmod.ts_text(t) for t in c.remote_ts],
                "rekey_at": c.rekey_at, "expire_at": c.expire_at}

    def ikev2_decryption_table_lines(self) -> list[str]:
        """Wireshark ``ikev2_decryption_table`` rows: SPIi,SPIr,SK_ei,SK_er,"encr",SK_ai,SK_ar,"integ"."""
        lines = []
        for sa in self._unique_sas():
            if sa.keys is None or sa.algs is None or sa.algs.encr is None:
                continue
            e, i = sa.algs.encr, sa.algs.integ
            lines.append(",".join([
                sa.spi_i.hex(), sa.spi_r.hex(), sa.keys.sk_ei.hex(), sa.keys.sk_er.hex(),
                f'"{_wireshark_encr(e.id, e.key_bits)}"', sa.keys.sk_ai.hex(), sa.keys.sk_ar.hex(),
                f'"{_wireshark_integ(i.id if i else 0)}"']))
        return lines

    # ================================================================ receive =============================
    def receive_datagram(self, data: bytes, src: Addr, dst: Addr, now: float) -> None:
        """One IKE message (without the non-ESP marker).  Malformed input is counted and dropped."""
        try:
            self._receive(data, src, dst, now)
        except (ParseError, IntegrityError, ValueError, IndexError, struct.error) as exc:
            self.counters["malformed"] += 1
            self._note_drop(exc)

    def _note_drop(self, exc: Exception) -> None:
        self.last_error["_receive"] = f"dropped a malformed IKE message: {exc}"

    def _receive(self, data: bytes, src: Addr, dst: Addr, now: float) -> None:
        msg = parse_message(data)
        h = msg.header
        if h.exchange == ExchangeType.IKE_SA_INIT and not h.is_response:
            if h.spi_r == bytes(8) and h.message_id == 0:
                self._on_init_request(msg, src, dst, now)
            return
        if h.exchange == ExchangeType.IKE_SA_INIT:
            sa = self._sas.get(h.spi_i)
            if sa is not None and sa.initiator and sa.state == IkeState.INIT_SENT and sa.outstanding:
                sa.outstanding.handler(msg, now)
            return
        local_spi = h.spi_r if h.from_initiator else h.spi_i
        sa = self._sas.get(local_spi)
        if sa is None or sa.keys is None or (sa.spi_i, sa.spi_r) != (h.spi_i, h.spi_r):
            self.counters["unknown_spi"] += 1
            return
        if h.from_initiator == sa.initiator:
            self.counters["malformed"] += 1  # the I flag names the original initiator (§3.1)
            return
        if h.is_response:
            req = sa.outstanding
            if req is None or req.message_id != h.message_id:
                self.counters["bad_message_id"] += 1
                return
            inner = self._decrypt(sa, msg)
            if inner is None:
                return
            sa.outstanding = None
            sa.last_heard = now
            req.handler(inner, now)
            self._kick(sa, now)
            return
        # A request from the peer (§2.1, §2.2): a retransmission gets the cached answer again.
        if sa.last_response is not None and h.message_id == sa.last_response[0]:
            self.counters["retransmits_answered"] += 1
            self._out.append((sa.last_response[1], sa.local, sa.remote))
            return
        if h.message_id != sa.peer_mid:
            self.counters["bad_message_id"] += 1
            return
        inner = self._decrypt(sa, msg)
        if inner is None:
            return
        sa.last_heard = now
        if sa.nat_any and (src != sa.remote or dst != sa.local):
            sa.remote, sa.local = src, dst  # §2.23: follow the peer's NAT mapping
        self._dispatch_request(sa, inner, now)
        if sa.local_spi in self._sas:
            self._kick(sa, now)

    def _decrypt(self, sa: IkeSa, msg: Message) -> Message | None:
        sk = msg.find(PayloadType.SK)
        if sk is None or not isinstance(sk.body, SkPayload) or sa.cipher_in is None:
            self.counters["malformed"] += 1  # after IKE_SA_INIT everything must be encrypted (§3.14)
            return None
        offset = HEADER_LENGTH + sum(4 + len(p.raw) for p in msg.payloads[:-1])
        try:
            plain = sa.cipher_in.open(msg.raw, offset)
        except IntegrityError:
            self.counters["integrity"] += 1
            return None
        inner = parse_payloads(sk.body.inner_first, plain)
        return Message(msg.header, msg.payloads[:-1] + inner, msg.raw)

    def _dispatch_request(self, sa: IkeSa, msg: Message, now: float) -> None:
        ex = msg.header.exchange
        if ex == ExchangeType.IKE_AUTH and sa.state == IkeState.INIT_DONE and not sa.initiator:
            payloads = self._on_auth_request(sa, msg, now)
        elif ex == ExchangeType.CREATE_CHILD_SA and sa.state in (IkeState.ESTABLISHED,):
            payloads = self._on_create_child_request(sa, msg, now)
        elif ex == ExchangeType.INFORMATIONAL and sa.state not in (IkeState.INIT_DONE,):
            payloads = self._on_informational_request(sa, msg, now)
        elif ex == ExchangeType.CREATE_CHILD_SA:
            payloads = [_notify(Notify.TEMPORARY_FAILURE)]  # §2.25: not now, try again
        else:
            self.counters["malformed"] += 1
            return
        self._send_response(sa, msg.header, payloads)

    # ================================================================ message building ====================
    def _header(self, sa: IkeSa, exchange: int, mid: int, response: bool) -> Header:
        flags = (HeaderFlag.INITIATOR if sa.initiator else 0) | (HeaderFlag.RESPONSE if response else 0)
        return Header(sa.spi_i, sa.spi_r, 0, exchange, flags, mid)

    def _encode(self, sa: IkeSa, exchange: int, mid: int, response: bool, payloads: list[Payload]) -> bytes:
        header = self._header(sa, exchange, mid, response)
        if exchange == ExchangeType.IKE_SA_INIT or sa.cipher_out is None:
            return encode_message(header, payloads)
        inner_first = payloads[0].type if payloads else PayloadType.NONE
        iv = self.rng(sa.cipher_out.encr.iv_len)
        return sa.cipher_out.seal(header.pack(), inner_first, encode_payloads(payloads), iv)

    def _send_request(self, sa: IkeSa, exchange: int, payloads: list[Payload],
                      handler: Callable[[Message, float], None], kind: str, now: float,
                      context: dict[str, Any] | None = None) -> None:
        mid = sa.next_mid
        data = self._encode(sa, exchange, mid, False, payloads)
        sa.next_mid += 1
        sa.outstanding = Request(kind, mid, data, handler, now, now + sa.conn.retransmit_timeout,
                                 context=context or {})
        self._out.append((data, sa.local, sa.remote))

    def _send_response(self, sa: IkeSa, req: Header, payloads: list[Payload]) -> None:
        data = self._encode(sa, req.exchange, req.message_id, True, payloads)
        sa.last_response = (req.message_id, data)
        sa.peer_mid = req.message_id + 1
        self._out.append((data, sa.local, sa.remote))

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        reason = getattr(event, "reason", "")
        if isinstance(event, AuthFailed | ProposalMismatch | PeerDead | ChildSaFailed):
            self.last_error[event.conn] = reason

    # ================================================================ IKE_SA_INIT =========================
    def _start_ike(self, conn: ConnectionConfig, children: list[str], now: float) -> IkeSa:
        local = (conn.local_addrs[0], conn.local_port)
        remote = (conn.remote_addrs[0], conn.remote_port)
        sa = IkeSa(conn, True, self._new_spi(), bytes(8), local, remote, IkeState.INIT_SENT, now)
        sa.pending_children = list(children)
        sa.ni = self.rng(NONCE_LEN)
        group = props.first_dh_group(props.build_sa(conn.proposals, ProtocolId.IKE, b""))
        sa.dh = dhmod.group(group or 19).generate(self.rng)
        self._sas[sa.spi_i] = sa
        self._send_init(sa, now)
        return sa

    def _send_init(self, sa: IkeSa, now: float) -> None:
        assert sa.dh is not None  # set by _start_ike; not a validity check on peer data
        payloads: list[Payload] = []
        if sa.cookie:
            payloads.append(_notify(Notify.COOKIE, sa.cookie))  # §2.6: the cookie comes first
        payloads += [
            Payload(PayloadType.SA, SaPayload(props.build_sa(sa.conn.proposals, ProtocolId.IKE, b""))),
            Payload(PayloadType.KE, KePayload(sa.dh.group.number, sa.dh.public_bytes())),
            Payload(PayloadType.NONCE, NoncePayload(sa.ni)),
        ]
        payloads += self._natd_payloads(sa)
        payloads.append(_notify(Notify.SIGNATURE_HASH_ALGORITHMS,
                                b"".join(struct.pack("!H", h) for h in authmod.SUPPORTED_HASHES)))
        sa.next_mid = 0
        self._send_request(sa, ExchangeType.IKE_SA_INIT, payloads, lambda m, t: self._on_init_response(sa, m, t),
                           "ike-sa-init", now)
        sa.init_request = sa.outstanding.datagram if sa.outstanding else b""

    def _natd_payloads(self, sa: IkeSa) -> list[Payload]:
        # §2.23: SHA-1(SPIi | SPIr | IP | port).  Forcing encapsulation fakes our source hash, as
        # strongSwan's encap=yes does, so that both ends believe there is a NAT.
        src = _natd_hash(sa.spi_i, sa.spi_r, sa.local) if not sa.conn.encap else self.rng(20)
        dst = _natd_hash(sa.spi_i, sa.spi_r, sa.remote)
        return [_notify(Notify.NAT_DETECTION_SOURCE_IP, src), _notify(Notify.NAT_DETECTION_DESTINATION_IP, dst)]

    def _check_natd(self, sa: IkeSa, msg: Message, src: Addr, dst: Addr) -> None:
        # §2.23: the hashes use the SPIs of the message's own header (SPIr is zero in the request).
        spi_i, spi_r = msg.header.spi_i, msg.header.spi_r
        srcs = [n.data for n in msg.notifies() if n.notify_type == Notify.NAT_DETECTION_SOURCE_IP]
        dsts = [n.data for n in msg.notifies() if n.notify_type == Notify.NAT_DETECTION_DESTINATION_IP]
        if srcs:
            sa.nat_remote = _natd_hash(spi_i, spi_r, src) not in srcs
        if dsts:
            sa.nat_local = _natd_hash(spi_i, spi_r, dst) not in dsts
        if sa.conn.encap:
            sa.nat_local = True

    def _cookie_for(self, msg: Message, src: Addr, ni: bytes) -> bytes:
        # §2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)
        ip = ipaddress.ip_address(src[0]).packed
        return b"\x01" + hashlib.sha256(ni + ip + msg.header.spi_i + self._cookie_secret).digest()[:16]

    def _candidates(self, local: Addr, remote: Addr) -> list[ConnectionConfig]:
        def ok(addrs: tuple[str, ...], addr: str) -> bool:
            return any(a in ("%any", "0.0.0.0/0", "::/0") or a == addr or _in_net(addr, a) for a in addrs)

        return [c for c in self.connections.values()
                if c.version == 2 and ok(c.local_addrs, local[0]) and ok(c.remote_addrs, remote[0])]

    def _on_init_request(self, msg: Message, src: Addr, dst: Addr, now: float) -> None:
        key = (msg.header.spi_i, src)
        old = self._half_open.get(key)
        if old is not None and old.last_response is not None:
            if old.init_request == msg.raw:
                self.counters["retransmits_answered"] += 1
                self._out.append((old.last_response[1], dst, src))
                return
            return  # a different first message with the same SPI: keep the first (§2.1)
        conns = self._candidates(dst, src)
        nonce = msg.find(PayloadType.NONCE)
        sa_p = msg.find(PayloadType.SA)
        ke = msg.find(PayloadType.KE)
        if not conns or nonce is None or sa_p is None or ke is None:
            self.counters["malformed"] += 1
            return
        assert isinstance(nonce.body, NoncePayload) and isinstance(sa_p.body, SaPayload)
        assert isinstance(ke.body, KePayload)
        ni = nonce.body.nonce
        if self.force_cookies or (self.cookie_threshold is not None and len(self._half_open) >= self.cookie_threshold):
            want = self._cookie_for(msg, src, ni)
            got = msg.notifies()[0] if msg.notifies() else None
            if got is None or got.notify_type != Notify.COOKIE or not hmac.compare_digest(got.data, want):
                self.counters["cookies_sent"] += 1
                self._reply_clear(msg.header, [_notify(Notify.COOKIE, want)], dst, src)
                return
        conn = conns[0]
        ours = props.build_sa(conn.proposals, ProtocolId.IKE, b"")
        chosen = props.select(ours, sa_p.body.proposals)
        if chosen is None:
            reason = (f"no proposal chosen: peer {src[0]} offered "
                      f"{_describe_offer(sa_p.body.proposals)}, we accept {', '.join(conn.proposals)}")
            self._emit(ProposalMismatch(conn.name, reason))
            self._reply_clear(msg.header, [_notify(Notify.NO_PROPOSAL_CHOSEN)], dst, src)
            return
        algs = props.algorithms(chosen)
        if algs.dh is None or algs.prf is None or algs.encr is None:
            self._reply_clear(msg.header, [_notify(Notify.NO_PROPOSAL_CHOSEN)], dst, src)
            return
        if ke.body.group != algs.dh.number:
            # §1.3 / §2.7: tell the initiator which group we want; keep no state.
            self._reply_clear(msg.header, [_notify(Notify.INVALID_KE_PAYLOAD, struct.pack("!H", algs.dh.number))],
                              dst, src)
            return
        sa = IkeSa(conn, False, msg.header.spi_i, self._new_spi(), dst, src, IkeState.INIT_DONE, now)
        sa.ni, sa.nr = ni, self.rng(NONCE_LEN)
        sa.algs = algs
        sa.dh = algs.dh.generate(self.rng)
        try:
            gir = sa.dh.shared_secret(ke.body.data)
        except dhmod.InvalidPublicValue as exc:
            self._emit(ProposalMismatch(conn.name, f"peer KE payload rejected: {exc}"))
            self._reply_clear(msg.header, [_notify(Notify.INVALID_SYNTAX)], dst, src)
            return
        self._derive_ike(sa, gir)
        self._check_natd(sa, msg, src, dst)
        sa.peer_hashes = _hash_list(msg)
        sa.init_request = msg.raw
        chosen.spi = b""
        payloads = [
            Payload(PayloadType.SA, SaPayload([chosen])),
            Payload(PayloadType.KE, KePayload(algs.dh.number, sa.dh.public_bytes())),
            Payload(PayloadType.NONCE, NoncePayload(sa.nr)),
            *self._natd_payloads(sa),
        ]
        if conn.auth == "pubkey" and conn.send_certreq:
            payloads.append(Payload(PayloadType.CERTREQ, CertReqPayload(CertEncoding.X509_SIGNATURE,
                                                                         self._credentials(conn).certreq_data())))
        payloads.append(_notify(Notify.SIGNATURE_HASH_ALGORITHMS,
                                b"".join(struct.pack("!H", h) for h in authmod.SUPPORTED_HASHES)))
        sa.last_heard = now
        self._sas[sa.spi_r] = sa
        self._half_open[key] = sa
        self._send_response(sa, msg.header, payloads)
        sa.init_response = sa.last_response[1] if sa.last_response else b""

    def _reply_clear(self, req: Header, payloads: list[Payload], local: Addr, remote: Addr) -> None:
        h = Header(req.spi_i, bytes(8), 0, req.exchange, HeaderFlag.RESPONSE, req.message_id)
        self._out.append((encode_message(h, payloads), local, remote))

    def _on_init_response(self, sa: IkeSa, msg: Message, now: float) -> None:
        conn = sa.conn
        cookie = msg.notify(Notify.COOKIE)
        if cookie is not None:
            sa.cookie = cookie.data
            sa.outstanding = None
            self._send_init(sa, now)
            return
        invalid_ke = msg.notify(Notify.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and len(invalid_ke.data) == 2:
            group = struct.unpack("!H", invalid_ke.data)[0]
            ours = props.build_sa(conn.proposals, ProtocolId.IKE, b"")
            if props.offers_group(ours, group) and (sa.dh is None or group != sa.dh.group.number):
                sa.dh = dhmod.group(group).generate(self.rng)  # §1.3: retry with the group asked for
                sa.outstanding = None
                self._send_init(sa, now)
                return
            self._fail(sa, ProposalMismatch(conn.name, f"peer wants DH group {group}, which we do not offer"))
            return
        error = _first_error(msg)
        if error is not None:
            if error == Notify.NO_PROPOSAL_CHOSEN:
                self._fail(sa, ProposalMismatch(conn.name, "peer sent NO_PROPOSAL_CHOSEN: none of our IKE "
                                                f"proposals ({', '.join(conn.proposals)}) is acceptable to it"))
            else:
                self._fail(sa, ProposalMismatch(conn.name, f"peer refused IKE_SA_INIT: {notify_name(error)}"))
            return
        sa_p, ke, nonce = msg.find(PayloadType.SA), msg.find(PayloadType.KE), msg.find(PayloadType.NONCE)
        if sa_p is None or ke is None or nonce is None or msg.header.spi_r == bytes(8):
            self.counters["malformed"] += 1  # keep waiting: the retransmission timer still runs
            return
        assert isinstance(sa_p.body, SaPayload) and isinstance(ke.body, KePayload)
        assert isinstance(nonce.body, NoncePayload)
        ours = props.build_sa(conn.proposals, ProtocolId.IKE, b"")
        if len(sa_p.body.proposals) != 1 or not props.validate_selected(ours, sa_p.body.proposals[0]):
            self._fail(sa, ProposalMismatch(conn.name, "peer chose an IKE proposal we did not offer"))
            return
        algs = props.algorithms(sa_p.body.proposals[0])
        if algs.dh is None or sa.dh is None or algs.dh.number != sa.dh.group.number or ke.body.group != algs.dh.number:
            self._fail(sa, ProposalMismatch(conn.name, "peer's KE group does not match the chosen proposal"))
            return
        try:
            gir = sa.dh.shared_secret(ke.body.data)
        except dhmod.InvalidPublicValue as exc:
            self._fail(sa, ProposalMismatch(conn.name, f"peer KE payload rejected: {exc}"))
            return
        sa.spi_r = msg.header.spi_r
        sa.nr = nonce.body.nonce
        sa.algs = algs
        sa.init_response = msg.raw
        sa.peer_hashes = _hash_list(msg)
        sa.peer_certreq = msg.find(PayloadType.CERTREQ) is not None
        self._derive_ike(sa, gir)
        self._check_natd(sa, msg, sa.remote, sa.local)
        if sa.nat_any:
            # §2.23: once a NAT is detected, move IKE to port 4500.
            sa.local = (sa.local[0], NATT_PORT)
            sa.remote = (sa.remote[0], NATT_PORT)
        sa.state = IkeState.AUTH_SENT
        self._send_auth(sa, now)

    def _derive_ike(self, sa: IkeSa, gir: bytes) -> None:
        assert sa.algs is not None and sa.algs.prf is not None and sa.algs.encr is not None
        seed = skeyseed(sa.algs.prf, sa.ni, sa.nr, gir)
        self._install_ike_keys(sa, seed)

    def _install_ike_keys(self, sa: IkeSa, seed: bytes) -> None:
        assert sa.algs is not None and sa.algs.prf is not None and sa.algs.encr is not None
        sa.keys = ike_keys(sa.algs.prf, seed, sa.ni, sa.nr, sa.spi_i, sa.spi_r, sa.algs.encr, sa.algs.integ)
        c_i, c_r = sa.keys.ciphers(sa.algs.encr, sa.algs.integ)
        sa.cipher_out, sa.cipher_in = (c_i, c_r) if sa.initiator else (c_r, c_i)

    # ================================================================ IKE_AUTH ============================
    def _own_id(self, sa: IkeSa) -> IdPayload:
        conn = sa.conn
        creds = self._credentials(conn) if conn.auth == "pubkey" else None
        text = conn.local_id or sa.local[0]
        if creds is not None and creds.cert is not None and (not conn.local_id or "=" in conn.local_id):
            return IdPayload(authmod.IdType.ID_DER_ASN1_DN, creds.cert.subject.public_bytes())
        return authmod.make_id(text)

    def _credentials(self, conn: ConnectionConfig) -> authmod.Credentials:
        if conn.name not in self._creds:
            self._creds[conn.name] = authmod.Credentials.from_pem(conn.private_key_pem, conn.cert_pem, conn.ca_pems)
        return self._creds[conn.name]

    def _auth_payloads(self, sa: IkeSa, id_raw: bytes, initiator_side: bool) -> list[Payload]:
        assert sa.keys is not None and sa.algs is not None and sa.algs.prf is not None
        conn = sa.conn
        if initiator_side:
            octets = authmod.signed_octets(sa.init_request, sa.nr, sa.algs.prf, sa.keys.sk_pi, id_raw)
        else:
            octets = authmod.signed_octets(sa.init_response, sa.ni, sa.algs.prf, sa.keys.sk_pr, id_raw)
        if conn.auth == "psk":
            return [Payload(PayloadType.AUTH, AuthPayload(AuthMethod.SHARED_KEY_MIC,
                                                          authmod.psk_auth(sa.algs.prf, conn.psk, octets)))]
        creds = self._credentials(conn)
        if creds.key is None or creds.cert is None:
            raise authmod.AuthError("pubkey authentication needs a private key and a certificate")
        # §3.6: the first CERT payload holds the key that verifies AUTH; intermediate CAs follow it.
        return [*(Payload(PayloadType.CERT, CertPayload(CertEncoding.X509_SIGNATURE, der))
                  for der in creds.cert_ders()),
                Payload(PayloadType.AUTH, authmod.sign(creds.key, octets, sa.peer_hashes))]

    def _verify_auth(self, sa: IkeSa, msg: Message, id_p: Payload, peer_is_initiator: bool) -> str | None:
        """None when the peer's AUTH verifies, else the reason in plain words."""
        assert sa.keys is not None and sa.algs is not None and sa.algs.prf is not None
        auth_p = msg.find(PayloadType.AUTH)
        if auth_p is None or not isinstance(auth_p.body, AuthPayload) or not isinstance(id_p.body, IdPayload):
            return "peer sent no AUTH payload"
        if peer_is_initiator:
            octets = authmod.signed_octets(sa.init_request, sa.nr, sa.algs.prf, sa.keys.sk_pi, id_p.raw)
        else:
            octets = authmod.signed_octets(sa.init_response, sa.ni, sa.algs.prf, sa.keys.sk_pr, id_p.raw)
        conn = sa.conn
        a = auth_p.body
        if conn.auth == "psk":
            if a.method != AuthMethod.SHARED_KEY_MIC:
                return f"peer authenticated with method {a.method}, we expect a pre-shared key"
            if not authmod.check_psk(sa.algs.prf, conn.psk, octets, a.data):
                return "the peer's AUTH does not match our pre-shared key — check the pre-shared key on both sides"
            return None
        # §3.6: the first certificate carries the key for AUTH; the others may help build the chain.
        ders = [p.body.data for p in msg.find_all(PayloadType.CERT)
                if isinstance(p.body, CertPayload) and p.body.encoding == CertEncoding.X509_SIGNATURE]
        if not ders:
            return "peer sent no X.509 certificate"
        if self.wall_clock is None:
            return "cannot check the peer's certificate: the IKE engine was given no wall clock for validity dates"
        try:
            key = self._credentials(conn).verify_peer(ders, id_p.body, self.wall_clock())
        except authmod.AuthError as exc:
            return str(exc)
        if not authmod.verify(key, a, octets):
            return "the peer's signature in AUTH does not verify"
        return None

    def _send_auth(self, sa: IkeSa, now: float) -> None:
        conn = sa.conn
        try:
            idi = self._own_id(sa)
            auth_payloads = self._auth_payloads(sa, encode_body(idi), True)
        except authmod.AuthError as exc:
            self._fail(sa, AuthFailed(conn.name, str(exc)))
            return
        payloads = [Payload(PayloadType.IDi, idi)]
        payloads += [p for p in auth_payloads if p.type == PayloadType.CERT]
        if conn.auth == "pubkey" and conn.send_certreq and conn.ca_pems:
            payloads.append(Payload(PayloadType.CERTREQ, CertReqPayload(CertEncoding.X509_SIGNATURE,
                                                                         self._credentials(conn).certreq_data())))
        if conn.remote_id not in ("", "%any"):
            try:
                payloads.append(Payload(PayloadType.IDr, authmod.make_id(conn.remote_id)))
            except authmod.AuthError:
                pass
        payloads += [p for p in auth_payloads if p.type == PayloadType.AUTH]
        sa.local_id = authmod.id_text(idi)
        if not any(s is not sa and s.conn.name == conn.name and s.state == IkeState.ESTABLISHED
                   for s in self._sas.values()):
            payloads.append(_notify(Notify.INITIAL_CONTACT))  # §2.4
        ctx: dict[str, Any] = {}
        if sa.pending_children:
            child_cfg = conn.child(sa.pending_children.pop(0))
            if child_cfg is not None:
                ctx = self._child_request_payloads(sa, child_cfg, payloads, with_nonce=False)
        self._send_request(sa, ExchangeType.IKE_AUTH, payloads,
                           lambda m, t: self._on_auth_response(sa, m, t, ctx), "ike-auth", now, ctx)

    def _on_auth_request(self, sa: IkeSa, msg: Message, now: float) -> list[Payload]:
        idi = msg.find(PayloadType.IDi)
        if idi is None or not isinstance(idi.body, IdPayload):
            return [_notify(Notify.INVALID_SYNTAX)]
        peer_id = authmod.id_text(idi.body)
        conns = [c for c in self._candidates(sa.local, sa.remote) if authmod.id_matches(c.remote_id, idi.body)]
        if not conns:
            reason = f"no connection matches peer identity '{peer_id}'"
            self._emit(AuthFailed(sa.conn.name, reason))
            self._remove_sa(sa, reason, quiet=True)
            return [_notify(Notify.AUTHENTICATION_FAILED)]
        sa.conn = conns[0]
        problem = self._verify_auth(sa, msg, idi, peer_is_initiator=True)
        if problem is not None:
            reason = f"authentication of '{peer_id}' failed: {problem}"
            self._emit(AuthFailed(sa.conn.name, reason))
            self._remove_sa(sa, reason, quiet=True)
            return [_notify(Notify.AUTHENTICATION_FAILED)]
        sa.remote_id = peer_id
        if msg.notify(Notify.INITIAL_CONTACT) is not None:
            for other in [s for s in self._sas.values() if s is not sa and s.conn.name == sa.conn.name
                          and s.remote_id == peer_id and s.state == IkeState.ESTABLISHED]:
                self._remove_sa(other, "peer sent INITIAL_CONTACT: it restarted")
        try:
            idr = self._own_id(sa)
            auth_payloads = self._auth_payloads(sa, encode_body(idr), False)
        except authmod.AuthError as exc:
            self._emit(AuthFailed(sa.conn.name, str(exc)))
            self._remove_sa(sa, str(exc), quiet=True)
            return [_notify(Notify.AUTHENTICATION_FAILED)]
        sa.local_id = authmod.id_text(idr)
        out = [Payload(PayloadType.IDr, idr)]
        out += [p for p in auth_payloads if p.type == PayloadType.CERT]
        out += [p for p in auth_payloads if p.type == PayloadType.AUTH]
        self._established(sa, now)
        out += self._respond_child(sa, msg, now, in_auth=True)
        return out

    def _on_auth_response(self, sa: IkeSa, msg: Message, now: float, ctx: dict[str, Any]) -> None:
        conn = sa.conn
        if msg.notify(Notify.AUTHENTICATION_FAILED) is not None:
            hint = "check the pre-shared key" if conn.auth == "psk" else "check certificates, CA and identities"
            self._fail(sa, AuthFailed(conn.name, f"authentication failed: peer sent AUTHENTICATION_FAILED — {hint}"))
            return
        idr = msg.find(PayloadType.IDr)
        if idr is None or not isinstance(idr.body, IdPayload):
            error = _first_error(msg)
            self._fail(sa, AuthFailed(conn.name, f"peer refused IKE_AUTH: {notify_name(error) if error else '?'}"))
            return
        peer_id = authmod.id_text(idr.body)
        if not authmod.id_matches(conn.remote_id, idr.body):
            self._auth_failed_initiator(sa, f"peer identity '{peer_id}' is not the expected '{conn.remote_id}'", now)
            return
        problem = self._verify_auth(sa, msg, idr, peer_is_initiator=False)
        if problem is not None:
            self._auth_failed_initiator(sa, f"authentication of '{peer_id}' failed: {problem}", now)
            return
        sa.remote_id = peer_id
        self._established(sa, now)
        self._finish_child_request(sa, msg, now, ctx, in_auth=True)
        for name in sa.pending_children:
            self._want_child(sa, name, now)
        sa.pending_children = []

    def _auth_failed_initiator(self, sa: IkeSa, reason: str, now: float) -> None:
        # §2.21.2: tell the responder in a separate INFORMATIONAL exchange, then forget the SA.
        self._fail(sa, AuthFailed(sa.conn.name, reason))
        data = self._encode(sa, ExchangeType.INFORMATIONAL, sa.next_mid, False,
                            [_notify(Notify.AUTHENTICATION_FAILED)])
        self._out.append((data, sa.local, sa.remote))

    def _established(self, sa: IkeSa, now: float) -> None:
        sa.state = IkeState.ESTABLISHED
        sa.established_at = now
        sa.last_heard = now
        self._half_open.pop((sa.spi_i, sa.remote), None)
        for k in [k for k, v in self._half_open.items() if v is sa]:
            del self._half_open[k]
        self._set_ike_lifetimes(sa, now)
        assert sa.algs is not None
        self._emit(IkeSaUp(sa.conn.name, sa.spi_i.hex(), sa.spi_r.hex(), sa.local, sa.remote, sa.local_id,
                           sa.remote_id, sa.algs.describe(), sa.nat_local, sa.nat_remote))

    def _set_ike_lifetimes(self, sa: IkeSa, now: float) -> None:
        conn = sa.conn
        if conn.rekey_time <= 0:
            sa.rekey_at = sa.expire_at = None
            return
        over = conn.over_time or conn.rekey_time * 0.1
        rand = conn.rand_time or over
        sa.rekey_at = now + conn.rekey_time - rand * self._uniform()
        sa.expire_at = now + conn.rekey_time + over

    def _uniform(self) -> float:
        return int.from_bytes(self.rng(4), "big") / 2**32

    # ================================================================ child SAs ===========================
    def _new_spi(self) -> bytes:
        while True:
            spi = self.rng(8)
            if spi != bytes(8) and spi not in self._sas:
                return spi

    def _new_child_spi(self) -> int:
        used = {c.spi_in for s in self._sas.values() for c in s.children}
        while True:
            spi = int.from_bytes(self.rng(4), "big")
            if spi >= 256 and spi not in used:  # 1-255 are reserved (RFC 4303 §2.1)
                return spi

    def _child_request_payloads(self, sa: IkeSa, cfg: ChildConfig, payloads: list[Payload], with_nonce: bool,
                                rekey_of: ChildSa | None = None, group: int | None = None) -> dict[str, Any]:
        """Append SA, [Ni, KEi], TSi, TSr (and notifies) for a new child; return what the answer needs."""
        protocol = ProtocolId.AH if cfg.protocol == "ah" else ProtocolId.ESP
        spi_in = self._new_child_spi()
        offer = props.build_sa(cfg.effective_proposals(), protocol, struct.pack("!I", spi_in))
        ctx: dict[str, Any] = {"cfg": cfg, "spi_in": spi_in, "offer": offer, "rekey_of": rekey_of}
        if cfg.mode == "transport":
            payloads.append(_notify(Notify.USE_TRANSPORT_MODE))
        if rekey_of is not None:
            payloads.append(_notify(Notify.REKEY_SA, b"", protocol, struct.pack("!I", rekey_of.spi_in)))
        payloads.append(Payload(PayloadType.SA, SaPayload(offer)))
        if with_nonce:  # CREATE_CHILD_SA carries its own nonces and, for PFS, a KE (§1.3.1)
            ni = self.rng(NONCE_LEN)
            ctx["ni"] = ni
            payloads.append(Payload(PayloadType.NONCE, NoncePayload(ni)))
            g = group or props.first_dh_group(offer)
            if g:
                priv = dhmod.group(g).generate(self.rng)
                ctx["dh"] = priv
                payloads.append(Payload(PayloadType.KE, KePayload(g, priv.public_bytes())))
        local_ts = rekey_of.local_ts if rekey_of else self._config_ts(cfg.local_ts, sa.local[0])
        remote_ts = rekey_of.remote_ts if rekey_of else self._config_ts(cfg.remote_ts, sa.remote[0])
        ctx["tsi"], ctx["tsr"] = local_ts, remote_ts
        payloads.append(Payload(PayloadType.TSi, TsPayload(list(local_ts))))
        payloads.append(Payload(PayloadType.TSr, TsPayload(list(remote_ts))))
        return ctx

    @staticmethod
    def _config_ts(texts: tuple[str, ...], dynamic: str) -> list[Any]:
        return [tsmod.parse_ts(t, dynamic) for t in texts]

    def _finish_child_request(self, sa: IkeSa, msg: Message, now: float, ctx: dict[str, Any],
                              in_auth: bool = False) -> ChildSa | None:
        """Initiator side of a child negotiation: check the answer and install the child."""
        cfg: ChildConfig | None = ctx.get("cfg")
        if cfg is None:
            return None
        error = _first_error(msg)
        sa_p = msg.find(PayloadType.SA)
        tsi, tsr = msg.find(PayloadType.TSi), msg.find(PayloadType.TSr)
        if error is not None or sa_p is None or tsi is None or tsr is None:
            what = notify_name(error) if error is not None else "no SA/TS payloads"
            self._emit(ChildSaFailed(sa.conn.name, cfg.name, f"peer did not create CHILD_SA '{cfg.name}': {what}"))
            return None
        assert isinstance(sa_p.body, SaPayload) and isinstance(tsi.body, TsPayload)
        assert isinstance(tsr.body, TsPayload)
        offer: list[Proposal] = ctx["offer"]
        if len(sa_p.body.proposals) != 1 or not props.validate_selected(offer, sa_p.body.proposals[0], in_auth):
            self._emit(ChildSaFailed(sa.conn.name, cfg.name, "peer chose a child proposal we did not offer"))
            return None
        chosen = sa_p.body.proposals[0]
        if not (tsmod.is_subset(tsi.body.selectors, ctx["tsi"]) and tsmod.is_subset(tsr.body.selectors, ctx["tsr"])):
            self._emit(ChildSaFailed(sa.conn.name, cfg.name, "peer answered with traffic selectors we did not propose"))
            return None
        transport = msg.notify(Notify.USE_TRANSPORT_MODE) is not None
        if cfg.mode == "transport" and not transport:
            self._emit(ChildSaFailed(sa.conn.name, cfg.name, "peer refused transport mode"))
            return None
        algs = props.algorithms(chosen)
        gir = b""
        if "ni" in ctx:
            nonce = msg.find(PayloadType.NONCE)
            if nonce is None or not isinstance(nonce.body, NoncePayload):
                return None
            ni, nr = ctx["ni"], nonce.body.nonce
            if algs.dh is not None:
                ke = msg.find(PayloadType.KE)
                priv = ctx.get("dh")
                if ke is None or not isinstance(ke.body, KePayload) or priv is None \
                        or priv.group.number != algs.dh.number:
                    self._emit(ChildSaFailed(sa.conn.name, cfg.name, "peer's KE does not match the chosen group"))
                    return None
                try:
                    gir = priv.shared_secret(ke.body.data)
                except dhmod.InvalidPublicValue as exc:
                    self._emit(ChildSaFailed(sa.conn.name, cfg.name, f"peer KE rejected: {exc}"))
                    return None
        else:
            ni, nr = sa.ni, sa.nr
        if len(chosen.spi) != 4:
            return None
        child = self._make_child(sa, cfg, algs, ctx["spi_in"], struct.unpack("!I", chosen.spi)[0],
                                 "transport" if transport else "tunnel", list(tsi.body.selectors),
                                 list(tsr.body.selectors), ni, nr, gir, we_initiated=True, now=now,
                                 replaces=ctx.get("rekey_of"))
        return child

    def _make_child(self, sa: IkeSa, cfg: ChildConfig, algs: props.Algorithms, spi_in: int, spi_out: int,
                    mode: str, local_ts: list[Any], remote_ts: list[Any], ni: bytes, nr: bytes, gir: bytes,
                    we_initiated: bool, now: float, replaces: ChildSa | None) -> ChildSa:
        assert sa.keys is not None and sa.algs is not None and sa.algs.prf is not None
        encr_len = algs.encr.keymat_len if algs.encr else 0
        integ_len = algs.integ.key_len if algs.integ else 0
        keys = child_keys(sa.algs.prf, sa.keys.sk_d, ni, nr, encr_len, integ_len, gir)
        # §2.17: the exchange initiator's outbound keys come first.
        out_e, out_a, in_e, in_a = ((keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r) if we_initiated
                                    else (keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i))
        life = cfg.life_time or cfg.rekey_time * 1.1
        rand = cfg.rand_time or (life - cfg.rekey_time)
        rekey_in = max(cfg.rekey_time - rand * self._uniform(), 1.0) if cfg.rekey_time > 0 else 0.0
        child = ChildSa(cfg, ProtocolId.AH if cfg.protocol == "ah" else ProtocolId.ESP, mode, spi_in, spi_out, algs,
                        local_ts, remote_ts, now, now + rekey_in if rekey_in else None,
                        now + life if cfg.rekey_time > 0 else None)
        sa.children.append(child)
        encap = (sa.local[1], sa.remote[1]) if sa.nat_any else None
        encr = algs.encr.name if algs.encr else None
        integ = algs.integ.name if algs.integ else None
        inbound = SaDirection(spi_in, encr, in_e, integ, in_a, sa.remote[0], sa.local[0],
                              (encap[1], encap[0]) if encap else None)
        outbound = SaDirection(spi_out, encr, out_e, integ, out_a, sa.local[0], sa.remote[0], encap)
        self._emit(ChildSaUp(sa.conn.name, cfg.name, _PROTO_NAME[child.protocol], mode, inbound, outbound,
                             algs.esn, tuple(tsmod.ts_text(t) for t in local_ts),
                             tuple(tsmod.ts_text(t) for t in remote_ts), rekey_in, life if cfg.rekey_time > 0 else 0.0,
                             cfg.life_bytes, cfg.life_packets, (sa.spi_i.hex(), sa.spi_r.hex()),
                             (replaces.spi_in, replaces.spi_out) if replaces else None))
        if replaces is not None:
            self._emit(ChildSaRekeyed(sa.conn.name, cfg.name, (replaces.spi_in, replaces.spi_out), (spi_in, spi_out)))
        return child

    def _respond_child(self, sa: IkeSa, msg: Message, now: float, in_auth: bool,
                       rekey_of: ChildSa | None = None) -> list[Payload]:
        """Responder side of a child negotiation (IKE_AUTH or CREATE_CHILD_SA): payloads for the answer."""
        sa_p, tsi, tsr = msg.find(PayloadType.SA), msg.find(PayloadType.TSi), msg.find(PayloadType.TSr)
        if sa_p is None or tsi is None or tsr is None:
            return [] if in_auth else [_notify(Notify.INVALID_SYNTAX)]
        assert isinstance(sa_p.body, SaPayload) and isinstance(tsi.body, TsPayload)
        assert isinstance(tsr.body, TsPayload)
        transport = msg.notify(Notify.USE_TRANSPORT_MODE) is not None
        # Find a child config whose selectors overlap (§2.9 narrowing: their TSi vs our remote, TSr vs local).
        cfgs = [rekey_of.cfg] if rekey_of else list(sa.conn.children)
        best = None
        for cfg in cfgs:
            if rekey_of is not None:
                our_local, our_remote = rekey_of.local_ts, rekey_of.remote_ts
            else:
                our_local = self._config_ts(cfg.local_ts, sa.local[0])
                our_remote = self._config_ts(cfg.remote_ts, sa.remote[0])
            n_i = tsmod.narrow(tsi.body.selectors, our_remote)
            n_r = tsmod.narrow(tsr.body.selectors, our_local)
            if n_i and n_r:
                best = (cfg, n_i, n_r)
                break
        if best is None:
            self._emit(ChildSaFailed(sa.conn.name, cfgs[0].name if cfgs else "?",
                                     "traffic selectors proposed by the peer do not match ours"))
            return [_notify(Notify.TS_UNACCEPTABLE)]
        cfg, n_i, n_r = best
        protocol = ProtocolId.AH if cfg.protocol == "ah" else ProtocolId.ESP
        ours = props.build_sa(cfg.effective_proposals(), protocol, b"")
        chosen = props.select(ours, sa_p.body.proposals, ignore_dh=in_auth)
        if chosen is None:
            self._emit(ChildSaFailed(sa.conn.name, cfg.name,
                                     f"no child proposal chosen: peer offered {_describe_offer(sa_p.body.proposals)}, "
                                     f"we accept {', '.join(cfg.effective_proposals())}"))
            return [_notify(Notify.NO_PROPOSAL_CHOSEN)]
        if len(chosen.spi) != 4:
            return [_notify(Notify.INVALID_SYNTAX)]
        algs = props.algorithms(chosen)
        out: list[Payload] = []
        gir = b""
        if in_auth:
            ni, nr = sa.ni, sa.nr
        else:
            nonce = msg.find(PayloadType.NONCE)
            if nonce is None or not isinstance(nonce.body, NoncePayload):
                return [_notify(Notify.INVALID_SYNTAX)]
            ni, nr = nonce.body.nonce, self.rng(NONCE_LEN)
            if algs.dh is not None:
                ke = msg.find(PayloadType.KE)
                if ke is None or not isinstance(ke.body, KePayload) or ke.body.group != algs.dh.number:
                    return [_notify(Notify.INVALID_KE_PAYLOAD, struct.pack("!H", algs.dh.number))]
                priv = algs.dh.generate(self.rng)
                try:
                    gir = priv.shared_secret(ke.body.data)
                except dhmod.InvalidPublicValue:
                    return [_notify(Notify.INVALID_SYNTAX)]
        mode = "transport" if transport and cfg.mode == "transport" else "tunnel"
        spi_in = self._new_child_spi()
        spi_out = struct.unpack("!I", chosen.spi)[0]
        chosen.spi = struct.pack("!I", spi_in)
        if mode == "transport":
            out.append(_notify(Notify.USE_TRANSPORT_MODE))
        out.append(Payload(PayloadType.SA, SaPayload([chosen])))
        if not in_auth:
            out.append(Payload(PayloadType.NONCE, NoncePayload(nr)))
            if algs.dh is not None:
                out.append(Payload(PayloadType.KE, KePayload(algs.dh.number, priv.public_bytes())))
        out += [Payload(PayloadType.TSi, TsPayload(n_i)), Payload(PayloadType.TSr, TsPayload(n_r))]
        child = self._make_child(sa, cfg, algs, spi_in, spi_out, mode, n_r, n_i, ni, nr, gir, we_initiated=False,
                                 now=now, replaces=rekey_of)
        if rekey_of is not None:
            rekey_of.peer_rekey = (child, ni, nr)
            if rekey_of.state == ChildState.INSTALLED:
                rekey_of.state = ChildState.REKEYED
                rekey_of.rekey_at = None
            elif rekey_of.own_rekey is not None:
                # Our rekey already completed and queued the old SA's deletion: decide again (§2.8.1).
                sa.queue = [(k, c) for k, c in sa.queue if not (k == "delete-child" and c.get("child") is rekey_of)]
                self._resolve_child_collision(sa, rekey_of, now)
        return out

    # ================================================================ CREATE_CHILD_SA =====================
    def _want_child(self, sa: IkeSa, name: str, now: float) -> None:
        if any(c.cfg.name == name and c.state != ChildState.DELETING for c in sa.children):
            return
        if sa.state != IkeState.ESTABLISHED:
            if name not in sa.pending_children:
                sa.pending_children.append(name)
            return
        if any(k == "create-child" and ctx.get("name") == name for k, ctx in sa.queue):
            return
        if sa.outstanding is not None and sa.outstanding.kind == "create-child" \
                and sa.outstanding.context.get("cfg") is not None and sa.outstanding.context["cfg"].name == name:
            return
        self._queue(sa, "create-child", {"name": name}, now)

    def _queue(self, sa: IkeSa, kind: str, ctx: dict[str, Any], now: float) -> None:
        sa.queue.append((kind, ctx))
        self._kick(sa, now)

    def _kick(self, sa: IkeSa, now: float) -> None:
        """Start the next queued exchange when none is outstanding (window size 1, §2.3)."""
        while sa.outstanding is None and sa.queue and sa.state == IkeState.ESTABLISHED:
            idx = next((i for i, (_k, c) in enumerate(sa.queue) if c.get("not_before", 0.0) <= now), None)
            if idx is None:
                return
            kind, ctx = sa.queue.pop(idx)
            self._start_exchange(sa, kind, ctx, now)

    def _start_exchange(self, sa: IkeSa, kind: str, ctx: dict[str, Any], now: float) -> None:
        if kind == "create-child":
            cfg = sa.conn.child(ctx["name"])
            if cfg is None or any(c.cfg.name == cfg.name and c.state != ChildState.DELETING for c in sa.children):
                return
            payloads: list[Payload] = []
            rctx = self._child_request_payloads(sa, cfg, payloads, with_nonce=True, group=ctx.get("group"))
            rctx["name"] = cfg.name
            self._send_request(sa, ExchangeType.CREATE_CHILD_SA, payloads,
                               lambda m, t: self._on_create_child_response(sa, m, t, rctx), "create-child", now, rctx)
        elif kind == "rekey-child":
            old: ChildSa = ctx["child"]
            if old not in sa.children or old.state != ChildState.INSTALLED:
                return
            payloads = []
            rctx = self._child_request_payloads(sa, old.cfg, payloads, with_nonce=True, rekey_of=old,
                                                group=ctx.get("group"))
            old.state = ChildState.REKEYING
            self._send_request(sa, ExchangeType.CREATE_CHILD_SA, payloads,
                               lambda m, t: self._on_create_child_response(sa, m, t, rctx), "rekey-child", now, rctx)
        elif kind == "delete-child":
            c: ChildSa = ctx["child"]
            if c not in sa.children:
                return
            c.state = ChildState.DELETING
            self._send_request(sa, ExchangeType.INFORMATIONAL,
                               [Payload(PayloadType.DELETE, DeletePayload(c.protocol, [struct.pack("!I", c.spi_in)]))],
                               lambda m, t: self._on_child_delete_response(sa, m, t, c), "delete-child", now)
        elif kind == "rekey-ike":
            self._start_ike_rekey(sa, ctx, now)
        elif kind == "dpd":
            self._send_request(sa, ExchangeType.INFORMATIONAL, [], lambda m, t: None, "dpd", now)
        elif kind == "delete-ike":
            sa.state = IkeState.DELETING
            self._send_request(sa, ExchangeType.INFORMATIONAL,
                               [Payload(PayloadType.DELETE, DeletePayload(ProtocolId.IKE))],
                               self._on_ike_delete_response_for(sa), "delete-ike", now)

    def _on_create_child_response(self, sa: IkeSa, msg: Message, now: float, ctx: dict[str, Any]) -> None:
        old: ChildSa | None = ctx.get("rekey_of")
        cfg: ChildConfig = ctx["cfg"]
        invalid_ke = msg.notify(Notify.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and len(invalid_ke.data) == 2:
            group = struct.unpack("!H", invalid_ke.data)[0]
            if props.offers_group(ctx["offer"], group):
                if old is not None:
                    old.state = ChildState.INSTALLED
                    self._queue(sa, "rekey-child", {"child": old, "group": group}, now)
                else:
                    self._queue(sa, "create-child", {"name": cfg.name, "group": group}, now)
                return
        if msg.notify(Notify.TEMPORARY_FAILURE) is not None:
            # §2.25: the peer is busy (e.g. rekeying itself); try again a little later.
            if old is not None:
                old.state = ChildState.INSTALLED
                if old.peer_rekey is None:
                    self._queue(sa, "rekey-child", {"child": old, "not_before": now + RETRY_LATER}, now)
            else:
                self._queue(sa, "create-child", {"name": cfg.name, "not_before": now + RETRY_LATER}, now)
            return
        if old is not None and msg.notify(Notify.CHILD_SA_NOT_FOUND) is not None:
            if old in sa.children:
                self._drop_child(sa, old, "peer no longer has this CHILD_SA")
            self._want_child(sa, cfg.name, now)
            return
        child = self._finish_child_request(sa, msg, now, ctx)
        if old is None:
            return
        if child is None:
            if old in sa.children and old.state == ChildState.REKEYING:
                old.state = ChildState.INSTALLED
                old.rekey_at = now + RETRY_LATER * 5
            return
        old.own_rekey = (child, ctx["ni"], _nonce_of(msg))
        if old.peer_rekey is not None:
            self._resolve_child_collision(sa, old, now)
        else:
            old.state = ChildState.REKEYED
            self._queue(sa, "delete-child", {"child": old}, now)

    def _resolve_child_collision(self, sa: IkeSa, old: ChildSa, now: float) -> None:
        """§2.8.1: both ends rekeyed the same child.  The new SA whose exchange holds the lowest of the four
        nonces is redundant and is deleted by the end that created it; the winner's initiator deletes the old."""
        assert old.own_rekey is not None and old.peer_rekey is not None
        mine, m_ni, m_nr = old.own_rekey
        _theirs, p_ni, p_nr = old.peer_rekey
        old.state = ChildState.REKEYED
        if min(m_ni, m_nr) < min(p_ni, p_nr):
            self._queue(sa, "delete-child", {"child": mine}, now)  # ours lost; the peer deletes the old one
        else:
            self._queue(sa, "delete-child", {"child": old}, now)

    def _on_create_child_request(self, sa: IkeSa, msg: Message, now: float) -> list[Payload]:
        sa_p = msg.find(PayloadType.SA)
        if sa_p is not None and isinstance(sa_p.body, SaPayload) and sa_p.body.proposals \
                and sa_p.body.proposals[0].protocol == ProtocolId.IKE:
            return self._on_ike_rekey_request(sa, msg, now)
        rekey = msg.notify(Notify.REKEY_SA)
        old = None
        if rekey is not None:
            if len(rekey.spi) != 4:
                return [_notify(Notify.INVALID_SYNTAX)]
            old = sa.child_by_spi_out(struct.unpack("!I", rekey.spi)[0], rekey.protocol)
            if old is None or old.state == ChildState.DELETING:
                return [_notify(Notify.CHILD_SA_NOT_FOUND, b"", rekey.protocol, rekey.spi)]
        return self._respond_child(sa, msg, now, in_auth=False, rekey_of=old)

    # ================================================================ IKE SA rekey (§2.18) ================
    def _start_ike_rekey(self, sa: IkeSa, ctx: dict[str, Any], now: float) -> None:
        new_spi = self._new_spi()
        offer = props.build_sa(sa.conn.proposals, ProtocolId.IKE, new_spi)
        group = ctx.get("group") or props.first_dh_group(offer) or 19
        priv = dhmod.group(group).generate(self.rng)
        ni = self.rng(NONCE_LEN)
        rctx = {"spi": new_spi, "offer": offer, "dh": priv, "ni": ni}
        payloads = [Payload(PayloadType.SA, SaPayload(offer)), Payload(PayloadType.NONCE, NoncePayload(ni)),
                    Payload(PayloadType.KE, KePayload(group, priv.public_bytes()))]
        self._sas[new_spi] = sa  # reserve the SPI while the exchange runs
        self._send_request(sa, ExchangeType.CREATE_CHILD_SA, payloads,
                           lambda m, t: self._on_ike_rekey_response(sa, m, t, rctx), "rekey-ike", now, rctx)

    def _new_ike_from(self, old: IkeSa, initiator: bool, spi_i: bytes, spi_r: bytes, algs: props.Algorithms,
                      ni: bytes, nr: bytes, gir: bytes, now: float) -> IkeSa:
        assert old.keys is not None and old.algs is not None and old.algs.prf is not None
        new = IkeSa(old.conn, initiator, spi_i, spi_r, old.local, old.remote, IkeState.ESTABLISHED, now)
        new.ni, new.nr, new.algs = ni, nr, algs
        new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
        new.local_id, new.remote_id = old.local_id, old.remote_id
        new.peer_hashes = old.peer_hashes
        self._install_ike_keys(new, rekey_skeyseed(old.algs.prf, old.keys.sk_d, gir, ni, nr))
        new.last_heard = now
        new.established_at = now
        self._set_ike_lifetimes(new, now)
        return new

    def _move_children(self, old: IkeSa, new: IkeSa) -> None:
        new.children.extend(old.children)
        old.children = []
        new.queue.extend((k, c) for k, c in old.queue if k != "rekey-ike")
        old.queue = []

    def _on_ike_rekey_request(self, sa: IkeSa, msg: Message, now: float) -> list[Payload]:
        sa_p, ke, nonce = msg.find(PayloadType.SA), msg.find(PayloadType.KE), msg.find(PayloadType.NONCE)
        if sa_p is None or ke is None or nonce is None:
            return [_notify(Notify.INVALID_SYNTAX)]
        assert isinstance(sa_p.body, SaPayload) and isinstance(ke.body, KePayload)
        assert isinstance(nonce.body, NoncePayload)
        if any(c.state == ChildState.REKEYING for c in sa.children) or (
                sa.outstanding is not None and sa.outstanding.kind in ("create-child", "rekey-child")):
            return [_notify(Notify.TEMPORARY_FAILURE)]  # §2.25: finish our own exchange first
        chosen = props.select(props.build_sa(sa.conn.proposals, ProtocolId.IKE, b""), sa_p.body.proposals)
        if chosen is None or len(chosen.spi) != 8:
            return [_notify(Notify.NO_PROPOSAL_CHOSEN)]
        algs = props.algorithms(chosen)
        assert algs.dh is not None
        if ke.body.group != algs.dh.number:
            return [_notify(Notify.INVALID_KE_PAYLOAD, struct.pack("!H", algs.dh.number))]
        priv = algs.dh.generate(self.rng)
        try:
            gir = priv.shared_secret(ke.body.data)
        except dhmod.InvalidPublicValue:
            return [_notify(Notify.INVALID_SYNTAX)]
        nr = self.rng(NONCE_LEN)
        spi_r = self._new_spi()
        new = self._new_ike_from(sa, False, chosen.spi, spi_r, algs, nonce.body.nonce, nr, gir, now)
        chosen.spi = spi_r
        self._sas[spi_r] = new
        if sa.outstanding is not None and sa.outstanding.kind == "rekey-ike":
            sa.peer_ike_rekey = (new, nonce.body.nonce, nr)  # §2.8.2 collision, resolved when ours completes
        else:
            self._move_children(sa, new)
            self._mark_rekeyed(sa, now)
        self._emit(IkeSaUp(new.conn.name, new.spi_i.hex(), new.spi_r.hex(), new.local, new.remote, new.local_id,
                           new.remote_id, algs.describe(), new.nat_local, new.nat_remote, rekeyed=True))
        return [Payload(PayloadType.SA, SaPayload([chosen])), Payload(PayloadType.NONCE, NoncePayload(nr)),
                Payload(PayloadType.KE, KePayload(algs.dh.number, priv.public_bytes()))]

    def _on_ike_rekey_response(self, sa: IkeSa, msg: Message, now: float, ctx: dict[str, Any]) -> None:
        spi: bytes = ctx["spi"]
        if self._sas.get(spi) is sa:
            del self._sas[spi]
        invalid_ke = msg.notify(Notify.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and len(invalid_ke.data) == 2:
            group = struct.unpack("!H", invalid_ke.data)[0]
            if props.offers_group(ctx["offer"], group):
                self._queue(sa, "rekey-ike", {"group": group}, now)
                return
        if msg.notify(Notify.TEMPORARY_FAILURE) is not None:
            if sa.state == IkeState.ESTABLISHED and sa.peer_ike_rekey is None:
                self._queue(sa, "rekey-ike", {"not_before": now + RETRY_LATER}, now)
            return
        sa_p, ke, nonce = msg.find(PayloadType.SA), msg.find(PayloadType.KE), msg.find(PayloadType.NONCE)
        if sa_p is None or ke is None or nonce is None or _first_error(msg) is not None:
            self.last_error[sa.conn.name] = f"IKE SA rekey refused: {notify_name(_first_error(msg) or 0)}"
            sa.rekey_at = now + 60.0
            return
        assert isinstance(sa_p.body, SaPayload) and isinstance(ke.body, KePayload)
        assert isinstance(nonce.body, NoncePayload)
        chosen = sa_p.body.proposals[0] if len(sa_p.body.proposals) == 1 else None
        if chosen is None or len(chosen.spi) != 8 or not props.validate_selected(ctx["offer"], chosen):
            sa.rekey_at = now + 60.0
            return
        algs = props.algorithms(chosen)
        try:
            gir = ctx["dh"].shared_secret(ke.body.data)
        except dhmod.InvalidPublicValue:
            sa.rekey_at = now + 60.0
            return
        ni, nr = ctx["ni"], nonce.body.nonce
        new = self._new_ike_from(sa, True, spi, chosen.spi, algs, ni, nr, gir, now)
        self._sas[spi] = new
        self._emit(IkeSaUp(new.conn.name, new.spi_i.hex(), new.spi_r.hex(), new.local, new.remote, new.local_id,
                           new.remote_id, algs.describe(), new.nat_local, new.nat_remote, rekeyed=True))
        if sa.peer_ike_rekey is not None:
            theirs, p_ni, p_nr = sa.peer_ike_rekey
            if min(ni, nr) < min(p_ni, p_nr):
                # §2.8.2: ours holds the lowest nonce and is redundant: delete it, keep the peer's.
                self._move_children(sa, theirs)
                new.state = IkeState.ESTABLISHED
                self._queue(new, "delete-ike", {}, now)
                self._mark_rekeyed(sa, now)
                self._kick(theirs, now)
                return
            self._move_children(sa, new)
        else:
            self._move_children(sa, new)
        sa.state = IkeState.ESTABLISHED  # allow the delete exchange to run on the old SA
        sa.queue = [("delete-ike", {})]
        self._kick(sa, now)
        self._kick(new, now)

    def _mark_rekeyed(self, sa: IkeSa, now: float) -> None:
        # The peer deletes the old SA; if that never arrives, forget it after a while.
        sa.state = IkeState.REKEYED
        sa.rekey_at = None
        sa.expire_at = now + HALF_OPEN_TIMEOUT

    def _on_ike_delete_response_for(self, sa: IkeSa) -> Callable[[Message, float], None]:
        return lambda m, t: self._remove_sa(sa, "deleted", quiet=True)

    # ================================================================ INFORMATIONAL =======================
    def _on_informational_request(self, sa: IkeSa, msg: Message, now: float) -> list[Payload]:
        out: list[Payload] = []
        deletes = [p.body for p in msg.payloads if isinstance(p.body, DeletePayload)]
        if any(d.protocol == ProtocolId.IKE for d in deletes):
            # §1.4.1: the peer closes the IKE SA and with it every child SA.
            self._remove_sa(sa, "deleted by peer")
            return []
        if msg.notify(Notify.AUTHENTICATION_FAILED) is not None:
            self._emit(AuthFailed(sa.conn.name, "peer rejected our AUTH (AUTHENTICATION_FAILED) — check the "
                                  "pre-shared key or certificates"))
            self._remove_sa(sa, "authentication failed at peer", quiet=True)
            return []
        for d in deletes:
            mine: list[bytes] = []
            for spi_b in d.spis:
                if len(spi_b) != 4:
                    continue
                c = sa.child_by_spi_out(struct.unpack("!I", spi_b)[0], d.protocol)
                if c is None:
                    continue
                if c.state != ChildState.DELETING:
                    mine.append(struct.pack("!I", c.spi_in))  # §1.4.1: answer with our inbound SPI
                self._drop_child(sa, c, "deleted by peer")
            if mine:
                out.append(Payload(PayloadType.DELETE, DeletePayload(d.protocol, mine)))
        return out

    def _on_child_delete_response(self, sa: IkeSa, msg: Message, now: float, child: ChildSa) -> None:
        if child in sa.children:
            self._drop_child(sa, child, "deleted" if child.state != ChildState.REKEYED else "rekeyed")

    def _drop_child(self, sa: IkeSa, c: ChildSa, reason: str) -> None:
        if c in sa.children:
            sa.children.remove(c)
            self._emit(ChildSaDown(sa.conn.name, c.cfg.name, _PROTO_NAME[c.protocol], c.spi_in, c.spi_out,
                                   reason))

    def _close_children(self, sa: IkeSa, reason: str) -> None:
        for c in list(sa.children):
            self._drop_child(sa, c, reason)

    def _remove_sa(self, sa: IkeSa, reason: str, quiet: bool = False) -> None:
        self._close_children(sa, reason)
        for k in [k for k, v in self._sas.items() if v is sa]:
            del self._sas[k]
        for hk in [hk for hk, v in self._half_open.items() if v is sa]:
            del self._half_open[hk]
        was_up = sa.state == IkeState.ESTABLISHED
        sa.state = IkeState.CLOSED
        if was_up and not quiet:
            self._emit(IkeSaDown(sa.conn.name, sa.spi_i.hex(), sa.spi_r.hex(), reason))

    def _fail(self, sa: IkeSa, event: Event) -> None:
        self._emit(event)
        sa.error = getattr(event, "reason", "")
        self._remove_sa(sa, sa.error, quiet=True)

    # ================================================================ timers ==============================
    def _timers_for(self, sa: IkeSa, now: float) -> None:
        req = sa.outstanding
        if req is not None and now >= req.next_retransmit:
            conn = sa.conn
            gave_up = req.tries >= conn.retransmit_tries or (
                conn.dpd_timeout > 0 and now - req.first_sent >= conn.dpd_timeout)
            if gave_up:
                self._peer_dead(sa, req, now)
                return
            req.tries += 1
            # §2.1: retransmit the identical datagram with exponential backoff.
            req.next_retransmit = now + conn.retransmit_timeout * conn.retransmit_base ** req.tries
            self.counters["retransmits_sent"] += 1
            self._out.append((req.datagram, sa.local, sa.remote))
        if sa.state == IkeState.INIT_DONE and now >= sa.created + HALF_OPEN_TIMEOUT:
            self._remove_sa(sa, "half-open IKE SA timed out", quiet=True)
            return
        if sa.state == IkeState.REKEYED and sa.expire_at is not None and now >= sa.expire_at:
            self._remove_sa(sa, "replaced by a rekeyed IKE SA", quiet=True)
            return
        if sa.state != IkeState.ESTABLISHED:
            return
        if sa.expire_at is not None and now >= sa.expire_at:
            self._remove_sa(sa, "IKE SA lifetime expired")
            return
        if sa.rekey_at is not None and now >= sa.rekey_at:
            sa.rekey_at = None
            self._queue(sa, "rekey-ike", {}, now)
        for c in list(sa.children):
            if c.expire_at is not None and now >= c.expire_at and c.state != ChildState.DELETING:
                c.expire_at = None
                self._queue(sa, "delete-child", {"child": c}, now)
            elif c.rekey_at is not None and now >= c.rekey_at and c.state == ChildState.INSTALLED:
                c.rekey_at = None
                self._queue(sa, "rekey-child", {"child": c}, now)
        if sa.conn.dpd_delay > 0 and now >= sa.last_heard + sa.conn.dpd_delay and sa.outstanding is None \
                and not sa.queue:
            sa.last_heard = now  # do not queue another check until this one is answered or gives up
            self._queue(sa, "dpd", {}, now)
        self._kick(sa, now)

    def _peer_dead(self, sa: IkeSa, req: Request, now: float) -> None:
        conn = sa.conn
        if req.kind in ("delete-ike",) or sa.state == IkeState.DELETING:
            self._remove_sa(sa, "peer did not answer our delete", quiet=True)
            return
        if sa.state in (IkeState.INIT_SENT, IkeState.AUTH_SENT):
            reason = (f"no answer from {sa.remote[0]} to {req.kind} after {req.tries + 1} transmissions — "
                      "is the peer up and UDP 500/4500 reachable?")
        else:
            reason = f"peer {sa.remote[0]} did not answer {req.kind} after {req.tries + 1} transmissions"
        self._emit(PeerDead(conn.name, reason))
        children = sorted({c.cfg.name for c in sa.children} | set(sa.pending_children))
        self._remove_sa(sa, reason)
        if conn.dpd_action == "restart" and sa.established_at:
            self._start_ike(conn, children or [c.name for c in conn.children], now)


# ==================================================================== helpers ===============================
def _notify(ntype: int, data: bytes = b"", protocol: int = 0, spi: bytes = b"") -> Payload:
    return Payload(PayloadType.NOTIFY, NotifyPayload(ntype, protocol, spi, data))


def _first_error(msg: Message) -> int | None:
    return next((n.notify_type for n in msg.notifies() if n.notify_type < ERROR_NOTIFY_LIMIT), None)


def _nonce_of(msg: Message) -> bytes:
    p = msg.find(PayloadType.NONCE)
    return p.body.nonce if p is not None and isinstance(p.body, NoncePayload) else b""


def _hash_list(msg: Message) -> list[int]:
    n = msg.notify(Notify.SIGNATURE_HASH_ALGORITHMS)
    if n is None:
        return []
    return [struct.unpack_from("!H", n.data, i)[0] for i in range(0, len(n.data) - 1, 2)]


def _natd_hash(spi_i: bytes, spi_r: bytes, addr: Addr) -> bytes:
    ip = ipaddress.ip_address(addr[0]).packed
    return hashlib.sha1(spi_i + spi_r + ip + struct.pack("!H", addr[1])).digest()  # noqa: S324 - RFC 7296 §2.23


def _in_net(addr: str, net: str) -> bool:
    try:
        return "/" in net and ipaddress.ip_address(addr) in ipaddress.ip_network(net, strict=False)
    except ValueError:
        return False


def _describe_offer(proposals: list[Proposal]) -> str:
    out = []
    for p in proposals:
        names = []
        for t in p.transforms:
            names.append(f"{t.type}:{t.id}" + (f"/{t.key_length}" if t.key_length else ""))
        out.append("[" + " ".join(names) + "]")
    return " ".join(out) or "nothing"


def _wireshark_encr(tid: int, bits: int) -> str:
    from labctl.gateway.ike.v2.constants import Encr

    names = {Encr.AES_CBC: f"AES-CBC-{bits} [RFC3602]", Encr.AES_CTR: f"AES-CTR-{bits} [RFC5930]",
             Encr.TRIPLE_DES: "3DES [RFC2451]", Encr.NULL: "NULL [RFC2410]",
             Encr.AES_GCM_8: f"AES-GCM-{bits} with 8 octet ICV [RFC5282]",
             Encr.AES_GCM_12: f"AES-GCM-{bits} with 12 octet ICV [RFC5282]",
             Encr.AES_GCM_16: f"AES-GCM-{bits} with 16 octet ICV [RFC5282]",
             Encr.AES_CCM_8: f"AES-CCM-{bits} with 8 octet ICV [RFC5282]",
             Encr.AES_CCM_12: f"AES-CCM-{bits} with 12 octet ICV [RFC5282]",
             Encr.AES_CCM_16: f"AES-CCM-{bits} with 16 octet ICV [RFC5282]",
             Encr.CHACHA20_POLY1305: "ChaCha20-Poly1305 [RFC7634]"}
    return names.get(Encr(tid), str(tid))


def _wireshark_integ(tid: int) -> str:
    from labctl.gateway.ike.v2.constants import Integ

    names = {Integ.NONE: "NONE [RFC4306]", Integ.HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
             Integ.HMAC_SHA1_160: "HMAC_SHA1_160 [RFC4595]",
             Integ.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
             Integ.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
             Integ.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]"}
    return names.get(Integ(tid), str(tid))

