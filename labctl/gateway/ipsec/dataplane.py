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
from typing import Any, TypeVar

from . import ipv4
from .ah import open_ah, seal_ah
from .errors import PacketDropped, SequenceExhausted
from .esp import next_seq, open_esp, seal
from .events import Acquire, Direction, Event, SeqExhausted
from .fastpath import (
    BatchOpener,
    BatchSealer,
    UniformOpener,
    UniformSealer,
    compile_batch_opener,
    compile_batch_sealer,
    compile_opener,
    compile_sealer,
    compile_uniform_opener,
    compile_uniform_sealer,
    flow_key,
    outer_header_builder,
    run_layout,
)
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
_R = TypeVar("_R")

_TUNNEL_NEXT = ipv4.PROTO_IPIP
_IPSEC = (ipv4.PROTO_ESP, ipv4.PROTO_AH)
_FLOW_CACHE_MAX = 4096  # flows remembered per direction; the cache is simply emptied when it fills
OutRoute = Callable[[bytes, float], OutboundResult | None]
InRoute = Callable[[bytes, int, float], bytes | None]  # (buffer, offset of the ESP/IP header, now)
# Inner packets of a batch, each still followed by its ESP trailer (``packet[:length]`` is the IPv4 packet), and
# their IPv4 total lengths: slicing each one off would cost a copy per packet that the consumer does not need.
InBatch = tuple[list[bytes], list[int]]
InBatchRoute = Callable[[list[bytes], int, float], InBatch | None]
# The uniform batch: (inner packets every ``stride`` bytes, stride, count, each one's IPv4 length); the rest of each
# stride is its ESP trailer.
InUniform = tuple[bytes, int, int, int]
InUniformRoute = Callable[[bytes, int, int, int, float], InUniform | None]
_PORT_PROTOCOLS = (ipv4.PROTO_TCP, ipv4.PROTO_UDP, 132)  # whose ports are selectors, as in fastpath.flow_key
# ESP packets of a batch, in order: UDP payloads for (destination, port), or whole IPv4 packets when that is None.
OutBatch = tuple[list[bytes], tuple[str, int] | None]
OutBatchRoute = Callable[[list[bytes], float], OutBatch | None]
# Equal-size ESP packets back to back, the size of each, and where to send them: ESP-in-UDP datagrams to
# (destination, port), or whole IPv4 packets for the raw socket when that is None.
OutUniform = tuple[bytes, int, tuple[str, int] | None]
OutUniformRoute = Callable[[list[bytes], int, int, int, float], OutUniform | None]


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
        # Per outbound SA, by id(sa), valid until the next _changed(): the SA object itself, so a cache can never hand
        # one SA's keys to another (the SAD keeps outbound SPIs unique today, but each peer picks its own).
        self._out_sealers: dict[int, Callable[[bytes, int], bytes]] = {}
        self._out_batch_routes: dict[bytes, OutBatchRoute] = {}  # flow key -> its SA's batch route
        self._out_batch_by_sa: dict[int, OutBatchRoute] = {}
        self._out_uniform_routes: dict[bytes, OutUniformRoute] = {}  # flow key -> its SA's uniform route
        self._out_uniform_by_sa: dict[int, OutUniformRoute] = {}
        self._in_batch_routes: dict[bytes, InBatchRoute] = {}  # b"u" + SPI, or b"i" + destination + SPI
        self._in_uniform_routes: dict[bytes, InUniformRoute] = {}  # SPI, or b"i" + destination + SPI
        # Per inbound SA (by id, valid until the next change): inner flows found to match a policy this SA serves.
        self._allowed_flows: dict[int, set[bytes]] = {}

    def _changed(self) -> None:
        self._out_routes.clear()
        self._out_sealers.clear()
        self._in_udp_routes.clear()
        self._in_ip_routes.clear()
        self._in_batch_routes.clear()
        self._in_uniform_routes.clear()
        self._out_batch_routes.clear()
        self._out_batch_by_sa.clear()
        self._out_uniform_routes.clear()
        self._out_uniform_by_sa.clear()
        self._allowed_flows.clear()

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
        sealer = self._out_sealers.get(id(sa))
        if sealer is None:
            sealer = compile_sealer(sa, self._rng)  # once per SA, shared by all its flows
            if sealer is None:
                return
            self._out_sealers[id(sa)] = sealer
        if len(self._out_routes) >= _FLOW_CACHE_MAX:
            self._out_routes.clear()
            self._out_batch_routes.clear()
            self._out_uniform_routes.clear()
        self._out_routes[key] = self._out_route(sa, sealer)
        uniform_route = self._out_uniform_by_sa.get(id(sa))
        if uniform_route is None:
            uniform_sealer = compile_uniform_sealer(sa)
            if uniform_sealer is not None:
                uniform_route = self._out_uniform_by_sa[id(sa)] = self._out_uniform_route(sa, uniform_sealer)
        if uniform_route is not None:
            self._out_uniform_routes[key] = uniform_route
        batch_route = self._out_batch_by_sa.get(id(sa))
        if batch_route is None:
            batch_sealer = compile_batch_sealer(sa, self._rng)
            if batch_sealer is None:
                return
            batch_route = self._out_batch_by_sa[id(sa)] = self._out_batch_route(sa, batch_sealer)
        self._out_batch_routes[key] = batch_route

    def outbound_batch(self, packets: list[bytes], now: float) -> OutBatch | None:
        """Plain packets read from TUN in one drain, through the batch fast path (``fastpath.compile_batch_sealer``)
        when every one belongs to a flow already cached for the same ESP SA: their ESP packets, in order. None when
        any needs the per-packet path (a new flow, another SA, a limit due): nothing was changed or counted then,
        so hand each packet to :meth:`outbound`."""
        ports = _PORT_PROTOCOLS
        # fastpath.flow_key's keys, for the port-carrying protocols only (anything else: None, the per-packet path).
        keys = {
            p[9:10] + p[12:24]
            if len(p) >= 24 and p[0] == 0x45 and p[9] in ports and not (p[6] & 0x3F or p[7])
            else None
            for p in packets
        }
        if None in keys:
            return None
        get = self._out_batch_routes.get
        routes = {get(k) for k in keys if k is not None}
        route = routes.pop() if len(routes) == 1 else None
        if route is None:
            return None
        return self._guarded_run(route, packets, now)

    def outbound_uniform(self, frames: list[bytes], start: int, now: float) -> OutUniform | None:
        """Equal-size frames read from TUN in one drain (the IPv4 packet at ``start`` of each), all of one flow
        already cached for an ESP-in-UDP SA, through the uniform fast path (``fastpath.compile_uniform_sealer``):
        their datagrams back to back for one UDP GSO send. None as for :meth:`outbound_batch` (try that next)."""
        shape = (len(frames[0]), start)
        if len(set(map(len, frames))) != 1 or shape[0] - start < 24:
            return None  # the uniform path is for equal sizes: the batch path takes the rest
        # Version/IHL, TOS, flags + fragment offset, protocol, addresses + ports: what fastpath.flow_key reads, and
        # what the outer header copies (RFC 4301 §5.1.2.1).
        rows = set(map(run_layout(f"!{start}xBB4xHxB2x12s{shape[0] - start - 24}x").unpack_from, frames))
        if len(rows) != 1:
            return None  # several flows, or TOS/DF that vary: the batch path sorts them out
        version, tos, fragment, proto, addresses = rows.pop()
        if version != 0x45 or fragment & 0x3FFF or proto not in _PORT_PROTOCOLS:
            return None
        route = self._out_uniform_routes.get(bytes((proto,)) + addresses)
        if route is None:
            return None
        return self._guarded_run(route, frames, start, tos, fragment & 0x4000, now)

    def _out_uniform_route(self, sa: SecurityAssociation, seal_uniform: UniformSealer) -> OutUniformRoute:
        dest = (sa.dst, sa.encap[1]) if sa.encap is not None else None
        outer = ipv4.HEADER.pack
        src_b, dst_b = sa.src_b, sa.dst_b

        def route(frames: list[bytes], start: int, tos: int, df: int, now: float) -> OutUniform | None:
            count = len(frames)
            nbytes = (len(frames[0]) - start) * count
            first = sa.seq + 1
            if not _run_fits(sa, count, nbytes, now, outbound=True) or (
                sa.esn and (first & 0xFFFFFFFF) + count - 1 > 0xFFFFFFFF
            ):
                return None  # a limit is due (the per-packet path raises the events), or the ESN low half wraps
            # Raw ESP: one outer header for all. The kernel fills in the checksum of every IP_HDRINCL packet and an
            # identification where it is 0 (raw(7)) — except with DF, where 0 stays, as Linux sends its own atomic
            # datagrams (RFC 6864 §4.1). TOS and DF are the inner packets' (RFC 4301 §5.1.2.1), equal for the run.
            def header(esp_size: int) -> bytes:
                return outer(0x45, tos, 20 + esp_size, 0, df, ipv4.DEFAULT_TTL, ipv4.PROTO_ESP, 0, src_b, dst_b)

            data, size = seal_uniform(frames, start, first, header if dest is None else None)
            self._account_out_run(sa, count, nbytes, now)
            return data, size, dest

        return route

    def _account_out_run(self, sa: SecurityAssociation, count: int, nbytes: int, now: float) -> None:
        """A run sealed by a batch or uniform route: what the per-packet route counts for each packet, at once."""
        sa.seq += count
        sa.packets += count
        sa.bytes += nbytes
        sa.last_used = now
        self.out_packets += count
        self.out_bytes += nbytes

    def _account_in_run(self, sa: SecurityAssociation, count: int, nbytes: int, now: float) -> None:
        sa.packets += count
        sa.bytes += nbytes
        sa.last_used = now
        self.in_packets += count
        self.in_bytes += nbytes

    def _out_batch_route(self, sa: SecurityAssociation, seal_batch: BatchSealer) -> OutBatchRoute:
        dest = (sa.dst, sa.encap[1]) if sa.encap is not None else None
        header = outer_header_builder(sa.src_b, sa.dst_b)

        def route(packets: list[bytes], now: float) -> OutBatch | None:
            count = len(packets)
            nbytes = sum(map(len, packets))
            first = sa.seq + 1
            if not _run_fits(sa, count, nbytes, now, outbound=True):
                return None  # a limit is due: the per-packet path raises the events
            esp = seal_batch(packets, first)
            self._account_out_run(sa, count, nbytes, now)
            if dest is not None:
                return esp, dest
            ident = self._ident
            self._ident = (ident + count) & 0xFFFF
            # Outer TOS and DF copied from each inner header, as the general path does (RFC 4301 §5.1.2.1).
            return [
                header(20 + len(e), (ident + i) & 0xFFFF, p[1], (p[6] & 0x40) << 8) + e
                for i, (p, e) in enumerate(zip(packets, esp, strict=True), 1)
            ], None

        return route

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
        allowed = self._allowed_flows.setdefault(id(sa), set())  # shared with the SA's batch route

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

    def inbound_udp_batch(self, payloads: list[bytes], now: float) -> InBatch | None:
        """The datagrams of one UDP 4500 receive (UDP GRO glues only one sender's) through the batch fast path
        (``fastpath.compile_batch_opener``). None when the run needs the per-packet path — another SPI among them,
        a replayed or forged one, a limit due, a flow not yet checked against the SPD: nothing was changed or
        counted then, so hand every datagram to :meth:`inbound_udp`."""
        spi = payloads[0][:4]
        if [p[:4] for p in payloads].count(spi) != len(payloads):
            return None
        route = self._in_batch_routes.get(b"u" + spi)
        if route is None:
            if spi == b"\0\0\0\0":
                return None  # the non-ESP marker: IKE (RFC 3948 §2.2)
            route = self._learn_batch(self._sad.inbound_encap(int.from_bytes(spi, "big")), b"u" + spi)
            if route is None:
                return None
        return self._guarded_run(route, payloads, 0, now)

    def inbound_udp_uniform(self, data: bytes, size: int, now: float) -> InUniform | None:
        """One UDP GRO receive of equal-size datagrams (``data``, cut every ``size`` bytes) through the uniform fast
        path (``fastpath.compile_uniform_opener``): no Python step per packet. None as for
        :meth:`inbound_udp_batch` (try that next, then the per-packet path)."""
        spi = data[:4]
        route = self._in_uniform_routes.get(spi)
        if route is None:
            if spi == b"\0\0\0\0":
                return None  # the non-ESP marker: IKE (RFC 3948 §2.2)
            route = self._learn_uniform(self._sad.inbound_encap(int.from_bytes(spi, "big")), spi)
            if route is None:
                return None
        return self._guarded_run(route, data, size, len(data) // size, 0, now)

    def inbound_ip_uniform(self, packets: list[bytes], now: float) -> InUniform | None:
        """Equal-size whole IPv4 packets drained from the raw ESP socket, through the uniform fast path as in
        :meth:`inbound_udp_uniform`; None means try :meth:`inbound_ip_batch`, then :meth:`inbound_ip`."""
        size = len(packets[0])
        data = b"".join(packets)
        count = len(packets)
        if size < 28 or len(data) != size * count:
            return None
        # Version/IHL, total length, flags + fragment offset, protocol, destination + SPI (the SAD's key).
        rows = set(run_layout(f"!BxH2xHxB6x8s{size - 24}x").iter_unpack(data))
        if len(rows) != 1:
            return None
        version, total, fragment, proto, key = rows.pop()
        if version != 0x45 or total != size or fragment & 0x3FFF or proto != ipv4.PROTO_ESP:
            return None
        route = self._in_uniform_routes.get(b"i" + key)
        if route is None:
            route = self._learn_uniform(self._sad.inbound(int.from_bytes(key[4:], "big"), key[:4]), b"i" + key)
            if route is None:
                return None
        return self._guarded_run(route, data, size, count, 20, now)

    def _uniform_route(self, sa: SecurityAssociation, open_uniform: UniformOpener) -> InUniformRoute:
        allowed = self._allowed_flows.setdefault(id(sa), set())
        update_run = sa.replay.update_run
        ports = _PORT_PROTOCOLS

        def route(data: bytes, stride: int, count: int, start: int, now: float) -> InUniform | None:
            opened = open_uniform(data, stride, count, start)
            if opened is None:
                return None
            plains, plain_size, length, first = opened
            nbytes = length * count
            if not _run_fits(sa, count, nbytes, now, outbound=False):
                return None  # a limit is due: the per-packet path raises the events
            # RFC 4301 §5.2, as in _batch_route: known flows only (fastpath.flow_key's keys), no fragments.
            for frag, proto, addresses in set(run_layout(f"!6xHxB2x12s{plain_size - 24}x").iter_unpack(plains)):
                key = bytes((proto,)) + (addresses if proto in ports else addresses[:8])
                if frag & 0x3FFF or key not in allowed:
                    return None
            update_run(first, count)  # every tag verified (§3.4.3)
            self._account_in_run(sa, count, nbytes, now)
            return plains, plain_size, count, length

        return route

    def inbound_ip_batch(self, packets: list[bytes], now: float) -> InBatch | None:
        """Whole IPv4 packets drained from the raw ESP socket, the same way as :meth:`inbound_udp_batch`: None means
        hand each to :meth:`inbound_ip`."""
        key = packets[0][16:24]  # destination address and SPI: the SAD's inbound key for raw ESP
        if min(map(len, packets)) < 28 or [p[16:24] for p in packets].count(key) != len(packets) or not all(
            [p[0] == 0x45 and p[9] == ipv4.PROTO_ESP and not (p[6] & 0x3F or p[7]) and (p[2] << 8 | p[3]) == len(p)
             for p in packets]
        ):
            return None
        route = self._in_batch_routes.get(b"i" + key)
        if route is None:
            route = self._learn_batch(self._sad.inbound(int.from_bytes(key[4:], "big"), key[:4]), b"i" + key)
            if route is None:
                return None
        return self._guarded_run(route, packets, 20, now)

    def _guarded_run(self, route: Callable[..., _R | None], *args: Any) -> _R | None:
        """Call a batch or uniform route: a bug in one (an exception) is counted and makes the run go to the next
        tier, as a refusal does, instead of killing the daemon."""
        try:
            return route(*args)
        except Exception:
            self._drops["internal_error"] += 1
            return None

    def _learn_uniform(self, sa: SecurityAssociation | None, key: bytes) -> InUniformRoute | None:
        if sa is None or sa.expired:
            return None
        opener = compile_uniform_opener(sa)
        if opener is None:
            return None
        route = self._in_uniform_routes[key] = self._uniform_route(sa, opener)
        return route

    def _learn_batch(self, sa: SecurityAssociation | None, key: bytes) -> InBatchRoute | None:
        if sa is None or sa.expired:
            return None
        opener = compile_batch_opener(sa)
        if opener is None:
            return None
        route = self._batch_route(sa, opener)
        self._in_batch_routes[key] = route
        return route

    def _batch_route(self, sa: SecurityAssociation, open_batch: BatchOpener) -> InBatchRoute:
        allowed = self._allowed_flows.setdefault(id(sa), set())
        update_run = sa.replay.update_run
        ports = _PORT_PROTOCOLS

        def route(packets: list[bytes], start: int, now: float) -> InBatch | None:
            opened = open_batch(packets, start)
            if opened is None:
                return None
            plains, lengths, first = opened
            count = len(plains)
            nbytes = sum(lengths)
            if not _run_fits(sa, count, nbytes, now, outbound=False):
                return None  # a limit is due: the per-packet path raises the events
            # RFC 4301 §5.2: every inner flow must be one the per-packet route already matched against a policy
            # this SA serves (keys as fastpath.flow_key builds them); fragments and new flows go that way first.
            flows = {p[9:10] + p[12:24] if p[9] in ports else p[9:10] + p[12:20] for p in plains}
            if not flows <= allowed or any([p[6] & 0x3F or p[7] for p in plains]):
                return None
            update_run(first, count)  # every tag verified (§3.4.3)
            self._account_in_run(sa, count, nbytes, now)
            return plains, lengths

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


def _run_fits(sa: SecurityAssociation, count: int, nbytes: int, now: float, outbound: bool) -> bool:
    """Whether a run of ``count`` packets (``nbytes`` of plaintext) stays short of every limit of ``sa``, so that a
    batch or uniform route may take it: otherwise the per-packet path must, to raise the events exactly there."""
    return not (
        (outbound and sa.seq + count > sa.seq_max)
        or sa.bytes + nbytes >= sa.limit_bytes
        or sa.packets + count >= sa.limit_packets
        or now >= sa.deadline
        or sa.expired
    )
