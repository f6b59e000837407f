"""Certificate path validation shared by both IKE cores (labctl.gateway.ike.certs), RFC 5280 §6.1.

Every certificate is generated here; the wall-clock time is the fixed ``NOW`` of x509_factory.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from labctl.gateway.ike import certs
from labctl.gateway.ike.certs import CertError, verify_chain

from .x509_factory import NOW, YEAR, Cert, intermediate, make, name, new_key, root


@pytest.fixture(scope="module")
def pki() -> dict[str, Cert]:
    r = root("root-ca", path_length=2)
    i = intermediate("int-ca", r, path_length=0)
    return {
        "root": r,
        "int": i,
        "direct": make("gw-b", r, san="gw-b.lab"),
        "via_int": make("gw-b", i, san="gw-b.lab"),
        "other_root": root("other-ca"),
    }


def _check(leaf: Cert, *intermediates: Cert, anchors: tuple[Cert, ...], now: dt.datetime = NOW,
           max_depth: int = certs.MAX_CHAIN_DEPTH) -> list[x509.Certificate]:
    return verify_chain(leaf.der, [c.der for c in intermediates], [a.cert for a in anchors], now, max_depth)


def _reason(leaf: Cert, *intermediates: Cert, anchors: tuple[Cert, ...], now: dt.datetime = NOW) -> str:
    with pytest.raises(CertError) as exc:
        _check(leaf, *intermediates, anchors=anchors, now=now)
    return str(exc.value)


# --- chains that pass ------------------------------------------------------------------------------------------


def test_direct_chain_passes(pki: dict[str, Cert]) -> None:
    path = _check(pki["direct"], anchors=(pki["other_root"], pki["root"]))
    assert path == [pki["direct"].cert, pki["root"].cert]


def test_chain_through_an_intermediate_passes(pki: dict[str, Cert]) -> None:
    path = _check(pki["via_int"], pki["int"], anchors=(pki["root"],))
    assert path == [pki["via_int"].cert, pki["int"].cert, pki["root"].cert]


def test_intermediates_in_any_order_and_extra_certificates_are_fine() -> None:
    r = root("root-ca")
    i1 = intermediate("int-1", r)
    i2 = intermediate("int-2", i1)
    leaf = make("gw-b", i2)
    unrelated = intermediate("unrelated", root("stranger"))
    path = _check(leaf, unrelated, i1, i2, anchors=(r,))
    assert [c.subject for c in path] == [name("gw-b"), name("int-2"), name("int-1"), name("root-ca")]


def test_validity_bounds_are_inclusive(pki: dict[str, Cert]) -> None:
    # RFC 5280 §4.1.2.5: "from notBefore through notAfter, inclusive".
    r = pki["root"]
    leaf = make("gw-b", r, not_before=NOW - dt.timedelta(hours=1), not_after=NOW)
    assert _check(leaf, anchors=(r,))[0] == leaf.cert
    assert _check(leaf, anchors=(r,), now=NOW - dt.timedelta(hours=1))[0] == leaf.cert
    assert "expired" in _reason(leaf, anchors=(r,), now=NOW + dt.timedelta(seconds=1))


def test_the_peer_may_send_the_root_too(pki: dict[str, Cert]) -> None:
    path = _check(pki["via_int"], pki["int"], pki["root"], anchors=(pki["root"],))
    assert path[-1] == pki["root"].cert and len(path) == 3


# --- chains that fail, each with its reason ---------------------------------------------------------------------


def test_expired_leaf(pki: dict[str, Cert]) -> None:
    leaf = make("gw-b", pki["root"], not_before=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
                not_after=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert _reason(leaf, anchors=(pki["root"],)) == "certificate CN=gw-b expired on 2026-01-01T00:00:00Z"


def test_not_yet_valid_leaf(pki: dict[str, Cert]) -> None:
    leaf = make("gw-b", pki["root"], not_before=dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
                not_after=NOW + 3 * YEAR)
    assert _reason(leaf, anchors=(pki["root"],)) == "certificate CN=gw-b is not valid before 2031-02-03T04:05:06Z"


def test_expired_intermediate(pki: dict[str, Cert]) -> None:
    old = intermediate("int-ca", pki["root"], not_after=dt.datetime(2029, 12, 31, tzinfo=dt.UTC))
    leaf = make("gw-b", old)
    assert _reason(leaf, old, anchors=(pki["root"],)) == "certificate CN=int-ca expired on 2029-12-31T00:00:00Z"


def test_expired_trust_anchor(pki: dict[str, Cert]) -> None:
    r = root("old-root", not_after=NOW - dt.timedelta(days=1))
    leaf = make("gw-b", r)
    assert _reason(leaf, anchors=(r,)).startswith("certificate CN=old-root expired on ")


def test_intermediate_without_ca_flag(pki: dict[str, Cert]) -> None:
    not_ca = make("int-ca", pki["root"], ca=False)
    leaf = make("gw-b", not_ca)
    assert _reason(leaf, not_ca, anchors=(pki["root"],)) == \
        "issuer CN=int-ca is not a CA (its basicConstraints has cA FALSE)"


def test_intermediate_without_basic_constraints(pki: dict[str, Cert]) -> None:
    bare = make("int-ca", pki["root"], basic_constraints=False)
    leaf = make("gw-b", bare)
    assert _reason(leaf, bare, anchors=(pki["root"],)) == \
        "issuer CN=int-ca is not a CA (it has no basicConstraints extension)"


def test_anchor_without_ca_flag_cannot_issue() -> None:
    # A configured "CA" file that holds an end-entity certificate does not make it a CA (RFC 5280 §4.2.1.9).
    fake = make("fake-ca")
    leaf = make("gw-b", fake)
    assert _reason(leaf, anchors=(fake,)) == "issuer CN=fake-ca is not a CA (its basicConstraints has cA FALSE)"


def test_intermediate_whose_key_usage_lacks_key_cert_sign(pki: dict[str, Cert]) -> None:
    no_sign = intermediate("int-ca", pki["root"], key_cert_sign=False)
    leaf = make("gw-b", no_sign)
    assert _reason(leaf, no_sign, anchors=(pki["root"],)) == \
        "issuer CN=int-ca may not sign certificates (its keyUsage lacks keyCertSign)"


def test_path_length_constraint() -> None:
    r = root("root-ca", path_length=0)  # may issue end entities only
    i = intermediate("int-ca", r)
    leaf = make("gw-b", i)
    assert _reason(leaf, i, anchors=(r,)) == \
        "issuer CN=root-ca allows 0 intermediate CA certificate(s) below it (pathLenConstraint), this chain has 1"
    assert _check(make("gw-c", r), anchors=(r,))[-1] == r.cert


def test_wrong_issuer_signature(pki: dict[str, Cert]) -> None:
    # Names the configured CA as issuer but is signed by another key.
    forged = make("gw-b", issuer_name=pki["root"].cert.subject, signing_key=pki["other_root"].key)
    assert _reason(forged, anchors=(pki["root"],)) == \
        "the signature on certificate CN=gw-b does not verify with the key of CA CN=root-ca"


def test_issuer_not_trusted(pki: dict[str, Cert]) -> None:
    stranger = make("gw-b", pki["other_root"])
    assert _reason(stranger, anchors=(pki["root"],)) == (
        "certificate CN=gw-b is not issued by a trusted CA: its issuer CN=other-ca is neither a configured CA "
        "nor among the certificates the peer sent")


def test_missing_intermediate(pki: dict[str, Cert]) -> None:
    assert _reason(pki["via_int"], anchors=(pki["root"],)) == (
        "certificate CN=gw-b is not issued by a trusted CA: its issuer CN=int-ca is neither a configured CA "
        "nor among the certificates the peer sent")


def test_intermediate_chaining_to_another_root(pki: dict[str, Cert]) -> None:
    foreign_int = intermediate("int-ca", pki["other_root"])
    leaf = make("gw-b", foreign_int)
    assert "its issuer CN=other-ca is neither a configured CA" in _reason(leaf, foreign_int, anchors=(pki["root"],))


def _ladder(levels: int) -> tuple[Cert, list[Cert], Cert]:
    r = root("root-ca")
    ints: list[Cert] = []
    issuer = r
    for n in range(levels):
        issuer = intermediate(f"int-{n + 1}", issuer)
        ints.append(issuer)
    return r, ints, make("gw-b", issuer)


def test_chain_depth_limit() -> None:
    # MAX_CHAIN_DEPTH certificates from the end entity to the anchor: three intermediates fit, four do not.
    assert certs.MAX_CHAIN_DEPTH == 5
    r, ints, leaf = _ladder(3)
    assert len(_check(leaf, *ints, anchors=(r,))) == 5
    r, ints, leaf = _ladder(4)
    assert _reason(leaf, *ints, anchors=(r,)) == "the chain of CN=gw-b is longer than 5 certificates"


def test_unknown_critical_extension_is_refused(pki: dict[str, Cert]) -> None:
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = make("gw-b", pki["root"], extra=odd, extra_critical=True)
    assert _reason(leaf, anchors=(pki["root"],)) == \
        "certificate CN=gw-b has a critical extension this gateway does not process (1.3.6.1.4.1.55555.1)"
    harmless = make("gw-b", pki["root"], extra=odd, extra_critical=False)
    assert _check(harmless, anchors=(pki["root"],))[0] == harmless.cert


def test_name_constraints_on_an_intermediate_are_not_ignored(pki: dict[str, Cert]) -> None:
    nc = x509.NameConstraints(permitted_subtrees=[x509.DNSName("other.example")], excluded_subtrees=None)
    constrained = intermediate("int-ca", pki["root"], extra=nc, extra_critical=True)
    leaf = make("gw-b", constrained, san="gw-b.lab")
    assert "critical extension this gateway does not process (2.5.29.30)" in \
        _reason(leaf, constrained, anchors=(pki["root"],))


def test_look_alike_issuers_that_sign_each_other_end_the_search(pki: dict[str, Cert]) -> None:
    # Seven certificates with one name and one key: each verifies the others, so the search could wander
    # through every order of them. The depth limit and the signature-check budget end it with a reason.
    k = new_key()
    alikes = [make("loop-ca", issuer_name=name("loop-ca"), signing_key=k, key=k, ca=True) for _ in range(7)]
    leaf = make("gw-b", issuer_name=name("loop-ca"), signing_key=k)
    assert _reason(leaf, *alikes, anchors=(pki["root"],)) == "the chain of CN=gw-b is longer than 5 certificates"
    builder = certs._PathBuilder([pki["root"].cert], [c.cert for c in alikes], NOW, certs.MAX_CHAIN_DEPTH)
    assert builder.extend([leaf.cert]) is None
    assert builder.checks == certs.MAX_SIGNATURE_CHECKS


def test_input_limits(pki: dict[str, Cert]) -> None:
    r = pki["root"]
    with pytest.raises(CertError, match="without a timezone"):
        verify_chain(pki["direct"].der, [], [r.cert], NOW.replace(tzinfo=None))
    with pytest.raises(CertError, match="at most 8 are accepted"):
        verify_chain(pki["via_int"].der, [pki["int"].der] * 8, [r.cert], NOW)
    with pytest.raises(CertError, match="the peer's certificate cannot be parsed"):
        verify_chain(b"\x30\x03\x02\x01\x00", [], [r.cert], NOW)
    with pytest.raises(CertError, match="intermediate certificate 1 from the peer cannot be parsed"):
        verify_chain(pki["via_int"].der, [b"junk"], [r.cert], NOW)
    with pytest.raises(CertError, match="no CA certificate is configured"):
        verify_chain(pki["direct"].der, [], [], NOW)


# --- our own certificate file ----------------------------------------------------------------------------------


def test_local_chain_sends_leaf_then_intermediates(pki: dict[str, Cert]) -> None:
    leaf = pki["via_int"]
    chain = certs.local_chain_from_pem(leaf.key_pem, leaf.pem + pki["int"].pem)
    assert chain.leaf == leaf.cert and chain.intermediates == (pki["int"].cert,)
    assert chain.ders() == [leaf.der, pki["int"].der]
    assert certs.local_chain_from_pem(leaf.key_pem, leaf.pem).ders() == [leaf.der]


def test_local_chain_errors(pki: dict[str, Cert]) -> None:
    leaf = pki["via_int"]
    with pytest.raises(CertError, match=r"^the first certificate in the certificate file \(CN=int-ca\) does not "
                                        r"belong to the private key: put the gateway's own certificate first"):
        certs.local_chain_from_pem(leaf.key_pem, pki["int"].pem + leaf.pem)
    with pytest.raises(CertError, match=r"^the certificate file holds no PEM certificate"):
        certs.local_chain_from_pem(leaf.key_pem, leaf.key_pem)
    with pytest.raises(CertError, match="no usable unencrypted PEM private key"):
        certs.local_chain_from_pem(leaf.pem, leaf.pem)


def test_a_ca_file_may_hold_several_anchors(pki: dict[str, Cert]) -> None:
    anchors = certs.load_anchors([pki["other_root"].pem + pki["root"].pem])
    assert anchors == [pki["other_root"].cert, pki["root"].cert]
    assert verify_chain(pki["direct"].der, [], anchors, NOW)[-1] == pki["root"].cert
    with pytest.raises(CertError, match="CA file 2 holds no PEM certificate"):
        certs.load_anchors([pki["root"].pem, b"not a certificate"])
