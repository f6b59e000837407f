"""IKEv2 identities and authentication: ID payloads, AUTH with a pre-shared key (RFC 7296 §2.15),
digital signatures (RFC 7427, method 14; RSA method 1 on receive), CERT/CERTREQ handling (§3.6, §3.7)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from labctl.gateway.ike import certs
from labctl.gateway.ike.prf import Prf
from labctl.gateway.ike.v2.codec import AuthPayload, IdPayload
from labctl.gateway.ike.v2.constants import AuthMethod, HashAlgorithm, IdType

KEY_PAD = b"Key Pad for IKEv2"  # RFC 7296 §2.15


class AuthError(ValueError):
    """Authentication could not be completed; the message says why in plain words."""


# --- identities ----------------------------------------------------------------------------------------

_DN_ATTRS = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
             "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME,
             "E": NameOID.EMAIL_ADDRESS, "EMAIL": NameOID.EMAIL_ADDRESS, "DC": NameOID.DOMAIN_COMPONENT}


def parse_dn(text: str) -> x509.Name:
    """strongSwan order ("C=CH, O=Lab, CN=moon"): most significant first, as in the DER encoding."""
    rdns = []
    for part in text.replace("/", ",").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or key.strip().upper() not in _DN_ATTRS:
            raise AuthError(f"cannot read distinguished name {text!r} at {part.strip()!r}")
        rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(_DN_ATTRS[key.strip().upper()],
                                                                       value.strip())]))
    return x509.Name(rdns)


def make_id(text: str) -> IdPayload:
    """Our identity as configured: an IP address, ``@fqdn`` / ``fqdn``, ``user@fqdn``, or a DN."""
    try:
        ip = ipaddress.ip_address(text)
        return IdPayload(IdType.ID_IPV4_ADDR if ip.version == 4 else IdType.ID_IPV6_ADDR, ip.packed)
    except ValueError:
        pass
    if "=" in text:
        return IdPayload(IdType.ID_DER_ASN1_DN, parse_dn(text).public_bytes())
    if text.startswith("@"):
        return IdPayload(IdType.ID_FQDN, text[1:].encode())
    if "@" in text:
        return IdPayload(IdType.ID_RFC822_ADDR, text.encode())
    return IdPayload(IdType.ID_FQDN, text.encode())


def id_text(ident: IdPayload) -> str:
    try:
        if ident.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            return str(ipaddress.ip_address(ident.data))
        if ident.id_type == IdType.ID_DER_ASN1_DN:
            name = _decode_name_der(ident.data)
            return ", ".join(f"{a.rfc4514_attribute_name}={a.value!s}" for a in name)
        if ident.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            return ident.data.decode("utf-8", "replace")
    except ValueError:
        pass
    return f"type {ident.id_type}: {ident.data.hex()}"


def _read_tlv(data: bytes, off: int) -> tuple[int, bytes, int]:
    if off + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[off]
    length = data[off + 1]
    off += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 3 or off + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[off : off + n], "big")
        off += n
    if off + length > len(data):
        raise ValueError("truncated DER value")
    return tag, data[off : off + length], off + length


def _decode_oid(body: bytes) -> str:
    if not body:
        raise ValueError("empty OID")
    parts = [body[0] // 40, body[0] % 40]
    value = 0
    for byte in body[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _decode_name_der(der: bytes) -> x509.Name:
    tag, seq, _ = _read_tlv(der, 0)
    if tag != 0x30:
        raise ValueError("DN is not a SEQUENCE")
    rdns = []
    off = 0
    while off < len(seq):
        tag, rdn_set, off = _read_tlv(seq, off)
        attrs = []
        aoff = 0
        while aoff < len(rdn_set):
            _t, atv, aoff = _read_tlv(rdn_set, aoff)
            _t1, oid_body, voff = _read_tlv(atv, 0)
            vtag, value, _ = _read_tlv(atv, voff)
            oid = x509.ObjectIdentifier(_decode_oid(oid_body))
            text = value.decode("utf-16-be" if vtag == 0x1E else "utf-8", "replace")
            attrs.append(x509.NameAttribute(oid, text))
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def id_matches(configured: str, ident: IdPayload) -> bool:
    """Does the peer's ID payload equal the configured remote id?  ``%any`` (or empty) accepts any."""
    if configured in ("", "%any"):
        return True
    try:
        want = make_id(configured)
    except AuthError:
        return False
    if want.id_type != ident.id_type:
        return False
    if want.id_type == IdType.ID_DER_ASN1_DN:
        try:
            return _decode_name_der(ident.data) == parse_dn(configured)
        except ValueError:
            return False
    if want.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
        return want.data.lower() == ident.data.lower()
    return want.data == ident.data


def cert_matches_id(cert: x509.Certificate, ident: IdPayload) -> bool:
    """The peer's ID must be the subject DN or a subjectAltName of its end-entity certificate."""
    if ident.id_type == IdType.ID_DER_ASN1_DN:
        try:
            return _decode_name_der(ident.data) == cert.subject
        except ValueError:
            return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if ident.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
        return ipaddress.ip_address(ident.data) in san.get_values_for_type(x509.IPAddress)
    text = ident.data.decode("utf-8", "replace").lower()
    if ident.id_type == IdType.ID_FQDN:
        return text in (v.lower() for v in san.get_values_for_type(x509.DNSName))
    if ident.id_type == IdType.ID_RFC822_ADDR:
        return text in (v.lower() for v in san.get_values_for_type(x509.RFC822Name))
    return False


# --- AUTH payload --------------------------------------------------------------------------------------


def signed_octets(real_message: bytes, peer_nonce: bytes, prf: Prf, sk_p: bytes, id_raw: bytes) -> bytes:
    """RFC 7296 §2.15: RealMessage | NonceData of the peer | prf(SK_p, RestOfIDPayload).  ``id_raw`` is
    the ID payload body as sent/received (ID type, reserved, data), never re-encoded."""
    return real_message + peer_nonce + prf(sk_p, id_raw)


def psk_auth(prf: Prf, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>) (RFC 7296 §2.15)."""
    return prf(prf(psk, KEY_PAD), octets)


def check_psk(prf: Prf, psk: bytes, octets: bytes, received: bytes) -> bool:
    return hmac.compare_digest(psk_auth(prf, psk, octets), received)


# RFC 7427 Appendix A: DER AlgorithmIdentifiers, keyed by (key kind, hash).
_ALG_IDS: dict[tuple[str, str], bytes] = {
    ("rsa", "sha256"): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", "sha384"): bytes.fromhex("300d06092a864886f70d01010c0500"),
    ("rsa", "sha512"): bytes.fromhex("300d06092a864886f70d01010d0500"),
    ("ecdsa", "sha256"): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ecdsa", "sha384"): bytes.fromhex("300a06082a8648ce3d040303"),
    ("ecdsa", "sha512"): bytes.fromhex("300a06082a8648ce3d040304"),
}
_HASHES: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(),
                                            "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
SUPPORTED_HASHES = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)
_HASH_BY_NUMBER = {HashAlgorithm.SHA2_256: "sha256", HashAlgorithm.SHA2_384: "sha384",
                   HashAlgorithm.SHA2_512: "sha512"}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _ec_hash(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    # Match the hash to the curve strength, as strongSwan does.
    return {256: "sha256", 384: "sha384", 521: "sha512"}.get(key.curve.key_size, "sha256")


def sign(key: PrivateKey, octets: bytes, peer_hashes: list[int]) -> AuthPayload:
    """RFC 7427 digital signature (method 14): ASN.1 length, AlgorithmIdentifier, signature value."""
    if isinstance(key, rsa.RSAPrivateKey):
        h = next((_HASH_BY_NUMBER[HashAlgorithm(n)] for n in peer_hashes if n in _HASH_BY_NUMBER), "sha256")
        sig = key.sign(octets, padding.PKCS1v15(), _HASHES[h])
        alg = _ALG_IDS[("rsa", h)]
    else:
        h = _ec_hash(key)
        sig = key.sign(octets, ec.ECDSA(_HASHES[h]))  # DER Ecdsa-Sig-Value (RFC 7427 §3)
        alg = _ALG_IDS[("ecdsa", h)]
    return AuthPayload(AuthMethod.DIGITAL_SIGNATURE, bytes([len(alg)]) + alg + sig)


def verify(key: PublicKey, auth: AuthPayload, octets: bytes) -> bool:
    try:
        if auth.method == AuthMethod.DIGITAL_SIGNATURE:
            n = auth.data[0] if auth.data else 0
            alg, sig = auth.data[1 : 1 + n], auth.data[1 + n :]
            match = [k for k, v in _ALG_IDS.items() if v == alg]
            if not match:
                return False
            kind, h = match[0]
            if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, octets, padding.PKCS1v15(), _HASHES[h])
                return True
            if kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, octets, ec.ECDSA(_HASHES[h]))
                return True
            return False
        if auth.method == AuthMethod.RSA_SIG and isinstance(key, rsa.RSAPublicKey):
            # RFC 7296 §3.8: RSASSA-PKCS1-v1_5 with SHA-1 (classic method 1).
            key.verify(auth.data, octets, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
            return True
    except (InvalidSignature, ValueError, IndexError):
        return False
    return False


# --- certificates --------------------------------------------------------------------------------------


@dataclass
class Credentials:
    """Our key and certificate chain plus trusted CAs, loaded once from PEM text (no file I/O here)."""

    key: PrivateKey | None
    cert: x509.Certificate | None
    cas: list[x509.Certificate]
    intermediates: tuple[x509.Certificate, ...] = ()  # sent after our certificate (RFC 7296 §3.6)

    @classmethod
    def from_pem(cls, key_pem: str = "", cert_pem: str = "", ca_pems: tuple[str, ...] = ()) -> Credentials:
        """``cert_pem`` holds our certificate first, then any intermediate CA certificates."""
        try:
            loaded = certs.load_private_key(key_pem) if key_pem else None
            if loaded is not None and not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise AuthError("private key must be RSA or ECDSA")
            chain = certs.local_chain(cert_pem, loaded) if cert_pem else None
            cas = certs.load_anchors(ca_pems)
        except certs.CertError as exc:
            raise AuthError(str(exc)) from None
        return cls(loaded, chain.leaf if chain else None, cas, chain.intermediates if chain else ())

    def cert_ders(self) -> list[bytes]:
        """The CERT payloads we send: our certificate first, then the intermediates (RFC 7296 §3.6)."""
        if self.cert is None:
            return []
        return certs.LocalChain(self.cert, self.intermediates).ders()

    def certreq_data(self) -> bytes:
        """RFC 7296 §3.7: concatenated SHA-1 hashes of each trusted CA's SubjectPublicKeyInfo."""
        return b"".join(hashlib.sha1(  # noqa: S324 - the hash the RFC prescribes as an identifier
            ca.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
            for ca in self.cas)

    def verify_peer(self, ders: list[bytes], ident: IdPayload, now: datetime.datetime) -> PublicKey:
        """Validate the peer's end-entity certificate (``ders[0]``, RFC 7296 §3.6) up to one of our CAs through
        the intermediates it sent (``ders[1:]``) at wall-clock time ``now``, and bind it to its ID."""
        if not ders:
            raise AuthError("peer sent no X.509 certificate")
        try:
            cert = certs.verify_chain(ders[0], ders[1:], self.cas, now)[0]
        except certs.CertError as exc:
            raise AuthError(str(exc)) from None
        if not cert_matches_id(cert, ident):
            raise AuthError(f"peer ID '{id_text(ident)}' is not in its certificate "
                            f"'{cert.subject.rfc4514_string()}'")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise AuthError("peer certificate key is neither RSA nor ECDSA")
        return key
