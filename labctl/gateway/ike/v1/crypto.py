"""IKEv1 key derivation, phase-1/phase-2 IVs and the CBC cipher of ISAKMP messages (RFC 2409 §5, App. B).

Pure functions: every input (nonces, g^xy, cookies) is passed in. The PRF is the HMAC of the
negotiated hash (RFC 2409 §4: "If no prf is negotiated, the HMAC version of the negotiated hash
algorithm is used"), taken from the shared `ike.prf` module.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from labctl.gateway.ike import prf as ike_prf
from labctl.gateway.ike.v1.constants import EncryptionAlgorithm, HashAlgorithm

HASH_NAMES: dict[int, str] = {
    # MD5 is only here so that old captures (e.g. the Wireshark test vectors) can be decrypted;
    # the proposal parser never offers or accepts it.
    HashAlgorithm.MD5: "md5",
    HashAlgorithm.SHA1: "sha1",
    HashAlgorithm.SHA2_256: "sha256",
    HashAlgorithm.SHA2_384: "sha384",
    HashAlgorithm.SHA2_512: "sha512",
}


class CryptoError(ValueError):
    """Ciphertext that cannot be decrypted (bad length), or an unsupported algorithm."""


def prf_for_hash(hash_alg: int) -> ike_prf.Prf:
    try:
        return ike_prf.hmac_prf(HASH_NAMES[hash_alg])
    except KeyError:
        raise CryptoError(f"hash algorithm {hash_alg} is not supported") from None


def hash_fn(hash_alg: int, data: bytes) -> bytes:
    return hashlib.new(HASH_NAMES[hash_alg], data).digest()


# --------------------------------------------------------------------------- SKEYID family (RFC 2409 §5)


def skeyid_psk(prf: ike_prf.Prf, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    """RFC 2409 §5: for pre-shared keys SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
    return prf(psk, ni_b + nr_b)


def skeyid_sig(prf: ike_prf.Prf, ni_b: bytes, nr_b: bytes, gxy: bytes) -> bytes:
    """RFC 2409 §5: for signatures SKEYID = prf(Ni_b | Nr_b, g^xy)."""
    return prf(ni_b + nr_b, gxy)


@dataclass(frozen=True)
class Skeyids:
    skeyid: bytes
    d: bytes
    a: bytes
    e: bytes


def derive_skeyids(prf: ike_prf.Prf, skeyid: bytes, gxy: bytes, cky_i: bytes, cky_r: bytes) -> Skeyids:
    """RFC 2409 §5: SKEYID_d, SKEYID_a and SKEYID_e, each chained from the previous one."""
    d = prf(skeyid, gxy + cky_i + cky_r + b"\x00")
    a = prf(skeyid, d + gxy + cky_i + cky_r + b"\x01")
    e = prf(skeyid, a + gxy + cky_i + cky_r + b"\x02")
    return Skeyids(skeyid, d, a, e)


def encryption_key(prf: ike_prf.Prf, skeyid_e: bytes, key_len: int) -> bytes:
    """RFC 2409 Appendix B: when SKEYID_e is too short, Ka = K1 | K2 | ..., K1 = prf(SKEYID_e, 0),
    Kn = prf(SKEYID_e, Kn-1); otherwise the leading bytes of SKEYID_e are the key."""
    if len(skeyid_e) >= key_len:
        return skeyid_e[:key_len]
    out = b""
    block = b"\x00"
    while len(out) < key_len:
        block = prf(skeyid_e, block)
        out += block
    return out[:key_len]


def keymat(
    prf: ike_prf.Prf,
    skeyid_d: bytes,
    protocol: int,
    spi: bytes,
    ni_b: bytes,
    nr_b: bytes,
    length: int,
    gxy_qm: bytes | None = None,
) -> bytes:
    """RFC 2409 §5.5: KEYMAT = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b), expanded as
    K1 | K2 | ... with Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b)."""
    seed = (gxy_qm or b"") + bytes([protocol]) + spi + ni_b + nr_b
    out = b""
    block = b""
    while len(out) < length:
        block = prf(skeyid_d, block + seed)
        out += block
    return out[:length]


# --------------------------------------------------------------------------- hashes of the exchanges


def hash_i(prf: ike_prf.Prf, skeyid: bytes, gxi: bytes, gxr: bytes, cky_i: bytes, cky_r: bytes,
           sai_b: bytes, idii_b: bytes) -> bytes:
    """RFC 2409 §5: HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)."""
    return prf(skeyid, gxi + gxr + cky_i + cky_r + sai_b + idii_b)


def hash_r(prf: ike_prf.Prf, skeyid: bytes, gxi: bytes, gxr: bytes, cky_i: bytes, cky_r: bytes,
           sai_b: bytes, idir_b: bytes) -> bytes:
    """RFC 2409 §5: HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)."""
    return prf(skeyid, gxr + gxi + cky_r + cky_i + sai_b + idir_b)


def mid_bytes(message_id: int) -> bytes:
    return struct.pack("!I", message_id)


def nat_d_hash(hash_alg: int, cky_i: bytes, cky_r: bytes, address: bytes, port: int) -> bytes:
    """RFC 3947 §3.2: HASH = HASH(CKY-I | CKY-R | IP | Port), with the negotiated hash."""
    return hash_fn(hash_alg, cky_i + cky_r + address + struct.pack("!H", port))


def macs_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --------------------------------------------------------------------------- IVs (RFC 2409 Appendix B)


def phase1_iv(hash_alg: int, gxi: bytes, gxr: bytes, block_size: int) -> bytes:
    """Appendix B: the IV of the first encrypted phase-1 message is hash(g^xi | g^xr), truncated."""
    return hash_fn(hash_alg, gxi + gxr)[:block_size]


def phase2_iv(hash_alg: int, last_phase1_block: bytes, message_id: int, block_size: int) -> bytes:
    """Appendix B: a new exchange after phase 1 starts with hash(last phase-1 CBC block | M-ID)."""
    return hash_fn(hash_alg, last_phase1_block + mid_bytes(message_id))[:block_size]


# --------------------------------------------------------------------------- CBC cipher


@dataclass(frozen=True)
class CipherSpec:
    alg: int
    key_len: int  # bytes

    @property
    def block_size(self) -> int:
        return 8 if self.alg == EncryptionAlgorithm.TRIPLE_DES_CBC else 16

    def _cipher(self, key: bytes, iv: bytes) -> Cipher[modes.CBC]:
        if len(key) != self.key_len:
            raise CryptoError("wrong key length")
        if self.alg == EncryptionAlgorithm.AES_CBC:
            return Cipher(algorithms.AES(key), modes.CBC(iv))
        if self.alg == EncryptionAlgorithm.TRIPLE_DES_CBC:
            return Cipher(TripleDES(key), modes.CBC(iv))
        raise CryptoError(f"encryption algorithm {self.alg} is not supported")

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
        # RFC 2408 §3.1 / §4.x: the payloads are padded to the block size; strongSwan and most
        # stacks pad with zero bytes (the receiver finds the end by walking the payload chain).
        pad = (-len(plaintext)) % self.block_size
        enc = self._cipher(key, iv).encryptor()
        return enc.update(plaintext + bytes(pad)) + enc.finalize()

    def decrypt(self, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
        if not ciphertext or len(ciphertext) % self.block_size:
            raise CryptoError("ciphertext is not a whole number of blocks")
        dec = self._cipher(key, iv).decryptor()
        return dec.update(ciphertext) + dec.finalize()


def cipher_spec(alg: int, key_bits: int | None) -> CipherSpec:
    """RFC 3602 §5 / RFC 2409 App. A: AES needs a Key Length attribute; 3DES is always 192 bits."""
    if alg == EncryptionAlgorithm.AES_CBC:
        bits = key_bits or 128
        if bits not in (128, 192, 256):
            raise CryptoError(f"AES key length {bits} is not valid")
        return CipherSpec(alg, bits // 8)
    if alg == EncryptionAlgorithm.TRIPLE_DES_CBC:
        return CipherSpec(alg, 24)
    raise CryptoError(f"encryption algorithm {alg} is not supported")
