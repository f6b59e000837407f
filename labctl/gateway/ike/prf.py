"""IKE pseudo-random functions by IANA Transform Type 2 id, and prf+ (RFC 7296 §2.13).

Version-neutral: IKEv1 uses ``prf`` for SKEYID and friends (RFC 2409 §5), IKEv2 uses ``prf`` and
``prf_plus`` for SKEYSEED and all keying material (RFC 7296 §2.14, §2.17).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PRF_HMAC_MD5 = 1
PRF_HMAC_SHA1 = 2
PRF_AES128_XCBC = 4
PRF_HMAC_SHA2_256 = 5
PRF_HMAC_SHA2_384 = 6
PRF_HMAC_SHA2_512 = 7


class UnknownPrf(KeyError):
    """No PRF with this IANA id is implemented."""


@dataclass(frozen=True)
class Prf:
    id: int
    name: str  # swanctl keyword: prfsha1, prfsha256, ...
    output_len: int  # bytes produced by one call
    key_len: int  # preferred key length (RFC 7296 §2.13: the "natural" length)
    _fn: Callable[[bytes, bytes], bytes]

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return self._fn(key, data)

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        return prf_plus(self, key, seed, length)


def _hmac(name: str) -> Callable[[bytes, bytes], bytes]:
    def fn(key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, name).digest()

    return fn


def _aes_ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - single-block primitive for XCBC
    return enc.update(block) + enc.finalize()


def aes_xcbc_mac(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC-128 with a 16-byte key (RFC 3566 §4), full 16-byte output."""
    k1 = _aes_ecb(key, b"\x01" * 16)
    k2 = _aes_ecb(key, b"\x02" * 16)
    k3 = _aes_ecb(key, b"\x03" * 16)
    if data and len(data) % 16 == 0:
        blocks = [data[i : i + 16] for i in range(0, len(data), 16)]
        last_key = k2
        last = blocks.pop()
    else:
        # RFC 3566 §4 step 3b: pad with a single 1 bit then zeros, and use K3.
        full = len(data) // 16 * 16
        blocks = [data[i : i + 16] for i in range(0, full, 16)]
        tail = data[full:]
        last = tail + b"\x80" + b"\x00" * (15 - len(tail))
        last_key = k3
    enc = Cipher(algorithms.AES(k1), modes.ECB()).encryptor()  # noqa: S305 - CBC-MAC built block by block
    e = bytes(16)
    for blk in blocks:
        e = enc.update(bytes(a ^ b for a, b in zip(e, blk, strict=True)))
    final = bytes(a ^ b ^ c for a, b, c in zip(e, last, last_key, strict=True))
    return enc.update(final)


def _aes128_xcbc_prf(key: bytes, data: bytes) -> bytes:
    # RFC 4434 §2: keys shorter than 16 bytes are zero-padded; longer ones are first
    # reduced with AES-XCBC-PRF-128 under an all-zero key.
    if len(key) < 16:
        key = key + bytes(16 - len(key))
    elif len(key) > 16:
        key = aes_xcbc_mac(bytes(16), key)
    return aes_xcbc_mac(key, data)


_PRFS: dict[int, Prf] = {
    PRF_HMAC_SHA1: Prf(PRF_HMAC_SHA1, "prfsha1", 20, 20, _hmac("sha1")),
    PRF_AES128_XCBC: Prf(PRF_AES128_XCBC, "prfaesxcbc", 16, 16, _aes128_xcbc_prf),
    PRF_HMAC_SHA2_256: Prf(PRF_HMAC_SHA2_256, "prfsha256", 32, 32, _hmac("sha256")),
    PRF_HMAC_SHA2_384: Prf(PRF_HMAC_SHA2_384, "prfsha384", 48, 48, _hmac("sha384")),
    PRF_HMAC_SHA2_512: Prf(PRF_HMAC_SHA2_512, "prfsha512", 64, 64, _hmac("sha512")),
}

# Used by IKEv1 hash-based PRFs when no PRF is negotiated (RFC 2409 §4: HMAC of the hash).
HASH_BY_PRF = {PRF_HMAC_SHA1: "sha1", PRF_HMAC_SHA2_256: "sha256", PRF_HMAC_SHA2_384: "sha384",
               PRF_HMAC_SHA2_512: "sha512"}


def prf(prf_id: int) -> Prf:
    """The PRF with this IANA id; raises UnknownPrf."""
    try:
        return _PRFS[prf_id]
    except KeyError:
        raise UnknownPrf(f"PRF {prf_id} is not supported") from None


def prf_by_name(name: str) -> Prf:
    """Look up by swanctl keyword (prfsha256, ...); raises UnknownPrf."""
    for p in _PRFS.values():
        if p.name == name.lower():
            return p
    raise UnknownPrf(f"PRF {name!r} is not supported")


def hmac_prf(hash_name: str) -> Prf:
    """An HMAC PRF for a hash name (IKEv1 negotiates a hash, not a PRF: RFC 2409 §4)."""
    size = hashlib.new(hash_name).digest_size
    return Prf(0, f"hmac-{hash_name}", size, size, _hmac(hash_name))


def prf_plus(p: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (RFC 7296 §2.13): T1 | T2 | ..., Tn = prf(K, Tn-1 | S | n), truncated to length."""
    # RFC 7296 §2.13: the counter is one octet, so at most 255 blocks can be produced.
    if length > 255 * p.output_len:
        raise ValueError(f"prf+ cannot produce {length} bytes with {p.name} (max {255 * p.output_len})")
    out = bytearray()
    t = b""
    n = 1
    while len(out) < length:
        t = p(key, t + seed + bytes([n]))
        out += t
        n += 1
    return bytes(out[:length])


def supported_prfs() -> list[int]:
    return sorted(_PRFS)
