"""A small certificate authority per lab, for IKE authentication with certificates.

Each lab gets its own CA; every tunnel end gets a key and a certificate whose subject names the node and
whose subjectAltName carries its IP address, so it can be used as an IKE identity (RFC 7296 §3.5 ID_IPV4_ADDR)
or by its DN (ID_DER_ASN1_DN). Everything here is lab-only material, generated fresh at `up`.

Certificates start being valid `CLOCK_SKEW` before they are made, so a node whose clock runs a little behind
the machine that issued them still accepts them (RFC 5280 §4.1.2.5 validity is checked by both IKE cores and by
strongSwan). A CA made with ``path_length`` of 1 or more can issue intermediate CAs (`LabCa.sub_ca`), whose
end entities carry the intermediates in `Issued.chain_pem`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KeyType = Literal["rsa", "ecdsa"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
CLOCK_SKEW = dt.timedelta(minutes=5)  # notBefore lies this far in the past
LIFETIME = dt.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    key_pem: str
    cert_pem: str
    subject: str  # RFC 4514 string, e.g. "CN=gw-a,O=labctl lab site-to-site"
    chain_pem: str = ""  # the intermediate CA certificates above cert_pem (none when the root issued it)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


class LabCa:
    """The lab's root CA, or (with ``parent``) an intermediate CA under it."""

    def __init__(self, lab: str, key_type: KeyType = "ecdsa", path_length: int | None = 0,
                 parent: LabCa | None = None, common_name: str = "") -> None:
        self.lab = lab
        self.key = _new_key(key_type)
        self.parent = parent
        self.path_length = path_length  # RFC 5280 §4.2.1.9: intermediate CAs allowed below this one
        self.name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"labctl lab {lab}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"labctl {lab} CA (lab only)"),
        ])
        issuer_name, issuer_key = (parent.name, parent.key) if parent else (self.name, self.key)
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(issuer_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(issuer_key, hashes.SHA256())
        )

    def sub_ca(self, common_name: str, key_type: KeyType = "ecdsa") -> LabCa:
        """An intermediate CA signed by this one (which needs a path_length of at least 1, or None)."""
        if self.path_length is not None and self.path_length < 1:
            raise ValueError(f"{self.name.rfc4514_string()} may not issue CA certificates "
                             f"(pathLenConstraint {self.path_length})")
        below = None if self.path_length is None else self.path_length - 1
        return LabCa(self.lab, key_type, below, parent=self, common_name=common_name)

    @property
    def chain_pem(self) -> str:
        """This CA's certificate and those of the intermediates above it, root excluded (what a peer sends)."""
        if self.parent is None:
            return ""
        return self.cert_pem + self.parent.chain_pem

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, node: str, address: str, key_type: KeyType = "ecdsa") -> Issued:
        key = _new_key(key_type)
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"labctl lab {self.lab}"),
            x509.NameAttribute(NameOID.COMMON_NAME, node),
        ])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address(address))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(_pem(key), cert.public_bytes(serialization.Encoding.PEM).decode(), subject.rfc4514_string(),
                      self.chain_pem)
