"""Two IKEv2 engines back to back in memory (time injected): establishment, failures, rekeying, deletion."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from labctl.gateway.ike.v2.codec import parse_message
from labctl.gateway.ike.v2.constants import ExchangeType
from labctl.gateway.ike.v2.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaFailed,
    ChildSaUp,
    IkeSaDown,
    IkeSaUp,
    PeerDead,
    ProposalMismatch,
)

from . import x509_factory as xf
from .v2_pair import Pair, make_pair


def ups(events: list[object]) -> list[ChildSaUp]:
    return [e for e in events if isinstance(e, ChildSaUp)]


def assert_child_keys_match(p: Pair) -> None:
    """The newest child on each side pairs up: our outbound is the peer's inbound, key for key."""
    a, b = ups(p.events_a)[-1], ups(p.events_b)[-1]
    assert a.outbound.spi == b.inbound.spi and a.inbound.spi == b.outbound.spi
    assert a.outbound.encr_key == b.inbound.encr_key and a.inbound.encr_key == b.outbound.encr_key
    assert a.outbound.integ_key == b.inbound.integ_key and a.inbound.integ_key == b.outbound.integ_key
    assert (a.outbound.encr_key, a.outbound.integ_key) != (a.inbound.encr_key, a.inbound.integ_key)


def established(p: Pair) -> None:
    p.a.initiate("s2s", p.now)
    p.transfer()
    assert any(isinstance(e, IkeSaUp) for e in p.events_a), p.a.last_error
    assert any(isinstance(e, IkeSaUp) for e in p.events_b), p.b.last_error
    assert_child_keys_match(p)


def live_children(p: Pair, side: str) -> list[dict[str, object]]:
    eng = p.a if side == "a" else p.b
    return [c for sa in eng.status()["ike_sas"] if sa["state"] == "established" for c in sa["children"]]


@pytest.mark.parametrize("group", ["modp2048", "modp3072", "modp4096", "ecp256", "ecp384", "ecp521", "x25519"])
def test_establish_with_each_dh_group(group: str) -> None:
    p = make_pair(proposals=(f"aes128gcm16-prfsha256-{group}",))
    established(p)
    assert group.replace("x25519", "curve25519") in p.a.status()["ike_sas"][0]["algorithms"]


@pytest.mark.parametrize("ike,esp", [
    ("aes128-sha256-modp2048", "aes128-sha256"),
    ("aes256ctr-sha384-ecp384", "aes256ctr-sha512"),
    ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
    ("aes256gcm16-prfsha512-ecp256", "aes128gcm16-esn"),
])
def test_establish_with_cipher_suites(ike: str, esp: str) -> None:
    p = make_pair(proposals=(ike,), child_proposals=(esp,))
    established(p)


def test_invalid_ke_retry_uses_group_the_responder_asks_for() -> None:
    p = make_pair(a_proposals=("aes128gcm16-prfsha256-ecp256-x25519",), b_proposals=("aes128gcm16-prfsha256-x25519",))
    established(p)
    inits = [parse_message(d) for who, d in p.sent if who == "a"
             and parse_message(d).header.exchange == ExchangeType.IKE_SA_INIT]
    assert len(inits) == 2  # first with ecp256, refused with INVALID_KE_PAYLOAD, then x25519
    assert "curve25519" in p.a.status()["ike_sas"][0]["algorithms"]


def test_cookies_when_under_load() -> None:
    p = make_pair()
    p.b.force_cookies = True
    established(p)
    assert p.b.counters["cookies_sent"] == 1
    inits = [d for who, d in p.sent if who == "a" and parse_message(d).header.exchange == ExchangeType.IKE_SA_INIT]
    assert len(inits) == 2


def test_proposal_mismatch_reported_on_both_sides() -> None:
    p = make_pair(a_proposals=("aes128-sha256-modp2048",), b_proposals=("aes256gcm16-prfsha256-ecp256",))
    p.a.initiate("s2s", p.now)
    p.transfer()
    assert any(isinstance(e, ProposalMismatch) for e in p.events_a)
    assert any(isinstance(e, ProposalMismatch) for e in p.events_b)
    assert "NO_PROPOSAL_CHOSEN" in p.a.status()["last_error"]["s2s"]


def test_wrong_psk_gives_clear_error_on_both_sides() -> None:
    p = make_pair(b_psk=b"not-the-same-key-at-all-1234")
    p.a.initiate("s2s", p.now)
    p.transfer()
    fa = [e for e in p.events_a if isinstance(e, AuthFailed)]
    fb = [e for e in p.events_b if isinstance(e, AuthFailed)]
    assert fa and "AUTHENTICATION_FAILED" in fa[0].reason and "pre-shared key" in fa[0].reason
    assert fb and "pre-shared key" in fb[0].reason
    assert not ups(p.events_a) and not ups(p.events_b)
    assert p.a.status()["ike_sas"] == [] and p.b.status()["ike_sas"] == []


@pytest.mark.parametrize("lost", range(4))
def test_loss_of_any_single_message(lost: int) -> None:
    p = make_pair()
    p.a.initiate("s2s", p.now)
    p.advance(30.0, drop=lambda i, who, data: i == lost)
    assert any(isinstance(e, IkeSaUp) for e in p.events_a) and any(isinstance(e, IkeSaUp) for e in p.events_b)
    assert_child_keys_match(p)
    assert len(ups(p.events_a)) == 1 and len(ups(p.events_b)) == 1


def test_reordering_of_queued_exchanges() -> None:
    p = make_pair()
    established(p)
    p.transfer(reorder=True)
    p.a.rekey("s2s", "child", p.now)
    p.b.rekey("s2s", "ike", p.now)
    p.transfer(reorder=True)
    p.advance(30.0)
    assert len(live_children(p, "a")) == 1 and len(live_children(p, "b")) == 1
    assert_child_keys_match(p)


def test_child_rekey_then_old_deleted() -> None:
    p = make_pair()
    established(p)
    old = ups(p.events_a)[-1]
    p.a.rekey("s2s", "net", p.now)
    p.transfer()
    new = ups(p.events_a)[-1]
    assert new.replaces == (old.inbound.spi, old.outbound.spi)
    assert_child_keys_match(p)
    assert any(isinstance(e, ChildSaDown) and e.spi_in == old.inbound.spi for e in p.events_a)
    assert len(live_children(p, "a")) == 1 and len(live_children(p, "b")) == 1


def test_child_rekey_with_pfs() -> None:
    p = make_pair(child_proposals=("aes128gcm16-ecp256",))
    established(p)
    p.b.rekey("s2s", "net", p.now)
    p.transfer()
    assert len(ups(p.events_b)) == 2
    assert_child_keys_match(p)


def test_rekey_by_lifetime() -> None:
    p = make_pair(child_rekey_time=100.0)
    established(p)
    p.advance(150.0)
    assert len(ups(p.events_a)) >= 2
    assert len(live_children(p, "a")) == 1 and len(live_children(p, "b")) == 1
    assert_child_keys_match(p)


def test_simultaneous_child_rekey_leaves_one_pair() -> None:
    p = make_pair()
    established(p)
    p.a.rekey("s2s", "net", p.now)
    p.b.rekey("s2s", "net", p.now)
    p.transfer()
    p.advance(5.0)
    ca, cb = live_children(p, "a"), live_children(p, "b")
    assert len(ca) == 1 and len(cb) == 1, (ca, cb)
    assert ca[0]["spi_in"] == cb[0]["spi_out"] and ca[0]["spi_out"] == cb[0]["spi_in"]


def test_ike_rekey_moves_children_and_deletes_old() -> None:
    p = make_pair()
    established(p)
    old_spi = p.a.status()["ike_sas"][0]["spi_i"]
    p.a.rekey("s2s", "ike", p.now)
    p.transfer()
    sas_a, sas_b = p.a.status()["ike_sas"], p.b.status()["ike_sas"]
    assert len(sas_a) == 1 and len(sas_b) == 1 and sas_a[0]["spi_i"] != old_spi
    assert sas_a[0]["spi_i"] == sas_b[0]["spi_i"] and sas_a[0]["spi_r"] == sas_b[0]["spi_r"]
    assert len(sas_a[0]["children"]) == 1 and len(sas_b[0]["children"]) == 1
    # The new IKE SA works: a child rekey over it succeeds.
    p.b.rekey("s2s", "net", p.now)
    p.transfer()
    assert_child_keys_match(p)


def test_delete_ike_sa() -> None:
    p = make_pair()
    established(p)
    p.a.terminate("s2s", p.now)
    p.transfer()
    assert any(isinstance(e, IkeSaDown) for e in p.events_a) and any(isinstance(e, IkeSaDown) for e in p.events_b)
    assert any(isinstance(e, ChildSaDown) for e in p.events_b)
    assert p.a.status()["ike_sas"] == [] and p.b.status()["ike_sas"] == []


def test_dpd_detects_dead_peer() -> None:
    p = make_pair(dpd_delay=10.0, dpd_timeout=30.0)
    established(p)
    p.advance(120.0, drop=lambda i, who, data: who == "b")  # b is silent from now on
    dead = [e for e in p.events_a if isinstance(e, PeerDead)]
    assert dead and "did not answer" in dead[0].reason
    assert any(isinstance(e, ChildSaDown) for e in p.events_a)


def test_dpd_keeps_live_peer() -> None:
    p = make_pair(dpd_delay=10.0, dpd_timeout=30.0)
    established(p)
    p.advance(120.0)
    assert not any(isinstance(e, PeerDead) for e in p.events_a + p.events_b)


def test_narrowing_to_responder_policy() -> None:
    p = make_pair(a_child_remote_ts=("10.2.0.0/16",), b_child_local_ts=("10.2.5.0/24",))
    established(p)
    assert ups(p.events_a)[-1].remote_ts == ("10.2.5.0/24",)
    assert ups(p.events_b)[-1].local_ts == ("10.2.5.0/24",)


def test_ts_unacceptable() -> None:
    p = make_pair(b_child_local_ts=("10.9.0.0/16",))
    p.a.initiate("s2s", p.now)
    p.transfer()
    assert any(isinstance(e, IkeSaUp) for e in p.events_a)
    assert any(isinstance(e, ChildSaFailed) and "TS_UNACCEPTABLE" in e.reason for e in p.events_a)


def test_transport_mode_and_ah() -> None:
    p = make_pair(child_mode="transport", child_protocol="ah", child_proposals=("sha256",))
    established(p)
    up = ups(p.events_a)[-1]
    assert (up.mode, up.protocol, up.outbound.integ, up.outbound.encr) == ("transport", "ah", "sha256", None)


def test_forced_encapsulation_moves_to_4500() -> None:
    p = make_pair(a_encap=True)
    established(p)
    up_a, up_b = ups(p.events_a)[-1], ups(p.events_b)[-1]
    assert up_a.outbound.encap == (4500, 4500) and up_b.outbound.encap == (4500, 4500)
    auth = [d for who, d in p.sent if who == "a" and parse_message(d).header.exchange == ExchangeType.IKE_AUTH]
    assert auth


def test_decryption_table_line() -> None:
    p = make_pair(proposals=("aes128-sha256-modp2048",))
    established(p)
    (line,) = p.a.ikev2_decryption_table_lines()
    fields = line.split(",")
    assert len(fields) == 8 and fields[4] == '"AES-CBC-128 [RFC3602]"' and fields[7] == '"HMAC_SHA2_256_128 [RFC4868]"'
    assert p.b.ikev2_decryption_table_lines() == [line]


# --- certificates -------------------------------------------------------------------------------------

def _ca_and_cert(kind: str, cn: str, ca: tuple[object, x509.Certificate] | None = None):  # type: ignore[no-untyped-def]
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_key, issuer = (key, name) if ca is None else (ca[0], ca[1].subject)
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now)
         .not_valid_after(now + datetime.timedelta(days=3650)))
    if ca is None:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    cert = b.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    return key, cert


def _pem(key: object, cert: x509.Certificate) -> tuple[str, str]:
    k = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                          serialization.NoEncryption()).decode()
    return k, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_certificate_authentication(kind: str) -> None:
    ca_key, ca_cert = _ca_and_cert("ecdsa", "Lab CA")
    a_key, a_cert = _ca_and_cert(kind, "a.example", (ca_key, ca_cert))
    b_key, b_cert = _ca_and_cert(kind, "b.example", (ca_key, ca_cert))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    ak, ac = _pem(a_key, a_cert)
    bk, bc = _pem(b_key, b_cert)
    p = make_pair(auth="pubkey", ca_pems=(ca_pem,), a_private_key_pem=ak, a_cert_pem=ac, b_private_key_pem=bk,
                  b_cert_pem=bc)
    established(p)
    assert p.b.status()["ike_sas"][0]["remote_id"] == "a.example"


def test_certificate_from_untrusted_ca_is_refused() -> None:
    ca_key, ca_cert = _ca_and_cert("ecdsa", "Lab CA")
    rogue_key, rogue_cert = _ca_and_cert("ecdsa", "Rogue CA")
    a_key, a_cert = _ca_and_cert("ecdsa", "a.example", (rogue_key, rogue_cert))
    b_key, b_cert = _ca_and_cert("ecdsa", "b.example", (ca_key, ca_cert))
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    ak, ac = _pem(a_key, a_cert)
    bk, bc = _pem(b_key, b_cert)
    p = make_pair(auth="pubkey", ca_pems=(ca_pem,), a_private_key_pem=ak, a_cert_pem=ac, b_private_key_pem=bk,
                  b_cert_pem=bc)
    p.a.initiate("s2s", p.now)
    p.transfer()
    fb = [e for e in p.events_b if isinstance(e, AuthFailed)]
    assert fb and "not issued by a trusted CA" in fb[0].reason
    assert any(isinstance(e, AuthFailed) for e in p.events_a)


# --- certificate chains: intermediates sent and checked, validity dates at the injected wall clock


@pytest.fixture(scope="module")
def chain_pki() -> dict[str, xf.Cert]:
    """A root; a.example's certificate under int-a and b.example's under int-b (each side must send its own)."""
    root = xf.root("lab root")
    int_a, int_b = xf.intermediate("int-a", root), xf.intermediate("int-b", root)
    return {"root": root, "int_a": int_a, "int_b": int_b,
            "a": xf.make("a.example", int_a, san="a.example"), "b": xf.make("b.example", int_b, san="b.example"),
            "a_expired": xf.make("a.example", int_a, san="a.example", not_after=xf.NOW - datetime.timedelta(hours=1)),
            "b_expired": xf.make("b.example", int_b, san="b.example", not_after=xf.NOW - datetime.timedelta(days=1))}


def _chain_pair(pki: dict[str, xf.Cert], a: str = "a", b: str = "b", send_intermediates: bool = True,
                **kw: object) -> Pair:
    def pem(leaf: str, intermediate: str) -> str:
        return (pki[leaf].pem + (pki[intermediate].pem if send_intermediates else b"")).decode()

    return make_pair(auth="pubkey", ca_pems=(pki["root"].pem.decode(),),
                     a_private_key_pem=pki[a].key_pem.decode(), a_cert_pem=pem(a, "int_a"),
                     b_private_key_pem=pki[b].key_pem.decode(), b_cert_pem=pem(b, "int_b"), **kw)


def _expiry(cert: xf.Cert) -> str:
    return cert.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_certificates_through_intermediates(chain_pki: dict[str, xf.Cert], monkeypatch: pytest.MonkeyPatch) -> None:
    seen = xf.record_chains(monkeypatch)
    p = _chain_pair(chain_pki)
    established(p)
    assert p.b.status()["ike_sas"][0]["remote_id"] == "a.example"
    assert p.a.status()["ike_sas"][0]["remote_id"] == "b.example"
    # Each side sent its certificate first, then its intermediate (RFC 7296 §3.6).
    assert seen == [[chain_pki["a"].der, chain_pki["int_a"].der], [chain_pki["b"].der, chain_pki["int_b"].der]]


def test_without_the_intermediate_the_chain_is_incomplete(chain_pki: dict[str, xf.Cert]) -> None:
    p = _chain_pair(chain_pki, send_intermediates=False)
    p.a.initiate("s2s", p.now)
    p.transfer()
    assert not any(isinstance(e, IkeSaUp) for e in p.events_a + p.events_b)
    assert [e.reason for e in p.events_b if isinstance(e, AuthFailed)][0] == (
        "authentication of 'a.example' failed: certificate CN=a.example is not issued by a trusted CA: its issuer "
        "CN=int-a is neither a configured CA nor among the certificates the peer sent")


def test_expired_initiator_certificate_is_refused(chain_pki: dict[str, xf.Cert]) -> None:
    p = _chain_pair(chain_pki, a="a_expired")
    p.a.initiate("s2s", p.now)
    p.transfer()
    assert not any(isinstance(e, IkeSaUp) for e in p.events_a + p.events_b)
    assert [e.reason for e in p.events_b if isinstance(e, AuthFailed)][0] == \
        f"authentication of 'a.example' failed: certificate CN=a.example expired on {_expiry(chain_pki['a_expired'])}"
    assert "AUTHENTICATION_FAILED" in [e.reason for e in p.events_a if isinstance(e, AuthFailed)][0]
    assert p.b.status()["ike_sas"] == []


def test_expired_responder_certificate_is_refused(chain_pki: dict[str, xf.Cert]) -> None:
    p = _chain_pair(chain_pki, b="b_expired")
    p.a.initiate("s2s", p.now)
    p.transfer()
    assert not any(isinstance(e, IkeSaUp) for e in p.events_a)
    assert [e.reason for e in p.events_a if isinstance(e, AuthFailed)][0] == \
        f"authentication of 'b.example' failed: certificate CN=b.example expired on {_expiry(chain_pki['b_expired'])}"
    assert p.a.status()["ike_sas"] == []
    # Two days earlier by the wall clock the same certificate is good: time comes only from wall_clock.
    earlier = _chain_pair(chain_pki, b="b_expired", wall_clock=xf.clock(xf.NOW - datetime.timedelta(days=2)))
    established(earlier)


def test_without_a_wall_clock_certificates_are_refused(chain_pki: dict[str, xf.Cert]) -> None:
    p = _chain_pair(chain_pki, wall_clock=None)
    p.a.initiate("s2s", p.now)
    p.transfer()
    assert not any(isinstance(e, IkeSaUp) for e in p.events_a + p.events_b)
    assert "no wall clock" in [e.reason for e in p.events_b if isinstance(e, AuthFailed)][0]
