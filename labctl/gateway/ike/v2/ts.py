"""Traffic selectors: from config text to payload form, and narrowing (RFC 7296 §2.9)."""

from __future__ import annotations

import ipaddress
import re

from labctl.gateway.ike.v2.codec import TrafficSelector
from labctl.gateway.ike.v2.constants import TsType

_PROTOS = {"any": 0, "icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "sctp": 132}
_TS_RE = re.compile(r"^(?P<net>[^\[\]]+)(\[(?P<proto>[\w-]+)(/(?P<port>\d+(-\d+)?|%any))?\])?$")


class TsSyntaxError(ValueError):
    """A traffic selector in the configuration we cannot read."""


def parse_ts(text: str, dynamic: str | None = None) -> TrafficSelector:
    """``10.1.0.0/16``, ``10.0.0.1-10.0.0.9``, ``dynamic`` (our or the peer's address), each optionally
    followed by ``[proto]`` or ``[proto/port]`` as in swanctl."""
    m = _TS_RE.match(text.strip())
    if not m:
        raise TsSyntaxError(f"traffic selector {text!r}: expected CIDR, range or 'dynamic'")
    net = m.group("net")
    if net == "dynamic":
        if dynamic is None:
            raise TsSyntaxError("traffic selector 'dynamic' needs a known address")
        net = dynamic
    try:
        if "-" in net:
            a, b = (ipaddress.ip_address(x) for x in net.split("-", 1))
            start, end = a, b
        else:
            n = ipaddress.ip_network(net, strict=False)
            start, end = n.network_address, n.broadcast_address
    except ValueError as exc:
        raise TsSyntaxError(f"traffic selector {text!r}: {exc}") from None
    if start.version != end.version:
        raise TsSyntaxError(f"traffic selector {text!r}: mixed address families")
    proto = 0
    sport, eport = 0, 65535
    if m.group("proto"):
        p = m.group("proto").lower()
        proto = _PROTOS[p] if p in _PROTOS else int(p) if p.isdigit() else -1
        if not 0 <= proto <= 255:
            raise TsSyntaxError(f"traffic selector {text!r}: unknown protocol {p!r}")
        port = m.group("port")
        if port and port != "%any":
            lo, _, hi = port.partition("-")
            sport, eport = int(lo), int(hi or lo)
    ts_type = TsType.TS_IPV4_ADDR_RANGE if start.version == 4 else TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(ts_type, proto, sport, eport, start.packed, end.packed)


def ts_text(ts: TrafficSelector) -> str:
    """CIDR when the range is one prefix, else ``a-b``; a protocol/port suffix when restricted."""
    a = ipaddress.ip_address(ts.start_addr)
    b = ipaddress.ip_address(ts.end_addr)
    nets = list(ipaddress.summarize_address_range(a, b)) if int(a) <= int(b) else []
    base = str(nets[0]) if len(nets) == 1 else f"{a}-{b}"
    if ts.ip_proto == 0:
        return base
    if (ts.start_port, ts.end_port) == (0, 65535):
        return f"{base}[{ts.ip_proto}]"
    port = str(ts.start_port) if ts.start_port == ts.end_port else f"{ts.start_port}-{ts.end_port}"
    return f"{base}[{ts.ip_proto}/{port}]"


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    if a.ts_type != b.ts_type:
        return None
    if a.ip_proto and b.ip_proto and a.ip_proto != b.ip_proto:
        return None
    start = max(a.start_addr, b.start_addr)  # same-length big-endian bytes compare as numbers
    end = min(a.end_addr, b.end_addr)
    sport, eport = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if start > end or sport > eport:
        return None
    return TrafficSelector(a.ts_type, a.ip_proto or b.ip_proto, sport, eport, start, end)


def narrow(proposed: list[TrafficSelector], allowed: list[TrafficSelector]) -> list[TrafficSelector]:
    """RFC 7296 §2.9: the responder answers with the subset of the proposal its policy allows."""
    out: list[TrafficSelector] = []
    for p in proposed:
        for q in allowed:
            r = intersect(p, q)
            if r is not None and r not in out:
                out.append(r)
    return out


def is_subset(inner: list[TrafficSelector], outer: list[TrafficSelector]) -> bool:
    """Initiator check of the response: every returned selector lies inside one we proposed."""
    return all(any(intersect(i, o) == i for o in outer) for i in inner)
