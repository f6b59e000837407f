"""Certificates for the IKE tests, built with `cryptography`: a root CA, intermediate CAs and end entities with
chosen dates and extensions, all relative to one fixed wall-clock time (``NOW``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from labctl.gateway.ike import certs

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)
KeyType = Literal["rsa", "ecdsa"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey



def clock(when: dt.datetime = NOW) -> Callable[[], dt.datetime]:
    """A wall clock that always says ``when`` (the engines' ``wall_clock``)."""
    return lambda: when


AT_NOW = clock()  # the default wall clock of the engine pairs in these tests


def new_key(key_type: KeyType = "ecdsa") -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Cert:
    key: PrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def make(cn: str, issuer: Cert | None = None, *, ca: bool = False, path_length: int | None = None,
         basic_constraints: bool = True, key_cert_sign: bool | None = None, key_type: KeyType = "ecdsa",
         not_before: dt.datetime = NOW - YEAR, not_after: dt.datetime = NOW + YEAR, san: str | None = None,
         issuer_name: x509.Name | None = None, signing_key: PrivateKey | None = None,
         extra: x509.ExtensionType | None = None, extra_critical: bool = False, key: PrivateKey | None = None) -> Cert:
    """One certificate. ``issuer`` None: self-signed. ``key_cert_sign`` None: no keyUsage extension; True/False:
    keyUsage with keyCertSign set or not. ``issuer_name``/``signing_key`` override what the issuer gives;
    ``key`` is the subject's key (default: a new one)."""
    key = key or new_key(key_type)
    subject = name(cn)
    iname = issuer_name or (issuer.cert.subject if issuer else subject)
    skey = signing_key or (issuer.key if issuer else key)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(iname).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))
    if basic_constraints:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    if key_cert_sign is not None:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                                          crl_sign=key_cert_sign, encipher_only=False, decipher_only=False),
                            critical=True)
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    if extra is not None:
        b = b.add_extension(extra, critical=extra_critical)
    return Cert(key, b.sign(skey, hashes.SHA256()))


def root(cn: str = "root-ca", **kw: object) -> Cert:
    return make(cn, ca=True, key_cert_sign=True, **kw)  # type: ignore[arg-type]


def intermediate(cn: str, issuer: Cert, **kw: object) -> Cert:
    kw.setdefault("ca", True)
    kw.setdefault("key_cert_sign", True)
    return make(cn, issuer, **kw)  # type: ignore[arg-type]


def record_chains(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """Make ``certs.verify_chain`` (which both IKE cores call) also record each chain it is given, end entity
    first, as DER: what the peer actually sent. Returns the list it appends to."""
    seen: list[list[bytes]] = []
    real = certs.verify_chain

    def recording(end_entity: bytes, intermediates: list[bytes], *args: object) -> list[x509.Certificate]:
        seen.append([end_entity, *intermediates])
        return real(end_entity, intermediates, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(certs, "verify_chain", recording)
    return seen
