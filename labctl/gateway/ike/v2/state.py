"""The state one IKEv2 endpoint keeps per IKE SA and per child SA; behaviour lives in ``engine.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from labctl.gateway.ike.dh import DhPrivate
from labctl.gateway.ike.v2.ciphers import SkCipher
from labctl.gateway.ike.v2.codec import Message, TrafficSelector
from labctl.gateway.ike.v2.config import ChildConfig, ConnectionConfig
from labctl.gateway.ike.v2.keymat import IkeKeys
from labctl.gateway.ike.v2.proposals import Algorithms

Addr = tuple[str, int]


class IkeState(Enum):
    INIT_SENT = "connecting"  # initiator: IKE_SA_INIT sent
    INIT_DONE = "half-open"  # responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    AUTH_SENT = "authenticating"  # initiator: IKE_AUTH sent
    ESTABLISHED = "established"
    REKEYED = "rekeyed"  # replaced by a new IKE SA, waiting for its deletion
    DELETING = "deleting"
    CLOSED = "closed"


class ChildState(Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"  # our CREATE_CHILD_SA rekey request is outstanding
    REKEYED = "rekeyed"  # a newer child replaced it, the old one waits for deletion
    DELETING = "deleting"


@dataclass
class ChildSa:
    cfg: ChildConfig
    protocol: int
    mode: str
    spi_in: int
    spi_out: int
    algs: Algorithms
    local_ts: list[TrafficSelector]
    remote_ts: list[TrafficSelector]
    installed_at: float
    rekey_at: float | None
    expire_at: float | None
    state: ChildState = ChildState.INSTALLED
    # Collision bookkeeping (RFC 7296 §2.8.1): nonces of our rekey exchange and the child it created,
    # and the same for a rekey of this child that the peer started.
    own_rekey: tuple[ChildSa, bytes, bytes] | None = None
    peer_rekey: tuple[ChildSa, bytes, bytes] | None = None


@dataclass
class Request:
    """One outstanding request of ours: the bytes to retransmit and what to do with the answer."""

    kind: str
    message_id: int
    datagram: bytes
    handler: Callable[[Message, float], None]
    first_sent: float
    next_retransmit: float
    tries: int = 0
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class IkeSa:
    conn: ConnectionConfig
    initiator: bool
    spi_i: bytes
    spi_r: bytes
    local: Addr
    remote: Addr
    state: IkeState
    created: float
    ni: bytes = b""
    nr: bytes = b""
    dh: DhPrivate | None = None
    algs: Algorithms | None = None
    keys: IkeKeys | None = None
    cipher_out: SkCipher | None = None
    cipher_in: SkCipher | None = None
    init_request: bytes = b""  # raw IKE_SA_INIT request as sent/received (AUTH covers it, §2.15)
    init_response: bytes = b""
    cookie: bytes = b""
    peer_hashes: list[int] = field(default_factory=list)  # SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4)
    peer_certreq: bool = False
    nat_local: bool = False
    nat_remote: bool = False
    next_mid: int = 0  # next request of ours
    peer_mid: int = 0  # next request expected from the peer
    outstanding: Request | None = None
    queue: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    last_response: tuple[int, bytes] | None = None  # (message id, datagram) for retransmitted requests
    children: list[ChildSa] = field(default_factory=list)
    pending_children: list[str] = field(default_factory=list)  # for IKE_AUTH / after establishment
    local_id: str = ""
    remote_id: str = ""
    rekey_at: float | None = None
    expire_at: float | None = None
    last_heard: float = 0.0
    established_at: float = 0.0
    own_ike_rekey: tuple[IkeSa, bytes, bytes] | None = None
    peer_ike_rekey: tuple[IkeSa, bytes, bytes] | None = None
    initial_contact: bool = False
    error: str = ""

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def nat_any(self) -> bool:
        return self.nat_local or self.nat_remote

    def child_by_spi_out(self, spi: int, protocol: int) -> ChildSa | None:
        return next((c for c in self.children if c.spi_out == spi and c.protocol == protocol), None)

    def child_by_spi_in(self, spi: int) -> ChildSa | None:
        return next((c for c in self.children if c.spi_in == spi), None)
