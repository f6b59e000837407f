"""Diffie-Hellman groups for IKEv1 and IKEv2, looked up by their IANA number.

Version-neutral: both IKE versions carry the public value as raw bytes in a KE payload and
feed the shared secret into their key derivation.  Randomness is injected (``rng(n) -> bytes``)
so that tests can pin keys and two endpoints can run deterministically back to back.

Supported: MODP 2 (RFC 2409 §6.2, legacy), 5, 14, 15, 16 (RFC 3526), ECP 19, 20, 21 (RFC 5903)
and Curve25519 = 31 (RFC 8031).  Every peer public value passes the RFC 6989 checks before use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

Rng = Callable[[int], bytes]


class InvalidPublicValue(ValueError):
    """The peer's KE data failed the RFC 6989 checks (or has the wrong length)."""


class UnknownGroup(KeyError):
    """No Diffie-Hellman group with this IANA number is implemented."""


def _hex_int(text: str) -> int:
    return int("".join(text.split()), 16)


# The MODP primes are p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) * pi) + k); the hex values
# below are those printed in RFC 2409 §6.2 (group 2) and RFC 3526 §2-§5 (groups 5, 14, 15, 16).
# tests/unit/ike/test_dh.py re-derives each one from that formula and checks it is a safe prime.
_MODP_1024 = _hex_int(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE65381 FFFFFFFF FFFFFFFF"
)
_MODP_1536 = _hex_int(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA237327 FFFFFFFF FFFFFFFF"
)
_MODP_2048 = _hex_int(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AACAA68 FFFFFFFF FFFFFFFF"
)
_MODP_3072 = _hex_int(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AAAC42D AD33170D 04507A33"
    "A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7"
    "ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864"
    "D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2"
    "08E24FA0 74E5AB31 43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF"
)
_MODP_4096 = _hex_int(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AAAC42D AD33170D 04507A33"
    "A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7"
    "ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864"
    "D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2"
    "08E24FA0 74E5AB31 43DB5BFC E0FD108E 4B82D120 A9210801 1A723C12 A787E6D7"
    "88719A10 BDBA5B26 99C32718 6AF4E23C 1A946834 B6150BDA 2583E9CA 2AD44CE8"
    "DBBBC2DB 04DE8EF9 2E8EFC14 1FBECAA6 287C5947 4E6BC05D 99B2964F A090C3A2"
    "233BA186 515BE7ED 1F612970 CEE2D7AF B81BDD76 2170481C D0069127 D5B05AA9"
    "93B4EA98 8D8FDDC1 86FFB7DC 90A6C08F 4DF435C9 34063199 FFFFFFFF FFFFFFFF"
)


class DhPrivate:
    """One side's ephemeral key pair for one exchange."""

    group: DhGroup

    def public_bytes(self) -> bytes:
        raise NotImplementedError

    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^ir as IKE uses it; raises InvalidPublicValue on a bad peer value."""
        raise NotImplementedError


@dataclass(frozen=True)
class DhGroup:
    number: int
    name: str  # swanctl keyword, e.g. "modp2048", "ecp256", "curve25519"
    public_len: int  # exact length of the KE payload data

    def generate(self, rng: Rng = os.urandom) -> DhPrivate:
        raise NotImplementedError

    def check_public(self, peer_public: bytes) -> None:
        """RFC 6989 validation of a peer public value; raises InvalidPublicValue."""
        raise NotImplementedError


@dataclass(frozen=True)
class ModpGroup(DhGroup):
    prime: int = 0
    generator: int = 2
    exponent_bits: int = 256

    def generate(self, rng: Rng = os.urandom) -> DhPrivate:
        # RFC 3526 §8 / RFC 7296 §2.12: an exponent of about twice the group strength suffices;
        # forcing the top bit keeps the exponent from being accidentally short.
        nbytes = self.exponent_bits // 8
        x = int.from_bytes(rng(nbytes), "big") | (1 << (self.exponent_bits - 1))
        return _ModpPrivate(self, x)

    def check_public(self, peer_public: bytes) -> None:
        # RFC 7296 §3.4: the value is zero-padded to the length of the prime.
        if len(peer_public) != self.public_len:
            raise InvalidPublicValue(
                f"{self.name}: public value is {len(peer_public)} bytes, expected {self.public_len}"
            )
        y = int.from_bytes(peer_public, "big")
        # RFC 6989 §2.1: 1 < y < p-1 for safe-prime groups (rules out 0, 1 and p-1, the small subgroup).
        if not 1 < y < self.prime - 1:
            raise InvalidPublicValue(f"{self.name}: public value outside 1 < y < p-1 (RFC 6989 §2.1)")


class _ModpPrivate(DhPrivate):
    def __init__(self, group: ModpGroup, x: int) -> None:
        self.group = group
        self._group = group
        self._x = x
        self._public = pow(group.generator, x, group.prime).to_bytes(group.public_len, "big")

    def public_bytes(self) -> bytes:
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._group.check_public(peer_public)
        y = int.from_bytes(peer_public, "big")
        z = pow(y, self._x, self._group.prime)
        if z in (0, 1, self._group.prime - 1):
            raise InvalidPublicValue(f"{self._group.name}: degenerate shared secret")
        # RFC 7296 §2.14: g^ir is represented as a string of the prime's length, zero-padded.
        return z.to_bytes(self._group.public_len, "big")


@dataclass(frozen=True)
class EcpGroup(DhGroup):
    curve: type[ec.EllipticCurve] = ec.SECP256R1
    coord_len: int = 32
    order: int = 0

    def generate(self, rng: Rng = os.urandom) -> DhPrivate:
        # Rejection sampling keeps the scalar uniform in [1, n-1] without modulo bias.
        while True:
            d = int.from_bytes(rng(self.coord_len), "big")
            if self.coord_len * 8 > self.order.bit_length():
                d &= (1 << self.order.bit_length()) - 1
            if 1 <= d < self.order:
                return _EcpPrivate(self, ec.derive_private_key(d, self.curve()))

    def load_public(self, peer_public: bytes) -> ec.EllipticCurvePublicKey:
        # RFC 5903 §7: IKE carries x || y, each of the field length, without the SEC1 0x04 prefix.
        if len(peer_public) != self.public_len:
            raise InvalidPublicValue(
                f"{self.name}: public value is {len(peer_public)} bytes, expected {self.public_len}"
            )
        try:
            # RFC 6989 §2.3: the point must lie on the curve; the library refuses points that do not.
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve(), b"\x04" + peer_public)
        except ValueError as exc:
            raise InvalidPublicValue(f"{self.name}: public value is not a point on the curve") from exc

    def check_public(self, peer_public: bytes) -> None:
        self.load_public(peer_public)


class _EcpPrivate(DhPrivate):
    def __init__(self, group: EcpGroup, key: ec.EllipticCurvePrivateKey) -> None:
        self.group = group
        self._group = group
        self._key = key
        self._public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]

    def public_bytes(self) -> bytes:
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        peer = self._group.load_public(peer_public)
        try:
            # RFC 5903 §7 (errata 9): the shared secret is the x coordinate of g^ir only.
            return self._key.exchange(ec.ECDH(), peer)
        except ValueError as exc:
            raise InvalidPublicValue(f"{self._group.name}: key agreement failed") from exc


@dataclass(frozen=True)
class Curve25519Group(DhGroup):
    def generate(self, rng: Rng = os.urandom) -> DhPrivate:
        # RFC 8031 §2 / RFC 7748 §5: 32 random bytes; clamping is done by the X25519 function.
        return _X25519Private(self, x25519.X25519PrivateKey.from_private_bytes(rng(32)))

    def check_public(self, peer_public: bytes) -> None:
        if len(peer_public) != 32:
            raise InvalidPublicValue(f"{self.name}: public value is {len(peer_public)} bytes, expected 32")


class _X25519Private(DhPrivate):
    def __init__(self, group: Curve25519Group, key: x25519.X25519PrivateKey) -> None:
        self.group = group
        self._key = key
        self._public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def public_bytes(self) -> bytes:
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        self.group.check_public(peer_public)
        peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
        try:
            secret = self._key.exchange(peer)
        except ValueError as exc:
            # RFC 8031 §2.3: an all-zero result (a small-order peer point) must be refused.
            raise InvalidPublicValue("curve25519: shared secret is all zero (small-order point)") from exc
        if not any(secret):
            raise InvalidPublicValue("curve25519: shared secret is all zero (small-order point)")
        return secret


_P256_N = _hex_int("FFFFFFFF 00000000 FFFFFFFF FFFFFFFF BCE6FAAD A7179E84 F3B9CAC2 FC632551")
_P384_N = _hex_int(
    "FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF C7634D81 F4372DDF"
    "581A0DB2 48B0A77A ECEC196A CCC52973"
)
_P521_N = _hex_int(
    "01FF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFF FFFFFFFA"
    "51868783 BF2F966B 7FCC0148 F709A5D0 3BB5C9B8 899C47AE BB6FB71E 91386409"
)

_GROUPS: dict[int, DhGroup] = {
    2: ModpGroup(2, "modp1024", 128, prime=_MODP_1024, exponent_bits=256),
    5: ModpGroup(5, "modp1536", 192, prime=_MODP_1536, exponent_bits=256),
    14: ModpGroup(14, "modp2048", 256, prime=_MODP_2048, exponent_bits=256),
    15: ModpGroup(15, "modp3072", 384, prime=_MODP_3072, exponent_bits=384),
    16: ModpGroup(16, "modp4096", 512, prime=_MODP_4096, exponent_bits=512),
    19: EcpGroup(19, "ecp256", 64, curve=ec.SECP256R1, coord_len=32, order=_P256_N),
    20: EcpGroup(20, "ecp384", 96, curve=ec.SECP384R1, coord_len=48, order=_P384_N),
    21: EcpGroup(21, "ecp521", 132, curve=ec.SECP521R1, coord_len=66, order=_P521_N),
    31: Curve25519Group(31, "curve25519", 32),
}

# swanctl spells Curve25519 "x25519" as well as "curve25519".
_ALIASES = {"x25519": 31}

#: Groups accepted unless a configuration opts into the legacy ones (RFC 8247 §2.4 says MUST NOT for <2048).
LEGACY_GROUPS = frozenset({2, 5})


def group(number: int) -> DhGroup:
    """The DH group with this IANA Transform Type 4 number; raises UnknownGroup."""
    try:
        return _GROUPS[number]
    except KeyError:
        raise UnknownGroup(f"Diffie-Hellman group {number} is not supported") from None


def group_by_name(name: str) -> DhGroup:
    """Look up by swanctl keyword ("modp2048", "ecp256", "x25519", ...); raises UnknownGroup."""
    key = name.lower()
    if key in _ALIASES:
        return _GROUPS[_ALIASES[key]]
    for g in _GROUPS.values():
        if g.name == key:
            return g
    raise UnknownGroup(f"Diffie-Hellman group {name!r} is not supported")


def supported_groups() -> list[int]:
    return sorted(_GROUPS)
