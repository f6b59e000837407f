"""Phase 1: the ISAKMP SA, negotiated with Main Mode (6 messages) or Aggressive Mode (3), RFC 2409 §5.

`IsakmpSa` is a sans-I/O state machine for one ISAKMP SA in either role. `start()` and `receive()`
return the datagrams to send (bytes, without the NAT-T marker); events are appended to `events`.
Errors in a peer's message never raise: they are counted (`drops`) and either dropped or, where
RFC 2408 asks for it, answered with an unprotected notification.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509

from labctl.gateway.ike import certs, dh
from labctl.gateway.ike import prf as ike_prf
from labctl.gateway.ike.v1 import auth as v1auth
from labctl.gateway.ike.v1.codec import (
    CertPayload,
    CertReqPayload,
    DecodeError,
    HashPayload,
    IdPayload,
    KePayload,
    Message,
    NatDDraftPayload,
    NatDPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    SigPayload,
    VendorIdPayload,
    decode_message,
    encode_message,
)
from labctl.gateway.ike.v1.config import Ikev1ConnectionConfig
from labctl.gateway.ike.v1.constants import (
    VID_DPD,
    VID_NATT_DRAFTS,
    VID_RFC3947,
    AuthMethod,
    CertEncoding,
    ExchangeType,
    NotifyType,
    ProtocolId,
)
from labctl.gateway.ike.v1.crypto import (
    CryptoError,
    Skeyids,
    cipher_spec,
    derive_skeyids,
    encryption_key,
    hash_i,
    hash_r,
    macs_equal,
    nat_d_hash,
    prf_for_hash,
    skeyid_psk,
    skeyid_sig,
)
from labctl.gateway.ike.v1.events import Event, ExchangeFailed, IsakmpSaEstablished, SecurityWarning
from labctl.gateway.ike.v1.identity import identity_matches, identity_payload, identity_text
from labctl.gateway.ike.v1.proposals import IkeSuite, parse_ike_proposal, phase1_sa, select_phase1
from labctl.gateway.ike.v1.protect import MessageProtector

Rng = Callable[[int], bytes]
Endpoint = tuple[str, int]
NONCE_LEN = 32  # RFC 2409 §5: between 8 and 256 bytes

# States. "I" = initiator, "R" = responder; the number is the last message sent or received.
MM_I1 = "MM_I1"  # sent MM1, waiting for MM2
MM_I3 = "MM_I3"
MM_I5 = "MM_I5"
MM_R2 = "MM_R2"
MM_R4 = "MM_R4"
AM_I1 = "AM_I1"
AM_R2 = "AM_R2"
ESTABLISHED = "ESTABLISHED"
DELETED = "DELETED"

EXPECTS_REPLY = {MM_I1, MM_I3, MM_I5, AM_I1, AM_R2}  # states in which we retransmit on a timer


class Phase1Error(Exception):
    """A failure the peer should hear about (RFC 2408 §5: answer with the notify type)."""

    def __init__(self, notify: NotifyType, reason: str) -> None:
        super().__init__(reason)
        self.notify = notify
        self.reason = reason


@dataclass
class NatState:
    version: str | None = None  # "rfc" | "draft" | None (peer does not do NAT-T)
    local: bool = False  # we are behind a NAT (or pretend to be: forced encapsulation)
    remote: bool = False  # the peer is behind a NAT

    @property
    def detected(self) -> bool:
        return self.local or self.remote


@dataclass
class Retransmit:
    message: bytes = b""
    deadline: float | None = None
    tries: int = 0


@dataclass
class IsakmpSa:
    conn: Ikev1ConnectionConfig
    initiator: bool
    icookie: bytes
    local: Endpoint
    remote: Endpoint
    created: float
    rng: Rng = os.urandom
    # Calendar time (timezone-aware UTC) for certificate validity (RFC 5280 §4.1.2.5); None: certificate
    # authentication fails closed.
    wall_clock: certs.WallClock | None = None
    rcookie: bytes = bytes(8)
    aggressive: bool = False
    state: str = ""
    suite: IkeSuite | None = None
    lifetime: float = 0.0
    established_at: float | None = None
    nat: NatState = field(default_factory=NatState)
    dpd: bool = False  # peer announced RFC 3706 support
    initial_contact: bool = False  # peer sent INITIAL-CONTACT (RFC 2407 §4.6.3.3)
    local_id_payload: IdPayload | None = None
    peer_id_payload: IdPayload | None = None
    peer_cert: x509.Certificate | None = None
    protector: MessageProtector | None = None
    keys: Skeyids | None = None
    prf: ike_prf.Prf | None = None
    ni: bytes = b""
    nr: bytes = b""
    retransmit: Retransmit = field(default_factory=Retransmit)
    last_received: bytes = b""  # raw bytes of the last message that advanced the state
    last_reply: bytes = b""  # what we answered to it (re-sent on a duplicate)
    events: list[Event] = field(default_factory=list)
    drops: int = 0
    replaced: bool = False  # a newer ISAKMP SA of the same connection took over
    send_initial_contact: bool = True  # not when rekeying: the peer would drop the SAs we keep
    _dh: dh.DhPrivate | None = None
    _gxi: bytes = b""
    _gxr: bytes = b""
    _sai_b: bytes = b""
    _offered: list[IkeSuite] = field(default_factory=list)

    # ----------------------------------------------------------------- helpers

    @property
    def established(self) -> bool:
        return self.state == ESTABLISHED

    @property
    def mode(self) -> str:
        return "aggressive" if self.aggressive else "main"

    def _auth_method(self) -> AuthMethod:
        return AuthMethod.RSA_SIG if self.conn.auth == "pubkey" else AuthMethod.PSK

    def _suites(self) -> list[IkeSuite]:
        out: list[IkeSuite] = []
        for text in self.conn.proposals:
            out += parse_ike_proposal(text, self._auth_method(), self.conn.allow_legacy)
        return out

    def _own_cert(self) -> x509.Certificate | None:
        return v1auth.own_chain(self.conn.cert_pem).leaf if self.conn.cert_pem else None

    def _local_id(self) -> IdPayload:
        cert = self._own_cert()
        subject = cert.subject.public_bytes() if cert is not None else None
        return identity_payload(self.conn.local_id, self.local[0], subject)

    def _vendor_ids(self) -> list[Payload]:
        # RFC 3947 §3.1 and the drafts strongSwan still recognises; RFC 3706 §7 for DPD.
        vids = [VID_RFC3947, *VID_NATT_DRAFTS, VID_DPD]
        return [VendorIdPayload(data=v) for v in vids]

    def _read_vendor_ids(self, msg: Message) -> None:
        for v in msg.all(VendorIdPayload):
            if v.data == VID_RFC3947:
                self.nat.version = "rfc"
            elif v.data in VID_NATT_DRAFTS and self.nat.version is None:
                self.nat.version = "draft"
            elif v.data == VID_DPD:
                self.dpd = True

    def _nat_d_payloads(self) -> list[Payload]:
        """RFC 3947 §3.2: first the hash of the peer's address and port, then our own."""
        if self.nat.version is None or self.suite is None:
            return []
        cls = NatDPayload if self.nat.version == "rfc" else NatDDraftPayload
        h = self.suite.hash_alg
        remote = nat_d_hash(h, self.icookie, self.rcookie, _addr(self.remote[0]), self.remote[1])
        if self.conn.encap:
            # Forced encapsulation: a hash that cannot match makes the peer see us behind a NAT.
            local = self.rng(len(remote))
        else:
            local = nat_d_hash(h, self.icookie, self.rcookie, _addr(self.local[0]), self.local[1])
        return [cls(data=remote), cls(data=local)]

    def _check_nat_d(self, msg: Message) -> None:
        if self.nat.version is None or self.suite is None:
            return
        hashes = [p.data for p in msg.payloads if isinstance(p, NatDPayload | NatDDraftPayload)]
        if len(hashes) < 2:
            return
        h = self.suite.hash_alg
        ours = nat_d_hash(h, self.icookie, self.rcookie, _addr(self.local[0]), self.local[1])
        theirs = nat_d_hash(h, self.icookie, self.rcookie, _addr(self.remote[0]), self.remote[1])
        # RFC 3947 §3.2: no match for the first hash means we are behind a NAT; no match among the
        # others means the peer is.
        self.nat.local = self.conn.encap or not macs_equal(hashes[0], ours)
        self.nat.remote = not any(macs_equal(x, theirs) for x in hashes[1:])

    def _plain(self, exchange: ExchangeType, payloads: list[Payload]) -> bytes:
        return encode_message(self.icookie, self.rcookie, exchange, 0, 0, payloads)

    def _encrypted(self, exchange: ExchangeType, payloads: list[Payload]) -> bytes:
        assert self.protector is not None  # noqa: S101 - state invariant: keys exist after KE
        return self.protector.encrypt(self.icookie, self.rcookie, exchange, 0, payloads)

    def _send(self, message: bytes, now: float, expect_reply: bool) -> list[bytes]:
        self.retransmit = Retransmit(message, now + self.conn.retransmit_timeout if expect_reply else None, 0)
        return [message]

    def _fail(self, reason: str) -> None:
        self.events.append(ExchangeFailed(self.conn.name, reason))

    # ----------------------------------------------------------------- key material

    def _derive_keys(self) -> None:
        assert self.suite is not None and self._dh is not None  # noqa: S101 - state invariant
        peer_ke = self._gxr if self.initiator else self._gxi
        try:
            gxy = self._dh.shared_secret(peer_ke)
        except dh.InvalidPublicValue as exc:
            raise Phase1Error(NotifyType.INVALID_KEY_INFORMATION, f"bad DH public value from the peer: {exc}") from exc
        prf = prf_for_hash(self.suite.hash_alg)
        if self.suite.auth == AuthMethod.PSK:
            skeyid = skeyid_psk(prf, self.conn.psk, self.ni, self.nr)
        else:
            skeyid = skeyid_sig(prf, self.ni, self.nr, gxy)
        self.prf = prf
        self.keys = derive_skeyids(prf, skeyid, gxy, self.icookie, self.rcookie)
        spec = cipher_spec(self.suite.encr, self.suite.key_bits)
        key = encryption_key(prf, self.keys.e, spec.key_len)
        self.protector = MessageProtector(spec, key, self.suite.hash_alg, self._gxi, self._gxr)

    def _my_hash(self) -> bytes:
        assert self.prf is not None and self.keys is not None and self.local_id_payload is not None  # noqa: S101
        idb = self.local_id_payload.raw_body()
        if self.initiator:
            return hash_i(self.prf, self.keys.skeyid, self._gxi, self._gxr, self.icookie, self.rcookie,
                          self._sai_b, idb)
        return hash_r(self.prf, self.keys.skeyid, self._gxi, self._gxr, self.icookie, self.rcookie,
                      self._sai_b, idb)

    def _peer_hash(self) -> bytes:
        assert self.prf is not None and self.keys is not None and self.peer_id_payload is not None  # noqa: S101
        idb = self.peer_id_payload.raw_body()
        if self.initiator:
            return hash_r(self.prf, self.keys.skeyid, self._gxi, self._gxr, self.icookie, self.rcookie,
                          self._sai_b, idb)
        return hash_i(self.prf, self.keys.skeyid, self._gxi, self._gxr, self.icookie, self.rcookie,
                      self._sai_b, idb)

    def _auth_payloads(self) -> list[Payload]:
        """[CERT,] HASH or SIG (RFC 2409 §5.1 signatures, §5.4 pre-shared key)."""
        h = self._my_hash()
        if self.conn.auth == "psk":
            return [HashPayload(data=h)]
        key = v1auth.load_rsa_key(self.conn.private_key_pem)
        out: list[Payload] = []
        if self.conn.cert_pem:
            # Our certificate first (it verifies SIG), then the intermediate CAs of our file (RFC 2408 §3.9).
            out += [CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=der)
                    for der in v1auth.own_chain(self.conn.cert_pem, key).ders()]
        out.append(SigPayload(data=v1auth.rsa_sign_raw(key, h)))
        return out

    def _certreq(self) -> list[Payload]:
        if self.conn.auth != "pubkey":
            return []
        return [CertReqPayload(encoding=CertEncoding.X509_SIGNATURE,
                               data=v1auth.load_cert(ca).subject.public_bytes()) for ca in self.conn.ca_pems[:1]]

    def _verify_peer(self, msg: Message) -> None:
        peer_id = msg.get(IdPayload)
        if peer_id is None:
            raise Phase1Error(NotifyType.PAYLOAD_MALFORMED, "the peer sent no ID payload")
        self.peer_id_payload = peer_id
        if not identity_matches(self.conn.remote_id, peer_id):
            raise Phase1Error(NotifyType.INVALID_ID_INFORMATION,
                              f"peer identity {identity_text(peer_id)!r} is not the configured "
                              f"{self.conn.remote_id!r}")
        expected = self._peer_hash()
        if self.conn.auth == "psk":
            got = msg.get(HashPayload)
            if got is None or not macs_equal(got.data, expected):
                raise Phase1Error(NotifyType.AUTHENTICATION_FAILED,
                                  "authentication failed: the peer's HASH does not verify — check the pre-shared key")
            return
        # The first X.509 certificate is the peer's own (it verifies SIG; strongSwan and we send it first, as
        # RFC 7296 §3.6 requires for IKEv2); any others are intermediate CAs towards our trust anchors.
        ders = [p.data for p in msg.all(CertPayload) if p.encoding == CertEncoding.X509_SIGNATURE]
        sig = msg.get(SigPayload)
        if not ders or sig is None:
            raise Phase1Error(NotifyType.AUTHENTICATION_FAILED, "the peer sent no certificate or signature")
        if self.wall_clock is None:
            raise Phase1Error(NotifyType.INVALID_CERTIFICATE, "cannot check the peer's certificate: the IKE "
                                                              "engine was given no wall clock for validity dates")
        try:
            cas = certs.load_anchors(self.conn.ca_pems)
            cert = certs.verify_chain(ders[0], ders[1:], cas, self.wall_clock())[0]
        except certs.CertError as exc:
            raise Phase1Error(NotifyType.INVALID_CERTIFICATE, f"the peer's certificate is refused: {exc}") from exc
        if not v1auth.id_matches_cert(peer_id, cert):
            raise Phase1Error(NotifyType.INVALID_ID_INFORMATION, "the peer's identity is not in its certificate")
        pub = cert.public_key()
        from cryptography.hazmat.primitives.asymmetric import rsa

        if not isinstance(pub, rsa.RSAPublicKey) or not v1auth.rsa_verify_raw(pub, expected, sig.data):
            raise Phase1Error(NotifyType.INVALID_SIGNATURE,
                              "authentication failed: the peer's signature does not verify")
        self.peer_cert = cert

    def _establish(self, now: float) -> None:
        assert self.suite is not None and self.protector is not None  # noqa: S101
        self.state = ESTABLISHED
        self.established_at = now
        self.protector.finish_phase1()
        assert self.local_id_payload is not None and self.peer_id_payload is not None  # noqa: S101
        self.events.append(IsakmpSaEstablished(
            self.conn.name, self.icookie, self.rcookie, self.mode, self.suite.name,
            identity_text(self.local_id_payload, self._own_cert()),
            identity_text(self.peer_id_payload, self.peer_cert), self.nat.local, self.nat.remote))

    def _new_dh(self, group_number: int) -> None:
        self._dh = dh.group(group_number).generate(self.rng)

    # ----------------------------------------------------------------- initiator

    def start(self, now: float) -> list[bytes]:
        suites = self._suites()
        self._offered = suites
        self.lifetime = self.conn.lifetime
        if self.conn.mode == "aggressive":
            self.aggressive = True
            if self.conn.auth == "psk":
                self.events.append(SecurityWarning(
                    self.conn.name, "Aggressive Mode with a pre-shared key: the responder's hash travels in "
                    "clear and can be attacked offline to guess the key (use Main Mode or certificates)"))
            # RFC 2409 §5: KE goes out with the offer, so every suite must use the first one's group.
            group_number = suites[0].group
            suites = [s for s in suites if s.group == group_number]
            self._offered = suites
            sa = phase1_sa(suites, int(self.lifetime))
            self._sai_b = sa.body()
            self._new_dh(group_number)
            assert self._dh is not None  # noqa: S101
            self._gxi = self._dh.public_bytes()
            self.ni = self.rng(NONCE_LEN)
            self.local_id_payload = self._local_id()
            payloads: list[Payload] = [sa, KePayload(data=self._gxi), NoncePayload(data=self.ni),
                                       self.local_id_payload, *self._certreq(), *self._vendor_ids()]
            self.state = AM_I1
            return self._send(self._plain(ExchangeType.AGGRESSIVE, payloads), now, True)
        sa = phase1_sa(suites, int(self.lifetime))
        self._sai_b = sa.body()
        self.state = MM_I1
        return self._send(self._plain(ExchangeType.MAIN, [sa, *self._vendor_ids()]), now, True)

    # ----------------------------------------------------------------- receive

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """One datagram for this SA (NAT-T marker already removed)."""
        if data == self.last_received and self.last_reply:
            # RFC 2408 §5 / strongSwan behaviour: a retransmitted request gets the same answer again.
            return [self.last_reply]
        try:
            return self._receive(data, now)
        except Phase1Error as exc:
            self._fail(exc.reason)
            self.state = DELETED
            return [self._notify_plain(exc.notify)]
        except v1auth.AuthError as exc:
            self.drops += 1
            self._fail(f"local authentication material is unusable: {exc}")
            return []
        except (DecodeError, CryptoError):
            self.drops += 1
            if self.state in (MM_R4, MM_I5) and self.conn.auth == "psk" and _is_encrypted(data):
                # The first encrypted message is where a PSK mismatch shows: it decrypts to garbage.
                self._fail("could not decrypt the peer's Main Mode message — check the pre-shared key")
            return []

    def _notify_plain(self, notify: NotifyType) -> bytes:
        payload = NotifyPayload(notify_type=notify, protocol=ProtocolId.ISAKMP, spi=self.icookie + self.rcookie)
        return encode_message(self.icookie, self.rcookie, ExchangeType.INFORMATIONAL, 0, 0, [payload])

    def _decode(self, data: bytes) -> Message:
        if _is_encrypted(data):
            if self.protector is None:
                raise DecodeError("encrypted message before keys exist")
            return self.protector.decrypt(data)
        return decode_message(data)

    def _receive(self, data: bytes, now: float) -> list[bytes]:
        msg = self._decode(data)
        h = msg.header
        expected = ExchangeType.AGGRESSIVE if self.aggressive else ExchangeType.MAIN
        if h.message_id != 0 or h.exchange != expected:
            raise DecodeError("not a message of our phase-1 exchange")
        handler = _HANDLERS.get(self.state)
        if handler is None:
            raise DecodeError(f"unexpected phase-1 message in state {self.state}")
        replies = handler(self, msg, now)
        self.last_received = data
        self.last_reply = replies[0] if replies else b""
        return replies

    # initiator, Main Mode
    def _on_mm2(self, msg: Message, now: float) -> list[bytes]:
        sa = msg.get(SaPayload)
        if sa is None:
            raise DecodeError("MM2 without SA")
        chosen = select_phase1(sa, self._offered)
        if chosen is None or len(sa.proposals) != 1 or len(sa.proposals[0].transforms) != 1:
            raise Phase1Error(NotifyType.NO_PROPOSAL_CHOSEN, "the responder chose a proposal we did not offer")
        self.rcookie = msg.header.rcookie
        self.suite = chosen[2]
        self._read_vendor_ids(msg)
        self._new_dh(self.suite.group)
        assert self._dh is not None  # noqa: S101
        self._gxi = self._dh.public_bytes()
        self.ni = self.rng(NONCE_LEN)
        payloads: list[Payload] = [KePayload(data=self._gxi), NoncePayload(data=self.ni), *self._certreq(),
                                   *self._nat_d_payloads()]
        self.state = MM_I3
        return self._send(self._plain(ExchangeType.MAIN, payloads), now, True)

    def _on_mm4(self, msg: Message, now: float) -> list[bytes]:
        ke, nonce = msg.get(KePayload), msg.get(NoncePayload)
        if ke is None or nonce is None:
            raise DecodeError("MM4 without KE or nonce")
        self._gxr, self.nr = ke.data, nonce.data
        self._check_nat_d(msg)
        self._derive_keys()
        self.local_id_payload = self._local_id()
        payloads: list[Payload] = [self.local_id_payload, *self._auth_payloads()]
        payloads += self._initial_contact()
        self.state = MM_I5
        self._float_ports()
        return self._send(self._encrypted(ExchangeType.MAIN, payloads), now, True)

    def _on_mm6(self, msg: Message, now: float) -> list[bytes]:
        self._verify_peer(msg)
        self.retransmit = Retransmit()
        self._establish(now)
        return []

    # responder, Main Mode
    def respond_first(self, data: bytes, now: float) -> list[bytes]:
        """MM1 or AM1 for a new responder SA (the engine made us for it)."""
        try:
            msg = decode_message(data)
            replies = self._on_first(msg, now)
        except Phase1Error as exc:
            self._fail(exc.reason)
            self.state = DELETED
            return [self._notify_plain(exc.notify)]
        except (DecodeError, CryptoError) as exc:
            self.drops += 1
            self._fail(f"could not process the peer's first message: {exc}")
            self.state = DELETED
            return []
        self.last_received = data
        self.last_reply = replies[0] if replies else b""
        return replies

    def _on_first(self, msg: Message, now: float) -> list[bytes]:
        sa = msg.get(SaPayload)
        if sa is None:
            raise DecodeError("first message without SA")
        self.aggressive = msg.header.exchange == ExchangeType.AGGRESSIVE
        ours = self._suites()
        chosen = select_phase1(sa, ours)
        if self.aggressive:
            ke = msg.get(KePayload)
            if ke is not None:
                # RFC 2409 §5: in Aggressive Mode the group is fixed by the KE already sent.
                candidates = [s for s in ours if dh.group(s.group).public_len == len(ke.data)]
                chosen = select_phase1(sa, candidates)
        if chosen is None:
            raise Phase1Error(NotifyType.NO_PROPOSAL_CHOSEN,
                              "no proposal chosen: none of the peer's phase-1 proposals matches ours "
                              f"({', '.join(self.conn.proposals)})")
        prop, transform, suite, life = chosen
        self.suite = suite
        self.lifetime = float(min(life or self.conn.lifetime, self.conn.lifetime))
        self._sai_b = sa.raw_body()
        self._read_vendor_ids(msg)
        reply_sa = SaPayload(proposals=[type(prop)(prop.number, prop.protocol, prop.spi, [transform])])
        if not self.aggressive:
            self.state = MM_R2
            return self._send(self._plain(ExchangeType.MAIN, [reply_sa, *self._vendor_ids()]), now, False)
        if self.conn.auth == "psk":
            self.events.append(SecurityWarning(
                self.conn.name, "Aggressive Mode with a pre-shared key: our hash travels in clear and can be "
                "attacked offline to guess the key (use Main Mode or certificates)"))
        ke, nonce, peer_id = msg.get(KePayload), msg.get(NoncePayload), msg.get(IdPayload)
        if ke is None or nonce is None or peer_id is None:
            raise DecodeError("AM1 without KE, nonce or ID")
        self._gxi, self.ni = ke.data, nonce.data
        self.peer_id_payload = peer_id
        self._new_dh(suite.group)
        assert self._dh is not None  # noqa: S101
        self._gxr = self._dh.public_bytes()
        self.nr = self.rng(NONCE_LEN)
        self._derive_keys()
        self.local_id_payload = self._local_id()
        payloads: list[Payload] = [reply_sa, KePayload(data=self._gxr), NoncePayload(data=self.nr),
                                   self.local_id_payload, *self._auth_payloads(), *self._vendor_ids(),
                                   *self._nat_d_payloads()]
        self.state = AM_R2
        return self._send(self._plain(ExchangeType.AGGRESSIVE, payloads), now, True)

    def _on_mm3(self, msg: Message, now: float) -> list[bytes]:
        assert self.suite is not None  # noqa: S101
        ke, nonce = msg.get(KePayload), msg.get(NoncePayload)
        if ke is None or nonce is None:
            raise DecodeError("MM3 without KE or nonce")
        self._gxi, self.ni = ke.data, nonce.data
        self._check_nat_d(msg)
        self._new_dh(self.suite.group)
        assert self._dh is not None  # noqa: S101
        self._gxr = self._dh.public_bytes()
        self.nr = self.rng(NONCE_LEN)
        self._derive_keys()
        payloads: list[Payload] = [KePayload(data=self._gxr), NoncePayload(data=self.nr), *self._certreq(),
                                   *self._nat_d_payloads()]
        self.state = MM_R4
        return self._send(self._plain(ExchangeType.MAIN, payloads), now, False)

    def _on_mm5(self, msg: Message, now: float) -> list[bytes]:
        self._verify_peer(msg)
        self._read_initial_contact(msg)
        self.local_id_payload = self._local_id()
        reply = self._encrypted(ExchangeType.MAIN, [self.local_id_payload, *self._auth_payloads()])
        self._establish(now)
        return self._send(reply, now, False)

    def _initial_contact(self) -> list[Payload]:
        # RFC 2407 §4.6.3.3: tells the peer to drop whatever it still holds from an earlier us.
        if not self.send_initial_contact:
            return []
        return [NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT, protocol=ProtocolId.ISAKMP,
                              spi=self.icookie + self.rcookie)]

    def _read_initial_contact(self, msg: Message) -> None:
        for n in msg.all(NotifyPayload):
            if n.notify_type == NotifyType.INITIAL_CONTACT:
                self.initial_contact = True

    # Aggressive Mode
    def _on_am2(self, msg: Message, now: float) -> list[bytes]:
        sa, ke, nonce = msg.get(SaPayload), msg.get(KePayload), msg.get(NoncePayload)
        if sa is None or ke is None or nonce is None:
            raise DecodeError("AM2 without SA, KE or nonce")
        chosen = select_phase1(sa, self._offered)
        if chosen is None:
            raise Phase1Error(NotifyType.NO_PROPOSAL_CHOSEN, "the responder chose a proposal we did not offer")
        self.rcookie = msg.header.rcookie
        self.suite = chosen[2]
        self._read_vendor_ids(msg)
        self._gxr, self.nr = ke.data, nonce.data
        self._derive_keys()
        self._check_nat_d(msg)
        self._verify_peer(msg)
        # RFC 2409 §5: the third message is not encrypted (strongSwan sends it in clear as well).
        payloads: list[Payload] = [*self._auth_payloads(), *self._nat_d_payloads()]
        payloads += self._initial_contact()
        reply = self._plain(ExchangeType.AGGRESSIVE, payloads)
        self._establish(now)
        self._float_ports()
        return self._send(reply, now, False)

    def _on_am3(self, msg: Message, now: float) -> list[bytes]:
        self._check_nat_d(msg)
        self._read_initial_contact(msg)
        # The peer's ID came in AM1; the hash or signature comes now.
        peer_id = self.peer_id_payload
        assert peer_id is not None  # noqa: S101
        msg.payloads.insert(0, peer_id)
        self._verify_peer(msg)
        self.retransmit = Retransmit()
        self._establish(now)
        self._float_ports()
        return []

    def _float_ports(self) -> None:
        """RFC 3947 §4: with a NAT in the path, move to port 4500 (from MM5, or after Aggressive Mode)."""
        if self.nat.detected and self.local[1] != 4500:
            self.local = (self.local[0], 4500)
            self.remote = (self.remote[0], 4500)

    # ----------------------------------------------------------------- timers

    def retransmit_due(self, now: float) -> tuple[list[bytes], bool]:
        """(datagrams, gave_up)."""
        r = self.retransmit
        if r.deadline is None or now < r.deadline:
            return [], False
        if r.tries >= self.conn.retransmit_tries:
            r.deadline = None
            hint = " — often a pre-shared key mismatch" if self.state == MM_I5 else " — is the peer up and reachable?"
            self._fail(f"no answer from {self.remote[0]} after {r.tries + 1} transmissions (state {self.state}){hint}")
            self.state = DELETED
            return [], True
        r.tries += 1
        r.deadline = now + self.conn.retransmit_timeout * (self.conn.retransmit_base ** r.tries)
        return [r.message], False


def _is_encrypted(data: bytes) -> bool:
    return len(data) > 19 and bool(data[19] & 1)


def _addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


_HANDLERS: dict[str, Callable[[IsakmpSa, Message, float], list[bytes]]] = {
    MM_I1: IsakmpSa._on_mm2,
    MM_I3: IsakmpSa._on_mm4,
    MM_I5: IsakmpSa._on_mm6,
    MM_R2: IsakmpSa._on_mm3,
    MM_R4: IsakmpSa._on_mm5,
    AM_I1: IsakmpSa._on_am2,
    AM_R2: IsakmpSa._on_am3,
}
