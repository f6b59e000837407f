"""Events the IKEv2 engine hands to its driver (``Ikev2Engine.next_event()``); small plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SaDirection:
    """Everything the data plane needs for one direction of a child SA."""

    spi: int
    encr: str | None  # strongSwan-style: aes128gcm16, aes256, aes128ctr, chacha20poly1305, 3des, null
    encr_key: bytes  # cipher key including the salt / nonce for AEAD and CTR
    integ: str | None  # sha1, sha256, sha384, sha512 (HMAC, truncated as in RFC 4868 / RFC 2404)
    integ_key: bytes
    src: str  # outer source address
    dst: str  # outer destination address
    encap: tuple[int, int] | None  # (source port, destination port) for UDP-encapsulated ESP, else None


@dataclass(frozen=True)
class ChildSaUp:
    conn: str
    child: str
    protocol: str  # esp | ah
    mode: str  # tunnel | transport
    inbound: SaDirection
    outbound: SaDirection
    esn: bool
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    rekey_time: float  # seconds from now; 0 = never
    life_time: float
    life_bytes: int
    life_packets: int
    ike_spis: tuple[str, str]
    replaces: tuple[int, int] | None = None  # (old inbound SPI, old outbound SPI) when this is a rekey


@dataclass(frozen=True)
class ChildSaRekeyed:
    conn: str
    child: str
    old_spis: tuple[int, int]  # (inbound, outbound)
    new_spis: tuple[int, int]


@dataclass(frozen=True)
class ChildSaDown:
    conn: str
    child: str
    protocol: str
    spi_in: int
    spi_out: int
    reason: str


@dataclass(frozen=True)
class ChildSaFailed:
    conn: str
    child: str
    reason: str


@dataclass(frozen=True)
class IkeSaUp:
    conn: str
    spi_i: str
    spi_r: str
    local: tuple[str, int]
    remote: tuple[str, int]
    local_id: str
    remote_id: str
    algorithms: str
    nat_local: bool
    nat_remote: bool
    rekeyed: bool = False


@dataclass(frozen=True)
class IkeSaDown:
    conn: str
    spi_i: str
    spi_r: str
    reason: str


@dataclass(frozen=True)
class AuthFailed:
    conn: str
    reason: str


@dataclass(frozen=True)
class ProposalMismatch:
    conn: str
    reason: str


@dataclass(frozen=True)
class PeerDead:
    conn: str
    reason: str


Event = (ChildSaUp | ChildSaRekeyed | ChildSaDown | ChildSaFailed | IkeSaUp | IkeSaDown | AuthFailed
         | ProposalMismatch | PeerDead)
