"""IKEv2 codec: every payload type survives encode -> parse, raw bodies are kept, garbage is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labctl.gateway.ike.v2 import codec
from labctl.gateway.ike.v2.ciphers import SkCipher, encr_alg, integ_alg
from labctl.gateway.ike.v2.codec import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    Header,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    VendorPayload,
)
from labctl.gateway.ike.v2.constants import HEADER_LENGTH, Encr, Integ, PayloadType, ProtocolId
from labctl.gateway.ike.v2.proposals import parse_proposal, select

SAMPLES = [
    Payload(PayloadType.SA, SaPayload([
        Proposal(1, ProtocolId.IKE, b"", [Transform(1, 12, 256), Transform(2, 5), Transform(3, 12), Transform(4, 19)]),
        Proposal(2, ProtocolId.ESP, b"\x01\x02\x03\x04", [Transform(1, 20, 128), Transform(5, 0)]),
    ])),
    Payload(PayloadType.KE, KePayload(31, bytes(range(32)))),
    Payload(PayloadType.IDi, IdPayload(2, b"a.example")),
    Payload(PayloadType.IDr, IdPayload(1, bytes([192, 0, 2, 2]))),
    Payload(PayloadType.CERT, CertPayload(4, b"\x30\x03\x02\x01\x01")),
    Payload(PayloadType.CERTREQ, CertReqPayload(4, bytes(20))),
    Payload(PayloadType.AUTH, AuthPayload(2, bytes(32))),
    Payload(PayloadType.NONCE, NoncePayload(bytes(range(32)))),
    Payload(PayloadType.NOTIFY, NotifyPayload(16393, 3, b"\xaa\xbb\xcc\xdd", b"")),
    Payload(PayloadType.NOTIFY, NotifyPayload(16388, 0, b"", bytes(20))),
    Payload(PayloadType.DELETE, DeletePayload(3, [b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"])),
    Payload(PayloadType.DELETE, DeletePayload(1, [])),
    Payload(PayloadType.VENDOR, VendorPayload(b"labctl")),
    Payload(PayloadType.TSi, TsPayload([TrafficSelector(7, 0, 0, 65535, bytes([10, 1, 0, 0]), bytes([10, 1, 255, 255])),
                                        TrafficSelector(8, 17, 500, 500, bytes(16), b"\xff" * 16)])),
    Payload(PayloadType.TSr, TsPayload([TrafficSelector(7, 6, 80, 80, bytes(4), b"\xff" * 4)])),
    Payload(PayloadType.CP, CpPayload(1, [(1, b""), (3, bytes([10, 0, 0, 1]))])),
]


@pytest.mark.parametrize("payload", SAMPLES, ids=[f"{p.type}-{type(p.body).__name__}" for p in SAMPLES])
def test_each_payload_round_trips(payload: Payload) -> None:
    data = codec.encode_payloads([payload])
    (back,) = codec.parse_payloads(payload.type, data)
    assert back.body == payload.body
    assert back.raw == codec.encode_body(payload.body) == data[4:]


def test_whole_message_round_trip_and_header_fields() -> None:
    h = Header(b"\x11" * 8, b"\x22" * 8, 0, 34, 0x08, 0)
    data = codec.encode_message(h, SAMPLES)
    msg = codec.parse_message(data)
    assert [p.body for p in msg.payloads] == [p.body for p in SAMPLES]
    assert msg.header.spi_i == b"\x11" * 8 and msg.header.from_initiator and not msg.header.is_response
    assert msg.header.length == len(data)


def test_sk_payload_seal_open_round_trip() -> None:
    for encr, bits, integ in ((Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128), (Encr.AES_CTR, 256, Integ.HMAC_SHA1_96),
                              (Encr.AES_GCM_16, 256, None), (Encr.AES_CCM_8, 128, None),
                              (Encr.CHACHA20_POLY1305, None, None), (Encr.TRIPLE_DES, None, Integ.HMAC_SHA2_512_256)):
        alg = encr_alg(encr, bits)
        ia = integ_alg(integ) if integ else None
        c = SkCipher(alg, bytes(range(alg.keymat_len)), ia, b"k" * (ia.key_len if ia else 0))
        inner = codec.encode_payloads(SAMPLES[1:4])
        h = Header(b"\x01" * 8, b"\x02" * 8, 0, 35, 0x08, 1)
        msg = c.seal(h.pack(), SAMPLES[1].type, inner, bytes(alg.iv_len))
        parsed = codec.parse_message(msg)
        assert parsed.payloads[-1].type == PayloadType.SK
        assert c.open(msg, HEADER_LENGTH) == inner


@pytest.mark.parametrize("bad", [
    b"", b"\x00" * 27,
    Header(b"\x01" * 8, bytes(8), PayloadType.NONCE, 34, 8, 0, 28 + 4 + 3).pack() + b"\x00\x00\x00\x07abc",
    Header(b"\x01" * 8, bytes(8), PayloadType.SA, 34, 8, 0, 28 + 8).pack() + b"\x00\x00\x00\x08\x00\x00\x00\xff",
])
def test_malformed_messages_raise_parse_error(bad: bytes) -> None:
    with pytest.raises(codec.ParseError):
        codec.parse_message(bad)


@given(st.binary(max_size=300), st.sampled_from([int(t) for t in PayloadType]))
def test_parser_never_raises_anything_but_parse_error(data: bytes, first: int) -> None:
    try:
        codec.parse_payloads(first, data)
    except codec.ParseError:
        pass


def test_selection_scans_every_transform_of_every_proposal() -> None:
    ours = [parse_proposal("aes256gcm16-prfsha384-ecp384", ProtocolId.IKE)]
    theirs = [parse_proposal("aes128-sha256-modp2048", ProtocolId.IKE),
              parse_proposal("aes128gcm16-aes256gcm16-prfsha256-prfsha384-x25519-ecp384", ProtocolId.IKE)]
    theirs[1].num = 2
    chosen = select(ours, theirs)
    assert chosen is not None and chosen.num == 2
    assert {(t.type, t.id, t.key_length) for t in chosen.transforms} == {(1, 20, 256), (2, 6, None), (4, 20, None)}
