"""Proposal strings in swanctl syntax, SA payload proposals, and proposal selection (RFC 7296 §2.7, §3.3).

``aes128gcm16-prfsha256-ecp256`` or ``aes256-sha256-modp2048`` become one ``Proposal`` each; several
algorithms of one kind in one string (``aes128-aes256-sha256-ecp256-modp2048``) become several transforms
of that type, any of which the peer may choose.
"""

from __future__ import annotations

from dataclasses import dataclass

from labctl.gateway.ike import dh as dhmod
from labctl.gateway.ike import prf as prfmod
from labctl.gateway.ike.v2.ciphers import EncrAlg, IntegAlg, UnsupportedTransform, encr_alg, integ_alg
from labctl.gateway.ike.v2.codec import Proposal, Transform
from labctl.gateway.ike.v2.constants import Encr, Esn, Integ, ProtocolId, TransformType

# RFC 8247 §2 / §3: AES-GCM with 16-octet ICV, PRF HMAC-SHA2-256, and a 2048-bit-or-better or EC group.
DEFAULT_IKE_PROPOSALS = ("aes256gcm16-prfsha256-ecp256-x25519-modp2048",)
DEFAULT_ESP_PROPOSALS = ("aes256gcm16",)
DEFAULT_AH_PROPOSALS = ("sha256",)


class ProposalSyntaxError(ValueError):
    """A proposal string with a word we do not know; the message names it."""


_ENCR_WORDS: dict[str, tuple[int, int | None]] = {
    "3des": (Encr.TRIPLE_DES, None),
    "null": (Encr.NULL, None),
    "chacha20poly1305": (Encr.CHACHA20_POLY1305, None),
}
for _bits in (128, 192, 256):
    _ENCR_WORDS[f"aes{_bits}"] = (Encr.AES_CBC, _bits)
    _ENCR_WORDS[f"aes{_bits}ctr"] = (Encr.AES_CTR, _bits)
    _ENCR_WORDS[f"aes{_bits}gcm"] = (Encr.AES_GCM_16, _bits)
    for _icv, _gcm, _ccm in ((8, Encr.AES_GCM_8, Encr.AES_CCM_8), (12, Encr.AES_GCM_12, Encr.AES_CCM_12),
                             (16, Encr.AES_GCM_16, Encr.AES_CCM_16)):
        _ENCR_WORDS[f"aes{_bits}gcm{_icv}"] = (_gcm, _bits)
        _ENCR_WORDS[f"aes{_bits}ccm{_icv}"] = (_ccm, _bits)

_INTEG_WORDS = {
    "sha1": Integ.HMAC_SHA1_96,
    "sha1_160": Integ.HMAC_SHA1_160,
    "sha256": Integ.HMAC_SHA2_256_128,
    "sha384": Integ.HMAC_SHA2_384_192,
    "sha512": Integ.HMAC_SHA2_512_256,
}
_PRF_FOR_INTEG = {Integ.HMAC_SHA1_96: 2, Integ.HMAC_SHA1_160: 2, Integ.HMAC_SHA2_256_128: 5,
                  Integ.HMAC_SHA2_384_192: 6, Integ.HMAC_SHA2_512_256: 7}


def parse_proposal(text: str, protocol: int) -> Proposal:
    """One swanctl proposal string -> one Proposal (number and SPI filled in later)."""
    encr: list[Transform] = []
    integ: list[Transform] = []
    prfs: list[Transform] = []
    groups: list[Transform] = []
    esn: list[Transform] = []
    for word in text.lower().strip().split("-"):
        if word in _ENCR_WORDS:
            tid, bits = _ENCR_WORDS[word]
            encr.append(Transform(TransformType.ENCR, tid, bits))
        elif word in _INTEG_WORDS:
            integ.append(Transform(TransformType.INTEG, _INTEG_WORDS[word]))
        elif word.startswith("prf"):
            try:
                prfs.append(Transform(TransformType.PRF, prfmod.prf_by_name(word).id))
            except prfmod.UnknownPrf:
                raise ProposalSyntaxError(f"{text!r}: unknown PRF {word!r}") from None
        elif word in ("esn", "noesn"):
            esn.append(Transform(TransformType.ESN, Esn.ESN if word == "esn" else Esn.NO_ESN))
        else:
            try:
                groups.append(Transform(TransformType.DH, dhmod.group_by_name(word).number))
            except dhmod.UnknownGroup:
                raise ProposalSyntaxError(f"{text!r}: unknown algorithm {word!r}") from None
    aead = bool(encr) and all(encr_alg(t.id, t.key_length).aead for t in encr)
    if protocol == ProtocolId.IKE:
        if not encr or not groups:
            raise ProposalSyntaxError(f"{text!r}: an IKE proposal needs a cipher and a DH group")
        if not prfs:
            # swanctl derives the PRF from the integrity algorithm when none is named.
            prfs = [Transform(TransformType.PRF, _PRF_FOR_INTEG.get(Integ(t.id), 5)) for t in integ] or [
                Transform(TransformType.PRF, 5)]
        if not aead and not integ:
            raise ProposalSyntaxError(f"{text!r}: a non-AEAD cipher needs an integrity algorithm")
        return Proposal(1, protocol, b"", encr + prfs + ([] if aead else integ) + groups)
    if protocol == ProtocolId.AH:
        if encr or not integ:
            raise ProposalSyntaxError(f"{text!r}: an AH proposal has integrity algorithms only")
    elif not encr or (not aead and not integ):
        raise ProposalSyntaxError(f"{text!r}: an ESP proposal needs a cipher (and integrity unless AEAD)")
    esn = esn or [Transform(TransformType.ESN, Esn.NO_ESN)]
    return Proposal(1, protocol, b"", encr + ([] if aead else integ) + groups + esn)


def build_sa(texts: tuple[str, ...] | list[str], protocol: int, spi: bytes) -> list[Proposal]:
    out = []
    for n, text in enumerate(texts, start=1):
        p = parse_proposal(text, protocol)
        p.num = n
        p.spi = spi
        out.append(p)
    return out


def first_dh_group(proposals: list[Proposal]) -> int | None:
    for p in proposals:
        for t in p.transforms:
            if t.type == TransformType.DH and t.id != 0:
                return t.id
    return None


def offers_group(proposals: list[Proposal], group: int) -> bool:
    return any(t.type == TransformType.DH and t.id == group for p in proposals for t in p.transforms)


def _supported(t: Transform) -> bool:
    try:
        if t.type == TransformType.ENCR:
            encr_alg(t.id, t.key_length)
        elif t.type == TransformType.INTEG:
            integ_alg(t.id)
        elif t.type == TransformType.PRF:
            prfmod.prf(t.id)
        elif t.type == TransformType.DH:
            if t.id != 0:
                dhmod.group(t.id)
        elif t.type == TransformType.ESN:
            return t.id in (0, 1)
        else:
            return False
    except (UnsupportedTransform, prfmod.UnknownPrf, dhmod.UnknownGroup):
        return False
    return True


def select(ours: list[Proposal], theirs: list[Proposal], ignore_dh: bool = False) -> Proposal | None:
    """Pick the first of our proposals that one of theirs can satisfy, looking at every transform of every
    proposal (RFC 7296 §2.7).  Returns their proposal number and SPI with one transform per type."""
    for mine in ours:
        for peer in theirs:
            if peer.protocol != mine.protocol:
                continue
            chosen = _match(mine, peer, ignore_dh)
            if chosen is not None:
                return Proposal(peer.num, peer.protocol, peer.spi, chosen)
    return None


def _match(mine: Proposal, peer: Proposal, ignore_dh: bool) -> list[Transform] | None:
    def by_type(p: Proposal) -> dict[int, list[Transform]]:
        d: dict[int, list[Transform]] = {}
        for t in p.transforms:
            if ignore_dh and t.type == TransformType.DH:
                continue
            d.setdefault(t.type, []).append(t)
        return d

    a, b = by_type(mine), by_type(peer)
    chosen: list[Transform] = []
    for ttype in sorted(set(a) | set(b)):
        ma, mb = a.get(ttype, []), b.get(ttype, [])
        if ttype == TransformType.DH:
            # A missing DH type on one side is the same as offering only NONE (RFC 7296 §3.3.3).
            ma = ma or [Transform(TransformType.DH, 0)]
            mb = mb or [Transform(TransformType.DH, 0)]
        pick = next((t for t in ma if _supported(t) and any(
            (t.id, t.key_length) == (u.id, u.key_length) for u in mb)), None)
        if pick is None:
            return None
        if not (ttype == TransformType.DH and pick.id == 0):
            chosen.append(pick)
    return chosen


@dataclass(frozen=True)
class Algorithms:
    """The negotiated transforms of one SA in usable form."""

    protocol: int
    encr: EncrAlg | None
    integ: IntegAlg | None
    prf: prfmod.Prf | None
    dh: dhmod.DhGroup | None
    esn: bool

    def describe(self) -> str:
        parts = [x for x in (self.encr.name if self.encr else None, self.integ.name if self.integ else None,
                             self.prf.name if self.prf else None, self.dh.name if self.dh else None) if x]
        if self.protocol != ProtocolId.IKE and self.esn:
            parts.append("esn")
        return "/".join(parts)


def algorithms(p: Proposal) -> Algorithms:
    encr = integ = prf = group = None
    esn = False
    for t in p.transforms:
        if t.type == TransformType.ENCR:
            encr = encr_alg(t.id, t.key_length)
        elif t.type == TransformType.INTEG and t.id != 0:
            integ = integ_alg(t.id)
        elif t.type == TransformType.PRF:
            prf = prfmod.prf(t.id)
        elif t.type == TransformType.DH and t.id != 0:
            group = dhmod.group(t.id)
        elif t.type == TransformType.ESN:
            esn = t.id == Esn.ESN
    return Algorithms(p.protocol, encr, integ, prf, group, esn)


def validate_selected(ours: list[Proposal], chosen: Proposal, ignore_dh: bool = False) -> bool:
    """Initiator side: the responder's single proposal must be a subset of one we offered."""
    for mine in ours:
        if mine.protocol != chosen.protocol:
            continue
        offered = {(t.type, t.id, t.key_length) for t in mine.transforms}
        if all((t.type, t.id, t.key_length) in offered or (ignore_dh and t.type == TransformType.DH)
               for t in chosen.transforms):
            return True
    return False
