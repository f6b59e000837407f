"""Events the IKEv1 engine hands to the daemon: small, neutral dataclasses (no data-plane types)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SaKeys:
    """Keys of one direction of an IPsec SA. Algorithm names are strongSwan's (aes128, aes128gcm16,
    3des, null; sha1, sha256, sha384, sha512). For AEAD ciphers `encr_key` ends with the salt."""

    spi: int
    encr: str | None
    encr_key: bytes
    integ: str | None
    integ_key: bytes


@dataclass(frozen=True)
class IpsecSaEstablished:
    """A pair of one-way IPsec SAs from Quick Mode (RFC 2409 §5.5)."""

    connection: str
    child: str
    protocol: str  # "esp" | "ah"
    mode: str  # "tunnel" | "transport"
    inbound: SaKeys
    outbound: SaKeys
    local_addr: str  # outer addresses
    remote_addr: str
    encap: tuple[int, int] | None  # (local UDP port, remote UDP port) for ESP-in-UDP (RFC 3948), else None
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    lifetime: float  # seconds
    life_kilobytes: int | None
    pfs_group: int | None
    nat_oa_local: str | None = None  # RFC 3947 §5.2 original addresses, transport mode over UDP
    nat_oa_remote: str | None = None
    replaces_inbound_spi: int | None = None  # set when this pair is a rekey of an older one


@dataclass(frozen=True)
class IpsecSaDeleted:
    connection: str
    child: str
    protocol: str
    inbound_spi: int
    outbound_spi: int
    reason: str


@dataclass(frozen=True)
class IsakmpSaEstablished:
    connection: str
    icookie: bytes
    rcookie: bytes
    mode: str  # "main" | "aggressive"
    algorithms: str  # e.g. "aes256-sha256-modp2048"
    local_id: str
    remote_id: str
    nat_local: bool
    nat_remote: bool


@dataclass(frozen=True)
class IsakmpSaDeleted:
    connection: str
    icookie: bytes
    rcookie: bytes
    reason: str


@dataclass(frozen=True)
class ExchangeFailed:
    """The last error, in words a person can act on."""

    connection: str
    reason: str


@dataclass(frozen=True)
class SecurityWarning:
    connection: str
    message: str


@dataclass(frozen=True)
class PeerDead:
    """DPD (RFC 3706) got no answer within dpd_timeout."""

    connection: str
    action: str
    reason: str = ""  # plain words for status' last_error, like the IKEv2 engine's PeerDead


Event = (IpsecSaEstablished | IpsecSaDeleted | IsakmpSaEstablished | IsakmpSaDeleted | ExchangeFailed
         | SecurityWarning | PeerDead)
