"""IKEv1 connection configuration, shaped like swanctl.conf (one connection, its children).

Sans-I/O: keys and certificates are PEM bytes, not paths. The gateway maps its own configuration onto this
in `labctl.gateway.ike_adapter.make_v1_engine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Ikev1ChildConfig:
    name: str
    local_ts: tuple[str, ...]  # IPv4 prefixes; Quick Mode carries one pair (the first)
    remote_ts: tuple[str, ...]
    mode: Literal["tunnel", "transport"] = "tunnel"
    protocol: Literal["esp", "ah"] = "esp"
    proposals: tuple[str, ...] = ("aes128-sha256",)  # e.g. "aes256-sha256-modp2048" (group = PFS)
    lifetime: float = 3600.0  # seconds (RFC 2407 §4.5 SA Life Type seconds)
    life_kilobytes: int = 0  # 0: no volume lifetime proposed
    rekey_margin: float = 0.1  # fraction of the lifetime before expiry at which we rekey
    start_action: Literal["start", "trap", "none"] = "start"


@dataclass(frozen=True)
class Ikev1ConnectionConfig:
    name: str
    local_addr: str
    remote_addr: str
    local_id: str = ""  # "" = our address (or the certificate's DN with pubkey auth)
    remote_id: str = ""  # "" = accept whatever identity the peer proves
    mode: Literal["main", "aggressive"] = "main"
    auth: Literal["psk", "pubkey"] = "psk"
    psk: bytes = b""
    private_key_pem: bytes = b""
    cert_pem: bytes = b""
    ca_pems: tuple[bytes, ...] = ()
    proposals: tuple[str, ...] = ("aes128-sha256-modp2048",)
    children: tuple[Ikev1ChildConfig, ...] = ()
    lifetime: float = 14400.0  # ISAKMP SA lifetime, seconds
    rekey_margin: float = 0.1
    local_port: int = 500
    remote_port: int = 500
    encap: bool = False  # force UDP encapsulation (pretend a NAT), as strongSwan's libipsec does
    dpd_delay: float = 0.0  # 0: no DPD (RFC 3706)
    dpd_timeout: float = 30.0
    dpd_action: Literal["restart", "clear", "none"] = "restart"
    allow_legacy: bool = False  # DH group 2 (RFC 8247 §2.4 says MUST NOT)
    retransmit_timeout: float = 2.0
    retransmit_tries: int = 5
    retransmit_base: float = 1.8
    extra: dict[str, str] = field(default_factory=dict)
