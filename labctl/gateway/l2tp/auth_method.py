"""The PPP authentication methods we speak, and how LCP names them (RFC 1661 §6.2)."""

from __future__ import annotations

from enum import Enum

from labctl.gateway.l2tp.ppp_frame import PROTO_CHAP, PROTO_PAP


class AuthMethod(Enum):
    """Value: the LCP Authentication-Protocol option data."""

    PAP = PROTO_PAP.to_bytes(2, "big")  # RFC 1334 §3.1
    CHAP_MD5 = PROTO_CHAP.to_bytes(2, "big") + b"\x05"  # RFC 1994 §3: algorithm 5 = MD5
    MSCHAPV2 = PROTO_CHAP.to_bytes(2, "big") + b"\x81"  # RFC 2759 §2: algorithm 0x81

    @property
    def label(self) -> str:
        return {"PAP": "pap", "CHAP_MD5": "chap-md5", "MSCHAPV2": "mschapv2"}[self.name]

    @classmethod
    def from_option(cls, data: bytes) -> AuthMethod | None:
        for method in cls:
            if method.value == data:
                return method
        return None

    @classmethod
    def from_label(cls, label: str) -> AuthMethod:
        for method in cls:
            if method.label == label.lower():
                return method
        raise ValueError(f"unknown PPP authentication method {label!r} (pap, chap-md5, mschapv2)")
