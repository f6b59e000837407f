"""The L2TP service's I/O: the PPP TUN device, the clear-L2TP trap socket, addresses and routes.

The daemon calls ``start`` once (it registers our descriptors in its poll loop), offers decapsulated packets
to ``io.service.take_udp/take_raw``, calls ``tick(now)`` once per loop turn and ``flush()`` after offering.

Fail closed, as for the IPsec TUN device (netsetup): beside each route into the PPP TUN device sits a
blackhole route with a worse metric, so when the gateway stops, traffic for the PPP users (on the LNS) or for
LAN-B (on a client) is dropped instead of leaving in clear by the default route.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from labctl.gateway.config import ANY
from labctl.gateway.ipsec.dataplane import OutboundResult
from labctl.gateway.l2tp import PORT
from labctl.gateway.l2tp_service import AddressDown, AddressUp, L2tpService
from labctl.gateway.netsetup import BLACKHOLE_METRIC, TUN_METRIC
from labctl.gateway.netsetup import _write_sysctl as _sysctl
from labctl.gateway.tun import Tun, open_tun

if TYPE_CHECKING:
    from labctl.gateway.config import GatewayConfig
    from labctl.gateway.keying import Keying

log = logging.getLogger("labctl.gateway.l2tp")

READ_SIZE = 2048
Register = Callable[[int, Callable[[], None]], None]


class L2tpIo:
    def __init__(self, service: L2tpService, send: Callable[[OutboundResult], None]) -> None:
        self.service = service
        self.send = send
        self.tun: Tun | None = None
        self.trap: socket.socket | None = None
        self.write_errors = 0

    def open(self, register: Register) -> None:
        cfg = self.service.cfg
        self.tun = open_tun(cfg.tun.name)
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.tun.name)[0]
            ipr.link("set", index=idx, mtu=cfg.tun.mtu, state="up")
            _sysctl(f"net/ipv6/conf/{self.tun.name}/disable_ipv6", "1")
            _sysctl(f"net/ipv4/conf/{self.tun.name}/rp_filter", "0")
            if cfg.role == "lns":
                # The LNS end of the PPP links answers on the TUN device; the pool is routed into it.
                _addr(ipr, "add", idx, cfg.local_address)
                prefixes = [str(n) for n in ipaddress.summarize_address_range(
                    ipaddress.IPv4Address(cfg.pool_first), ipaddress.IPv4Address(cfg.pool_last))]
            else:
                prefixes = list(cfg.routes)
            for prefix in prefixes:
                net = ipaddress.IPv4Network(prefix)
                _route(ipr, "replace", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx,
                       priority=TUN_METRIC)
                _route(ipr, "replace", dst=str(net.network_address), dst_len=net.prefixlen, type="blackhole",
                       priority=BLACKHOLE_METRIC)
        # Anything that reaches the kernel's UDP 1701 came in clear (what IPsec delivers never gets there):
        # this socket takes it so that it can be counted and dropped, not answered.
        self.trap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.trap.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.trap.bind(("0.0.0.0", PORT))
        self.trap.setblocking(False)
        register(self.tun.fd, self.on_tun)
        register(self.trap.fileno(), self.on_trap)
        log.info("L2TP %s on %s (TUN %s)", cfg.role, self.service.local, self.tun.name)

    # --- descriptors ---------------------------------------------------------------------------------------
    def on_tun(self) -> None:
        assert self.tun is not None  # noqa: S101 - registered only once open
        now = time.monotonic()
        while True:
            try:
                packet = os.read(self.tun.fd, READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            self.service.from_tun(packet, now)
        self.flush()

    def on_trap(self) -> None:
        assert self.trap is not None  # noqa: S101
        while True:
            try:
                _data, src = self.trap.recvfrom(READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                continue
            self.service.refuse_clear(src)

    # --- time and output -----------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self.service.get_timer()

    def tick(self, now: float) -> None:
        timer = self.service.get_timer()
        if timer is not None and timer <= now:
            self.service.handle_timer(now)
        self.flush()

    def flush(self) -> None:
        service = self.service
        for result in service.take_outbound():
            self.send(result)
        if self.tun is not None:
            for packet in service.take_tun_writes():
                try:
                    os.write(self.tun.fd, packet)
                except OSError:
                    self.write_errors += 1
        changes = service.take_link_changes()
        if changes and self.tun is not None:
            self._apply(changes)

    def _apply(self, changes: list[AddressUp | AddressDown]) -> None:
        assert self.tun is not None  # noqa: S101
        cfg = self.service.cfg
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.tun.name)[0]
            for change in changes:
                try:
                    if isinstance(change, AddressUp):
                        _addr(ipr, "add", idx, change.address)
                        for prefix in cfg.routes:
                            net = ipaddress.IPv4Network(prefix)
                            # Source = the address IPCP gave us: the LNS drops anything else (anti-spoofing).
                            _route(ipr, "replace", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx,
                                   priority=TUN_METRIC, prefsrc=change.address)
                    else:
                        _addr(ipr, "del", idx, change.address)
                except NetlinkError as exc:
                    log.warning("cannot update %s for %s: %s", self.tun.name, change, exc)

    def close(self, now: float) -> None:
        self.service.close(now)
        self.flush()
        if self.trap is not None:
            self.trap.close()
        if self.tun is not None:
            self.tun.close()

    def status(self) -> dict[str, object]:
        return {**self.service.status(), "tun_write_errors": self.write_errors}


Send = Callable[[OutboundResult], None]


def start(cfg: GatewayConfig, keying: Keying, register: Register, send: Send) -> L2tpIo | None:
    """The L2TP service of this gateway (None without an ``l2tp`` section), opened and registered."""
    l2tp = cfg.l2tp
    if l2tp is None:
        return None
    want = ANY if l2tp.role == "lns" else l2tp.server
    binding = next((b for b in keying.bindings if b.mode == "transport" and b.remote == want), None)
    if binding is None:
        raise OSError(errno.EINVAL, f"l2tp ({l2tp.role}) needs a transport-mode connection with remote {want}: "
                                    "L2TP is only ever carried inside IPsec")
    io = L2tpIo(L2tpService(l2tp, cfg.local, binding.reqid, keying.dataplane), send)
    io.open(register)
    return io


def _addr(ipr: IPRoute, cmd: str, idx: int, address: str) -> None:
    try:
        ipr.addr(cmd, index=idx, address=address, prefixlen=32)
    except NetlinkError as exc:
        if exc.code not in (errno.EEXIST, errno.EADDRNOTAVAIL):
            raise


def _route(ipr: IPRoute, cmd: str, **kw: object) -> None:
    ipr.route(cmd, **kw)
