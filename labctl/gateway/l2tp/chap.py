"""CHAP with MD5 (RFC 1994 §4.1)."""

from __future__ import annotations

import hashlib


def chap_md5_response(identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 §4.1: Response Value = MD5(Identifier | secret | Challenge Value)."""
    return hashlib.md5(bytes([identifier & 0xFF]) + secret + challenge).digest()  # noqa: S324
