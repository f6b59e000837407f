"""The IKEv1 engine: every ISAKMP SA, Quick Mode and IPsec SA pair of a gateway, driven sans-I/O.

The daemon feeds datagrams and time in and takes datagrams, events and one timer deadline out
(the same surface as the IKEv2 engine; see `labctl.gateway.ike.v1.__init__`).
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labctl.gateway.ike.certs import WallClock
from labctl.gateway.ike.v1.codec import (
    DecodeError,
    DeletePayload,
    Header,
    NotifyPayload,
    decode_message,
)
from labctl.gateway.ike.v1.config import Ikev1ChildConfig, Ikev1ConnectionConfig
from labctl.gateway.ike.v1.constants import (
    NATT_PORT,
    ExchangeType,
    NotifyType,
    ProtocolId,
)
from labctl.gateway.ike.v1.events import (
    Event,
    ExchangeFailed,
    IpsecSaDeleted,
    IpsecSaEstablished,
    IsakmpSaDeleted,
    PeerDead,
)
from labctl.gateway.ike.v1.phase1 import DELETED, IsakmpSa
from labctl.gateway.ike.v1.quick import (
    QM_DONE,
    QM_I1,
    QM_R2,
    ChildResult,
    QuickMode,
    QuickModeError,
    informational,
    verify_informational,
)

Rng = Callable[[int], bytes]
Endpoint = tuple[str, int]
HALF_OPEN_TIMEOUT = 30.0


@dataclass
class ChildSa:
    """An installed pair of IPsec SAs (one inbound, one outbound)."""

    connection: str
    result: ChildResult
    established: float
    rekey_at: float
    expire_at: float
    rekeying: bool = False
    peer: Endpoint = ("", 0)  # the ISAKMP peer it was negotiated with; tells a %any connection's clients apart

    @property
    def inbound_spi(self) -> int:
        return self.result.inbound.spi

    @property
    def outbound_spi(self) -> int:
        return self.result.outbound.spi


@dataclass
class DpdState:
    next_probe: float
    seq: int
    waiting_since: float | None = None


@dataclass
class _SaSlot:
    sa: IsakmpSa
    dpd: DpdState | None = None
    info_mids: set[int] = field(default_factory=set)
    rekeying: bool = False


class Ikev1Engine:
    def __init__(self, connections: list[Ikev1ConnectionConfig], rng: Rng = os.urandom,
                 wall_clock: WallClock | None = None) -> None:
        self._conns = {c.name: c for c in connections}
        self._rng = rng
        # Calendar time (timezone-aware UTC) for certificate validity (RFC 5280 §4.1.2.5); the monotonic `now`
        # cannot tell dates. Without it certificate authentication fails closed.
        self._wall_clock = wall_clock
        self._slots: dict[tuple[bytes, str], _SaSlot] = {}
        self._quick: dict[tuple[bytes, str, int], QuickMode] = {}
        self._children: list[ChildSa] = []
        self._pending: dict[str, list[tuple[Ikev1ChildConfig, int | None]]] = {}
        self._out: list[tuple[bytes, Endpoint, Endpoint]] = []
        self._events: deque[Event] = deque()
        self.counters: dict[str, int] = {"dropped": 0, "keepalives": 0}

    # ================================================================ the daemon's surface

    def receive_datagram(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> None:
        """One IKE message. On port 4500 the daemon strips the non-ESP marker first (RFC 3948 §2.2), as
        for IKEv2; NAT keepalives and ESP-in-UDP belong to the data plane and are only counted here."""
        if data == b"\xff":
            self.counters["keepalives"] += 1  # RFC 3948 §2.3
            return
        try:
            header = Header.decode(data)
        except DecodeError:
            self.counters["dropped"] += 1
            return
        slot = self._slots.get((header.icookie, src[0]))
        if slot is None:
            self._new_responder(data, header, src, dst, now)
            return
        sa = slot.sa
        # A retransmitted MM1/AM1 still has a zero responder cookie; the SA answers it from its cache.
        if header.rcookie != sa.rcookie and not (sa.initiator and sa.rcookie == bytes(8)) and not (
                not sa.initiator and header.rcookie == bytes(8) and data == sa.last_received):
            self.counters["dropped"] += 1
            return
        if header.message_id == 0 and header.exchange in (ExchangeType.MAIN, ExchangeType.AGGRESSIVE):
            was_established = sa.established
            replies = sa.receive(data, now)
            if sa.last_received == data:
                # RFC 3947 §4: an initiator behind a NAT sends MM5 from port 4500; the responder answers
                # (and keeps talking) to the port the accepted message came from.
                self._float(sa, src, dst)
            for reply in replies:
                self._send(sa, reply)
            self._collect(sa)
            if sa.state == DELETED:
                self._remove_sa(slot, None)
            elif sa.established and not was_established:
                self._on_phase1_done(slot, now)
        elif header.exchange == ExchangeType.QUICK:
            self._on_quick(slot, data, header, src, dst, now)
        elif header.exchange == ExchangeType.INFORMATIONAL:
            self._on_info(slot, data, header, src, dst, now)
        else:
            self.counters["dropped"] += 1

    def start(self, now: float) -> None:
        """Initiate every connection that has a child with start_action ``start``."""
        for conn in self._conns.values():
            if any(c.start_action == "start" for c in conn.children):
                self.initiate(conn.name, now)

    def initiate(self, name: str, now: float, child: str | None = None) -> None:
        """Bring up the connection's ISAKMP SA and the named child (default: every child not yet up)."""
        conn = self._conns[name]
        if not conn.children:
            self._ensure_phase1(conn, now)
        for c in conn.children:
            if child is not None and c.name != child:
                continue
            if any(ch.connection == name and ch.result.child == c.name for ch in self._children):
                continue
            self._want_child(conn, c, None, now)

    def acquire(self, name: str, child: str | None, now: float) -> None:
        """A packet hit a trap policy without an SA: negotiate that child (and phase 1 if needed)."""
        self.initiate(name, now, child)

    def terminate(self, name: str, now: float) -> None:
        """Delete every IPsec SA and ISAKMP SA of the connection, telling the peer (RFC 2408 §3.15)."""
        slot = self._current_slot(name)
        for ch in [c for c in self._children if c.connection == name]:
            self._delete_child(ch, "terminated locally", slot, now)
        for s in [s for s in self._slots.values() if s.sa.conn.name == name]:
            if s.sa.established:
                self._send_delete_isakmp(s, now)
            self._remove_sa(s, "terminated locally")
        self._pending.pop(name, None)

    def rekey(self, name: str, what: str, now: float) -> None:
        """``what``: ``ike`` (the ISAKMP SA), a child name, or ``child`` for every child (as for IKEv2)."""
        conn = self._conns[name]
        if what == "ike":
            self._start_phase1(conn, now, rekey=True)
            return
        for ch in [c for c in self._children if c.connection == name]:
            if what in ("child", ch.result.child) and not ch.rekeying:
                self._rekey_child(conn, ch, now)

    def sa_limit_reached(self, spi: int, now: float, hard: bool = False) -> None:
        """The data plane reports an IPsec SA near (soft: rekey) or past (hard: delete) its volume limit."""
        for ch in list(self._children):
            if spi in (ch.inbound_spi, ch.outbound_spi):
                if hard:
                    self._delete_child(ch, "volume limit reached", self._current_slot(ch.connection), now)
                elif not ch.rekeying:
                    self._rekey_child(self._conns[ch.connection], ch, now)
                return

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Endpoint, Endpoint]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines: list[float] = []
        for slot in self._slots.values():
            sa = slot.sa
            if sa.retransmit.deadline is not None:
                deadlines.append(sa.retransmit.deadline)
            if not sa.established and not sa.initiator:
                deadlines.append(sa.created + HALF_OPEN_TIMEOUT)
            elif sa.established_at is not None:
                deadlines.append(sa.established_at + sa.lifetime)
                if sa.initiator and not slot.rekeying and not sa.replaced:
                    deadlines.append(self._isakmp_rekey_at(sa))
            if slot.dpd is not None:
                deadlines.append(slot.dpd.next_probe)
                if slot.dpd.waiting_since is not None:
                    deadlines.append(slot.dpd.waiting_since + sa.conn.dpd_timeout)
        for qm in self._quick.values():
            if qm.retransmit.deadline is not None:
                deadlines.append(qm.retransmit.deadline)
        for ch in self._children:
            deadlines.append(ch.expire_at)
            if not ch.rekeying:
                deadlines.append(ch.rekey_at)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for slot in list(self._slots.values()):
            self._sa_timers(slot, now)
        for key, qm in list(self._quick.items()):
            datagrams, gave_up = qm.retransmit_due(now)
            for d in datagrams:
                self._send(qm.isakmp, d)
            if gave_up:
                del self._quick[key]
                self._events.append(ExchangeFailed(qm.isakmp.conn.name,
                                                   f"Quick Mode for {qm.child.name} got no answer"))
                for ch in self._children:
                    if qm.rekey_of is not None and ch.inbound_spi == qm.rekey_of:
                        ch.rekeying = False
        for ch in list(self._children):
            if now >= ch.expire_at:
                self._delete_child(ch, "lifetime expired", self._current_slot(ch.connection), now)
            elif now >= ch.rekey_at and not ch.rekeying and not _is_any(self._conns[ch.connection]):
                # A %any responder cannot reach its clients first: they rekey (its deadline is the later one).
                self._rekey_child(self._conns[ch.connection], ch, now)

    def status(self) -> dict[str, Any]:
        """JSON-ready: the ISAKMP SAs and, separately, each IPsec SA pair (RFC 2409's two phases)."""
        isakmp = []
        for slot in self._slots.values():
            sa = slot.sa
            isakmp.append({
                "connection": sa.conn.name,
                "initiator_cookie": sa.icookie.hex(),
                "responder_cookie": sa.rcookie.hex(),
                "role": "initiator" if sa.initiator else "responder",
                "mode": sa.mode,
                "state": sa.state,
                "algorithms": sa.suite.name if sa.suite else None,
                "auth": sa.conn.auth,
                "local": f"{sa.local[0]}[{sa.local[1]}]",
                "remote": f"{sa.remote[0]}[{sa.remote[1]}]",
                "nat": {"local": sa.nat.local, "remote": sa.nat.remote, "version": sa.nat.version},
                "dpd": sa.dpd,
                "lifetime": sa.lifetime,
                "established_at": sa.established_at,
                "dropped": sa.drops,
            })
        ipsec = []
        for ch in self._children:
            r = ch.result
            ipsec.append({
                "connection": ch.connection,
                "child": r.child,
                "protocol": r.protocol,
                "mode": r.mode,
                "encap": r.udp,
                "inbound_spi": f"{r.inbound.spi:08x}",
                "outbound_spi": f"{r.outbound.spi:08x}",
                "algorithms": r.suite.name,
                "local_ts": str(r.local_ts),
                "remote_ts": str(r.remote_ts),
                "lifetime": r.lifetime,
                "life_kilobytes": r.kilobytes,
                "established_at": ch.established,
                "rekey_at": ch.rekey_at,
                "expire_at": ch.expire_at,
            })
        return {"isakmp_sas": isakmp, "ipsec_sas": ipsec, "counters": dict(self.counters)}

    def ikev1_decryption_table_lines(self) -> list[str]:
        """Wireshark `ikev1_decryption_table` UAT rows: initiator cookie, encryption key (hex)."""
        lines = []
        for slot in self._slots.values():
            p = slot.sa.protector
            if p is not None:
                lines.append(f"{slot.sa.icookie.hex()},{p.wireshark_key().hex()}")
        return lines

    # ================================================================ phase 1

    def _new_responder(self, data: bytes, header: Header, src: Endpoint, dst: Endpoint, now: float) -> None:
        if (header.rcookie != bytes(8) or header.message_id != 0
                or header.exchange not in (ExchangeType.MAIN, ExchangeType.AGGRESSIVE)):
            self.counters["dropped"] += 1
            return
        conn = self._find_conn(src[0], dst[0])
        if conn is None:
            self.counters["dropped"] += 1
            return
        sa = IsakmpSa(conn, False, header.icookie, dst, src, now, self._rng, wall_clock=self._wall_clock)
        sa.rcookie = self._rng(8)
        slot = _SaSlot(sa)
        for reply in sa.respond_first(data, now):
            self._send(sa, reply)
        self._collect(sa)
        if sa.state != DELETED:
            self._slots[(sa.icookie, src[0])] = slot

    def _find_conn(self, remote: str, local: str) -> Ikev1ConnectionConfig | None:
        for c in self._conns.values():
            if c.remote_addr in (remote, "%any", "0.0.0.0") and c.local_addr in (local, "%any", "0.0.0.0"):
                return c
        return None

    def _start_phase1(self, conn: Ikev1ConnectionConfig, now: float, rekey: bool = False) -> _SaSlot:
        local = (conn.local_addr, conn.local_port)
        remote = (conn.remote_addr, conn.remote_port)
        sa = IsakmpSa(conn, True, self._rng(8), local, remote, now, self._rng, wall_clock=self._wall_clock)
        sa.send_initial_contact = not any(s.sa.conn.name == conn.name and s.sa.established
                                          for s in self._slots.values())
        slot = _SaSlot(sa)
        self._slots[(sa.icookie, remote[0])] = slot
        if rekey:
            for s in self._slots.values():
                if s.sa.conn.name == conn.name and s is not slot:
                    s.rekeying = True
        for m in sa.start(now):
            self._send(sa, m)
        self._collect(sa)
        return slot

    def _ensure_phase1(self, conn: Ikev1ConnectionConfig, now: float) -> _SaSlot:
        for s in self._slots.values():
            if s.sa.conn.name == conn.name and s.sa.state != DELETED and not s.sa.replaced:
                return s
        return self._start_phase1(conn, now)

    def _current_slot(self, name: str) -> _SaSlot | None:
        best: _SaSlot | None = None
        for s in self._slots.values():
            if s.sa.conn.name == name and s.sa.established and not s.sa.replaced:
                if best is None or (s.sa.established_at or 0) > (best.sa.established_at or 0):
                    best = s
        return best

    def _isakmp_rekey_at(self, sa: IsakmpSa) -> float:
        assert sa.established_at is not None  # noqa: S101
        return sa.established_at + sa.lifetime * (1 - sa.conn.rekey_margin)

    def _on_phase1_done(self, slot: _SaSlot, now: float) -> None:
        sa = slot.sa
        name = sa.conn.name
        if sa.conn.dpd_delay > 0 and sa.dpd:
            slot.dpd = DpdState(now + sa.conn.dpd_delay, int.from_bytes(self._rng(4), "big") & 0x7FFFFFFF)
        for other in list(self._slots.values()):
            if other is slot or other.sa.conn.name != name or not _same_peer(sa.conn, other.sa.remote, sa.remote):
                continue
            if sa.initial_contact and not other.rekeying:
                # RFC 2407 §4.6.3.3: the peer restarted; whatever we held with it is stale.
                for ch in self._children_of(name, sa):
                    self._drop_child(ch, "peer sent INITIAL-CONTACT")
                self._remove_sa(other, "peer sent INITIAL-CONTACT")
            elif other.sa.established:
                # A rekeyed ISAKMP SA replaces the older one (IKEv1 IPsec SAs survive it).
                other.sa.replaced = True
                self._send_delete_isakmp(other, now)
                self._remove_sa(other, "replaced by a new ISAKMP SA")
        for child, rekey_of in self._pending.pop(name, []):
            self._start_quick(slot, child, rekey_of, now)

    def _send_delete_isakmp(self, slot: _SaSlot, now: float) -> None:
        sa = slot.sa
        if sa.protector is None or not sa.protector.phase1_done:
            return
        d = DeletePayload(protocol=ProtocolId.ISAKMP, spis=[sa.icookie + sa.rcookie], spi_size=16)
        self._send(sa, informational(sa, self._new_mid(), [d]))

    def _remove_sa(self, slot: _SaSlot, reason: str | None) -> None:
        sa = slot.sa
        for k, v in list(self._slots.items()):
            if v is slot:
                del self._slots[k]
        for qk in [qk for qk, q in self._quick.items() if q.isakmp is sa]:
            del self._quick[qk]
        if reason is not None and sa.established_at is not None:
            self._events.append(IsakmpSaDeleted(sa.conn.name, sa.icookie, sa.rcookie, reason))
        sa.state = DELETED

    def _sa_timers(self, slot: _SaSlot, now: float) -> None:
        sa = slot.sa
        datagrams, gave_up = sa.retransmit_due(now)
        for d in datagrams:
            self._send(sa, d)
        self._collect(sa)
        if gave_up:
            self._remove_sa(slot, None)
            return
        if not sa.established:
            # Our own attempts end with their retransmissions; a responder's wait is bounded here.
            if not sa.initiator and now >= sa.created + HALF_OPEN_TIMEOUT:
                self._events.append(ExchangeFailed(sa.conn.name, "phase 1 did not complete in time"))
                self._remove_sa(slot, None)
            return
        assert sa.established_at is not None  # noqa: S101
        if now >= sa.established_at + sa.lifetime:
            self._send_delete_isakmp(slot, now)
            self._remove_sa(slot, "lifetime expired")
            return
        if sa.initiator and not slot.rekeying and not sa.replaced and now >= self._isakmp_rekey_at(sa):
            slot.rekeying = True
            self._start_phase1(sa.conn, now, rekey=True)
        self._dpd_timers(slot, now)

    # ================================================================ DPD (RFC 3706)

    def _dpd_timers(self, slot: _SaSlot, now: float) -> None:
        dpd = slot.dpd
        sa = slot.sa
        if dpd is None:
            return
        if dpd.waiting_since is not None and now >= dpd.waiting_since + sa.conn.dpd_timeout:
            name = sa.conn.name
            action = sa.conn.dpd_action
            self._events.append(PeerDead(name, action, f"peer {sa.remote[0]} did not answer DPD (R-U-THERE) "
                                                       f"within {sa.conn.dpd_timeout:g}s; action {action}"))
            for ch in self._children_of(name, sa):
                self._drop_child(ch, "peer dead (DPD)")
            self._remove_sa(slot, "peer dead (DPD)")
            if action == "restart" and not _is_any(sa.conn):
                self.initiate(name, now)
            return
        if now >= dpd.next_probe:
            dpd.seq = (dpd.seq + 1) & 0xFFFFFFFF
            if dpd.waiting_since is None:
                dpd.waiting_since = now
            dpd.next_probe = now + sa.conn.dpd_delay
            self._send_notify(sa, NotifyType.R_U_THERE, struct.pack("!I", dpd.seq))

    def _send_notify(self, sa: IsakmpSa, notify: NotifyType, data: bytes = b"",
                     protocol: int = ProtocolId.ISAKMP, spi: bytes | None = None) -> None:
        spi = sa.icookie + sa.rcookie if spi is None else spi
        n = NotifyPayload(notify_type=notify, protocol=protocol, spi=spi, data=data)
        self._send(sa, informational(sa, self._new_mid(), [n]))

    # ================================================================ phase 2

    def _want_child(self, conn: Ikev1ConnectionConfig, child: Ikev1ChildConfig, rekey_of: int | None,
                    now: float) -> None:
        slot = self._current_slot(conn.name)
        if slot is not None:
            self._start_quick(slot, child, rekey_of, now)
            return
        pending = self._pending.setdefault(conn.name, [])
        if all(c.name != child.name for c, _ in pending):
            pending.append((child, rekey_of))
        self._ensure_phase1(conn, now)

    def _start_quick(self, slot: _SaSlot, child: Ikev1ChildConfig, rekey_of: int | None, now: float) -> None:
        sa = slot.sa
        for qm in self._quick.values():
            if qm.isakmp is sa and qm.child.name == child.name and qm.initiator and qm.state == QM_I1:
                return  # already under way
        qm = QuickMode(sa, self._new_mid(), True, child, self._rng, rekey_of=rekey_of)
        self._quick[(sa.icookie, sa.remote[0], qm.mid)] = qm
        self._send(sa, qm.start(now, sa.conn.allow_legacy))

    def _rekey_child(self, conn: Ikev1ConnectionConfig, ch: ChildSa, now: float) -> None:
        child = next((c for c in conn.children if c.name == ch.result.child), None)
        if child is None:
            return
        ch.rekeying = True
        self._want_child(conn, child, ch.inbound_spi, now)

    def _on_quick(self, slot: _SaSlot, data: bytes, header: Header, src: Endpoint, dst: Endpoint,
                  now: float) -> None:
        sa = slot.sa
        if not sa.established or sa.protector is None or not header.encrypted:
            self.counters["dropped"] += 1
            return
        key = (sa.icookie, sa.remote[0], header.message_id)
        qm = self._quick.get(key)
        if qm is not None and data == qm.last_received:
            if qm.last_reply:
                self._send(sa, qm.last_reply)  # duplicate: answer again, do not re-process
            return
        if qm is not None and qm.state == QM_DONE:
            return
        try:
            msg = sa.protector.decrypt(data)
        except DecodeError:
            self.counters["dropped"] += 1
            return
        self._float(sa, src, dst)
        try:
            if qm is None:
                conn = sa.conn
                if not conn.children:
                    raise QuickModeError(NotifyType.INVALID_ID_INFORMATION, "no children configured")
                qm = QuickMode(sa, header.message_id, False, conn.children[0], self._rng)
                reply = qm.respond(msg, data, now, list(conn.children), conn.allow_legacy)
                self._quick[key] = qm
                self._send(sa, reply)
            elif qm.initiator and qm.state == QM_I1:
                self._send(sa, qm.on_qm2(msg, data, now))
                self._install(slot, qm, now)
            elif not qm.initiator and qm.state == QM_R2:
                qm.on_qm3(msg, data, now)
                self._install(slot, qm, now)
            else:
                self.counters["dropped"] += 1
        except QuickModeError as exc:
            self._events.append(ExchangeFailed(sa.conn.name, exc.reason))
            self._send_notify(sa, exc.notify, protocol=ProtocolId.ESP, spi=b"")
            self._quick.pop(key, None)
        except DecodeError:
            self.counters["dropped"] += 1

    def _install(self, slot: _SaSlot, qm: QuickMode, now: float) -> None:
        sa = slot.sa
        r = qm.result
        assert r is not None  # noqa: S101
        margin = qm.child.rekey_margin if qm.initiator else qm.child.rekey_margin / 2
        # The exchange's initiator rekeys first; the responder's later deadline is a fallback only.
        ch = ChildSa(sa.conn.name, r, now, now + r.lifetime * (1 - margin), now + r.lifetime, peer=sa.remote)
        self._children.append(ch)
        self._events.append(IpsecSaEstablished(
            connection=sa.conn.name,
            child=r.child,
            protocol=r.protocol,
            mode=r.mode,
            inbound=r.inbound,
            outbound=r.outbound,
            local_addr=sa.local[0],
            remote_addr=sa.remote[0],
            encap=(sa.local[1], sa.remote[1]) if r.udp else None,
            local_ts=(str(r.local_ts),),
            remote_ts=(str(r.remote_ts),),
            lifetime=r.lifetime,
            life_kilobytes=r.kilobytes,
            pfs_group=r.suite.pfs_group,
            nat_oa_local=r.nat_oa_local,
            nat_oa_remote=r.nat_oa_remote,
            replaces_inbound_spi=qm.rekey_of,
        ))
        if qm.rekey_of is not None:
            old = next((c for c in self._children if c.inbound_spi == qm.rekey_of), None)
            if old is not None:
                self._delete_child(old, "rekeyed", slot, now)

    def _delete_child(self, ch: ChildSa, reason: str, slot: _SaSlot | None, now: float) -> None:
        if slot is not None and slot.sa.established:
            # RFC 2408 §3.15: we name the SA by the SPI we chose, i.e. our inbound SPI.
            proto = ProtocolId.AH if ch.result.protocol == "ah" else ProtocolId.ESP
            d = DeletePayload(protocol=proto, spis=[ch.inbound_spi.to_bytes(4, "big")], spi_size=4)
            self._send(slot.sa, informational(slot.sa, self._new_mid(), [d]))
        self._drop_child(ch, reason)

    def _drop_child(self, ch: ChildSa, reason: str) -> None:
        if ch in self._children:
            self._children.remove(ch)
            self._events.append(IpsecSaDeleted(ch.connection, ch.result.child, ch.result.protocol,
                                               ch.inbound_spi, ch.outbound_spi, reason))

    # ================================================================ informational

    def _on_info(self, slot: _SaSlot, data: bytes, header: Header, src: Endpoint, dst: Endpoint,
                 now: float) -> None:
        sa = slot.sa
        if not header.encrypted:
            self._on_plain_info(slot, data)
            return
        if sa.protector is None or not sa.protector.phase1_done:
            self.counters["dropped"] += 1
            return
        if header.message_id in slot.info_mids:
            return  # a retransmitted notification: already acted upon
        try:
            msg = sa.protector.decrypt(data)
        except DecodeError:
            self.counters["dropped"] += 1
            return
        sa.protector.forget(header.message_id)
        if not verify_informational(sa, msg):
            self.counters["dropped"] += 1
            return
        slot.info_mids.add(header.message_id)
        self._float(sa, src, dst)
        for p in msg.payloads[1:]:
            if isinstance(p, NotifyPayload):
                self._on_notify(slot, p, now)
            elif isinstance(p, DeletePayload):
                self._on_delete(slot, p, now)

    def _on_plain_info(self, slot: _SaSlot, data: bytes) -> None:
        """An unprotected error notify, before the ISAKMP SA is up: report it in plain words."""
        sa = slot.sa
        if sa.established:
            self.counters["dropped"] += 1
            return
        try:
            msg = decode_message(data)
        except DecodeError:
            self.counters["dropped"] += 1
            return
        for n in msg.all(NotifyPayload):
            try:
                name = NotifyType(n.notify_type).name
            except ValueError:
                name = str(n.notify_type)
            hint = " — check the pre-shared key" if name in ("INVALID_HASH_INFORMATION", "AUTHENTICATION_FAILED",
                                                            "PAYLOAD_MALFORMED") else ""
            self._events.append(ExchangeFailed(sa.conn.name, f"the peer refused phase 1: {name}{hint}"))
        self._remove_sa(slot, None)

    def _on_notify(self, slot: _SaSlot, n: NotifyPayload, now: float) -> None:
        sa = slot.sa
        if n.notify_type == NotifyType.R_U_THERE and len(n.data) == 4:
            self._send_notify(sa, NotifyType.R_U_THERE_ACK, n.data)  # RFC 3706 §5
        elif n.notify_type == NotifyType.R_U_THERE_ACK and len(n.data) == 4:
            if slot.dpd is not None and struct.unpack("!I", n.data)[0] == slot.dpd.seq:
                slot.dpd.waiting_since = None
                slot.dpd.next_probe = now + sa.conn.dpd_delay
        elif n.notify_type < 16384:
            try:
                name = NotifyType(n.notify_type).name
            except ValueError:
                name = str(n.notify_type)
            self._events.append(ExchangeFailed(sa.conn.name, f"the peer reported {name}"))

    def _on_delete(self, slot: _SaSlot, d: DeletePayload, now: float) -> None:
        sa = slot.sa
        if d.protocol == ProtocolId.ISAKMP:
            if any(spi[:8] == sa.icookie for spi in d.spis):
                name = sa.conn.name
                others = [s for s in self._slots.values() if s is not slot and s.sa.conn.name == name
                          and s.sa.established and _same_peer(sa.conn, s.sa.remote, sa.remote)]
                if not others:
                    for ch in self._children_of(name, sa):
                        self._drop_child(ch, "peer deleted the ISAKMP SA")
                self._remove_sa(slot, "deleted by the peer")
            return
        proto = "ah" if d.protocol == ProtocolId.AH else "esp"
        for spi in d.spis:
            value = int.from_bytes(spi, "big")
            for ch in [c for c in self._children if c.connection == sa.conn.name and c.result.protocol == proto]:
                if value in (ch.outbound_spi, ch.inbound_spi):
                    self._drop_child(ch, "deleted by the peer")

    # ================================================================ plumbing

    def _new_mid(self) -> int:
        while True:
            mid = int.from_bytes(self._rng(4), "big")
            if mid:
                return mid

    def _children_of(self, name: str, sa: IsakmpSa) -> list[ChildSa]:
        """The connection's IPsec SAs with this ISAKMP SA's peer (all of them unless the connection is %any)."""
        return [c for c in self._children if c.connection == name and _same_peer(sa.conn, c.peer, sa.remote)]

    def _float(self, sa: IsakmpSa, src: Endpoint, dst: Endpoint) -> None:
        """Follow the peer to its current address/port after an authenticated message (RFC 3947 §4)."""
        # Behind a NAT the peer's 4500 arrives as whatever port the NAT picked: what counts is that it
        # reached our 4500.
        if src != sa.remote and (src[1] == NATT_PORT or dst[1] == NATT_PORT):
            sa.remote = src
            sa.local = (sa.local[0], dst[1])

    def _send(self, sa: IsakmpSa, message: bytes) -> None:
        # From port 4500 the daemon prepends the non-ESP marker (RFC 3947 §4, RFC 3948 §2.2).
        self._out.append((message, sa.local, sa.remote))

    def _collect(self, sa: IsakmpSa) -> None:
        self._events.extend(sa.events)
        sa.events.clear()


def _is_any(conn: Ikev1ConnectionConfig) -> bool:
    return conn.remote_addr in ("%any", "0.0.0.0")


def _same_peer(conn: Ikev1ConnectionConfig, a: Endpoint, b: Endpoint) -> bool:
    """One peer per connection, except %any (remote access): there, each address/port is a client of its own."""
    return not _is_any(conn) or a == b


__all__ = ["ChildSa", "Ikev1Engine"]
