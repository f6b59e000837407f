"""Protection of the IKEv2 Encrypted (SK) payload: the ENCR and INTEG transforms IKE itself uses.

RFC 7296 §3.14 (CBC/CTR ciphers plus an HMAC over the whole message), RFC 5930 (AES-CTR), RFC 5282 (AES-GCM
and AES-CCM as AEAD: the IKE header and SK generic header are the associated data), RFC 7634
(ChaCha20-Poly1305).  A small table of its own: the data-plane registry is about ESP packets, this is about
IKE messages, and the two share only the names used in ``ChildSaUp``.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, ChaCha20Poly1305

from labctl.gateway.ike.v2.constants import HEADER_LENGTH, Encr, Integ, PayloadType


class IntegrityError(ValueError):
    """ICV or AEAD tag did not verify: the message is dropped (RFC 7296 §2.21.1)."""


class UnsupportedTransform(ValueError):
    """A transform id/key length we do not implement."""


@dataclass(frozen=True)
class EncrAlg:
    id: int
    key_bits: int
    salt_len: int  # keymat bytes beyond the cipher key (RFC 5282 §7.1, RFC 5930 §4, RFC 7634 §2)
    iv_len: int
    block_size: int  # alignment for padding; 1 for stream and AEAD modes
    icv_len: int  # AEAD tag length; 0 for non-AEAD
    name: str  # strongSwan-style name, shared with the data plane

    @property
    def aead(self) -> bool:
        return self.icv_len > 0

    @property
    def keymat_len(self) -> int:
        return self.key_bits // 8 + self.salt_len


@dataclass(frozen=True)
class IntegAlg:
    id: int
    hash: str
    key_len: int
    icv_len: int
    name: str  # strongSwan-style name (sha256 == HMAC-SHA2-256-128)


_AEAD_ICV = {Encr.AES_GCM_8: 8, Encr.AES_GCM_12: 12, Encr.AES_GCM_16: 16,
             Encr.AES_CCM_8: 8, Encr.AES_CCM_12: 12, Encr.AES_CCM_16: 16}


def encr_alg(transform_id: int, key_bits: int | None) -> EncrAlg:
    """The ENCR transform with its key length attribute; raises UnsupportedTransform."""
    tid = transform_id
    if tid == Encr.TRIPLE_DES:
        return EncrAlg(tid, 192, 0, 8, 8, 0, "3des")
    if tid == Encr.NULL:
        return EncrAlg(tid, 0, 0, 0, 1, 0, "null")
    if tid == Encr.CHACHA20_POLY1305:
        return EncrAlg(tid, 256, 4, 8, 1, 16, "chacha20poly1305")
    if key_bits not in (128, 192, 256):
        raise UnsupportedTransform(f"ENCR {tid} with key length {key_bits}")
    if tid == Encr.AES_CBC:
        return EncrAlg(tid, key_bits, 0, 16, 16, 0, f"aes{key_bits}")
    if tid == Encr.AES_CTR:
        return EncrAlg(tid, key_bits, 4, 8, 1, 0, f"aes{key_bits}ctr")
    if tid in (Encr.AES_GCM_8, Encr.AES_GCM_12, Encr.AES_GCM_16):
        icv = _AEAD_ICV[Encr(tid)]
        return EncrAlg(tid, key_bits, 4, 8, 1, icv, f"aes{key_bits}gcm{icv}")
    if tid in (Encr.AES_CCM_8, Encr.AES_CCM_12, Encr.AES_CCM_16):
        icv = _AEAD_ICV[Encr(tid)]
        return EncrAlg(tid, key_bits, 3, 8, 1, icv, f"aes{key_bits}ccm{icv}")
    raise UnsupportedTransform(f"ENCR transform {tid}")


_INTEG = {
    Integ.HMAC_SHA1_96: IntegAlg(Integ.HMAC_SHA1_96, "sha1", 20, 12, "sha1"),
    Integ.HMAC_SHA1_160: IntegAlg(Integ.HMAC_SHA1_160, "sha1", 20, 20, "sha1_160"),
    Integ.HMAC_SHA2_256_128: IntegAlg(Integ.HMAC_SHA2_256_128, "sha256", 32, 16, "sha256"),
    Integ.HMAC_SHA2_384_192: IntegAlg(Integ.HMAC_SHA2_384_192, "sha384", 48, 24, "sha384"),
    Integ.HMAC_SHA2_512_256: IntegAlg(Integ.HMAC_SHA2_512_256, "sha512", 64, 32, "sha512"),
}


def integ_alg(transform_id: int) -> IntegAlg:
    try:
        return _INTEG[Integ(transform_id)]
    except (KeyError, ValueError):
        raise UnsupportedTransform(f"INTEG transform {transform_id}") from None


def _aes_block_cipher(alg: EncrAlg, key: bytes, iv: bytes) -> Cipher:
    if alg.id == Encr.AES_CBC:
        return Cipher(algorithms.AES(key), modes.CBC(iv))
    if alg.id == Encr.TRIPLE_DES:
        return Cipher(TripleDES(key), modes.CBC(iv))
    raise UnsupportedTransform(alg.name)


class SkCipher:
    """One direction of SK protection: SK_e{i,r} (with salt) and SK_a{i,r}. Holds no per-message state."""

    def __init__(self, encr: EncrAlg, encr_key: bytes, integ: IntegAlg | None, integ_key: bytes) -> None:
        if len(encr_key) != encr.keymat_len:
            raise ValueError(f"{encr.name} needs {encr.keymat_len} bytes of key, got {len(encr_key)}")
        if not encr.aead and integ is None and encr.id != Encr.NULL:
            raise ValueError("a non-AEAD cipher needs an integrity algorithm (RFC 7296 §3.3.3)")
        self.encr = encr
        self.integ = None if encr.aead else integ
        self._key = encr_key[: encr.key_bits // 8]
        self._salt = encr_key[encr.key_bits // 8 :]
        self._integ_key = integ_key
        self._ccm = AESCCM(self._key, tag_length=encr.icv_len) if encr.id in (
            Encr.AES_CCM_8, Encr.AES_CCM_12, Encr.AES_CCM_16) else None
        self._chacha = ChaCha20Poly1305(self._key) if encr.id == Encr.CHACHA20_POLY1305 else None

    @property
    def icv_len(self) -> int:
        return self.encr.icv_len if self.encr.aead else (self.integ.icv_len if self.integ else 0)

    # -- low-level cipher operations -------------------------------------------------------------------
    def _ctr_cipher(self, iv: bytes) -> Cipher:
        # RFC 5930 §2 / RFC 3686 §4: counter block = nonce(4) || IV(8) || 00000001.
        return Cipher(algorithms.AES(self._key), modes.CTR(self._salt + iv + b"\x00\x00\x00\x01"))

    def _encrypt(self, iv: bytes, plain: bytes, aad: bytes) -> bytes:
        e = self.encr
        if e.id == Encr.NULL:
            return plain
        if e.id == Encr.AES_CTR:
            enc = self._ctr_cipher(iv).encryptor()
            return enc.update(plain) + enc.finalize()
        if not e.aead:
            enc = _aes_block_cipher(e, self._key, iv).encryptor()
            return enc.update(plain) + enc.finalize()
        nonce = self._salt + iv  # RFC 5282 §4 / RFC 7634 §2: salt || IV
        if self._ccm is not None:
            return self._ccm.encrypt(nonce, plain, aad)
        if self._chacha is not None:
            return self._chacha.encrypt(nonce, plain, aad)
        gcm = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        gcm.authenticate_additional_data(aad)
        ct = gcm.update(plain) + gcm.finalize()
        return ct + gcm.tag[: e.icv_len]  # RFC 5282 §3: truncated tags for GCM-8/12

    def _decrypt(self, iv: bytes, data: bytes, aad: bytes) -> bytes:
        e = self.encr
        if e.id == Encr.NULL:
            return data
        if e.id == Encr.AES_CTR:
            dec = self._ctr_cipher(iv).decryptor()
            return dec.update(data) + dec.finalize()
        if not e.aead:
            dec = _aes_block_cipher(e, self._key, iv).decryptor()
            return dec.update(data) + dec.finalize()
        nonce = self._salt + iv
        try:
            if self._ccm is not None:
                return self._ccm.decrypt(nonce, data, aad)
            if self._chacha is not None:
                return self._chacha.decrypt(nonce, data, aad)
            ct, tag = data[: -e.icv_len], data[-e.icv_len :]
            gcm = Cipher(algorithms.AES(self._key), modes.GCM(nonce, tag, min_tag_length=e.icv_len)).decryptor()
            gcm.authenticate_additional_data(aad)
            return gcm.update(ct) + gcm.finalize()
        except InvalidTag:
            raise IntegrityError("AEAD tag did not verify") from None

    # -- whole messages --------------------------------------------------------------------------------
    def seal(self, header: bytes, inner_first: int, inner: bytes, iv: bytes, pad_byte: int = 0) -> bytes:
        """Build the complete message: ``header`` (28 bytes; next-payload and length are filled in here),
        then the SK payload carrying ``inner`` (the encoded inner payload chain)."""
        e = self.encr
        if len(iv) != e.iv_len:
            raise ValueError(f"{e.name} needs a {e.iv_len}-byte IV")
        padlen = (-(len(inner) + 1)) % e.block_size
        plain = inner + bytes([pad_byte]) * padlen + bytes([padlen])
        ct_len = len(plain) + (e.icv_len if e.aead else 0)
        sk_len = 4 + len(iv) + ct_len + (0 if e.aead else self.icv_len)
        hdr = bytearray(header[:HEADER_LENGTH])
        hdr[16] = PayloadType.SK
        struct.pack_into("!I", hdr, 24, HEADER_LENGTH + sk_len)
        sk_head = struct.pack("!BBH", inner_first, 0, sk_len)
        aad = bytes(hdr) + sk_head  # RFC 5282 §5.1: IKE header and SK generic header
        body = self._encrypt(iv, plain, aad)
        msg = aad + iv + body
        if not e.aead and self.integ is not None:
            # RFC 7296 §3.14: the ICV covers the message from the IKE header through the ciphertext.
            msg += hmac.new(self._integ_key, msg, self.integ.hash).digest()[: self.integ.icv_len]
        return msg

    def open(self, message: bytes, sk_offset: int) -> bytes:
        """Verify and decrypt the SK payload starting at ``sk_offset``; returns the inner payload bytes."""
        e = self.encr
        sk_len = struct.unpack_from("!H", message, sk_offset + 2)[0]
        end = sk_offset + sk_len
        icv_len = self.icv_len
        body_start = sk_offset + 4
        if end != len(message) or sk_len < 4 + e.iv_len + icv_len + 1:
            raise IntegrityError("SK payload too short or not last")
        iv = message[body_start : body_start + e.iv_len]
        if e.aead:
            plain = self._decrypt(iv, message[body_start + e.iv_len : end], message[: sk_offset + 4])
        else:
            if self.integ is not None:
                want = hmac.new(self._integ_key, message[: end - icv_len], self.integ.hash).digest()[:icv_len]
                if not hmac.compare_digest(want, message[end - icv_len : end]):
                    raise IntegrityError("ICV did not verify")
            ct = message[body_start + e.iv_len : end - icv_len]
            if len(ct) % e.block_size:
                raise IntegrityError("ciphertext is not a whole number of blocks")
            plain = self._decrypt(iv, ct, b"")
        padlen = plain[-1]
        if padlen + 1 > len(plain):
            raise IntegrityError("pad length larger than the plaintext")
        return plain[: len(plain) - padlen - 1]
