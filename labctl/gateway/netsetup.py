"""Routing that steers protected traffic into the TUN device, and keeps it from leaking when we are gone.

Tunnel mode (RFC 4301 §4.1): the remote selectors are routed into the TUN device. Transport mode: a routing
table of our own plus an `ip rule` per protected peer; our own packets (IKE, ESP, AH) carry a fwmark and a
higher-priority rule sends them to the main table, so they never loop back into the TUN device.

Fail closed: beside every route into the TUN device we install a blackhole route with a worse metric.
The TUN device is not persistent, so when the gateway stops its routes vanish and the blackhole remains:
protected traffic is dropped, never forwarded in clear.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

# Packets the TUN device queues for the gateway while it is busy sealing a batch: the default 500 overflowed under
# one bulk TCP stream (2 % dropped, each a retransmit); 4096 MTU-size packets are about 40 ms at 1 Gbit/s.
TUN_QUEUE = 4096
TUN_METRIC = 10
BLACKHOLE_METRIC = 4000
RULE_PRIO_OWN = 100
RULE_PRIO_PROTECT = 101


@dataclass
class RoutingPlan:
    tun: str
    mtu: int
    fwmark: int
    table: int
    local: str
    tunnel_prefixes: list[str] = field(default_factory=list)
    transport_peers: list[str] = field(default_factory=list)


def _ignore_exists(exc: NetlinkError) -> None:
    if exc.code != errno.EEXIST:
        raise exc


def _route(ipr: IPRoute, **kw: object) -> None:
    try:
        ipr.route("add", **kw)
    except NetlinkError as exc:
        _ignore_exists(exc)


def _prefix(p: str) -> tuple[str, int]:
    net = ipaddress.ip_network(p, strict=False)
    return str(net.network_address), net.prefixlen


def apply(plan: RoutingPlan) -> None:
    """Bring the TUN device up and install the routes and rules of `plan` (idempotent)."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=plan.tun)[0]
        # Before the link comes up: IPv6 router solicitations into an IPv4-only data plane are noise in the drop
        # counters.
        _write_sysctl(f"net/ipv6/conf/{plan.tun}/disable_ipv6", "1")
        ipr.link("set", index=idx, mtu=plan.mtu, txqlen=TUN_QUEUE, state="up")
        _write_sysctl(f"net/ipv4/conf/{plan.tun}/rp_filter", "0")
        _write_sysctl("net/ipv4/conf/all/rp_filter", "0")
        for prefix in plan.tunnel_prefixes:
            dst, plen = _prefix(prefix)
            _route(ipr, dst=dst, dst_len=plen, oif=idx, priority=TUN_METRIC)
            _route(ipr, dst=dst, dst_len=plen, type="blackhole", priority=BLACKHOLE_METRIC)
        if plan.transport_peers:
            # prefsrc: the TUN device has no address, and the source must be the one the peer knows us by.
            _route(ipr, dst="0.0.0.0", dst_len=0, oif=idx, table=plan.table, priority=TUN_METRIC, prefsrc=plan.local)
            _route(
                ipr, dst="0.0.0.0", dst_len=0, type="blackhole", table=plan.table, priority=BLACKHOLE_METRIC
            )
            _rule(ipr, priority=RULE_PRIO_OWN, fwmark=plan.fwmark, fwmask=0xFFFFFFFF, table=254)
            for peer in plan.transport_peers:
                dst, plen = _prefix(peer)
                _rule(ipr, priority=RULE_PRIO_PROTECT, dst=dst, dst_len=plen, table=plan.table)


def _rule(ipr: IPRoute, **kw: object) -> None:
    try:
        ipr.rule("add", family=2, **kw)
    except NetlinkError as exc:
        _ignore_exists(exc)


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except OSError:
        # Read-only /proc/sys (some containers): rp_filter then stays as the image set it.
        pass


def local_addresses() -> Iterable[str]:
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=2):
            yield msg.get_attr("IFA_ADDRESS")
