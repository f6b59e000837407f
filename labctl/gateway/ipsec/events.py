"""Events the data plane reports to its owner (the daemon, and through it IKE), drained by ``poll_events``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class SoftExpired:
    """A soft lifetime was reached: IKE should rekey (RFC 4301 §4.4.2.1)."""

    spi: int
    protocol: str
    direction: Direction
    reqid: int
    reason: str  # "bytes" | "packets" | "seconds"


@dataclass(frozen=True)
class HardExpired:
    """A hard lifetime was reached: the SA was removed and is no longer used (RFC 4301 §4.4.2.1)."""

    spi: int
    protocol: str
    direction: Direction
    reqid: int
    reason: str


@dataclass(frozen=True)
class SeqExhausted:
    """The outbound sequence number would wrap: the SA refuses to send (RFC 4303 §3.3.3); rekey it."""

    spi: int
    protocol: str
    reqid: int


@dataclass(frozen=True)
class Acquire:
    """A packet matched a ``protect`` policy with no usable SA; it was dropped (fail closed, RFC 4301 §5.1)."""

    policy: str
    reqid: int
    src: str
    dst: str
    proto: int


Event = SoftExpired | HardExpired | SeqExhausted | Acquire
