"""The SA database: what config or IKE hands in (:class:`SaParams`), the per-SA runtime state
(:class:`SecurityAssociation`: cipher objects, sequence numbers, replay window, counters, lifetimes) and the
lookup tables (:class:`Sad`).

Inbound SAs are found by (SPI, destination address) as RFC 4301 §4.1 allows for unicast SAs; an SA that
expects UDP encapsulation is also found by SPI alone, because a NAT may have rewritten the destination.
Outbound SAs are found through the policy's ``reqid`` (the link a policy has to the SAs that serve it, as in
Linux XFRM) and protocol; when several exist (during a rekey) the newest one is used.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Literal

from .events import Direction, Event, HardExpired, SoftExpired
from .replay import ReplayWindow
from .transforms import EspCipher, Integrity, encr_algorithm, integ_algorithm

Protocol = Literal["esp", "ah"]
Mode = Literal["tunnel", "transport"]

SEQ_MAX_32 = 0xFFFFFFFF
SEQ_MAX_64 = 0xFFFFFFFFFFFFFFFF
_UNLIMITED = 1 << 80


@dataclass(frozen=True)
class Lifetime:
    """Soft and hard limits; 0 means unlimited. Seconds count from the ``now`` given to ``add_sa``."""

    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0
    soft_seconds: float = 0.0
    hard_seconds: float = 0.0


@dataclass(frozen=True)
class SaParams:
    """One SA as configuration or IKE describes it.

    ``src``/``dst`` are the outer addresses as they appear on packets of this SA: for an outbound SA our address
    then the peer's, for an inbound SA the peer's then ours. ``encr_key`` includes the salt/nonce where the
    algorithm has one (see ``transforms.EncrAlgorithm.keymat_len``). ``reqid`` ties the SA to the policies it
    serves (``spd.Policy.reqid``). ``encap`` is the UDP (source port, destination port) for ESP-in-UDP.
    """

    spi: int
    protocol: Protocol
    mode: Mode
    src: str
    dst: str
    encr: str | None = None
    encr_key: bytes = b""
    integ: str | None = None
    integ_key: bytes = b""
    esn: bool = False
    replay_window: int = 64
    encap: tuple[int, int] | None = None
    lifetime: Lifetime = field(default_factory=Lifetime)
    reqid: int = 1


class SecurityAssociation:
    """Runtime state of one SA in one direction. Built once; the packet path only reads and bumps counters."""

    __slots__ = (
        "params", "direction", "spi", "protocol", "mode", "tunnel", "reqid", "esn", "src", "dst", "src_b",
        "dst_b", "spi_b", "cipher", "integ", "seq", "seq_max", "replay", "encap", "udp_addr",
        "packets", "bytes", "replay_drops", "integrity_failures", "decrypt_failures", "pad_errors",
        "added_at", "soft_done", "expired", "limit_bytes", "limit_packets", "deadline", "last_used",
    )  # fmt: skip

    def __init__(self, params: SaParams, direction: Direction, now: float) -> None:
        if not 256 <= params.spi <= 0xFFFFFFFF:
            # SPIs 1..255 are reserved by IANA and 0 means "no SA" (RFC 4303 §2.1).
            raise ValueError(f"SPI 0x{params.spi:x} is reserved (must be 256..2^32-1)")
        if params.protocol not in ("esp", "ah"):
            raise ValueError(f"protocol must be 'esp' or 'ah', got {params.protocol!r}")
        if params.mode not in ("tunnel", "transport"):
            raise ValueError(f"mode must be 'tunnel' or 'transport', got {params.mode!r}")
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        self.params = params
        self.direction = direction
        self.spi = params.spi
        self.spi_b = params.spi.to_bytes(4, "big")
        self.protocol = params.protocol
        self.mode = params.mode
        self.tunnel = params.mode == "tunnel"
        self.reqid = params.reqid
        self.esn = params.esn
        self.src = params.src
        self.dst = params.dst
        self.src_b = ipaddress.IPv4Address(params.src).packed
        self.dst_b = ipaddress.IPv4Address(params.dst).packed
        self.cipher: EspCipher | None = None
        self.integ: Integrity | None = None
        if params.protocol == "esp":
            if params.encr is None:
                raise ValueError("an ESP SA needs an encryption algorithm (use 'null' for integrity only)")
            encr = encr_algorithm(params.encr)
            self.cipher = encr.new(params.encr_key)
            if encr.aead and params.integ is not None:
                raise ValueError(f"{encr.name} is an AEAD: it takes no separate integrity algorithm")
        else:
            if params.encr is not None:
                raise ValueError("AH provides no encryption: leave 'encr' unset")
            if params.integ is None:
                raise ValueError("an AH SA needs an integrity algorithm")
            if params.encap is not None:
                raise ValueError("AH cannot be UDP-encapsulated (RFC 3948 covers ESP only)")
        if params.integ is not None:
            self.integ = integ_algorithm(params.integ).new(params.integ_key)
        self.seq = 0  # last sequence number sent; the first packet carries 1 (RFC 4303 §3.3.3)
        self.seq_max = SEQ_MAX_64 if params.esn else SEQ_MAX_32
        self.replay = ReplayWindow(params.replay_window, params.esn)
        self.encap = params.encap
        self.udp_addr = (params.dst, params.encap[1]) if params.encap else None
        self.packets = 0
        self.bytes = 0
        self.replay_drops = 0
        self.integrity_failures = 0
        self.decrypt_failures = 0
        self.pad_errors = 0
        self.added_at = now
        self.last_used: float | None = None
        self.soft_done = False
        self.expired = False
        self.limit_bytes = self.limit_packets = _UNLIMITED
        self.deadline = math.inf
        self._arm_limits()

    def _arm_limits(self) -> None:
        """Set the next thresholds the packet path compares against (one comparison per dimension)."""
        lt = self.params.lifetime

        def nearest(soft: float, hard: float) -> float:
            candidates = [v for v in ((0 if self.soft_done else soft), hard) if v]
            return min(candidates) if candidates else math.inf

        b = nearest(lt.soft_bytes, lt.hard_bytes)
        p = nearest(lt.soft_packets, lt.hard_packets)
        s = nearest(lt.soft_seconds, lt.hard_seconds)
        self.limit_bytes = _UNLIMITED if b == math.inf else int(b)
        self.limit_packets = _UNLIMITED if p == math.inf else int(p)
        self.deadline = self.added_at + s

    def account(self, nbytes: int, now: float, events: list[Event]) -> bool:
        """Count one packet; False (and a HardExpired event) once a hard limit is reached."""
        self.packets += 1
        self.bytes += nbytes
        self.last_used = now
        if self.bytes >= self.limit_bytes or self.packets >= self.limit_packets or now >= self.deadline:
            return self.check_lifetime(now, events)
        return True

    def check_lifetime(self, now: float, events: list[Event]) -> bool:
        """Fire soft/hard expiry when due; returns False when the SA is hard-expired."""
        if self.expired:
            return False
        lt = self.params.lifetime
        age = now - self.added_at
        hard = _reached(lt.hard_bytes, lt.hard_packets, lt.hard_seconds, self.bytes, self.packets, age)
        if hard:
            self.expired = True
            events.append(HardExpired(self.spi, self.protocol, self.direction, self.reqid, hard))
            return False
        if not self.soft_done:
            soft = _reached(lt.soft_bytes, lt.soft_packets, lt.soft_seconds, self.bytes, self.packets, age)
            if soft:
                self.soft_done = True
                events.append(SoftExpired(self.spi, self.protocol, self.direction, self.reqid, soft))
                self._arm_limits()
        return True

    def status(self, now: float) -> dict[str, object]:
        """JSON-ready description (no keys) for ``list-sas``."""
        p = self.params
        lt = p.lifetime
        return {
            "spi": f"0x{self.spi:08x}",
            "direction": self.direction,
            "protocol": self.protocol,
            "mode": self.mode,
            "src": self.src,
            "dst": self.dst,
            "reqid": self.reqid,
            "encr": p.encr,
            "integ": p.integ,
            "esn": self.esn,
            "encap": list(p.encap) if p.encap else None,
            "replay_window": p.replay_window,
            "seq": self.seq if self.direction == "out" else self.replay.top,
            "packets": self.packets,
            "bytes": self.bytes,
            "replay_drops": self.replay_drops,
            "integrity_failures": self.integrity_failures,
            "decrypt_failures": self.decrypt_failures,
            "pad_errors": self.pad_errors,
            "age": round(now - self.added_at, 3),
            "last_used": None if self.last_used is None else round(now - self.last_used, 3),
            "soft_expired": self.soft_done,
            "lifetime": {
                "soft_bytes": lt.soft_bytes, "hard_bytes": lt.hard_bytes,
                "soft_packets": lt.soft_packets, "hard_packets": lt.hard_packets,
                "soft_seconds": lt.soft_seconds, "hard_seconds": lt.hard_seconds,
            },
        }  # fmt: skip


def _reached(limit_bytes: int, limit_packets: int, limit_seconds: float, b: int, p: int, age: float) -> str:
    if limit_bytes and b >= limit_bytes:
        return "bytes"
    if limit_packets and p >= limit_packets:
        return "packets"
    if limit_seconds and age >= limit_seconds:
        return "seconds"
    return ""


class Sad:
    """Lookup tables over the installed SAs."""

    def __init__(self) -> None:
        self._in: dict[tuple[int, bytes], SecurityAssociation] = {}
        self._in_encap: dict[int, SecurityAssociation] = {}
        self._out: dict[int, SecurityAssociation] = {}
        self._out_by_reqid: dict[tuple[int, str], list[SecurityAssociation]] = {}

    def add(self, sa: SecurityAssociation) -> None:
        if sa.direction == "in":
            key = (sa.spi, sa.dst_b)
            if key in self._in:
                raise ValueError(f"inbound SA 0x{sa.spi:08x} to {sa.dst} already exists")
            self._in[key] = sa
            if sa.encap:
                self._in_encap[sa.spi] = sa
        else:
            if sa.spi in self._out:
                raise ValueError(f"outbound SA 0x{sa.spi:08x} already exists")
            self._out[sa.spi] = sa
            self._out_by_reqid.setdefault((sa.reqid, sa.protocol), []).append(sa)

    def remove(self, spi: int, direction: Direction, dst: str | None = None) -> SecurityAssociation | None:
        if direction == "in":
            found = [k for k in self._in if k[0] == spi and (dst is None or self._in[k].dst == dst)]
            sa = None
            for key in found:
                sa = self._in.pop(key)
                if self._in_encap.get(spi) is sa:
                    del self._in_encap[spi]
            return sa
        sa = self._out.pop(spi, None)
        if sa is not None:
            chain = self._out_by_reqid.get((sa.reqid, sa.protocol), [])
            chain.remove(sa)
            if not chain:
                del self._out_by_reqid[(sa.reqid, sa.protocol)]
        return sa

    def inbound(self, spi: int, dst_b: bytes) -> SecurityAssociation | None:
        return self._in.get((spi, dst_b))

    def inbound_encap(self, spi: int) -> SecurityAssociation | None:
        return self._in_encap.get(spi)

    def outbound(self, reqid: int, protocol: str) -> SecurityAssociation | None:
        chain = self._out_by_reqid.get((reqid, protocol))
        return chain[-1] if chain else None

    def all(self) -> list[SecurityAssociation]:
        return [*self._out.values(), *self._in.values()]
