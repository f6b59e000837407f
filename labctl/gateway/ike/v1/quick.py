"""Phase 2: Quick Mode (RFC 2409 §5.5) and the protected Informational exchange (§5.7).

A `QuickMode` object is one 3-message exchange under an established ISAKMP SA; its result is a
pair of one-way IPsec SAs (`ChildResult`). All hashes are computed over the payload bytes as they
were sent or received (RFC 2409 §5.5: "the entire message ... following the HASH payload").
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from labctl.gateway.ike import dh
from labctl.gateway.ike.v1.codec import (
    Attribute,
    DecodeError,
    HashPayload,
    IdPayload,
    KePayload,
    Message,
    NatOaDraftPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    decode_attributes,
    encode_payloads,
)
from labctl.gateway.ike.v1.config import Ikev1ChildConfig
from labctl.gateway.ike.v1.constants import (
    ExchangeType,
    IdType,
    LifeType,
    NotifyType,
    Phase2Attr,
)
from labctl.gateway.ike.v1.crypto import keymat, macs_equal, mid_bytes
from labctl.gateway.ike.v1.events import SaKeys
from labctl.gateway.ike.v1.identity import Selector, address_selector
from labctl.gateway.ike.v1.phase1 import IsakmpSa, Retransmit
from labctl.gateway.ike.v1.proposals import (
    ChildSuite,
    Phase2Choice,
    encap_value,
    parse_child_proposal,
    phase2_sa,
    select_phase2,
)

Rng = Callable[[int], bytes]
NONCE_LEN = 32

QM_I1 = "QM_I1"  # sent QM1, waiting for QM2
QM_R2 = "QM_R2"  # sent QM2, waiting for QM3
QM_DONE = "QM_DONE"
QM_FAILED = "QM_FAILED"


class QuickModeError(Exception):
    def __init__(self, notify: NotifyType, reason: str) -> None:
        super().__init__(reason)
        self.notify = notify
        self.reason = reason


def child_suites(child: Ikev1ChildConfig, allow_legacy: bool) -> list[ChildSuite]:
    out: list[ChildSuite] = []
    for text in child.proposals:
        out += parse_child_proposal(text, child.protocol, allow_legacy)
    return out


def child_selectors(child: Ikev1ChildConfig, local_addr: str, remote_addr: str) -> tuple[Selector, Selector]:
    local = Selector.from_prefix(child.local_ts[0]) if child.local_ts else address_selector(local_addr)
    remote = Selector.from_prefix(child.remote_ts[0]) if child.remote_ts else address_selector(remote_addr)
    return local, remote


@dataclass(frozen=True)
class ChildResult:
    child: str
    protocol: str
    mode: str
    suite: ChildSuite
    inbound: SaKeys
    outbound: SaKeys
    udp: bool
    local_ts: Selector
    remote_ts: Selector
    lifetime: float
    kilobytes: int | None
    nat_oa_local: str | None
    nat_oa_remote: str | None


def hash_payload_bytes(msg: Message) -> tuple[bytes, bytes]:
    """(HASH data, bytes of everything after the HASH payload). HASH must come first (RFC 2409 §5.5)."""
    if not msg.payloads or not isinstance(msg.payloads[0], HashPayload):
        raise DecodeError("the first payload is not HASH")
    return msg.payloads[0].data, b"".join(p.raw for p in msg.payloads[1:])


def _keys(spi: bytes, suite: ChildSuite, material: bytes) -> SaKeys:
    # strongSwan (and the RFC's examples) take the encryption key first, then the integrity key.
    elen = suite.encr.keymat_len if suite.encr else 0
    return SaKeys(
        spi=int.from_bytes(spi, "big"),
        encr=suite.encr.name if suite.encr else None,
        encr_key=material[:elen],
        integ=suite.integ.name if suite.integ else None,
        integ_key=material[elen:],
    )


@dataclass
class QuickMode:
    isakmp: IsakmpSa
    mid: int
    initiator: bool
    child: Ikev1ChildConfig
    rng: Rng = os.urandom
    state: str = ""
    my_spi: bytes = b""
    peer_spi: bytes = b""
    choice: Phase2Choice | None = None
    ni: bytes = b""
    nr: bytes = b""
    local_ts: Selector | None = None
    remote_ts: Selector | None = None
    lifetime: float = 0.0
    kilobytes: int | None = None
    retransmit: Retransmit = field(default_factory=Retransmit)
    last_received: bytes = b""
    last_reply: bytes = b""
    rekey_of: int | None = None  # inbound SPI of the SA pair this exchange replaces
    result: ChildResult | None = None
    _dh: dh.DhPrivate | None = None
    _peer_ke: bytes = b""
    _offered: list[ChildSuite] = field(default_factory=list)
    _nat_oa: tuple[str | None, str | None] = (None, None)

    # ----------------------------------------------------------------- shared helpers

    def _prf_a(self, data: bytes) -> bytes:
        sa = self.isakmp
        assert sa.prf is not None and sa.keys is not None  # noqa: S101 - phase 1 is established
        return sa.prf(sa.keys.a, data)

    def _encrypt(self, payloads: list[Payload]) -> bytes:
        sa = self.isakmp
        assert sa.protector is not None  # noqa: S101
        return sa.protector.encrypt(sa.icookie, sa.rcookie, ExchangeType.QUICK, self.mid, payloads)

    def _with_hash(self, hash_fn: Callable[[bytes], bytes], rest: list[Payload]) -> list[Payload]:
        return [HashPayload(data=hash_fn(encode_payloads(rest) if rest else b"")), *rest]

    def _udp(self) -> bool:
        return self.isakmp.nat.detected

    def _nat_oa_payloads(self) -> list[Payload]:
        """RFC 3947 §5.2: original addresses, only for transport mode over UDP."""
        if not (self._udp() and self.child.mode == "transport"):
            return []
        cls = NatOaPayload if self.isakmp.nat.version == "rfc" else NatOaDraftPayload
        sa = self.isakmp
        me = ipaddress.IPv4Address(sa.local[0]).packed
        peer = ipaddress.IPv4Address(sa.remote[0]).packed
        oai, oar = (me, peer) if self.initiator else (peer, me)
        return [cls(id_type=IdType.IPV4_ADDR, data=oai), cls(id_type=IdType.IPV4_ADDR, data=oar)]

    def _read_nat_oa(self, msg: Message) -> None:
        oas = [p for p in msg.payloads if isinstance(p, NatOaPayload) and len(p.data) == 4]
        if len(oas) >= 2:
            oai, oar = (str(ipaddress.IPv4Address(p.data)) for p in oas[:2])
            self._nat_oa = (oai, oar) if self.initiator else (oar, oai)

    def _ke_payloads(self, group: int | None) -> list[Payload]:
        if not group:
            return []
        self._dh = dh.group(group).generate(self.rng)
        return [KePayload(data=self._dh.public_bytes())]

    def _finish(self) -> ChildResult:
        sa = self.isakmp
        choice = self.choice
        assert choice is not None and sa.keys is not None and sa.prf is not None  # noqa: S101
        assert self.local_ts is not None and self.remote_ts is not None  # noqa: S101
        gxy = None
        if choice.suite.pfs_group:
            if self._dh is None:
                raise QuickModeError(NotifyType.INVALID_KEY_INFORMATION, "PFS group agreed but no KE")
            try:
                gxy = self._dh.shared_secret(self._peer_ke)
            except dh.InvalidPublicValue as exc:
                raise QuickModeError(NotifyType.INVALID_KEY_INFORMATION, f"bad PFS public value: {exc}") from exc
        protocol = choice.proposal.protocol
        n = choice.suite.keymat_len
        # RFC 2409 §5.5: each SA's KEYMAT uses the SPI its receiver chose.
        inbound = keymat(sa.prf, sa.keys.d, protocol, self.my_spi, self.ni, self.nr, n, gxy)
        outbound = keymat(sa.prf, sa.keys.d, protocol, self.peer_spi, self.ni, self.nr, n, gxy)
        self.state = QM_DONE
        self.retransmit = Retransmit()
        self.result = ChildResult(
            child=self.child.name,
            protocol="ah" if protocol == 2 else "esp",
            mode=choice.mode,
            suite=choice.suite,
            inbound=_keys(self.my_spi, choice.suite, inbound),
            outbound=_keys(self.peer_spi, choice.suite, outbound),
            udp=choice.udp,
            local_ts=self.local_ts,
            remote_ts=self.remote_ts,
            lifetime=self.lifetime,
            kilobytes=self.kilobytes,
            nat_oa_local=self._nat_oa[0],
            nat_oa_remote=self._nat_oa[1],
        )
        return self.result

    # ----------------------------------------------------------------- initiator

    def start(self, now: float, allow_legacy: bool = False) -> bytes:
        sa = self.isakmp
        self._offered = child_suites(self.child, allow_legacy)
        self.my_spi = self._new_spi()
        self.local_ts, self.remote_ts = child_selectors(self.child, sa.local[0], sa.remote[0])
        self.lifetime = self.child.lifetime
        self.kilobytes = self.child.life_kilobytes or None
        encap = encap_value(self.child.mode, self._udp(), sa.nat.version == "draft")
        sa_payload = phase2_sa(self._offered, self.my_spi, encap, int(self.child.lifetime), self.child.life_kilobytes)
        self.ni = self.rng(NONCE_LEN)
        # RFC 2409 §5.5: with PFS, KE is in QM1; all our suites share the first suite's group.
        rest: list[Payload] = [sa_payload, NoncePayload(data=self.ni), *self._ke_payloads(self._offered[0].pfs_group),
                               self.local_ts.to_id(), self.remote_ts.to_id(), *self._nat_oa_payloads()]
        # HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [ | KE ] [ | IDci | IDcr ])
        payloads = self._with_hash(lambda b: self._prf_a(mid_bytes(self.mid) + b), rest)
        message = self._encrypt(payloads)
        self.state = QM_I1
        self.retransmit = Retransmit(message, now + sa.conn.retransmit_timeout, 0)
        return message

    def _new_spi(self) -> bytes:
        while True:
            spi = self.rng(4)
            # RFC 4303 §2.1: SPIs 1-255 are reserved by IANA, 0 is never used on the wire.
            if int.from_bytes(spi, "big") > 255:
                return spi

    def on_qm2(self, msg: Message, raw: bytes, now: float) -> bytes:
        """Returns QM3; `self.result` holds the keys."""
        got, rest = hash_payload_bytes(msg)
        nonce = msg.get(NoncePayload)
        if nonce is None:
            raise DecodeError("QM2 without nonce")
        # HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [ | KE ] [ | IDci | IDcr ])
        if not macs_equal(got, self._prf_a(mid_bytes(self.mid) + self.ni + rest)):
            raise DecodeError("QM2 HASH(2) does not verify")
        sa_p = msg.get(SaPayload)
        if sa_p is None or len(sa_p.proposals) != 1:
            raise QuickModeError(NotifyType.BAD_PROPOSAL_SYNTAX, "QM2 must carry exactly one proposal")
        choice = select_phase2(sa_p, self._offered, self.child.mode)
        if choice is None:
            raise QuickModeError(NotifyType.NO_PROPOSAL_CHOSEN,
                                 "the responder chose a phase-2 proposal we did not offer")
        self.choice = choice
        self.peer_spi = choice.proposal.spi
        self.nr = nonce.data
        ke = msg.get(KePayload)
        if choice.suite.pfs_group:
            if ke is None:
                raise QuickModeError(NotifyType.INVALID_KEY_INFORMATION, "PFS agreed but QM2 has no KE")
            self._peer_ke = ke.data
        self._read_lifetimes(msg, choice)
        self._read_nat_oa(msg)
        # HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)
        qm3 = self._encrypt([HashPayload(data=self._prf_a(b"\x00" + mid_bytes(self.mid) + self.ni + self.nr))])
        self._finish()
        self.last_received = raw
        self.last_reply = qm3
        return qm3

    def _read_lifetimes(self, msg: Message, choice: Phase2Choice) -> None:
        self.lifetime = float(choice.lifetime or self.child.lifetime)
        self.kilobytes = choice.kilobytes
        for n in msg.all(NotifyPayload):
            if n.notify_type != NotifyType.RESPONDER_LIFETIME:
                continue
            # RFC 2407 §4.6.3.1: the responder's shorter lifetime, as SA Life Type/Duration attributes.
            try:
                attrs = decode_attributes(n.data)
            except DecodeError:
                continue
            life_type = None
            for a in attrs:
                if a.type == Phase2Attr.SA_LIFE_TYPE:
                    life_type = a.as_int()
                elif a.type == Phase2Attr.SA_LIFE_DURATION:
                    if life_type == LifeType.SECONDS:
                        self.lifetime = min(self.lifetime, float(a.as_int()))
                    elif life_type == LifeType.KILOBYTES:
                        self.kilobytes = min(self.kilobytes or a.as_int(), a.as_int())

    # ----------------------------------------------------------------- responder

    def respond(self, msg: Message, raw: bytes, now: float, children: list[Ikev1ChildConfig],
                allow_legacy: bool = False) -> bytes:
        """QM1 in, QM2 out. Raises QuickModeError when the offer is unacceptable."""
        got, after_hash = hash_payload_bytes(msg)
        if not macs_equal(got, self._prf_a(mid_bytes(self.mid) + after_hash)):
            raise DecodeError("QM1 HASH(1) does not verify")
        sa_p, nonce = msg.get(SaPayload), msg.get(NoncePayload)
        if sa_p is None or nonce is None:
            raise QuickModeError(NotifyType.PAYLOAD_MALFORMED, "QM1 without SA or nonce")
        self.ni = nonce.data
        ids = msg.all(IdPayload)
        sa = self.isakmp
        if len(ids) >= 2:
            peer_sel, my_sel = Selector.from_id(ids[0]), Selector.from_id(ids[1])
            if peer_sel is None or my_sel is None:
                raise QuickModeError(NotifyType.INVALID_ID_INFORMATION, "unsupported IDci/IDcr types")
        else:
            # RFC 2409 §5.5: without IDs, the selectors are the ISAKMP peers' addresses.
            peer_sel, my_sel = address_selector(sa.remote[0]), address_selector(sa.local[0])
        last_reason = (NotifyType.INVALID_ID_INFORMATION,
                       f"no child matches the peer's traffic selectors {peer_sel} === {my_sel}")
        for child in children:
            local, remote = child_selectors(child, sa.local[0], sa.remote[0])
            if not (local.contains(my_sel) and remote.contains(peer_sel)):
                continue
            suites = child_suites(child, allow_legacy)
            choice = select_phase2(sa_p, suites, child.mode)
            if choice is None:
                last_reason = (NotifyType.NO_PROPOSAL_CHOSEN,
                               f"no proposal chosen for child {child.name}: the peer's phase-2 offer matches none "
                               f"of {', '.join(child.proposals)} in {child.mode} mode")
                continue
            self.child = child
            self.choice = choice
            break
        else:
            raise QuickModeError(*last_reason)
        assert self.choice is not None  # noqa: S101
        choice = self.choice
        self.local_ts, self.remote_ts = my_sel, peer_sel
        self.peer_spi = choice.proposal.spi
        self.my_spi = self._new_spi()
        ke = msg.get(KePayload)
        if choice.suite.pfs_group:
            if ke is None or len(ke.data) != dh.group(choice.suite.pfs_group).public_len:
                raise QuickModeError(NotifyType.INVALID_KEY_INFORMATION, "PFS group offered but KE is missing or wrong")
            self._peer_ke = ke.data
        self._read_nat_oa(msg)
        proposed = float(choice.lifetime or self.child.lifetime)
        self.lifetime = min(proposed, self.child.lifetime)
        self.kilobytes = choice.kilobytes
        reply_sa = SaPayload(proposals=[Proposal(choice.proposal.number, choice.proposal.protocol, self.my_spi,
                                                 [choice.transform])])
        self.nr = self.rng(NONCE_LEN)
        rest: list[Payload] = [reply_sa, NoncePayload(data=self.nr), *self._ke_payloads(choice.suite.pfs_group)]
        if len(ids) >= 2:
            rest += [ids[0], ids[1]]  # echoed as received (RFC 2409 §5.5)
        rest += self._nat_oa_payloads()
        if self.lifetime < proposed:
            # RFC 2407 §4.6.3.1: tell the initiator our shorter lifetime.
            data = (Attribute(Phase2Attr.SA_LIFE_TYPE, LifeType.SECONDS).encode()
                    + Attribute.of(Phase2Attr.SA_LIFE_DURATION, int(self.lifetime)).encode())
            rest.append(NotifyPayload(notify_type=NotifyType.RESPONDER_LIFETIME, protocol=choice.proposal.protocol,
                                      spi=self.peer_spi, data=data))
        payloads = self._with_hash(lambda b: self._prf_a(mid_bytes(self.mid) + self.ni + b), rest)
        message = self._encrypt(payloads)
        self.state = QM_R2
        self.last_received = raw
        self.last_reply = message
        # The responder retransmits QM2 until QM3 arrives: a lost QM3 would otherwise leave it hanging.
        self.retransmit = Retransmit(message, now + sa.conn.retransmit_timeout, 0)
        return message

    def on_qm3(self, msg: Message, raw: bytes, now: float) -> ChildResult:
        got, _rest = hash_payload_bytes(msg)
        expected = self._prf_a(b"\x00" + mid_bytes(self.mid) + self.ni + self.nr)
        if not macs_equal(got, expected):
            raise DecodeError("QM3 HASH(3) does not verify")
        self.last_received = raw
        self.last_reply = b""
        return self._finish()

    def retransmit_due(self, now: float) -> tuple[list[bytes], bool]:
        r = self.retransmit
        if r.deadline is None or now < r.deadline:
            return [], False
        conn = self.isakmp.conn
        if r.tries >= conn.retransmit_tries:
            r.deadline = None
            self.state = QM_FAILED
            return [], True
        r.tries += 1
        r.deadline = now + conn.retransmit_timeout * (conn.retransmit_base ** r.tries)
        return [r.message], False


# --------------------------------------------------------------------------- informational (RFC 2409 §5.7)


def informational(sa: IsakmpSa, mid: int, payloads: list[Payload]) -> bytes:
    """HDR*, HASH(1), N/D: HASH(1) = prf(SKEYID_a, M-ID | N/D)."""
    assert sa.prf is not None and sa.keys is not None and sa.protector is not None  # noqa: S101
    keys, prf = sa.keys, sa.prf
    with_hash = [HashPayload(data=prf(keys.a, mid_bytes(mid) + encode_payloads(payloads))), *payloads]
    message = sa.protector.encrypt(sa.icookie, sa.rcookie, ExchangeType.INFORMATIONAL, mid, with_hash)
    sa.protector.forget(mid)  # one message per informational exchange
    return message


def verify_informational(sa: IsakmpSa, msg: Message) -> bool:
    assert sa.prf is not None and sa.keys is not None  # noqa: S101
    try:
        got, rest = hash_payload_bytes(msg)
    except DecodeError:
        return False
    return macs_equal(got, sa.prf(sa.keys.a, mid_bytes(msg.header.message_id) + rest))
