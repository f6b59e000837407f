"""IKEv1 behaviours found in interop with strongSwan 5.9 (tests/interop): NAT-T port floating, DN identities."""

from __future__ import annotations

import datetime
from dataclasses import replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labctl.gateway.ike.v1.auth import id_matches_cert
from labctl.gateway.ike.v1.codec import IdPayload
from labctl.gateway.ike.v1.constants import IdType
from labctl.gateway.ike.v1.engine import Ikev1Engine
from labctl.gateway.ike.v1.events import PeerDead
from labctl.gateway.ike.v1.identity import dn_attributes, identity_matches, identity_text

from .test_v1_pair import A_ADDR, B_ADDR, Pair, assert_sa_pairs_match, configs


def test_responder_answers_mm5_on_the_port_it_came_from() -> None:
    # strongSwan with `encap = yes` as initiator fakes its NAT-D and floats to 4500 for MM5, while the
    # responder forces nothing. RFC 3947 §4: the responder must answer MM6 (and everything after) on 4500;
    # answering from 500 made strongSwan float back and send its ESP-in-UDP to port 500.
    a, b = configs(encap=True)
    p = Pair(a, replace(b, encap=False))
    p.a.initiate("gw", 0.0)
    p.exchange()
    ea, eb = assert_sa_pairs_match(p)
    mm5, mm6 = p.wire[4], p.wire[5]
    assert mm5[1] == (A_ADDR, 4500) and mm5[2] == (B_ADDR, 4500)
    assert mm6[1] == (B_ADDR, 4500) and mm6[2] == (A_ADDR, 4500)
    assert all(d[1][1] == 4500 and d[2][1] == 4500 for d in p.wire[4:])
    assert ea.encap == (4500, 4500) and eb.encap == (4500, 4500)


# The ID payload strongSwan 5.9.8 sent for `id = "O=labctl lab interop, CN=gw-b"` (captured in tests/interop):
# the DN's strings are PrintableString (tag 0x13), where cryptography's certificates use UTF8String.
STRONGSWAN_DN_ID = bytes.fromhex(
    "302c311b3019060355040a13126c616263746c206c616220696e7465726f70310d300b0603550403130467772d62")


def test_dn_identity_matches_whatever_string_type_the_peer_used() -> None:
    got = IdPayload(id_type=IdType.DER_ASN1_DN, data=STRONGSWAN_DN_ID)
    assert identity_matches("O=labctl lab interop, CN=gw-b", got)
    assert not identity_matches("O=labctl lab interop, CN=gw-a", got)
    assert not identity_matches("O=labctl lab interop", got)
    assert identity_text(got) == "O=labctl lab interop, CN=gw-b"


def test_malformed_dn_identities_never_match() -> None:
    for cut in range(len(STRONGSWAN_DN_ID)):
        assert not identity_matches("O=labctl lab interop, CN=gw-b",
                                    IdPayload(id_type=IdType.DER_ASN1_DN, data=STRONGSWAN_DN_ID[:cut]))
    assert dn_attributes(b"\x30\x84\xff\xff\xff\xff") is None


def test_dn_identity_is_found_in_a_certificate_with_utf8_strings() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labctl lab interop"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "gw-b")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    assert b"\x0c\x04gw-b" in cert.subject.public_bytes()  # UTF8String in the certificate
    assert id_matches_cert(IdPayload(id_type=IdType.DER_ASN1_DN, data=STRONGSWAN_DN_ID), cert)
    other = STRONGSWAN_DN_ID.replace(b"gw-b", b"gw-c")
    assert not id_matches_cert(IdPayload(id_type=IdType.DER_ASN1_DN, data=other), cert)


def test_peer_dead_says_why_in_plain_words() -> None:
    # The gateway shows `reason` as the binding's last_error for both IKE versions; the IKEv1 event lacked
    # it and the daemon died on the first DPD timeout against a killed strongSwan.
    p = Pair(*configs(dpd_delay=1.0, dpd_timeout=3.0, dpd_action="clear"))
    p.a.initiate("gw", 0.0)
    p.exchange()
    p.b = Ikev1Engine([], rng=lambda n: bytes(n))  # the peer is gone
    for t in range(2, 12):
        p.advance(float(t))
        p.a.datagrams_to_send(p.now)
    dead = p.of("a", PeerDead)
    assert dead and "did not answer DPD" in dead[0].reason and B_ADDR in dead[0].reason
