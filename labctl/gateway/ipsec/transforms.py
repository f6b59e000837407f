"""Algorithm registry: IANA transform ids, key lengths, and one cipher / integrity object per SA.

Names follow strongSwan's proposal keywords (``aes128gcm16``, ``aes256``, ``sha256`` ...). Key material for
AEAD and counter modes is the cipher key followed by its salt (``EncrAlgorithm.keymat_len`` counts both), which
is how IKEv2 draws it from KEYMAT (RFC 7296 §2.17; salts per RFC 4106 §8.1, RFC 4309 §7.1, RFC 3686 §5.1,
RFC 7634 §2).

Ciphers are built once per SA (the expensive part) and then called per packet with an IV:
``encrypt(iv, aad, plaintext)`` returns the ciphertext (with the tag appended for AEADs);
``decrypt(iv, aad, data)`` returns the plaintext, or ``None`` when the tag does not verify.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305


class EspCipher:
    """Base for the per-SA cipher objects. ``block`` is the alignment ESP padding must reach."""

    iv_len: int = 0
    block: int = 4
    icv_len: int = 0  # AEAD tag length; 0 for ciphers that need a separate integrity algorithm
    aead: bool = False
    counter_iv: bool = True  # IV may be a counter (must only never repeat) vs. must be unpredictable (CBC)

    def encrypt(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        raise NotImplementedError

    def decrypt(self, iv: bytes, aad: bytes, data: bytes) -> bytes | None:
        raise NotImplementedError


class NullCipher(EspCipher):
    """RFC 2410: no confidentiality, no IV. Padding still aligns to 4 bytes (RFC 4303 §2.4)."""

    counter_iv = False  # no IV at all: the generator is asked for 0 bytes

    def encrypt(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return plaintext

    def decrypt(self, iv: bytes, aad: bytes, data: bytes) -> bytes | None:
        return data


class SaltedAead(EspCipher):
    """An AEAD from ``cryptography`` whose nonce is the SA's salt followed by the 8-byte explicit IV."""

    iv_len = 8
    icv_len = 16
    aead = True
    _aead: AESGCM | AESCCM | ChaCha20Poly1305
    _salt: bytes

    @property
    def aead_object(self) -> AESGCM | AESCCM | ChaCha20Poly1305:
        """The per-SA ``cryptography`` AEAD (the fast path calls it directly)."""
        return self._aead

    @property
    def salt(self) -> bytes:
        return self._salt

    def encrypt(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aead.encrypt(self._salt + iv, plaintext, aad)

    def decrypt(self, iv: bytes, aad: bytes, data: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(self._salt + iv, data, aad)
        except InvalidTag:
            return None


class AesGcm16(SaltedAead):
    """RFC 4106: nonce = 4-byte salt || 8-byte explicit IV (§4); AAD = SPI || seq (§5)."""

    def __init__(self, keymat: bytes) -> None:
        self._aead = AESGCM(keymat[:-4])
        self._salt = keymat[-4:]


class AesGcmShort(EspCipher):
    """RFC 4106 with an 8- or 12-byte ICV (the leading bytes of the GCM tag, §6)."""

    iv_len = 8
    aead = True

    def __init__(self, keymat: bytes, icv_len: int) -> None:
        self._aes = algorithms.AES(keymat[:-4])
        self._salt = keymat[-4:]
        self.icv_len = icv_len

    def encrypt(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        enc = Cipher(self._aes, modes.GCM(self._salt + iv)).encryptor()
        enc.authenticate_additional_data(aad)
        out = enc.update(plaintext) + enc.finalize()
        return out + enc.tag[: self.icv_len]

    def decrypt(self, iv: bytes, aad: bytes, data: bytes) -> bytes | None:
        n = self.icv_len
        if len(data) < n:
            return None
        tag = data[-n:]
        dec = Cipher(self._aes, modes.GCM(self._salt + iv, tag, min_tag_length=n)).decryptor()
        dec.authenticate_additional_data(aad)
        out = dec.update(data[:-n])
        try:
            return out + dec.finalize()
        except InvalidTag:
            return None


class AesCcm(SaltedAead):
    """RFC 4309: nonce = 3-byte salt || 8-byte IV (§4); AAD as in RFC 4106 (§5)."""

    def __init__(self, keymat: bytes, icv_len: int) -> None:
        self._aead = AESCCM(keymat[:-3], tag_length=icv_len)
        self._salt = keymat[-3:]
        self.icv_len = icv_len


class ChaChaPoly(SaltedAead):
    """RFC 7634 §2: 32-byte key || 4-byte salt; nonce = salt || 8-byte IV; AAD as RFC 4106 (§2.1)."""

    def __init__(self, keymat: bytes) -> None:
        self._aead = ChaCha20Poly1305(keymat[:32])
        self._salt = keymat[32:36]


class CbcCipher(EspCipher):
    """RFC 3602 (AES) / RFC 2451 (3DES): explicit IV of one block that must be unpredictable (RFC 3602 §2.1)."""

    counter_iv = False

    def __init__(self, algorithm: algorithms.AES | TripleDES) -> None:
        self._alg = algorithm
        self.block = self.iv_len = algorithm.block_size // 8

    @property
    def algorithm(self) -> algorithms.AES | TripleDES:
        return self._alg

    def encrypt(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        enc = Cipher(self._alg, modes.CBC(iv)).encryptor()
        return enc.update(plaintext) + enc.finalize()

    def decrypt(self, iv: bytes, aad: bytes, data: bytes) -> bytes | None:
        if len(data) % self.block:
            return None
        dec = Cipher(self._alg, modes.CBC(iv)).decryptor()
        return dec.update(data) + dec.finalize()


class AesCtr(EspCipher):
    """RFC 3686: counter block = 4-byte nonce || 8-byte IV || 32-bit block counter starting at 1 (§4)."""

    iv_len = 8

    def __init__(self, keymat: bytes) -> None:
        self._aes = algorithms.AES(keymat[:-4])
        self._nonce = keymat[-4:]

    def _run(self, iv: bytes, data: bytes) -> bytes:
        ctx = Cipher(self._aes, modes.CTR(self._nonce + iv + b"\x00\x00\x00\x01")).encryptor()
        return ctx.update(data) + ctx.finalize()

    def encrypt(self, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._run(iv, plaintext)

    def decrypt(self, iv: bytes, aad: bytes, data: bytes) -> bytes | None:
        return self._run(iv, data)


class Integrity:
    """Truncated HMAC (RFC 2404, RFC 4868 §2.3): the ICV is the leading ``icv_len`` bytes of the HMAC."""

    __slots__ = ("_key", "_hash", "icv_len")

    def __init__(self, key: bytes, hash_name: str, icv_len: int) -> None:
        self._key = key
        self._hash = hash_name
        self.icv_len = icv_len

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def hash_name(self) -> str:
        return self._hash

    def compute(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, self._hash)[: self.icv_len]

    def verify(self, data: bytes, icv: bytes) -> bool:
        return hmac.compare_digest(hmac.digest(self._key, data, self._hash)[: self.icv_len], icv)


@dataclass(frozen=True)
class EncrAlgorithm:
    name: str
    iana_id: int  # IKEv2 Transform Type 1 id (IANA "IKEv2 Parameters")
    key_len: int  # cipher key bytes, salt excluded
    salt_len: int
    aead: bool
    legacy: bool
    wireshark: str | None  # the name in Wireshark's esp_sa table; None when Wireshark cannot decrypt it
    factory: Callable[[bytes], EspCipher]

    @property
    def keymat_len(self) -> int:
        """Bytes of key material IKE must draw for this cipher (key and salt)."""
        return self.key_len + self.salt_len

    @property
    def key_bits(self) -> int:
        """The Key Length attribute IKE proposes (RFC 7296 §3.3.5), salt excluded."""
        return self.key_len * 8

    def new(self, keymat: bytes) -> EspCipher:
        if len(keymat) != self.keymat_len:
            raise ValueError(f"{self.name}: key material must be {self.keymat_len} bytes, got {len(keymat)}")
        return self.factory(keymat)


@dataclass(frozen=True)
class IntegAlgorithm:
    name: str
    iana_id: int  # IKEv2 Transform Type 3 id
    key_len: int
    icv_len: int
    hash_name: str
    wireshark: str

    def new(self, key: bytes) -> Integrity:
        if len(key) != self.key_len:
            raise ValueError(f"{self.name}: integrity key must be {self.key_len} bytes, got {len(key)}")
        return Integrity(key, self.hash_name, self.icv_len)


def _gcm(icv: int) -> Callable[[bytes], EspCipher]:
    if icv == 16:
        return AesGcm16
    return lambda k: AesGcmShort(k, icv)


def _ccm(icv: int) -> Callable[[bytes], EspCipher]:
    return lambda k: AesCcm(k, icv)


def _encr_table() -> dict[str, EncrAlgorithm]:
    table: list[EncrAlgorithm] = [
        EncrAlgorithm("null", 11, 0, 0, False, False, "NULL", lambda k: NullCipher()),
        EncrAlgorithm("3des", 3, 24, 0, False, True, "TripleDES-CBC [RFC2451]", lambda k: CbcCipher(TripleDES(k))),
        EncrAlgorithm("chacha20poly1305", 28, 32, 4, True, False, "ChaCha20 with Poly1305 [RFC7634]", ChaChaPoly),
    ]
    for bits in (128, 192, 256):
        n = bits // 8
        table.append(
            EncrAlgorithm(
                f"aes{bits}", 12, n, 0, False, False, "AES-CBC [RFC3602]", lambda k: CbcCipher(algorithms.AES(k))
            )
        )
        table.append(EncrAlgorithm(f"aes{bits}ctr", 13, n, 4, False, False, "AES-CTR [RFC3686]", AesCtr))
        # IANA ids: GCM 8/12/16 = 18/19/20 (RFC 4106 §8.1); CCM 8/12/16 = 14/15/16 (RFC 4309 §7.1).
        for icv, gcm_id, ccm_id in ((8, 18, 14), (12, 19, 15), (16, 20, 16)):
            ws = f"AES-GCM with {icv} octet ICV [RFC4106]"
            table.append(EncrAlgorithm(f"aes{bits}gcm{icv}", gcm_id, n, 4, True, False, ws, _gcm(icv)))
            table.append(EncrAlgorithm(f"aes{bits}ccm{icv}", ccm_id, n, 3, True, False, None, _ccm(icv)))
    return {a.name: a for a in table}


ENCR: dict[str, EncrAlgorithm] = _encr_table()
# strongSwan also accepts the tag length in bits and a bare "gcm"/"ccm" meaning a 16-byte ICV.
ENCR_ALIASES: dict[str, str] = {}
for _bits in (128, 192, 256):
    for _icv in (8, 12, 16):
        for _kind in ("gcm", "ccm"):
            ENCR_ALIASES[f"aes{_bits}{_kind}{_icv * 8}"] = f"aes{_bits}{_kind}{_icv}"
    ENCR_ALIASES[f"aes{_bits}gcm"] = f"aes{_bits}gcm16"
    ENCR_ALIASES[f"aes{_bits}ccm"] = f"aes{_bits}ccm16"

INTEG: dict[str, IntegAlgorithm] = {
    a.name: a
    for a in (
        IntegAlgorithm("sha1", 2, 20, 12, "sha1", "HMAC-SHA-1-96 [RFC2404]"),  # RFC 2404
        IntegAlgorithm("sha256", 12, 32, 16, "sha256", "HMAC-SHA-256-128 [RFC4868]"),  # RFC 4868 §2.1
        IntegAlgorithm("sha384", 13, 48, 24, "sha384", "HMAC-SHA-384-192 [RFC4868]"),
        IntegAlgorithm("sha512", 14, 64, 32, "sha512", "HMAC-SHA-512-256 [RFC4868]"),
    )
}
INTEG_ALIASES = {"sha1_96": "sha1", "sha256_128": "sha256", "sha384_192": "sha384", "sha512_256": "sha512"}


def encr_algorithm(name: str) -> EncrAlgorithm:
    """Look up an encryption algorithm by config name; ValueError lists the known names."""
    key = name.lower()
    found = ENCR.get(ENCR_ALIASES.get(key, key))
    if found is None:
        raise ValueError(f"unknown encryption algorithm {name!r}; known: {', '.join(sorted(ENCR))}")
    return found


def integ_algorithm(name: str) -> IntegAlgorithm:
    """Look up an integrity algorithm by config name; ValueError lists the known names."""
    key = name.lower()
    found = INTEG.get(INTEG_ALIASES.get(key, key))
    if found is None:
        raise ValueError(f"unknown integrity algorithm {name!r}; known: {', '.join(sorted(INTEG))}")
    return found


def encr_by_iana(iana_id: int, key_bits: int | None = None) -> EncrAlgorithm | None:
    """What IKE uses to map a negotiated transform (id + Key Length attribute) back to a name."""
    for alg in ENCR.values():
        if alg.iana_id == iana_id and (key_bits is None or alg.key_bits == key_bits or alg.key_len == 0):
            return alg
    return None


def integ_by_iana(iana_id: int) -> IntegAlgorithm | None:
    for alg in INTEG.values():
        if alg.iana_id == iana_id:
            return alg
    return None
