"""The data plane facade the daemon drives: plain packets in from TUN, protected packets out, and back.

Sans-I/O: the daemon passes bytes and ``now``; it gets bytes to write, :class:`OutboundResult` values to
send, and events (``poll_events``). Nothing here opens a socket, reads a clock or logs on the packet path.
Every malformed or forged packet becomes a counted drop; none raises out of ``outbound``/``inbound_*``.
"""

from __future__ import annotations

import math
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from . import ipv4
from .ah import open_ah, seal_ah
from .errors import PacketDropped, SequenceExhausted
from .esp import next_seq, open_esp, seal
from .events import Acquire, Direction, Event, SeqExhausted
from .fastpath import compile_opener, compile_sealer, flow_key, outer_header_builder
from .natt import classify_udp4500, fix_transport_checksum
from .sad import Sad, SaParams, SecurityAssociation
from .spd import Policy, Spd
from .transforms import encr_algorithm, integ_algorithm


# Result types are plain slotted dataclasses, not frozen ones: frozen ones cost ~1 µs more to build, once per
# packet. Treat them as read-only.
@dataclass(slots=True)
class IpSend:
    """A whole IPv4 packet (outer header included) for a raw IPPROTO_RAW / IP_HDRINCL socket."""

    packet: bytes


@dataclass(slots=True)
class UdpSend:
    """An ESP-in-UDP payload to send from UDP port ``sport`` to (``dst``, ``dport``)."""

    payload: bytes
    dst: str
    dport: int
    sport: int


@dataclass(slots=True)
class Bypass:
    """A ``bypass`` policy matched: send ``packet`` unprotected (only ever when configured so)."""

    packet: bytes


@dataclass(slots=True)
class Dropped:
    """The packet was dropped; ``reason`` is the counter it was recorded under."""

    reason: str


OutboundResult = IpSend | UdpSend | Bypass | Dropped

_TUNNEL_NEXT = ipv4.PROTO_IPIP
_IPSEC = (ipv4.PROTO_ESP, ipv4.PROTO_AH)
_FLOW_CACHE_MAX = 4096  # flows remembered per direction; the cache is simply emptied when it fills
OutRoute = Callable[[bytes, float], OutboundResult | None]
InRoute = Callable[[bytes, int, float], bytes | None]  # (buffer, offset of the ESP/IP header, now)


class DataPlane:
    """SPD + SAD + the packet transforms, with counters and events. One per gateway."""

    def __init__(
        self,
        policies: list[Policy] | tuple[Policy, ...] = (),
        rng: Callable[[int], bytes] = os.urandom,
        acquire_interval: float = 1.0,
    ) -> None:
        self._sad = Sad()
        self._spd = Spd(policies)
        self._rng = rng
        self._events: list[Event] = []
        self._drops: Counter[str] = Counter()
        self._acquire_interval = acquire_interval
        self._acquired: dict[str, float] = {}
        self._exhausted_reported: set[int] = set()
        self._ident = int.from_bytes(rng(2), "big")
        self.out_packets = self.out_bytes = self.in_packets = self.in_bytes = self.bypassed = 0
        self.keepalives = 0
        # Fast-path caches (see fastpath.py), emptied by _changed() whenever the SPD or the SAD changes:
        # flow key -> compiled outbound route; SPI (+ destination for raw ESP) -> compiled inbound route.
        self._out_routes: dict[bytes, OutRoute] = {}
        self._in_udp_routes: dict[bytes, InRoute] = {}
        self._in_ip_routes: dict[bytes, InRoute] = {}
        self._out_sealers: dict[int, Callable[[bytes, int], bytes]] = {}  # outbound SPI -> compiled sealer

    def _changed(self) -> None:
        self._out_routes.clear()
        self._out_sealers.clear()
        self._in_udp_routes.clear()
        self._in_ip_routes.clear()

    # ---- configuration -------------------------------------------------------------------------------------

    def add_sa(self, params: SaParams, direction: Direction, now: float) -> None:
        """Install an SA (ValueError with a readable message when the parameters are inconsistent)."""
        if params.protocol == "esp" and params.encr is not None:
            encr = encr_algorithm(params.encr)
            if not encr.aead and params.integ is None:
                # RFC 4303 §3.2 permits confidentiality-only ESP but it is open to active attacks (RFC 8221 §5).
                raise ValueError(f"ESP with {encr.name} needs an integrity algorithm")
            if encr.name == "null" and params.integ is None:
                raise ValueError("ESP with null encryption needs an integrity algorithm")
        if params.integ is not None:
            integ_algorithm(params.integ)
        self._sad.add(SecurityAssociation(params, direction, now))
        self._changed()

    def remove_sa(self, spi: int, direction: Direction, dst: str | None = None) -> bool:
        """Remove an SA; True when one was removed."""
        self._exhausted_reported.discard(spi)
        self._changed()
        return self._sad.remove(spi, direction, dst) is not None

    def set_policies(self, policies: list[Policy] | tuple[Policy, ...]) -> None:
        self._spd.set(policies)
        self._changed()

    def add_policy(self, policy: Policy, index: int | None = None) -> None:
        self._spd.add(policy, index)
        self._changed()

    def remove_policy(self, name: str) -> bool:
        self._changed()
        return self._spd.remove(name)

    @property
    def policies(self) -> list[Policy]:
        return self._spd.policies

    # ---- packet path ---------------------------------------------------------------------------------------

    def outbound(self, packet: bytes, now: float) -> OutboundResult:
        """A plain IPv4 packet read from TUN: what to do with it."""
        key = flow_key(packet)
        if key is not None:
            route = self._out_routes.get(key)
            if route is not None:
                result = route(packet, now)
                if result is not None:
                    return result
        ihl = ipv4.header_length(packet)
        if not ihl:
            return self._drop("malformed")
        policy = self._spd.lookup_outbound(packet, ihl)
        if policy is None:
            return self._drop("no_policy")  # fail closed: nothing leaves unprotected by default
        action = policy.action
        if action != "protect":
            if action == "bypass":
                self.bypassed += 1
                return Bypass(packet)
            return self._drop("policy_discard")
        try:
            result = self._protect(policy, packet, ihl, now)
        except PacketDropped as dropped:
            return self._drop(dropped.reason)
        if key is not None and policy.protocols == ("esp",):
            self._learn_outbound(key, policy)
        return result

    def _learn_outbound(self, key: bytes, policy: Policy) -> None:
        """Cache this flow's SPD decision as a compiled route when its one ESP SA has a fast sealer."""
        sa = self._sad.outbound(policy.reqid, "esp")
        if sa is None:
            return
        sealer = self._out_sealers.get(sa.spi)
        if sealer is None:
            sealer = compile_sealer(sa, self._rng)  # once per SA, shared by all its flows
            if sealer is None:
                return
            self._out_sealers[sa.spi] = sealer
        if len(self._out_routes) >= _FLOW_CACHE_MAX:
            self._out_routes.clear()
        self._out_routes[key] = self._out_route(sa, sealer)

    def _out_route(self, sa: SecurityAssociation, seal_esp: Callable[[bytes, int], bytes]) -> OutRoute:
        encap = sa.encap
        dst = sa.dst
        header = outer_header_builder(sa.src_b, sa.dst_b)

        def route(packet: bytes, now: float) -> OutboundResult | None:
            seq = sa.seq + 1
            n = len(packet)
            if (
                seq > sa.seq_max
                or sa.bytes + n >= sa.limit_bytes
                or sa.packets + 1 >= sa.limit_packets
                or now >= sa.deadline
                or sa.expired
            ):
                return None  # a limit is due: the general path raises the events and drops or removes
            sa.seq = seq
            sa.packets += 1
            sa.bytes += n
            sa.last_used = now
            self.out_packets += 1
            self.out_bytes += n
            esp = seal_esp(packet, seq)
            if encap is not None:
                return UdpSend(esp, dst, encap[1], encap[0])
            self._ident = ident = (self._ident + 1) & 0xFFFF
            # Outer TOS and DF copied from the inner header, as the general path does (RFC 4301 §5.1.2.1).
            return IpSend(header(20 + len(esp), ident, packet[1], (packet[6] & 0x40) << 8) + esp)

        return route

    def _protect(self, policy: Policy, packet: bytes, ihl: int, now: float) -> OutboundResult:
        sad = self._sad
        sas: list[SecurityAssociation] = []
        for proto in policy.protocols:
            found = sad.outbound(policy.reqid, proto)
            if found is None:
                self._acquire(policy, packet, now)
                raise PacketDropped("no_sa")
            sas.append(found)
        return self._seal_chain(sas, packet, ihl, now)

    def _seal_chain(self, sas: list[SecurityAssociation], packet: bytes, ihl: int, now: float) -> OutboundResult:
        sad = self._sad
        nbytes = len(packet)
        self.out_packets += 1
        self.out_bytes += nbytes
        last = len(sas) - 1
        tunnelled = False
        for i, sa in enumerate(sas):
            try:
                seq = next_seq(sa)
            except SequenceExhausted:
                if sa.spi not in self._exhausted_reported:
                    self._exhausted_reported.add(sa.spi)
                    self._events.append(SeqExhausted(sa.spi, sa.protocol, sa.reqid))
                raise PacketDropped("seq_exhausted") from None
            if not sa.account(nbytes, now, self._events):
                sad.remove(sa.spi, "out")
                self._changed()
                raise PacketDropped("sa_expired")
            self._ident = ident = (self._ident + 1) & 0xFFFF
            if sa.protocol == "ah":
                # RFC 4301 §4.5 transport adjacency: in an AH+ESP tunnel the ESP SA builds the one outer header and
                # AH covers it, giving [outer IP][AH][ESP][inner IP] rather than two nested tunnels (which would
                # also cost 20 more bytes of every packet's MTU).
                packet = seal_ah(sa, packet, ihl, seq, ident, tunnel=sa.tunnel and not tunnelled)
                if sa.tunnel and not tunnelled:
                    ihl = 20
                    tunnelled = True
                continue
            if sa.tunnel:
                esp = seal(sa, packet, _TUNNEL_NEXT, seq, self._rng)
            else:
                if ipv4.is_fragment(packet):
                    raise PacketDropped("transport_fragment")  # transport mode needs whole datagrams (§3.1.1)
                esp = seal(sa, packet[ihl:], packet[9], seq, self._rng)
            if sa.encap is not None:
                if i != last:
                    raise PacketDropped("bundle_encap")  # AH cannot ride in UDP (RFC 3948)
                return UdpSend(esp, sa.dst, sa.encap[1], sa.encap[0])
            if sa.tunnel:
                df = ipv4.WORD.unpack_from(packet, 6)[0] & ipv4.FLAG_DF
                header = ipv4.build_header(sa.src_b, sa.dst_b, ipv4.PROTO_ESP, len(esp), ident, packet[1], df)
                ihl = 20
                tunnelled = True
            else:
                header = ipv4.rewrite_header(packet[:ihl], ipv4.PROTO_ESP, len(esp))
            packet = header + esp
        return IpSend(packet)

    # ---- remote access: one policy serves many peers, the caller picks each peer's SA (L2TP/IPsec) -----------

    def inbound_sa(self, spi: int, dst_b: bytes | None) -> SecurityAssociation | None:
        """The inbound SA a packet came through: by SPI alone for ESP-in-UDP (``dst_b`` None), else SPI and
        our address as on the packet (RFC 4301 §4.1: the SPI, plus the destination for unicast SAs)."""
        return self._sad.inbound_encap(spi) if dst_b is None else self._sad.inbound(spi, dst_b)

    def outbound_sa_to(self, reqid: int, dst: str, dport: int | None) -> SecurityAssociation | None:
        """The newest usable outbound ESP SA of ``reqid`` towards ``dst`` (and UDP port ``dport`` when it is
        encapsulated; None: not encapsulated). A remote-access responder's clients share one policy (reqid)."""
        best: SecurityAssociation | None = None
        for sa in self._sad.all():
            if (
                sa.direction == "out"
                and sa.reqid == reqid
                and sa.protocol == "esp"
                and sa.dst == dst
                and not sa.expired
                and (sa.encap[1] if sa.encap else None) == dport
                and (best is None or sa.added_at >= best.added_at)
            ):
                best = sa
        return best

    def outbound_via(self, sa: SecurityAssociation, packet: bytes, now: float) -> OutboundResult:
        """Protect a plain IPv4 packet with ``sa`` (chosen by the caller, see ``outbound_sa_to``); never raises."""
        ihl = ipv4.header_length(packet)
        if not ihl or ipv4.total_length(packet) != len(packet):
            return self._drop("malformed")
        try:
            return self._seal_chain([sa], packet, ihl, now)
        except PacketDropped as dropped:
            return self._drop(dropped.reason)

    def inbound_ip(self, packet: bytes, now: float) -> bytes | None:
        """A whole IPv4 packet from the raw socket for protocol 50 or 51: the plain packet for TUN, or None."""
        if (
            len(packet) > 28
            and packet[0] == 0x45
            and packet[9] == ipv4.PROTO_ESP
            and not packet[6] & 0x3F
            and not packet[7]
            and (packet[2] << 8 | packet[3]) == len(packet)
        ):
            key = packet[20:24] + packet[16:20]
            route = self._in_ip_routes.get(key)
            if route is None:
                sa = self._sad.inbound(int.from_bytes(packet[20:24], "big"), packet[16:20])
                route = self._learn_inbound(sa, key, self._in_ip_routes)
            if route is not None:
                return self._guarded(route, packet, 20, now)
        return self._guarded(self._inbound_ip, packet, 0, now)

    def _inbound_ip(self, packet: bytes, _start: int, now: float) -> bytes:
        """The general path of ``inbound_ip``: every layout, AH, transport mode, bundles."""
        ihl = ipv4.header_length(packet)
        if not ihl:
            raise PacketDropped("malformed")
        tot = ipv4.total_length(packet)
        if tot < ihl or tot > len(packet):
            raise PacketDropped("malformed")
        if tot < len(packet):
            packet = packet[:tot]
        if ipv4.is_fragment(packet):
            raise PacketDropped("fragment")  # the kernel reassembles before raw delivery; never expected
        if packet[9] not in _IPSEC:
            raise PacketDropped("not_ipsec")
        return self._decapsulate(packet, ihl, [], now)

    def inbound_udp(self, payload: bytes, src: str, sport: int, dst: str, dport: int, now: float) -> bytes | None:
        """A datagram from UDP 4500: the plain packet for TUN, or None (dropped, keepalive, or IKE)."""
        if len(payload) >= 8:
            key = payload[:4]  # never the non-ESP marker or a keepalive: SPIs are >= 256 (RFC 4303 §2.1)
            route = self._in_udp_routes.get(key)
            if route is None and key != b"\0\0\0\0":
                route = self._learn_inbound(self._sad.inbound_encap(int.from_bytes(key, "big")), key,
                                            self._in_udp_routes)
            if route is not None:
                return self._guarded(route, payload, 0, now)
        return self._guarded(lambda data, _start, t: self._inbound_udp(data, src, dst, t), payload, 0, now)

    def _inbound_udp(self, payload: bytes, src: str, dst: str, now: float) -> bytes | None:
        """The general path of ``inbound_udp``: keepalives, transport mode, anything not compiled."""
        kind = classify_udp4500(payload)
        if kind != "esp":
            if kind == "keepalive":
                self.keepalives += 1
                return None
            raise PacketDropped("ike_on_dataplane" if kind == "ike" else "malformed")
        sa = self._sad.inbound_encap(int.from_bytes(payload[:4], "big"))
        if sa is None or sa.protocol != "esp":
            raise PacketDropped("unknown_spi")
        inner, next_header, _seq = open_esp(sa, payload)
        self._account_in(sa, len(inner), now)
        if sa.tunnel:
            packet = self._inner(inner, next_header)
        else:
            header = ipv4.build_header(socket.inet_aton(src), socket.inet_aton(dst), next_header, len(inner), 0)
            packet = fix_transport_checksum(header + inner, 20)
        return self._finish_inbound(packet, [sa], now)

    def _guarded(self, handler: InRoute, data: bytes, start: int, now: float) -> bytes | None:
        """Run an inbound handler: a dropped packet is counted under its reason, never raised."""
        try:
            return handler(data, start, now)
        except PacketDropped as dropped:
            self._drops[dropped.reason] += 1
            return None
        except Exception:  # a bug must not kill the daemon; the property tests require this to stay 0
            self._drops["internal_error"] += 1
            return None

    def _learn_inbound(self, sa: SecurityAssociation | None, key: bytes, cache: dict[bytes, InRoute]) -> InRoute | None:
        if sa is None or sa.expired:
            return None
        opener = compile_opener(sa)
        if opener is None:
            return None
        route = self._in_route(sa, opener)
        cache[key] = route
        return route

    def _in_route(self, sa: SecurityAssociation, open_esp_fast: Callable[[bytes, int], tuple[bytes, int]]) -> InRoute:
        allowed: set[bytes] = set()  # inner flows already found to match a policy served by this SA

        def route(data: bytes, start: int, now: float) -> bytes:
            inner, _seq = open_esp_fast(data, start)
            n = len(inner)
            if sa.bytes + n >= sa.limit_bytes or sa.packets + 1 >= sa.limit_packets or now >= sa.deadline:
                self._account_in(sa, n, now)
            else:
                sa.packets += 1
                sa.bytes += n
                sa.last_used = now
            if inner[9] in _IPSEC:
                return self._decapsulate(inner, ipv4.header_length(inner), [sa], now)  # nested: general path
            key = flow_key(inner)
            if key is None or key not in allowed:
                packet = self._finish_inbound(inner, [sa], now)  # RFC 4301 §5.2 check; raises on mismatch
                if key is not None:
                    if len(allowed) >= _FLOW_CACHE_MAX:
                        allowed.clear()
                    allowed.add(key)
                return packet
            self.in_packets += 1
            self.in_bytes += n
            return inner

        return route

    def _decapsulate(self, packet: bytes, ihl: int, chain: list[SecurityAssociation], now: float) -> bytes:
        """Remove ESP/AH layers (outermost first) while we hold an SA for them, then check the policy."""
        sad = self._sad
        while True:
            proto = packet[9]
            if proto not in _IPSEC:
                break
            if len(packet) < ihl + 8:
                raise PacketDropped("truncated")
            spi = int.from_bytes(packet[ihl + 4 : ihl + 8] if proto == ipv4.PROTO_AH else packet[ihl : ihl + 4])
            sa = sad.inbound(spi, packet[16:20])
            if sa is None or sa.protocol != ("esp" if proto == ipv4.PROTO_ESP else "ah"):
                if chain:
                    break  # an inner layer that is not ours: let the policy decide
                raise PacketDropped("unknown_spi")
            if proto == ipv4.PROTO_AH:
                # An AH whose payload is ESP is the outer half of a transport-adjacent AH+ESP bundle (see _seal_chain).
                adjacent = sa.tunnel and packet[ihl] == ipv4.PROTO_ESP
                packet, next_header, _seq = open_ah(sa, packet, ihl, tunnel=False if adjacent else None)
                self._account_in(sa, len(packet), now)
            else:
                inner, next_header, _seq = open_esp(sa, packet[ihl:])
                self._account_in(sa, len(inner), now)
                if sa.tunnel:
                    packet = self._inner(inner, next_header)
                else:
                    packet = ipv4.rewrite_header(packet[:ihl], next_header, len(inner)) + inner
            chain.append(sa)
            ihl = ipv4.header_length(packet)
            if not ihl:
                raise PacketDropped("bad_inner")
        return self._finish_inbound(packet, chain, now)

    @staticmethod
    def _inner(inner: bytes, next_header: int) -> bytes:
        """The inner packet of a tunnel-mode SA, trimmed of any TFC padding (RFC 4303 §2.7)."""
        if next_header != _TUNNEL_NEXT:
            raise PacketDropped("dummy" if next_header == ipv4.PROTO_NONE else "not_tunnel")
        if not ipv4.header_length(inner):
            raise PacketDropped("bad_inner")
        tot = ipv4.total_length(inner)
        if tot > len(inner) or tot < 20:
            raise PacketDropped("bad_inner")
        return inner if tot == len(inner) else inner[:tot]

    def _finish_inbound(self, packet: bytes, chain: list[SecurityAssociation], now: float) -> bytes:
        """RFC 4301 §5.2 step 4: the packet must match a protect policy served by exactly these SAs."""
        ihl = ipv4.header_length(packet)
        if not ihl:
            raise PacketDropped("bad_inner")
        policy = self._spd.lookup_inbound(packet, ihl)
        if (
            policy is None
            or policy.action != "protect"
            or any(sa.reqid != policy.reqid for sa in chain)
            or tuple(sa.protocol for sa in reversed(chain)) != policy.protocols
        ):
            raise PacketDropped("policy_mismatch")
        self.in_packets += 1
        self.in_bytes += len(packet)
        return packet

    def _account_in(self, sa: SecurityAssociation, nbytes: int, now: float) -> None:
        if not sa.account(nbytes, now, self._events):
            self._sad.remove(sa.spi, "in", sa.dst)
            self._changed()
            raise PacketDropped("sa_expired")

    def _drop(self, reason: str) -> Dropped:
        self._drops[reason] += 1
        return Dropped(reason)

    def _acquire(self, policy: Policy, packet: bytes, now: float) -> None:
        last = self._acquired.get(policy.name)
        if last is not None and now - last < self._acquire_interval:
            return
        self._acquired[policy.name] = now
        src = socket.inet_ntoa(packet[12:16])
        dst = socket.inet_ntoa(packet[16:20])
        self._events.append(Acquire(policy.name, policy.reqid, src, dst, packet[9]))

    # ---- timers, events, status ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` should next run (a seconds lifetime), or None."""
        deadline = min((sa.deadline for sa in self._sad.all() if not sa.expired), default=math.inf)
        return None if deadline == math.inf else deadline

    def handle_timer(self, now: float) -> None:
        """Fire time-based soft/hard expiry; hard-expired SAs are removed."""
        for sa in self._sad.all():
            if now >= sa.deadline and not sa.check_lifetime(now, self._events):
                self._sad.remove(sa.spi, sa.direction, sa.dst if sa.direction == "in" else None)
                self._changed()

    def poll_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def counters(self) -> dict[str, object]:
        """Totals and drop reasons (JSON-ready)."""
        sas = self._sad.all()
        return {
            "out_packets": self.out_packets,
            "out_bytes": self.out_bytes,
            "in_packets": self.in_packets,
            "in_bytes": self.in_bytes,
            "bypassed": self.bypassed,
            "keepalives": self.keepalives,
            "dropped": sum(self._drops.values()),
            "drops": dict(self._drops),
            "replay_drops": sum(sa.replay_drops for sa in sas),
            "integrity_failures": sum(sa.integrity_failures for sa in sas),
            "decrypt_failures": sum(sa.decrypt_failures for sa in sas),
            "sas": len(sas),
            "policies": len(self._spd.policies),
        }

    def sa_status(self, now: float) -> list[dict[str, object]]:
        """One JSON-ready dict per SA (no keys), like ``swanctl --list-sas``."""
        return [sa.status(now) for sa in self._sad.all()]

    def esp_sa_uat_lines(self) -> list[str]:
        """Wireshark ``esp_sa`` table rows (8 fields) for the ESP SAs Wireshark can decrypt. Contains keys."""
        lines = []
        for sa in self._sad.all():
            p = sa.params
            if p.protocol != "esp" or p.encr is None:
                continue
            encr = encr_algorithm(p.encr)
            if encr.wireshark is None:
                continue
            auth, auth_key = "NULL", ""
            if p.integ is not None:
                auth, auth_key = integ_algorithm(p.integ).wireshark, "0x" + p.integ_key.hex()
            key = "0x" + p.encr_key.hex() if p.encr_key else ""
            fields = ("IPv4", sa.src, sa.dst, f"0x{sa.spi:08x}", encr.wireshark, key, auth, auth_key)
            lines.append(",".join(f'"{f}"' for f in fields))
        return lines
