"""Connection configuration for the IKEv2 engine, shaped like swanctl.conf (plain data, PEM as text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from labctl.gateway.ike.v2.proposals import DEFAULT_AH_PROPOSALS, DEFAULT_ESP_PROPOSALS, DEFAULT_IKE_PROPOSALS


@dataclass(frozen=True)
class ChildConfig:
    name: str
    local_ts: tuple[str, ...] = ("dynamic",)  # CIDR, range or "dynamic" (our own address)
    remote_ts: tuple[str, ...] = ("dynamic",)
    mode: Literal["tunnel", "transport"] = "tunnel"
    protocol: Literal["esp", "ah"] = "esp"
    proposals: tuple[str, ...] = ()  # empty: RFC 8247 defaults; a DH group in a proposal means PFS
    rekey_time: float = 3600.0
    life_time: float = 0.0  # 0: rekey_time * 1.1, as swanctl
    rand_time: float = 0.0  # 0: 10 % of (life_time - rekey_time), as swanctl
    rekey_bytes: int = 0
    life_bytes: int = 0
    rekey_packets: int = 0
    life_packets: int = 0
    start_action: Literal["start", "trap", "none"] = "start"

    def effective_proposals(self) -> tuple[str, ...]:
        if self.proposals:
            return self.proposals
        return DEFAULT_AH_PROPOSALS if self.protocol == "ah" else DEFAULT_ESP_PROPOSALS


@dataclass(frozen=True)
class ConnectionConfig:
    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]  # "%any" accepts any peer (responder only)
    local_id: str = ""  # empty: our address
    remote_id: str = "%any"
    auth: Literal["psk", "pubkey"] = "psk"
    psk: bytes = b""
    private_key_pem: str = ""
    cert_pem: str = ""
    ca_pems: tuple[str, ...] = ()
    proposals: tuple[str, ...] = DEFAULT_IKE_PROPOSALS
    children: tuple[ChildConfig, ...] = ()
    version: int = 2
    local_port: int = 500
    remote_port: int = 500
    start_action: Literal["start", "trap", "none"] = "none"
    dpd_delay: float = 0.0  # 0: no liveness checks
    dpd_timeout: float = 0.0  # 0: give up only when retransmissions are exhausted
    dpd_action: Literal["restart", "clear", "none"] = "clear"
    encap: bool = False  # force UDP encapsulation by faking NAT detection (strongSwan encap=yes)
    rekey_time: float = 14400.0
    over_time: float = 0.0  # 0: 10 % of rekey_time
    rand_time: float = 0.0  # 0: 10 % of over_time
    reauth: bool = False  # not implemented; IKE SAs are rekeyed
    send_certreq: bool = True
    retransmit_timeout: float = 4.0  # strongSwan's charon.retransmit_* defaults
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    extra: dict[str, str] = field(default_factory=dict)

    def child(self, name: str) -> ChildConfig | None:
        return next((c for c in self.children if c.name == name), None)
