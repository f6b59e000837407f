"""Where keys come from: static configuration or the IKE engines, feeding one data plane.

This module turns the gateway configuration into SPD policies, installs manually keyed SAs, drives the
IKEv1/IKEv2 engines and converts their "child SA up/down" events into data-plane SAs. It holds no sockets: the
daemon gives it datagrams and time, and asks it what to send.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labctl.gateway.config import ANY, ChildConfig, ConnectionConfig, GatewayConfig, ManualKeys, ManualTunnel
from labctl.gateway.ipsec.dataplane import DataPlane
from labctl.gateway.ipsec.events import Acquire, HardExpired, SeqExhausted, SoftExpired
from labctl.gateway.ipsec.sad import Lifetime, SaParams
from labctl.gateway.ipsec.spd import Policy

if TYPE_CHECKING:
    from labctl.gateway.ike_adapter import Driver

log = logging.getLogger("labctl.gateway.keying")

NATT_PORT = 4500
NAT_KEEPALIVE_INTERVAL = 20.0  # RFC 3948 §2.3 suggests 20 s


@dataclass
class Binding:
    """One protected flow set: a manual tunnel or one IKE child, with the data-plane reqid that ties them."""

    reqid: int
    conn: str
    child: str
    version: int  # 0 manual, 1 IKEv1, 2 IKEv2
    local: str
    remote: str
    mode: str
    protocols: tuple[str, ...]  # outbound order for the data plane: ("esp",), ("ah",), ("esp", "ah")
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    start_action: str = "start"
    encap: bool = False
    sas: list[tuple[int, str, str]] = field(default_factory=list)  # (spi, direction, dst)
    state: str = "down"
    last_error: str = ""


def _host_prefix(address: str) -> str:
    # A %any responder (remote access) serves every peer; its SAs, not its policy, tell the peers apart.
    return "0.0.0.0/0" if address == ANY else f"{address}/32"


def _outbound_order(protection: str) -> tuple[str, ...]:
    """The order the data plane applies a protection's SAs outbound: AH+ESP is ESP first, then AH over it
    (RFC 4301 §4.5)."""
    return ("esp", "ah") if protection == "ah+esp" else (protection,)


def _policy_pairs(b: Binding) -> Iterator[tuple[str, str]]:
    if b.mode == "transport":
        # Transport mode protects traffic between the two hosts themselves (RFC 4301 §4.1).
        locals_ = b.local_ts or (f"{b.local}/32",)
        remotes = b.remote_ts or (_host_prefix(b.remote),)
    else:
        locals_, remotes = b.local_ts, b.remote_ts
    for lts in locals_:
        for rts in remotes:
            yield lts, rts


class Keying:
    def __init__(self, cfg: GatewayConfig, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.cfg = cfg
        self.rng = rng
        self.dataplane = DataPlane(rng=rng)
        self.bindings: list[Binding] = []
        self.engines: dict[int, Driver] = {}
        self.events_log: list[str] = []
        self.ike_status_extra: dict[str, Any] = {}
        self._last_keepalive = 0.0
        self.internal_errors = 0
        policies: list[Policy] = []
        for reqid, t in enumerate(cfg.manual, start=1):
            b = Binding(
                reqid=reqid, conn=t.name, child=t.name, version=0, local=t.local, remote=t.remote, mode=t.mode,
                protocols=_outbound_order(t.protection),
                local_ts=t.local_ts if t.mode == "tunnel" else (), remote_ts=t.remote_ts if t.mode == "tunnel" else (),
                encap=t.encap,
            )
            self.bindings.append(b)
        next_reqid = len(self.bindings) + 1
        for c in cfg.connections:
            for ch in c.children:
                self.bindings.append(Binding(
                    reqid=next_reqid, conn=c.name, child=ch.name, version=c.version, local=c.local, remote=c.remote,
                    mode=ch.mode, protocols=_outbound_order(ch.protection),
                    local_ts=ch.local_ts if ch.mode == "tunnel" else (),
                    remote_ts=ch.remote_ts if ch.mode == "tunnel" else (),
                    start_action=ch.start_action, encap=c.encap,
                ))
                next_reqid += 1
        for b in self.bindings:
            for i, (lts, rts) in enumerate(_policy_pairs(b)):
                policies.append(Policy(
                    name=f"{b.conn}/{b.child}/{i}", local=lts, remote=rts, action="protect",
                    reqid=b.reqid, protocols=b.protocols,
                ))
        self.dataplane.set_policies(policies)

    # --- what the daemon needs for routing -----------------------------------------------------------------
    def tunnel_prefixes(self) -> list[str]:
        return sorted({ts for b in self.bindings if b.mode == "tunnel" for ts in b.remote_ts})

    def transport_peers(self) -> list[str]:
        # No route for %any: that would pull all of our traffic into the TUN device; remote-access services
        # (L2TP) send through their peer's SA themselves (DataPlane.outbound_via).
        return sorted({f"{b.remote}/32" for b in self.bindings if b.mode == "transport" and b.remote != ANY})

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        for t, b in zip(self.cfg.manual, self.bindings, strict=False):
            self._install_manual(t, b, now)
        v1 = [c for c in self.cfg.connections if c.version == 1]
        v2 = [c for c in self.cfg.connections if c.version == 2]
        if v2:
            from labctl.gateway.ike_adapter import make_v2_engine

            self.engines[2] = make_v2_engine(v2, self.rng)
        if v1:
            from labctl.gateway.ike_adapter import make_v1_engine

            self.engines[1] = make_v1_engine(v1, self.rng)
        for c in self.cfg.connections:
            if any(ch.start_action == "start" for ch in c.children):
                self.engines[c.version].initiate(c.name, now)

    def stop(self, now: float) -> None:
        for c in self.cfg.connections:
            self.engines[c.version].terminate(c.name, now)

    def _install_manual(self, t: ManualTunnel, b: Binding, now: float) -> None:
        encap = (NATT_PORT, NATT_PORT) if t.encap else None
        for proto, keys in (("esp", t.esp), ("ah", t.ah)):
            if keys is None:
                continue
            for direction in ("out", "in"):
                params = _manual_params(t, proto, keys, direction, b.reqid, encap)
                self.dataplane.add_sa(params, direction, now)
                b.sas.append((params.spi, direction, params.dst))
        b.state = "installed"

    # --- IKE plumbing --------------------------------------------------------------------------------------
    def receive_ike(self, data: bytes, src: tuple[str, int], dst: tuple[str, int], now: float) -> None:
        # RFC 7296 §3.1 / RFC 2408 §3.1: the major version is the high nibble of byte 17.
        if len(data) < 28:
            return
        version = data[17] >> 4
        engine = self.engines.get(version)
        if engine is None:
            return
        try:
            engine.receive_datagram(data, src, dst, now)
        except Exception:  # noqa: BLE001 - the engines count bad packets; a bug there must not kill the daemon
            self.internal_errors += 1
            log.exception("IKEv%d engine failed on a datagram from %s:%d", version, *src)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int], tuple[str, int]]]:
        out: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
        for engine in self.engines.values():
            out.extend(engine.datagrams_to_send(now))
        return out

    def get_timer(self) -> float | None:
        deadlines = [t for e in self.engines.values() if (t := e.get_timer()) is not None]
        dp = self.dataplane.next_deadline()
        if dp is not None:
            deadlines.append(dp)
        return min(deadlines) if deadlines else None

    def handle_timers(self, now: float) -> bool:
        changed = False
        for engine in self.engines.values():
            t = engine.get_timer()
            if t is not None and t <= now:
                try:
                    engine.handle_timer(now)
                except Exception:  # noqa: BLE001 - see receive_ike
                    self.internal_errors += 1
                    log.exception("IKEv%d engine failed in its timer", engine.version)
                changed = True
        t = self.dataplane.next_deadline()
        if t is not None and t <= now:
            self.dataplane.handle_timer(now)
            changed = True
        return changed

    def keepalives(self, now: float) -> list[tuple[bytes, str, int]]:
        if now - self._last_keepalive < NAT_KEEPALIVE_INTERVAL:
            return []
        self._last_keepalive = now
        return [(b"\xff", b.remote, NATT_PORT) for b in self.bindings if b.encap and b.sas]

    def process_events(self, now: float) -> bool:
        """Apply pending data-plane and IKE events; True when the SA set changed (key tables need rewriting)."""
        from labctl.gateway.ike_adapter import apply_ike_event

        changed = False
        for ev in self.dataplane.poll_events():
            if isinstance(ev, Acquire):
                b = self._binding(ev.reqid)
                if b is not None and b.version and b.start_action == "trap" and b.state != "installed":
                    self.engines[b.version].acquire(b.conn, b.child, now)
            elif isinstance(ev, SoftExpired | SeqExhausted):
                b = self._binding(ev.reqid)
                if b is not None and b.version:
                    # RFC 4301 §4.4.2.1: a soft lifetime (or a sequence number about to wrap, RFC 4303 §3.3.3)
                    # asks for a new SA.
                    self.engines[b.version].sa_limit_reached(ev.spi, now)
            elif isinstance(ev, HardExpired):
                b = self._binding(ev.reqid)
                if b is not None:
                    b.sas = [s for s in b.sas if s[0] != ev.spi]
                    if b.version:
                        self.engines[b.version].sa_limit_reached(ev.spi, now, hard=True)
                    changed = True
        for engine in self.engines.values():
            while (ev := engine.next_event()) is not None:
                self.events_log.append(f"{type(ev).__name__}: {getattr(ev, 'reason', '')}".rstrip(": "))
                del self.events_log[:-50]
                try:
                    if apply_ike_event(self, ev, now):
                        changed = True
                except Exception:  # noqa: BLE001 - one bad event must not take every tunnel down with the daemon
                    self.internal_errors += 1
                    log.exception("could not apply IKE event %s", type(ev).__name__)
        return changed

    def _binding(self, reqid: int) -> Binding | None:
        return next((b for b in self.bindings if b.reqid == reqid), None)

    def binding_for(self, conn: str, child: str) -> Binding | None:
        return next((b for b in self.bindings if b.conn == conn and b.child == child), None)

    def child_config(self, conn: str, child: str) -> ChildConfig | None:
        c = self.connection(conn)
        return next((ch for ch in c.children if ch.name == child), None) if c else None

    def connection(self, name: str) -> ConnectionConfig | None:
        return next((c for c in self.cfg.connections if c.name == name), None)

    # --- control -------------------------------------------------------------------------------------------
    def command(self, cmd: str, name: str, what: str, now: float) -> dict[str, Any]:
        conn = self.connection(name)
        if conn is None:
            known = ", ".join(c.name for c in self.cfg.connections) or "none configured"
            return {"ok": False, "error": f"no IKE connection named {name!r} (known: {known})"}
        engine = self.engines[conn.version]
        if cmd == "rekey":
            if what == "ike":
                engine.rekey_ike(name, now)
            else:
                for ch in conn.children:
                    engine.rekey_child(name, ch.name, now)
        elif cmd == "initiate":
            engine.initiate(name, now)
        else:
            engine.terminate(name, now)
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        return {
            "bindings": [
                {
                    "name": b.conn if b.conn == b.child else f"{b.conn}/{b.child}",
                    "keying": {0: "manual", 1: "IKEv1", 2: "IKEv2"}[b.version],
                    "state": b.state,
                    "mode": b.mode,
                    "protection": "+".join(reversed(b.protocols)),
                    "local": b.local,
                    "remote": b.remote,
                    "local_ts": list(b.local_ts) or [f"{b.local}/32"],
                    "remote_ts": list(b.remote_ts) or [_host_prefix(b.remote)],
                    "encap": b.encap,
                    "last_error": b.last_error,
                }
                for b in self.bindings
            ],
            "ike": {f"v{v}": e.status() for v, e in self.engines.items()},
            "events": list(self.events_log),
            "internal_errors": self.internal_errors,
            "dataplane": self.dataplane.counters(),
        }

    def key_tables(self) -> dict[str, list[str]]:
        tables = {"esp_sa": self.dataplane.esp_sa_uat_lines()}
        for engine in self.engines.values():
            tables[engine.table] = engine.key_table()
        return tables


def _manual_params(
    t: ManualTunnel, proto: str, keys: ManualKeys, direction: str, reqid: int, encap: tuple[int, int] | None
) -> SaParams:
    out = direction == "out"
    return SaParams(
        spi=keys.spi_out if out else keys.spi_in,
        protocol=proto,  # type: ignore[arg-type]
        mode=t.mode,
        src=t.local if out else t.remote,
        dst=t.remote if out else t.local,
        encr=keys.encr if proto == "esp" else None,
        encr_key=(keys.encr_key_out if out else keys.encr_key_in) if proto == "esp" else b"",
        integ=keys.integ,
        integ_key=keys.integ_key_out if out else keys.integ_key_in,
        esn=t.esn,
        replay_window=t.replay_window,
        encap=encap,
        lifetime=Lifetime(),
        reqid=reqid,
    )
