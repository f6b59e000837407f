"""MS-CHAPv2 computations (RFC 2759 §8)."""

from __future__ import annotations

import hashlib
import hmac

from labctl.gateway.l2tp.des import des_encrypt_block
from labctl.gateway.l2tp.md4 import md4

# RFC 2759 §8.7: the two constants mixed into the authenticator response.
_MAGIC1 = b"Magic server to client signing constant"
_MAGIC2 = b"Pad to make it do more than one iteration"


def nt_password_hash(password: str) -> bytes:
    """RFC 2759 §8.3: MD4 over the password in UTF-16 little endian ("Unicode")."""
    return md4(password.encode("utf-16-le"))


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    """RFC 2759 §8.4."""
    return md4(password_hash)


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, user_name: str) -> bytes:
    """RFC 2759 §8.2: first 8 octets of SHA-1(PeerChallenge | AuthenticatorChallenge | UserName)."""
    digest = hashlib.sha1(  # noqa: S324 - SHA-1 is what the protocol defines
        peer_challenge + authenticator_challenge + user_name.encode("utf-8")
    ).digest()
    return digest[:8]


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """RFC 2759 §8.5: three DES encryptions of the challenge under the zero-padded hash."""
    z_hash = password_hash + bytes(21 - len(password_hash))
    return b"".join(des_encrypt_block(z_hash[i : i + 7], challenge) for i in (0, 7, 14))


def generate_nt_response(authenticator_challenge: bytes, peer_challenge: bytes, user_name: str, password: str) -> bytes:
    """RFC 2759 §8.1: the 24-octet NT-Response the peer sends."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    return challenge_response(challenge, nt_password_hash(password))


def generate_authenticator_response(
    password: str,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    user_name: str,
) -> str:
    """RFC 2759 §8.7: the "S=<40 hex digits>" string that proves the authenticator knows the password."""
    password_hash_hash = hash_nt_password_hash(nt_password_hash(password))
    digest = hashlib.sha1(password_hash_hash + nt_response + _MAGIC1).digest()  # noqa: S324
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    digest = hashlib.sha1(digest + challenge + _MAGIC2).digest()  # noqa: S324
    return "S=" + digest.hex().upper()


def check_authenticator_response(
    password: str,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    user_name: str,
    received: str,
) -> bool:
    """RFC 2759 §8.8: constant-time comparison of the received "S=..." string."""
    expected = generate_authenticator_response(
        password, nt_response, peer_challenge, authenticator_challenge, user_name
    )
    return hmac.compare_digest(expected.encode("ascii"), received[:42].upper().encode("ascii", "replace"))
