"""IKEv2 key derivation: SKEYSEED and the seven IKE SA keys (RFC 7296 §2.14), IKE SA rekey (§2.18)
and child SA keying material (§2.17)."""

from __future__ import annotations

from dataclasses import dataclass

from labctl.gateway.ike.prf import PRF_AES128_XCBC, Prf
from labctl.gateway.ike.v2.ciphers import EncrAlg, IntegAlg, SkCipher


@dataclass(frozen=True)
class IkeKeys:
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def ciphers(self, encr: EncrAlg, integ: IntegAlg | None) -> tuple[SkCipher, SkCipher]:
        """(initiator->responder, responder->initiator) SK payload protection."""
        return (SkCipher(encr, self.sk_ei, integ, self.sk_ai), SkCipher(encr, self.sk_er, integ, self.sk_ar))


def skeyseed(prf: Prf, ni: bytes, nr: bytes, gir: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14)."""
    if prf.id == PRF_AES128_XCBC:
        # RFC 7296 §2.14: fixed-key-size PRFs take the first half of each nonce (64 bits each for XCBC).
        return prf(ni[:8] + nr[:8], gir)
    return prf(ni + nr, gir)


def rekey_skeyseed(old_prf: Prf, old_sk_d: bytes, gir_new: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) (RFC 7296 §2.18), with the old SA's PRF."""
    return old_prf(old_sk_d, gir_new + ni + nr)


def ike_keys(prf: Prf, seed: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes,
             encr: EncrAlg, integ: IntegAlg | None) -> IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    a_len = 0 if encr.aead or integ is None else integ.key_len
    e_len = encr.keymat_len
    p_len = prf.key_len
    lengths = [p_len, a_len, a_len, e_len, e_len, p_len, p_len]
    stream = prf.plus(seed, ni + nr + spi_i + spi_r, sum(lengths))
    parts = []
    off = 0
    for n in lengths:
        parts.append(stream[off : off + n])
        off += n
    return IkeKeys(*parts)


@dataclass(frozen=True)
class ChildKeys:
    encr_i: bytes  # initiator -> responder, cipher key incl. salt
    integ_i: bytes
    encr_r: bytes  # responder -> initiator
    integ_r: bytes


def child_keys(prf: Prf, sk_d: bytes, ni: bytes, nr: bytes, encr_len: int, integ_len: int,
               gir_new: bytes = b"") -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 §2.17): initiator-to-responder keys first,
    encryption before integrity within each direction."""
    stream = prf.plus(sk_d, gir_new + ni + nr, 2 * (encr_len + integ_len))
    o = 0
    encr_i = stream[o : o + encr_len]
    o += encr_len
    integ_i = stream[o : o + integ_len]
    o += integ_len
    encr_r = stream[o : o + encr_len]
    o += encr_len
    integ_r = stream[o : o + integ_len]
    return ChildKeys(encr_i, integ_i, encr_r, integ_r)
