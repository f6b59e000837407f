"""Phase-1 authentication material: RSA signatures the IKEv1 way, and certificate checks.

RFC 2409 §5.1: an RSA signature in IKEv1 is "a private key encryption in PKCS #1 format" of
HASH_I / HASH_R, i.e. EMSA-PKCS1-v1_5 padding around the bare hash, with no DigestInfo (strongSwan
calls it SIGN_RSA_EMSA_PKCS1_NULL). The `cryptography` package only signs with a DigestInfo, so
the private-key operation is done here with the key's CRT numbers; verification uses the
library's raw recovery.
"""

from __future__ import annotations

import hmac
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from labctl.gateway.ike import certs
from labctl.gateway.ike.v1.codec import IdPayload
from labctl.gateway.ike.v1.constants import IdType
from labctl.gateway.ike.v1.identity import dn_attributes


class AuthError(ValueError):
    """Material that cannot be used for authentication (bad key, bad certificate)."""


def load_rsa_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthError("IKEv1 signature authentication here needs an RSA private key")
    return key


def load_cert(data: bytes) -> x509.Certificate:
    """PEM or DER."""
    try:
        if data.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise AuthError(f"not an X.509 certificate: {exc}") from exc


def rsa_sign_raw(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """EMSA-PKCS1-v1_5 (RFC 8017 §9.2 steps 3-5, without the DigestInfo) and RSASP1 with CRT."""
    nums = key.private_numbers()
    n = nums.public_numbers.n
    k = (n.bit_length() + 7) // 8
    if len(data) > k - 11:
        raise AuthError("data too long for the RSA key")
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
    m = int.from_bytes(em, "big")
    s1 = pow(m, nums.dmp1, nums.p)
    s2 = pow(m, nums.dmq1, nums.q)
    h = (nums.iqmp * (s1 - s2)) % nums.p
    s = s2 + h * nums.q
    # Check the result with the public key before it leaves (a CRT fault would leak a factor).
    if pow(s, nums.public_numbers.e, n) != m:
        raise AuthError("RSA signing self-check failed")
    return s.to_bytes(k, "big")


def rsa_verify_raw(public_key: rsa.RSAPublicKey, data: bytes, signature: bytes) -> bool:
    try:
        recovered = public_key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, ValueError):
        return False
    return hmac.compare_digest(recovered, data)


def own_chain(cert_pem: bytes, key: rsa.RSAPrivateKey | None = None) -> certs.LocalChain:
    """Our certificate file: our certificate first (checked against ``key`` when given), then intermediates.
    The peer's chain is checked by `labctl.gateway.ike.certs.verify_chain`."""
    try:
        return certs.local_chain(cert_pem, key)
    except certs.CertError as exc:
        raise AuthError(str(exc)) from None


def id_matches_cert(id_payload: IdPayload, cert: x509.Certificate) -> bool:
    """The phase-1 identity must be the certificate's subject DN or one of its subjectAltNames."""
    if id_payload.id_type == IdType.DER_ASN1_DN:
        # RFC 5280 §7.1: compare attribute by attribute; strongSwan sends its configured DN with
        # PrintableString even when the certificate's subject uses UTF8String.
        subject = dn_attributes(cert.subject.public_bytes())
        return subject is not None and subject == dn_attributes(id_payload.data)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if id_payload.id_type == IdType.FQDN:
        return id_payload.data.decode("ascii", "replace") in san.get_values_for_type(x509.DNSName)
    if id_payload.id_type == IdType.USER_FQDN:
        return id_payload.data.decode("ascii", "replace") in san.get_values_for_type(x509.RFC822Name)
    if id_payload.id_type == IdType.IPV4_ADDR:
        return any(not isinstance(a, ipaddress.IPv4Network | ipaddress.IPv6Network) and a.packed == id_payload.data
                   for a in san.get_values_for_type(x509.IPAddress))
    return False
