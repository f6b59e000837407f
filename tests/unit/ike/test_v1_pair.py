"""Two IKEv1 engines back to back in memory, time injected (Main, Aggressive and Quick Mode)."""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from labctl.gateway.ike.certs import WallClock
from labctl.gateway.ike.v1.config import Ikev1ChildConfig, Ikev1ConnectionConfig
from labctl.gateway.ike.v1.engine import Ikev1Engine
from labctl.gateway.ike.v1.events import (
    Event,
    ExchangeFailed,
    IpsecSaDeleted,
    IpsecSaEstablished,
    IsakmpSaDeleted,
    IsakmpSaEstablished,
    PeerDead,
    SecurityWarning,
)

from . import x509_factory as xf
from .x509_factory import AT_NOW, clock

A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
Datagram = tuple[bytes, tuple[str, int], tuple[str, int]]


def _rng(seed: int) -> Callable[[int], bytes]:
    r = random.Random(seed)
    return r.randbytes


def configs(mode: str = "main", child_prop: str = "aes128-sha256", ike_prop: str = "aes128-sha256-modp2048",
            **kw: object) -> tuple[Ikev1ConnectionConfig, Ikev1ConnectionConfig]:
    child_mode = kw.pop("child_mode", "tunnel")
    protocol = kw.pop("protocol", "esp")
    lifetime = kw.pop("child_lifetime", 3600.0)
    ca = Ikev1ChildConfig("net", ("10.1.0.0/16",), ("10.2.0.0/16",), mode=child_mode,  # type: ignore[arg-type]
                          protocol=protocol, proposals=(child_prop,), lifetime=lifetime)  # type: ignore[arg-type]
    cb = replace(ca, local_ts=ca.remote_ts, remote_ts=ca.local_ts)
    a = Ikev1ConnectionConfig("gw", A_ADDR, B_ADDR, mode=mode, psk=b"lab-only-psk",  # type: ignore[arg-type]
                              proposals=(ike_prop,), children=(ca,))
    b = replace(a, local_addr=B_ADDR, remote_addr=A_ADDR, children=(cb,))
    if kw:
        a = replace(a, **kw)  # type: ignore[arg-type]
        b = replace(b, **kw)  # type: ignore[arg-type]
    return a, b


class Pair:
    def __init__(self, a: Ikev1ConnectionConfig, b: Ikev1ConnectionConfig,
                 wall_clock: WallClock | None = AT_NOW) -> None:
        # wall_clock: both engines' calendar time for certificate validity (default x509_factory.NOW).
        self.a = Ikev1Engine([a], _rng(1), wall_clock=wall_clock)
        self.b = Ikev1Engine([b], _rng(2), wall_clock=wall_clock)
        self.now = 0.0
        self.sent = 0
        self.events: dict[str, list[Event]] = {"a": [], "b": []}
        self.wire: list[Datagram] = []

    def exchange(self, drop: Callable[[int, Datagram], bool] = lambda i, d: False, rounds: int = 40,
                 horizon: float = 20.0) -> None:
        """Move datagrams until both sides are quiet, firing timers when nothing is in flight."""
        for _ in range(rounds):
            moved = False
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                for d in src.datagrams_to_send(self.now):
                    self.wire.append(d)
                    index = self.sent
                    self.sent += 1
                    moved = True
                    if not drop(index, d):
                        dst.receive_datagram(d[0], d[1], d[2], self.now)
            self.drain()
            if not moved:
                if not (self._busy(self.a) or self._busy(self.b)):
                    return
                timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
                nxt = min(timers) if timers else None
                if nxt is None or nxt - self.now > horizon:
                    return
                self.advance(max(nxt, self.now))

    @staticmethod
    def _busy(e: Ikev1Engine) -> bool:
        """Is an exchange in flight (so that only a retransmission timer can move it on)?"""
        st = e.status()
        return any(s["state"] != "ESTABLISHED" for s in st["isakmp_sas"]) or any(
            q.state in ("QM_I1", "QM_R2") for q in e._quick.values())

    def advance(self, to: float) -> None:
        self.now = to
        self.a.handle_timer(to)
        self.b.handle_timer(to)
        self.drain()

    def drain(self) -> None:
        for name, e in (("a", self.a), ("b", self.b)):
            while (ev := e.next_event()) is not None:
                self.events[name].append(ev)

    def of(self, side: str, cls: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events[side] if isinstance(e, cls)]


def assert_sa_pairs_match(p: Pair) -> tuple[IpsecSaEstablished, IpsecSaEstablished]:
    ea, eb = p.of("a", IpsecSaEstablished)[-1], p.of("b", IpsecSaEstablished)[-1]
    assert ea.inbound == eb.outbound
    assert ea.outbound == eb.inbound
    assert ea.inbound.spi != ea.outbound.spi
    assert ea.local_ts == ("10.1.0.0/16",) and ea.remote_ts == ("10.2.0.0/16",)
    assert eb.local_ts == ("10.2.0.0/16",) and eb.remote_ts == ("10.1.0.0/16",)
    return ea, eb


@pytest.mark.parametrize("mode", ["main", "aggressive"])
@pytest.mark.parametrize("child_prop", ["aes128-sha256", "aes256-sha512-modp2048", "aes128gcm16-ecp256",
                                        "3des-sha1"])
def test_psk_establishes_isakmp_and_ipsec_sas(mode: str, child_prop: str) -> None:
    p = Pair(*configs(mode, child_prop))
    p.a.initiate("gw", 0.0)
    p.exchange()
    for side in "ab":
        (ike,) = p.of(side, IsakmpSaEstablished)
        assert ike.mode == mode and ike.algorithms == "aes128-sha256-modp2048"
    ea, _ = assert_sa_pairs_match(p)
    assert ea.protocol == "esp" and ea.mode == "tunnel" and ea.encap is None
    expected_pfs = {"aes256-sha512-modp2048": 14, "aes128gcm16-ecp256": 19}.get(child_prop)
    assert ea.pfs_group == expected_pfs
    if child_prop.startswith("aes128gcm16"):
        assert ea.inbound.encr == "aes128gcm16" and len(ea.inbound.encr_key) == 20 and ea.inbound.integ is None
    # Status shows the ISAKMP SA and, separately, the IPsec SA pair.
    st = p.a.status()
    assert len(st["isakmp_sas"]) == 1 and st["isakmp_sas"][0]["mode"] == mode
    (pair,) = st["ipsec_sas"]
    assert pair["inbound_spi"] == f"{ea.inbound.spi:08x}" and pair["outbound_spi"] == f"{ea.outbound.spi:08x}"
    assert p.a.ikev1_decryption_table_lines()[0].startswith(st["isakmp_sas"][0]["initiator_cookie"] + ",")
    warned = bool(p.of("a", SecurityWarning)) and bool(p.of("b", SecurityWarning))
    assert warned == (mode == "aggressive")


@pytest.mark.parametrize("ike_prop", ["aes256-sha1-modp3072", "3des-sha384-ecp384", "aes192-sha512-ecp521",
                                      "aes256-sha256-modp4096"])
def test_phase1_algorithms(ike_prop: str) -> None:
    p = Pair(*configs(ike_prop=ike_prop))
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert p.of("a", IsakmpSaEstablished)[0].algorithms == ike_prop
    assert_sa_pairs_match(p)


def test_responder_picks_a_later_proposal() -> None:
    a, b = configs()
    a = replace(a, proposals=("aes256-sha512-ecp384", "aes128-sha256-modp2048"))
    p = Pair(a, b)
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert p.of("b", IsakmpSaEstablished)[0].algorithms == "aes128-sha256-modp2048"


def test_no_common_proposal_is_reported() -> None:
    a, b = configs()
    p = Pair(replace(a, proposals=("aes256-sha512-ecp384",)), b)
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert not p.of("a", IsakmpSaEstablished)
    assert any("NO_PROPOSAL_CHOSEN" in e.reason for e in p.of("a", ExchangeFailed))
    assert any("no proposal chosen" in e.reason for e in p.of("b", ExchangeFailed))


def test_dh_group_2_is_refused_unless_enabled() -> None:
    with pytest.raises(ValueError, match="legacy"):
        Pair(*configs(ike_prop="aes128-sha1-modp1024")).a.initiate("gw", 0.0)
    p = Pair(*configs(ike_prop="aes128-sha1-modp1024", allow_legacy=True))
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert p.of("a", IsakmpSaEstablished)


@pytest.mark.parametrize("mode", ["main", "aggressive"])
def test_wrong_psk_fails_with_a_clear_message(mode: str) -> None:
    a, b = configs(mode)
    p = Pair(a, replace(b, psk=b"another key"))
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert not p.of("a", IpsecSaEstablished) and not p.of("b", IpsecSaEstablished)
    reasons = " ".join(e.reason for side in "ab" for e in p.of(side, ExchangeFailed))
    assert "pre-shared key" in reasons


def test_quick_mode_ah_transport() -> None:
    p = Pair(*configs(child_prop="sha256", protocol="ah", child_mode="transport"))
    p.a.initiate("gw", 0.0)
    p.exchange()
    ea, _ = assert_sa_pairs_match(p)
    assert ea.protocol == "ah" and ea.mode == "transport" and ea.inbound.encr is None
    assert ea.inbound.integ == "sha256" and len(ea.inbound.integ_key) == 32


def test_mismatched_selectors_are_refused() -> None:
    a, b = configs()
    b = replace(b, children=(replace(b.children[0], remote_ts=("10.9.0.0/16",)),))
    p = Pair(a, b)
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert p.of("a", IsakmpSaEstablished) and not p.of("a", IpsecSaEstablished)
    assert any("traffic selectors" in e.reason for e in p.of("b", ExchangeFailed))
    assert any("INVALID_ID_INFORMATION" in e.reason for e in p.of("a", ExchangeFailed))


def test_forced_encapsulation_moves_to_4500_with_marker() -> None:
    p = Pair(*configs(encap=True))
    p.a.initiate("gw", 0.0)
    p.exchange()
    ea, eb = assert_sa_pairs_match(p)
    assert ea.encap == (4500, 4500) and eb.encap == (4500, 4500)
    assert p.of("b", IsakmpSaEstablished)[0].nat_remote  # the peer sees us "behind a NAT"
    mm5 = p.wire[4]
    assert mm5[1] == (A_ADDR, 4500) and mm5[2] == (B_ADDR, 4500) and mm5[0][:8] == p.wire[0][0][:8]
    assert all(d[1][1] == 500 for d in p.wire[:4])


def test_transport_over_udp_carries_nat_oa() -> None:
    p = Pair(*configs(encap=True, child_mode="transport"))
    p.a.initiate("gw", 0.0)
    p.exchange()
    ea, eb = assert_sa_pairs_match(p)
    assert (ea.nat_oa_local, ea.nat_oa_remote) == (A_ADDR, B_ADDR)
    assert (eb.nat_oa_local, eb.nat_oa_remote) == (B_ADDR, A_ADDR)


# --- loss of any single message: 6 MM + 3 QM, 3 AM + 3 QM


@pytest.mark.parametrize("mode,lost", [("main", i) for i in range(9)] + [("aggressive", i) for i in range(6)])
def test_loss_of_any_single_message(mode: str, lost: int) -> None:
    p = Pair(*configs(mode))
    p.a.initiate("gw", 0.0)
    p.exchange(drop=lambda i, d: i == lost)
    assert len(p.of("a", IsakmpSaEstablished)) == 1 and len(p.of("b", IsakmpSaEstablished)) == 1
    assert len(p.of("a", IpsecSaEstablished)) == 1 and len(p.of("b", IpsecSaEstablished)) == 1
    assert_sa_pairs_match(p)
    assert p.now > 0  # a retransmission was needed


def test_duplicate_messages_are_answered_not_reprocessed() -> None:
    p = Pair(*configs())
    p.a.initiate("gw", 0.0)
    seen: list[Datagram] = []

    def dup(i: int, d: Datagram) -> bool:
        seen.append(d)
        return False

    p.exchange(drop=dup)
    before = len(p.of("b", IpsecSaEstablished))
    # Replay MM5 to B and QM2 to A: each answers with its cached reply (MM6, QM3), creating nothing new.
    p.b.receive_datagram(seen[4][0], seen[4][1], seen[4][2], p.now)
    assert [r[0] for r in p.b.datagrams_to_send(p.now)] == [seen[5][0]]
    p.a.receive_datagram(seen[7][0], seen[7][1], seen[7][2], p.now)
    assert [r[0] for r in p.a.datagrams_to_send(p.now)] == [seen[8][0]]
    p.drain()
    assert len(p.of("b", IpsecSaEstablished)) == before == len(p.of("a", IpsecSaEstablished))


def test_give_up_after_retransmissions() -> None:
    p = Pair(*configs())
    p.a.initiate("gw", 0.0)
    p.exchange(drop=lambda i, d: True, rounds=200, horizon=100.0)
    assert any("no answer" in e.reason for e in p.of("a", ExchangeFailed))
    assert p.a.status()["isakmp_sas"] == []


# --- rekey, delete, DPD


def test_phase2_rekey_before_expiry_replaces_the_pair() -> None:
    p = Pair(*configs(child_lifetime=100.0))
    p.a.initiate("gw", 0.0)
    p.exchange()
    first = p.of("a", IpsecSaEstablished)[0]
    p.advance(91.0)  # 10 % margin: the exchange initiator rekeys at 90 s
    p.exchange()
    second = p.of("a", IpsecSaEstablished)[1]
    assert second.replaces_inbound_spi == first.inbound.spi
    assert second.inbound.spi != first.inbound.spi and second.inbound.encr_key != first.inbound.encr_key
    deleted_b = p.of("b", IpsecSaDeleted)
    assert [d.outbound_spi for d in deleted_b] == [first.inbound.spi]
    assert len(p.a.status()["ipsec_sas"]) == 1 and len(p.b.status()["ipsec_sas"]) == 1
    assert_sa_pairs_match(p)


def test_phase1_rekey_keeps_ipsec_sas() -> None:
    p = Pair(*configs(lifetime=1000.0))
    p.a.initiate("gw", 0.0)
    p.exchange()
    old = p.of("a", IsakmpSaEstablished)[0]
    p.advance(901.0)
    p.exchange()
    new = p.of("a", IsakmpSaEstablished)[1]
    assert new.icookie != old.icookie
    assert [d.icookie for d in p.of("b", IsakmpSaDeleted)] == [old.icookie]
    assert not p.of("a", IpsecSaDeleted) and not p.of("b", IpsecSaDeleted)
    assert len(p.a.status()["isakmp_sas"]) == 1 and len(p.b.status()["isakmp_sas"]) == 1
    # A later Quick Mode runs under the new ISAKMP SA.
    p.a.rekey("gw", "net", p.now)
    p.exchange()
    assert len(p.of("b", IpsecSaEstablished)) == 2


def test_terminate_deletes_both_phases_on_the_peer() -> None:
    p = Pair(*configs())
    p.a.initiate("gw", 0.0)
    p.exchange()
    ea = p.of("a", IpsecSaEstablished)[0]
    p.a.terminate("gw", 1.0)
    p.exchange()
    (db,) = p.of("b", IpsecSaDeleted)
    assert (db.inbound_spi, db.outbound_spi) == (ea.outbound.spi, ea.inbound.spi)
    assert p.of("b", IsakmpSaDeleted)[0].reason == "deleted by the peer"
    assert p.b.status() == {"isakmp_sas": [], "ipsec_sas": [], "counters": p.b.counters}


def test_dpd_keeps_a_live_peer_and_declares_a_dead_one() -> None:
    p = Pair(*configs(dpd_delay=10.0, dpd_timeout=30.0, dpd_action="clear"))
    p.a.initiate("gw", 0.0)
    p.exchange()
    for t in (10.0, 20.0, 30.0, 40.0):
        p.advance(t)
        p.exchange(horizon=0.0)
    assert not p.of("a", PeerDead) and not p.of("b", PeerDead)
    # Now B vanishes: nothing it would send arrives any more, and A's probes go unanswered.
    for t in (50.0, 60.0, 70.0, 80.0, 90.0):
        p.advance(t)
        p.a.datagrams_to_send(t)
        p.b.datagrams_to_send(t)
    assert p.of("a", PeerDead)[0].action == "clear"
    assert p.of("a", IpsecSaDeleted) and p.a.status()["isakmp_sas"] == []


# --- RSA signatures with certificates from a small lab CA


def _cert(name: str, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey,
          ca: bool = False, san: str | None = None) -> x509.Certificate:
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
         .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def lab_pki() -> dict[str, bytes]:
    pem = serialization.Encoding.PEM
    keys = {n: rsa.generate_private_key(public_exponent=65537, key_size=2048) for n in ("ca", "a", "b", "rogue")}
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab CA")])
    ca = _cert("lab CA", keys["ca"], ca_name, keys["ca"], ca=True)
    out = {"ca": ca.public_bytes(pem)}
    for n in ("a", "b"):
        out[f"{n}_cert"] = _cert(f"gw-{n}", keys[n], ca_name, keys["ca"], san=f"gw-{n}.lab").public_bytes(pem)
    rogue_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue CA")])
    out["rogue_cert"] = _cert("gw-b", keys["b"], rogue_name, keys["rogue"]).public_bytes(pem)
    for n in ("a", "b"):
        out[f"{n}_key"] = keys[n].private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption())
    return out


@pytest.mark.parametrize("mode", ["main", "aggressive"])
def test_rsa_certificates(mode: str, lab_pki: dict[str, bytes]) -> None:
    a, b = configs(mode)
    a = replace(a, auth="pubkey", psk=b"", private_key_pem=lab_pki["a_key"], cert_pem=lab_pki["a_cert"],
                ca_pems=(lab_pki["ca"],), remote_id="CN=gw-b")
    b = replace(b, auth="pubkey", psk=b"", private_key_pem=lab_pki["b_key"], cert_pem=lab_pki["b_cert"],
                ca_pems=(lab_pki["ca"],), local_id="@gw-b.lab")
    p = Pair(a, replace(b, local_id=""))
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert p.of("a", IsakmpSaEstablished)[0].remote_id == "CN=gw-b"
    assert_sa_pairs_match(p)
    assert not p.of("a", SecurityWarning)
    # An FQDN identity from the certificate's subjectAltName works too.
    p2 = Pair(replace(a, remote_id="@gw-b.lab"), b)
    p2.a.initiate("gw", 0.0)
    p2.exchange()
    assert p2.of("a", IsakmpSaEstablished)[0].remote_id == "gw-b.lab"


def test_certificate_from_an_untrusted_ca_is_refused(lab_pki: dict[str, bytes]) -> None:
    a, b = configs()
    a = replace(a, auth="pubkey", psk=b"", private_key_pem=lab_pki["a_key"], cert_pem=lab_pki["a_cert"],
                ca_pems=(lab_pki["ca"],))
    b = replace(b, auth="pubkey", psk=b"", private_key_pem=lab_pki["b_key"], cert_pem=lab_pki["rogue_cert"],
                ca_pems=(lab_pki["ca"],))
    p = Pair(a, b)
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert not p.of("a", IsakmpSaEstablished)
    assert any("trusted CA" in e.reason for e in p.of("a", ExchangeFailed))


# --- certificate chains: intermediates sent and checked, validity dates at the injected wall clock


@pytest.fixture(scope="module")
def chain_pki() -> dict[str, xf.Cert]:
    """A root; gw-a's certificate under int-a and gw-b's under int-b (each side must send its intermediate)."""
    root = xf.root("lab root")
    int_a, int_b = xf.intermediate("int-a", root), xf.intermediate("int-b", root)
    return {"root": root, "int_a": int_a, "int_b": int_b,
            "a": xf.make("gw-a", int_a, key_type="rsa"), "b": xf.make("gw-b", int_b, key_type="rsa"),
            "b_expired": xf.make("gw-b", int_b, key_type="rsa", not_after=xf.NOW - datetime.timedelta(days=2))}


def _chain_configs(pki: dict[str, xf.Cert], mode: str = "main", b_cert: str = "b", send_intermediates: bool = True
                   ) -> tuple[Ikev1ConnectionConfig, Ikev1ConnectionConfig]:
    a, b = configs(mode)
    a_pem = pki["a"].pem + (pki["int_a"].pem if send_intermediates else b"")
    b_pem = pki[b_cert].pem + (pki["int_b"].pem if send_intermediates else b"")
    a = replace(a, auth="pubkey", psk=b"", private_key_pem=pki["a"].key_pem, cert_pem=a_pem,
                ca_pems=(pki["root"].pem,), remote_id="CN=gw-b")
    b = replace(b, auth="pubkey", psk=b"", private_key_pem=pki[b_cert].key_pem, cert_pem=b_pem,
                ca_pems=(pki["root"].pem,), remote_id="CN=gw-a")
    return a, b


@pytest.mark.parametrize("mode", ["main", "aggressive"])
def test_certificates_through_intermediates(mode: str, chain_pki: dict[str, xf.Cert],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen = xf.record_chains(monkeypatch)
    p = Pair(*_chain_configs(chain_pki, mode))
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert p.of("a", IsakmpSaEstablished)[0].remote_id == "CN=gw-b"
    assert p.of("b", IsakmpSaEstablished)[0].remote_id == "CN=gw-a"
    assert_sa_pairs_match(p)
    assert not p.of("a", ExchangeFailed) and not p.of("b", ExchangeFailed)
    # Each side sent its certificate first, then its intermediate (RFC 2408 §3.9: one CERT payload each).
    sent = {(chain_pki["a"].der, chain_pki["int_a"].der), (chain_pki["b"].der, chain_pki["int_b"].der)}
    assert {tuple(s) for s in seen} == sent and len(seen) == 2


def test_without_the_intermediate_the_chain_is_incomplete(chain_pki: dict[str, xf.Cert]) -> None:
    p = Pair(*_chain_configs(chain_pki, send_intermediates=False))
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert not p.of("a", IsakmpSaEstablished) and not p.of("b", IsakmpSaEstablished)
    # gw-b checks first (MM5): gw-a's certificate names int-a, which nobody sent.
    assert [e.reason for e in p.of("b", ExchangeFailed)][0] == (
        "the peer's certificate is refused: certificate CN=gw-a is not issued by a trusted CA: its issuer CN=int-a "
        "is neither a configured CA nor among the certificates the peer sent")


def test_expired_certificate_is_refused(chain_pki: dict[str, xf.Cert]) -> None:
    p = Pair(*_chain_configs(chain_pki, b_cert="b_expired"))
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert not p.of("a", IsakmpSaEstablished)
    expiry = chain_pki["b_expired"].cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e.reason for e in p.of("a", ExchangeFailed)][0] == \
        f"the peer's certificate is refused: certificate CN=gw-b expired on {expiry}"
    assert p.a.status()["isakmp_sas"] == []
    # The same certificate two days earlier is fine: the engines take calendar time only from wall_clock.
    three_days_ago = clock(xf.NOW - datetime.timedelta(days=3))
    earlier = Pair(*_chain_configs(chain_pki, b_cert="b_expired"), wall_clock=three_days_ago)
    earlier.a.initiate("gw", 0.0)
    earlier.exchange()
    assert earlier.of("a", IsakmpSaEstablished)


def test_without_a_wall_clock_certificates_are_refused(chain_pki: dict[str, xf.Cert]) -> None:
    p = Pair(*_chain_configs(chain_pki), wall_clock=None)
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert not p.of("a", IsakmpSaEstablished) and not p.of("b", IsakmpSaEstablished)
    assert "no wall clock" in p.of("b", ExchangeFailed)[0].reason


def test_certificate_file_in_the_wrong_order_is_reported(chain_pki: dict[str, xf.Cert]) -> None:
    a, b = _chain_configs(chain_pki)
    p = Pair(replace(a, cert_pem=chain_pki["int_a"].pem + chain_pki["a"].pem), b)
    p.a.initiate("gw", 0.0)
    p.exchange()
    assert not p.of("a", IsakmpSaEstablished)
    assert any("does not belong to the private key" in e.reason for e in p.of("a", ExchangeFailed))


# --- robustness: garbage never raises out of the engine


def test_mutated_messages_never_raise() -> None:
    p = Pair(*configs())
    p.a.initiate("gw", 0.0)
    p.exchange()
    rnd = random.Random(7)
    for d in p.wire:
        for _ in range(30):
            data = bytearray(d[0])
            for _ in range(rnd.randint(1, 4)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            cut = bytes(data[: rnd.randint(0, len(data))]) if rnd.random() < 0.3 else bytes(data)
            p.b.receive_datagram(cut, d[1], d[2], p.now)
            p.a.receive_datagram(cut, d[1], d[2], p.now)
    p.drain()
    assert len(p.b.status()["ipsec_sas"]) >= 1


def test_start_and_volume_limit_rekey_and_hard_delete() -> None:
    p = Pair(*configs())
    p.a.start(0.0)
    p.exchange()
    first = p.of("a", IpsecSaEstablished)[0]
    p.a.sa_limit_reached(first.outbound.spi, p.now)  # soft: rekey
    p.exchange()
    second = p.of("a", IpsecSaEstablished)[1]
    assert second.replaces_inbound_spi == first.inbound.spi
    p.b.sa_limit_reached(second.outbound.spi, p.now, hard=True)  # hard: delete on both sides
    p.exchange()
    assert p.a.status()["ipsec_sas"] == [] and p.b.status()["ipsec_sas"] == []
    assert p.of("b", IpsecSaDeleted)[-1].reason == "volume limit reached"
