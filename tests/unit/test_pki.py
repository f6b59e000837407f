"""The lab CA (labctl.lab.pki): what it issues passes the gateway's own path validation (labctl.gateway.ike.certs)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from labctl.gateway.ike import certs
from labctl.lab.pki import CLOCK_SKEW, LabCa


def _ders(pem: str) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem.encode())] if pem else []


def test_certificates_start_a_little_in_the_past() -> None:
    before = dt.datetime.now(dt.UTC)
    ca = LabCa("pkitest")
    issued = ca.issue("gw-a", "198.51.100.1")
    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert CLOCK_SKEW >= dt.timedelta(minutes=1)
    for cert in (ca.cert, leaf):
        assert cert.not_valid_before_utc <= before - CLOCK_SKEW + dt.timedelta(seconds=1)
    # A peer whose clock is a minute behind still accepts the brand-new certificate.
    path = certs.verify_chain(_ders(issued.cert_pem)[0], [], [ca.cert], before - dt.timedelta(minutes=1))
    assert path == [leaf, ca.cert] and issued.chain_pem == ""


def test_intermediate_cas_and_their_chain() -> None:
    root = LabCa("pkitest", path_length=1)
    inter = root.sub_ca("pkitest int-a")
    issued = inter.issue("gw-a", "198.51.100.1")
    assert _ders(issued.chain_pem) == _ders(inter.cert_pem)
    leaf_der, *intermediates = _ders(issued.cert_pem + issued.chain_pem)
    path = certs.verify_chain(leaf_der, intermediates, [root.cert], dt.datetime.now(dt.UTC))
    assert [c.subject for c in path] == [x509.load_der_x509_certificate(leaf_der).subject, inter.name, root.name]
    with pytest.raises(ValueError, match=r"may not issue CA certificates \(pathLenConstraint 0\)"):
        inter.sub_ca("too deep")
    with pytest.raises(ValueError, match="pathLenConstraint 0"):
        LabCa("pkitest").sub_ca("the default lab CA issues end entities only")
