"""Glue between the gateway's configuration / data plane and the two IKE engines.

The engines are version-specific sans-I/O cores with their own config and event types; this module maps the
gateway config onto them and their "IPsec SA up / down" events onto data-plane SAs, so the daemon and the rest
of the gateway see one shape.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labctl.gateway.config import ANY, ConnectionConfig
from labctl.gateway.ipsec.sad import Lifetime, SaParams

if TYPE_CHECKING:
    from labctl.gateway.keying import Binding, Keying

log = logging.getLogger("labctl.gateway.ike")

# The data plane keeps an SA a little past the lifetime IKE negotiated, so a rekey that is slightly late
# (retransmissions) does not cut traffic; IKE deletes it normally long before this.
HARD_LIFETIME_SLACK = 30.0


def real_wall_clock() -> dt.datetime:
    """The daemon's calendar time for certificate validity; the sans-I/O engines only see what they are given."""
    return dt.datetime.now(dt.UTC)


def _pem_files(c: ConnectionConfig) -> tuple[bytes, bytes, tuple[bytes, ...]]:
    """Private key, certificate (ours first, then intermediate CAs) and CA certificates of a
    certificate-authenticated connection (empty for PSK): the engines take PEM, not paths."""
    if c.auth.method != "pubkey":
        return b"", b"", ()
    return (Path(c.auth.key).read_bytes(), Path(c.auth.cert).read_bytes(),
            tuple(Path(p).read_bytes() for p in c.auth.ca))


class Driver:
    """One IKE engine (IKEv1 or IKEv2: both expose the same driver surface) plus its Wireshark key table."""

    def __init__(self, engine: Any, version: int) -> None:
        self.engine = engine
        self.version = version
        self.table = f"ikev{version}_decryption_table"

    def receive_datagram(self, data: bytes, src: tuple[str, int], dst: tuple[str, int], now: float) -> None:
        self.engine.receive_datagram(data, src, dst, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int], tuple[str, int]]]:
        out: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = self.engine.datagrams_to_send(now)
        return out

    def get_timer(self) -> float | None:
        t: float | None = self.engine.get_timer()
        return t

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)

    def next_event(self) -> Any:
        return self.engine.next_event()

    def status(self) -> Any:
        return self.engine.status()

    def initiate(self, conn: str, now: float) -> None:
        self.engine.initiate(conn, now)

    def terminate(self, conn: str, now: float) -> None:
        self.engine.terminate(conn, now)

    def acquire(self, conn: str, child: str, now: float) -> None:
        self.engine.acquire(conn, child, now)

    def rekey_child(self, conn: str, child: str, now: float) -> None:
        self.engine.rekey(conn, child, now)

    def sa_limit_reached(self, spi: int, now: float, hard: bool = False) -> None:
        self.engine.sa_limit_reached(spi, now, hard)

    def rekey_ike(self, conn: str, now: float) -> None:
        self.engine.rekey(conn, "ike", now)

    def key_table(self) -> list[str]:
        lines: list[str] = getattr(self.engine, f"{self.table}_lines")()
        return lines


def make_v2_engine(conns: list[ConnectionConfig], rng: Callable[[int], bytes],
                   wall_clock: Callable[[], dt.datetime] = real_wall_clock) -> Driver:
    from labctl.gateway.ike.v2.config import ChildConfig as V2Child
    from labctl.gateway.ike.v2.config import ConnectionConfig as V2Conn
    from labctl.gateway.ike.v2.engine import Ikev2Engine

    out = []
    for c in conns:
        children = []
        for ch in c.children:
            children.append(V2Child(
                name=ch.name, local_ts=ch.local_ts if ch.mode == "tunnel" else ("dynamic",),
                remote_ts=ch.remote_ts if ch.mode == "tunnel" else ("dynamic",), mode=ch.mode,
                protocol=ch.protection,  # type: ignore[arg-type]
                proposals=ch.proposals, rekey_time=ch.rekey_time, life_time=ch.life_time, rand_time=ch.rand_time,
                rekey_bytes=ch.rekey_bytes, rekey_packets=ch.rekey_packets, start_action=ch.start_action,
            ))
        key, cert, ca = _pem_files(c)
        out.append(V2Conn(
            name=c.name, local_addrs=(c.local,), remote_addrs=(c.remote,), local_id=c.local_id,
            remote_id=c.remote_id, auth=c.auth.method, psk=c.auth.psk,
            private_key_pem=key.decode(), cert_pem=cert.decode(), ca_pems=tuple(p.decode() for p in ca),
            proposals=c.proposals, children=tuple(children), version=2,
            start_action="start" if any(ch.start_action == "start" for ch in c.children) else "none",
            dpd_delay=c.dpd_delay, dpd_timeout=c.dpd_timeout, dpd_action=c.dpd_action, encap=c.encap,
            rekey_time=c.rekey_time, retransmit_timeout=c.retransmit_timeout,
        ))
    return Driver(Ikev2Engine(out, rng=rng, wall_clock=wall_clock), 2)


def make_v1_engine(conns: list[ConnectionConfig], rng: Callable[[int], bytes],
                   wall_clock: Callable[[], dt.datetime] = real_wall_clock) -> Driver:
    from labctl.gateway.ike.v1.config import Ikev1ChildConfig, Ikev1ConnectionConfig
    from labctl.gateway.ike.v1.engine import Ikev1Engine

    out = []
    for c in conns:
        children = []
        for ch in c.children:
            children.append(Ikev1ChildConfig(
                name=ch.name,
                local_ts=ch.local_ts if ch.mode == "tunnel" else (f"{c.local}/32",),
                remote_ts=ch.remote_ts if ch.mode == "tunnel" else
                ("0.0.0.0/0",) if c.remote == ANY else (f"{c.remote}/32",),  # %any: whoever authenticates
                mode=ch.mode, protocol=ch.protection,  # type: ignore[arg-type]
                proposals=ch.proposals, lifetime=ch.life_time or ch.rekey_time * 1.1,
                start_action=ch.start_action,
            ))
        key, cert, ca = _pem_files(c)
        out.append(Ikev1ConnectionConfig(
            name=c.name, local_addr=c.local, remote_addr=c.remote, local_id=c.local_id, remote_id=c.remote_id,
            mode=c.ike_mode, auth=c.auth.method, psk=c.auth.psk,
            private_key_pem=key, cert_pem=cert, ca_pems=ca,
            proposals=c.proposals, children=tuple(children), lifetime=c.rekey_time * 1.1, encap=c.encap,
            dpd_delay=c.dpd_delay, dpd_timeout=c.dpd_timeout, dpd_action=c.dpd_action, allow_legacy=c.allow_legacy,
            retransmit_timeout=c.retransmit_timeout,
        ))
    return Driver(Ikev1Engine(out, rng=rng, wall_clock=wall_clock), 1)


def _install(
    k: Keying, b: Binding, protocol: str, mode: str, direction: str, spi: int, encr: str | None, encr_key: bytes,
    integ: str | None, integ_key: bytes, src: str, dst: str, encap: tuple[int, int] | None, esn: bool,
    life_seconds: float, now: float, life_bytes: int = 0, life_packets: int = 0,
) -> None:
    # Volume limits live in the data plane, which counts the traffic; the soft ones make it ask IKE for a rekey
    # (RFC 4301 §4.4.2.1), the hard ones retire the SA. Time limits are the IKE engines' own timers.
    child = k.child_config(b.conn, b.child)
    rekey_bytes = child.rekey_bytes if child else 0
    rekey_packets = child.rekey_packets if child else 0
    params = SaParams(
        spi=spi, protocol=protocol, mode=mode, src=src, dst=dst,  # type: ignore[arg-type]
        encr=encr if protocol == "esp" else None, encr_key=encr_key if protocol == "esp" else b"",
        integ=integ, integ_key=integ_key, esn=esn, encap=encap,
        lifetime=Lifetime(
            soft_bytes=rekey_bytes, hard_bytes=life_bytes, soft_packets=rekey_packets, hard_packets=life_packets,
            hard_seconds=life_seconds + HARD_LIFETIME_SLACK if life_seconds else 0.0,
        ),
        reqid=b.reqid,
    )
    k.dataplane.add_sa(params, direction, now)  # type: ignore[arg-type]
    b.sas.append((spi, direction, dst))


def _remove(k: Keying, b: Binding | None, spi_in: int, spi_out: int) -> None:
    k.dataplane.remove_sa(spi_in, "in")
    k.dataplane.remove_sa(spi_out, "out")
    if b is not None:
        b.sas = [s for s in b.sas if not (s[0] == spi_in and s[1] == "in") and not (s[0] == spi_out and s[1] == "out")]
        if not b.sas:
            b.state = "down"


def _set_error(k: Keying, conn: str, reason: str, keep_earlier: bool = False) -> None:
    log.warning("%s: %s", conn, reason)
    for b in k.bindings:
        if b.conn == conn and not (keep_earlier and b.last_error):
            b.last_error = reason


def apply_ike_event(k: Keying, ev: Any, now: float) -> bool:
    """Apply one engine event; True when data-plane SAs changed."""
    name = type(ev).__name__
    if name == "ChildSaUp":
        b = k.binding_for(ev.conn, ev.child)
        if b is None:
            log.warning("child SA %s/%s is not in the configuration; ignored", ev.conn, ev.child)
            return False
        life = ev.life_time
        for direction, d in (("in", ev.inbound), ("out", ev.outbound)):
            _install(k, b, ev.protocol, ev.mode, direction, d.spi, d.encr, d.encr_key, d.integ, d.integ_key,
                     d.src, d.dst, d.encap, ev.esn, life, now, ev.life_bytes, ev.life_packets)
        b.state, b.last_error = "installed", ""
        log.info("%s/%s: %s %s SAs in 0x%08x out 0x%08x", ev.conn, ev.child, ev.protocol, ev.mode,
                 ev.inbound.spi, ev.outbound.spi)
        return True
    if name == "IpsecSaEstablished":
        b = k.binding_for(ev.connection, ev.child)
        if b is None:
            log.warning("IPsec SA %s/%s is not in the configuration; ignored", ev.connection, ev.child)
            return False
        for direction, d, src, dst in (("in", ev.inbound, ev.remote_addr, ev.local_addr),
                                       ("out", ev.outbound, ev.local_addr, ev.remote_addr)):
            encap = ev.encap if direction == "out" or ev.encap is None else (ev.encap[1], ev.encap[0])
            _install(k, b, ev.protocol, ev.mode, direction, d.spi, d.encr, d.encr_key, d.integ, d.integ_key,
                     src, dst, encap, False, ev.lifetime, now, (ev.life_kilobytes or 0) * 1024)
        b.state, b.last_error = "installed", ""
        log.info("%s/%s: %s %s SAs in 0x%08x out 0x%08x", ev.connection, ev.child, ev.protocol, ev.mode,
                 ev.inbound.spi, ev.outbound.spi)
        return True
    if name == "ChildSaDown":
        log.info("%s/%s: SAs in 0x%08x out 0x%08x deleted (%s)", ev.conn, ev.child, ev.spi_in, ev.spi_out, ev.reason)
        _remove(k, k.binding_for(ev.conn, ev.child), ev.spi_in, ev.spi_out)
        return True
    if name == "IpsecSaDeleted":
        log.info("%s/%s: SAs in 0x%08x out 0x%08x deleted (%s)", ev.connection, ev.child, ev.inbound_spi,
                 ev.outbound_spi, ev.reason)
        _remove(k, k.binding_for(ev.connection, ev.child), ev.inbound_spi, ev.outbound_spi)
        return True
    if name in ("IkeSaUp", "IsakmpSaEstablished"):
        log.info("%s: %s established (%s)", getattr(ev, "conn", None) or ev.connection,
                 "IKE SA" if name == "IkeSaUp" else f"ISAKMP SA, {ev.mode} mode", ev.algorithms)
        return True
    if name == "ChildSaRekeyed":
        return True
    if name == "SecurityWarning":
        log.warning("%s", getattr(ev, "message", None) or getattr(ev, "reason", ev))
        return False
    if name in ("AuthFailed", "ProposalMismatch", "PeerDead", "ChildSaFailed", "ExchangeFailed", "IkeSaDown",
                "IsakmpSaDeleted"):
        # The SA-down event that follows a failure says less than the failure itself: keep the first words.
        _set_error(k, str(getattr(ev, "conn", None) or getattr(ev, "connection", "")), ev.reason,
                   keep_earlier=name in ("IkeSaDown", "IsakmpSaDeleted"))
        return name in ("IkeSaDown", "IsakmpSaDeleted")
    log.info("IKE event %s", ev)
    return False
