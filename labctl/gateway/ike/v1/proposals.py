"""IKEv1 proposals: parsing swanctl-style strings, building SA payloads, choosing what a peer offers.

Phase 1 (RFC 2409 §5, Appendix A): one ISAKMP proposal whose transforms each carry a full suite as
attributes. Phase 2 (RFC 2407 §4.4-4.5): one proposal per suite, ESP or AH, with the encapsulation
mode, the authentication algorithm, lifetimes and the PFS group as attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

from labctl.gateway.ike import dh
from labctl.gateway.ike.v1.codec import Attribute, Proposal, SaPayload, Transform
from labctl.gateway.ike.v1.constants import (
    KEY_IKE,
    AhTransformId,
    AuthAlgorithm,
    AuthMethod,
    EncapsulationMode,
    EncryptionAlgorithm,
    HashAlgorithm,
    LifeType,
    Phase1Attr,
    Phase2Attr,
    ProtocolId,
)
from labctl.gateway.ipsec import transforms as xf


class ProposalError(ValueError):
    """A proposal string in the configuration that cannot be understood."""


_P1_ENCR = {
    "aes128": (EncryptionAlgorithm.AES_CBC, 128),
    "aes192": (EncryptionAlgorithm.AES_CBC, 192),
    "aes256": (EncryptionAlgorithm.AES_CBC, 256),
    "aes": (EncryptionAlgorithm.AES_CBC, 128),
    "3des": (EncryptionAlgorithm.TRIPLE_DES_CBC, None),
}
_P1_HASH = {
    "sha1": HashAlgorithm.SHA1,
    "sha": HashAlgorithm.SHA1,
    "sha256": HashAlgorithm.SHA2_256,
    "sha384": HashAlgorithm.SHA2_384,
    "sha512": HashAlgorithm.SHA2_512,
}
_HASH_NAME: dict[int, str] = {v: k for k, v in _P1_HASH.items() if k != "sha"}
_ENCR_NAME: dict[tuple[int, int | None], str] = {(EncryptionAlgorithm.AES_CBC, b): f"aes{b}" for b in (128, 192, 256)}
_ENCR_NAME[(EncryptionAlgorithm.TRIPLE_DES_CBC, None)] = "3des"

# RFC 2407 §4.5 Authentication Algorithm values (ESP) and §4.4.3 AH transform ids, by integrity name.
_P2_AUTH: dict[str, int] = {"sha1": AuthAlgorithm.HMAC_SHA1, "sha256": AuthAlgorithm.HMAC_SHA2_256,
            "sha384": AuthAlgorithm.HMAC_SHA2_384, "sha512": AuthAlgorithm.HMAC_SHA2_512}
_AH_ID: dict[str, int] = {"sha1": AhTransformId.AH_SHA, "sha256": AhTransformId.AH_SHA2_256,
          "sha384": AhTransformId.AH_SHA2_384, "sha512": AhTransformId.AH_SHA2_512}
_AUTH_NAME = {v: k for k, v in _P2_AUTH.items()}
_AH_NAME = {v: k for k, v in _AH_ID.items()}
_P2_ENCR_IDS = {3, 11, 12, 18, 19, 20}  # 3DES, NULL, AES-CBC, AES-GCM-8/12/16 (RFC 2407 §4.4.4, RFC 4106 §8.1)


def _dh_number(token: str, allow_legacy: bool) -> int | None:
    try:
        g = dh.group_by_name(token)
    except dh.UnknownGroup:
        return None
    if g.number == 31:
        raise ProposalError("curve25519 is not defined for IKEv1")
    if g.number in dh.LEGACY_GROUPS and not allow_legacy:
        raise ProposalError(f"{token} is a legacy group (RFC 8247 §2.4); enable allow_legacy to use it")
    return g.number


# --------------------------------------------------------------------------- phase 1


@dataclass(frozen=True)
class IkeSuite:
    encr: int
    key_bits: int | None
    hash_alg: int
    group: int
    auth: int

    @property
    def name(self) -> str:
        g = dh.group(self.group).name
        return f"{_ENCR_NAME.get((self.encr, self.key_bits), str(self.encr))}-{_HASH_NAME.get(self.hash_alg, '?')}-{g}"

    def attributes(self, lifetime: int) -> list[Attribute]:
        attrs = [Attribute(Phase1Attr.ENCRYPTION_ALGORITHM, self.encr)]
        if self.key_bits is not None:
            attrs.append(Attribute(Phase1Attr.KEY_LENGTH, self.key_bits))
        attrs += [
            Attribute(Phase1Attr.HASH_ALGORITHM, self.hash_alg),
            Attribute(Phase1Attr.AUTHENTICATION_METHOD, self.auth),
            Attribute(Phase1Attr.GROUP_DESCRIPTION, self.group),
            Attribute(Phase1Attr.LIFE_TYPE, LifeType.SECONDS),
            Attribute.of(Phase1Attr.LIFE_DURATION, lifetime),
        ]
        return attrs


def parse_ike_proposal(text: str, auth: AuthMethod, allow_legacy: bool = False) -> list[IkeSuite]:
    """"aes256-sha256-modp2048" (several algorithms of a kind give the cross product)."""
    encrs: list[tuple[int, int | None]] = []
    hashes: list[int] = []
    groups: list[int] = []
    for token in text.lower().split("-"):
        if token in _P1_ENCR:
            encrs.append(_P1_ENCR[token])
        elif token in _P1_HASH:
            hashes.append(_P1_HASH[token])
        elif token.startswith("prf") and token[3:] in _P1_HASH:
            continue  # IKEv1 derives its PRF from the hash (RFC 2409 §4)
        else:
            number = _dh_number(token, allow_legacy)
            if number is None:
                raise ProposalError(f"IKEv1 proposal {text!r}: unknown algorithm {token!r}")
            groups.append(number)
    if not encrs or not hashes or not groups:
        raise ProposalError(f"IKEv1 proposal {text!r} needs an encryption algorithm, a hash and a DH group")
    return [IkeSuite(e, k, h, g, auth) for e, k in encrs for h in hashes for g in groups]


def phase1_sa(suites: list[IkeSuite], lifetime: int) -> SaPayload:
    transforms = [Transform(i + 1, KEY_IKE, s.attributes(lifetime)) for i, s in enumerate(suites)]
    return SaPayload(proposals=[Proposal(1, ProtocolId.ISAKMP, b"", transforms)])


def suite_of_transform(t: Transform) -> tuple[IkeSuite, int | None] | None:
    """Read a phase-1 transform; None if a mandatory attribute is missing or unknown."""
    vals: dict[int, int] = {}
    life: int | None = None
    life_type = None
    for a in t.attributes:
        if a.type == Phase1Attr.LIFE_TYPE:
            life_type = a.as_int()
        elif a.type == Phase1Attr.LIFE_DURATION:
            if life_type == LifeType.SECONDS:
                life = a.as_int()
        else:
            vals[a.type] = a.as_int()
    try:
        suite = IkeSuite(
            vals[Phase1Attr.ENCRYPTION_ALGORITHM],
            vals.get(Phase1Attr.KEY_LENGTH),
            vals[Phase1Attr.HASH_ALGORITHM],
            vals[Phase1Attr.GROUP_DESCRIPTION],
            vals[Phase1Attr.AUTHENTICATION_METHOD],
        )
    except KeyError:
        return None
    if suite.encr == EncryptionAlgorithm.AES_CBC and suite.key_bits is None:
        suite = IkeSuite(suite.encr, 128, suite.hash_alg, suite.group, suite.auth)  # RFC 3602 §5 default
    return suite, life


def select_phase1(sa: SaPayload, ours: list[IkeSuite]) -> tuple[Proposal, Transform, IkeSuite, int | None] | None:
    """Scan every transform of every proposal (the first one we support wins: RFC 2408 §4.2)."""
    for prop in sa.proposals:
        if prop.protocol != ProtocolId.ISAKMP:
            continue
        for t in prop.transforms:
            if t.transform_id != KEY_IKE:
                continue
            read = suite_of_transform(t)
            if read is not None and read[0] in ours:
                return prop, t, read[0], read[1]
    return None


# --------------------------------------------------------------------------- phase 2


@dataclass(frozen=True)
class ChildSuite:
    protocol: ProtocolId
    encr: xf.EncrAlgorithm | None
    integ: xf.IntegAlgorithm | None
    pfs_group: int | None

    @property
    def name(self) -> str:
        parts = [p.name for p in (self.encr, self.integ) if p is not None]
        if self.pfs_group:
            parts.append(dh.group(self.pfs_group).name)
        return "-".join(parts)

    @property
    def keymat_len(self) -> int:
        return (self.encr.keymat_len if self.encr else 0) + (self.integ.key_len if self.integ else 0)

    def transform(self, number: int, encap: int, lifetime: int, kilobytes: int) -> Transform:
        attrs = [
            Attribute(Phase2Attr.SA_LIFE_TYPE, LifeType.SECONDS),
            Attribute.of(Phase2Attr.SA_LIFE_DURATION, lifetime),
        ]
        if kilobytes:
            attrs += [Attribute(Phase2Attr.SA_LIFE_TYPE, LifeType.KILOBYTES),
                      Attribute.of(Phase2Attr.SA_LIFE_DURATION, kilobytes)]
        if self.pfs_group:
            attrs.append(Attribute(Phase2Attr.GROUP_DESCRIPTION, self.pfs_group))
        attrs.append(Attribute(Phase2Attr.ENCAPSULATION_MODE, encap))
        if self.integ is not None:
            attrs.append(Attribute(Phase2Attr.AUTH_ALGORITHM, _P2_AUTH[self.integ.name]))
        if self.encr is not None and self.encr.name.startswith("aes"):
            attrs.append(Attribute(Phase2Attr.KEY_LENGTH, self.encr.key_bits))
        if self.protocol == ProtocolId.AH:
            assert self.integ is not None  # noqa: S101 - construction invariant, not input validation
            return Transform(number, _AH_ID[self.integ.name], attrs)
        assert self.encr is not None  # noqa: S101 - construction invariant
        return Transform(number, self.encr.iana_id, attrs)


def parse_child_proposal(text: str, protocol: str, allow_legacy: bool = False) -> list[ChildSuite]:
    """"aes128-sha256", "aes256gcm16-modp2048", "sha256" (AH); a DH group means PFS."""
    encrs: list[xf.EncrAlgorithm] = []
    integs: list[xf.IntegAlgorithm] = []
    groups: list[int | None] = []
    for token in text.lower().split("-"):
        if token in ("esn", "noesn"):
            continue
        if token in _P2_AUTH or token in xf.INTEG_ALIASES:
            integs.append(xf.integ_algorithm(token))
            continue
        try:
            alg = xf.encr_algorithm(token)
        except ValueError:
            number = _dh_number(token, allow_legacy)
            if number is None:
                raise ProposalError(f"IKEv1 child proposal {text!r}: unknown algorithm {token!r}") from None
            groups.append(number)
            continue
        if alg.iana_id not in _P2_ENCR_IDS:
            raise ProposalError(f"{token} is not supported by our IKEv1 phase 2")
        encrs.append(alg)
    prot = ProtocolId.AH if protocol == "ah" else ProtocolId.ESP
    if prot == ProtocolId.AH:
        if encrs or not integs:
            raise ProposalError(f"AH proposal {text!r} takes integrity algorithms only")
        return [ChildSuite(prot, None, i, g) for i in integs for g in (groups or [None])]
    if not encrs:
        raise ProposalError(f"ESP proposal {text!r} needs an encryption algorithm")
    out: list[ChildSuite] = []
    for e in encrs:
        if e.aead:
            out += [ChildSuite(prot, e, None, g) for g in (groups or [None])]
        else:
            if not integs:
                raise ProposalError(f"ESP proposal {text!r}: {e.name} needs an integrity algorithm")
            out += [ChildSuite(prot, e, i, g) for i in integs for g in (groups or [None])]
    return out


def encap_value(mode: str, udp: bool, draft: bool) -> int:
    """RFC 2407 §4.5 and RFC 3947 §5.1 (draft values when the peer only spoke a NAT-T draft)."""
    if not udp:
        return EncapsulationMode.TUNNEL if mode == "tunnel" else EncapsulationMode.TRANSPORT
    if draft:
        return EncapsulationMode.UDP_TUNNEL_DRAFT if mode == "tunnel" else EncapsulationMode.UDP_TRANSPORT_DRAFT
    return EncapsulationMode.UDP_TUNNEL if mode == "tunnel" else EncapsulationMode.UDP_TRANSPORT


def decode_encap(value: int) -> tuple[str, bool] | None:
    table: dict[int, tuple[str, bool]] = {
        EncapsulationMode.TUNNEL: ("tunnel", False),
        EncapsulationMode.TRANSPORT: ("transport", False),
        EncapsulationMode.UDP_TUNNEL: ("tunnel", True),
        EncapsulationMode.UDP_TRANSPORT: ("transport", True),
        EncapsulationMode.UDP_TUNNEL_DRAFT: ("tunnel", True),
        EncapsulationMode.UDP_TRANSPORT_DRAFT: ("transport", True),
    }
    return table.get(value)


def phase2_sa(suites: list[ChildSuite], spi: bytes, encap: int, lifetime: int, kilobytes: int) -> SaPayload:
    # RFC 2408 §4.2: distinct proposal numbers are alternatives ("OR"); one transform each.
    props = [Proposal(i + 1, s.protocol, spi, [s.transform(1, encap, lifetime, kilobytes)])
             for i, s in enumerate(suites)]
    return SaPayload(proposals=props)


@dataclass(frozen=True)
class Phase2Choice:
    proposal: Proposal
    transform: Transform
    suite: ChildSuite
    mode: str
    udp: bool
    encap: int
    lifetime: int | None
    kilobytes: int | None


def read_phase2_transform(protocol: int, t: Transform) -> Phase2Choice | None:
    encap = None
    auth = None
    key_bits = None
    group = None
    life_type = None
    lifetime = None
    kilobytes = None
    for a in t.attributes:
        v = a.as_int()
        if a.type == Phase2Attr.ENCAPSULATION_MODE:
            encap = v
        elif a.type == Phase2Attr.AUTH_ALGORITHM:
            auth = v
        elif a.type == Phase2Attr.KEY_LENGTH:
            key_bits = v
        elif a.type == Phase2Attr.GROUP_DESCRIPTION:
            group = v
        elif a.type == Phase2Attr.SA_LIFE_TYPE:
            life_type = v
        elif a.type == Phase2Attr.SA_LIFE_DURATION:
            if life_type == LifeType.SECONDS:
                lifetime = v
            elif life_type == LifeType.KILOBYTES:
                kilobytes = v
    mode = decode_encap(encap if encap is not None else EncapsulationMode.TUNNEL)
    if mode is None:
        return None
    integ_name = _AUTH_NAME.get(auth) if auth is not None else None
    integ = xf.integ_algorithm(integ_name) if integ_name else None
    if protocol == ProtocolId.AH:
        ah_name = _AH_NAME.get(t.transform_id)
        if ah_name is None:
            return None
        suite = ChildSuite(ProtocolId.AH, None, xf.integ_algorithm(ah_name), group)
    elif protocol == ProtocolId.ESP:
        if t.transform_id not in _P2_ENCR_IDS:
            return None
        if t.transform_id == EncryptionAlgorithm.AES_CBC and key_bits is None:
            key_bits = 128
        encr = xf.encr_by_iana(t.transform_id, key_bits if t.transform_id != 3 else None)
        if encr is None or (encr.aead and integ is not None) or (not encr.aead and integ is None):
            return None
        suite = ChildSuite(ProtocolId.ESP, encr, integ, group)
    else:
        return None
    return Phase2Choice(Proposal(0, protocol, b""), t, suite, mode[0], mode[1], encap or 1, lifetime, kilobytes)


def select_phase2(sa: SaPayload, ours: list[ChildSuite], mode: str) -> Phase2Choice | None:
    """The first transform of any proposal that we also configured, with the same tunnel/transport mode."""
    for prop in sa.proposals:
        if len(prop.spi) != 4:
            continue
        for t in prop.transforms:
            choice = read_phase2_transform(prop.protocol, t)
            if choice is None or choice.mode != mode:
                continue
            if choice.suite in ours:
                return Phase2Choice(prop, t, choice.suite, choice.mode, choice.udp, choice.encap,
                                    choice.lifetime, choice.kilobytes)
    return None
