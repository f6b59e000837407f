"""Round trips of every ISAKMP payload (RFC 2408 §3) and robustness of the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labctl.gateway.ike.v1.codec import (
    Attribute,
    CertPayload,
    CertReqPayload,
    DecodeError,
    DeletePayload,
    HashPayload,
    Header,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SigPayload,
    Transform,
    UnknownPayload,
    VendorIdPayload,
    decode_attributes,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
)
from labctl.gateway.ike.v1.constants import (
    VID_RFC3947,
    AuthMethod,
    EncapsulationMode,
    EncryptionAlgorithm,
    ExchangeType,
    HashAlgorithm,
    IdType,
    NotifyType,
    Phase1Attr,
    Phase2Attr,
    ProtocolId,
)

PHASE1_SA = SaPayload(
    proposals=[
        Proposal(1, ProtocolId.ISAKMP, b"", [
            Transform(1, 1, [
                Attribute(Phase1Attr.ENCRYPTION_ALGORITHM, EncryptionAlgorithm.AES_CBC),
                Attribute(Phase1Attr.KEY_LENGTH, 256),
                Attribute(Phase1Attr.HASH_ALGORITHM, HashAlgorithm.SHA2_256),
                Attribute(Phase1Attr.AUTHENTICATION_METHOD, AuthMethod.PSK),
                Attribute(Phase1Attr.GROUP_DESCRIPTION, 14),
                Attribute(Phase1Attr.LIFE_TYPE, 1),
                Attribute.of(Phase1Attr.LIFE_DURATION, 86400),
            ]),
            Transform(2, 1, [Attribute(Phase1Attr.ENCRYPTION_ALGORITHM, EncryptionAlgorithm.TRIPLE_DES_CBC)]),
        ])
    ]
)
PHASE2_SA = SaPayload(
    proposals=[
        Proposal(1, ProtocolId.ESP, b"\x11\x22\x33\x44", [
            Transform(1, 12, [
                Attribute(Phase2Attr.ENCAPSULATION_MODE, EncapsulationMode.UDP_TUNNEL_DRAFT),
                Attribute(Phase2Attr.AUTH_ALGORITHM, 5),
                Attribute(Phase2Attr.KEY_LENGTH, 128),
            ])
        ]),
        Proposal(1, ProtocolId.AH, b"\x55\x66\x77\x88", [Transform(1, 5, [])]),
    ]
)

ALL_PAYLOADS: list[Payload] = [
    PHASE1_SA,
    PHASE2_SA,
    KePayload(data=bytes(range(256))),
    NoncePayload(data=b"n" * 32),
    IdPayload(id_type=IdType.IPV4_ADDR, data=bytes([192, 0, 2, 1]), protocol=17, port=500),
    IdPayload(id_type=IdType.IPV4_ADDR_SUBNET, data=bytes([10, 1, 0, 0, 255, 255, 0, 0])),
    IdPayload(id_type=IdType.IPV4_ADDR_RANGE, data=bytes([10, 1, 0, 1, 10, 1, 0, 9]), protocol=6, port=80),
    IdPayload(id_type=IdType.FQDN, data=b"moon.example.org"),
    IdPayload(id_type=IdType.USER_FQDN, data=b"carol@example.org"),
    IdPayload(id_type=IdType.DER_ASN1_DN, data=bytes.fromhex("3011310f300d06035504030c066d6f6f6e2d31")),
    CertPayload(encoding=4, data=b"\x30\x82certificate"),
    CertReqPayload(encoding=4, data=b""),
    HashPayload(data=b"h" * 20),
    SigPayload(data=b"s" * 256),
    NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT, protocol=ProtocolId.ISAKMP, spi=b"c" * 16),
    NotifyPayload(notify_type=NotifyType.RESPONDER_LIFETIME, protocol=ProtocolId.ESP, spi=b"\x01\x02\x03\x04",
                  data=Attribute(1, 1).encode() + Attribute(2, b"\x00\x00\x0e\x10").encode()),
    NotifyPayload(notify_type=NotifyType.R_U_THERE, protocol=ProtocolId.ISAKMP, spi=b"c" * 16,
                  data=(7).to_bytes(4, "big")),
    DeletePayload(protocol=ProtocolId.ISAKMP, spis=[b"i" * 8 + b"r" * 8], spi_size=16),
    DeletePayload(protocol=ProtocolId.ESP, spis=[b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"], spi_size=4),
    VendorIdPayload(data=VID_RFC3947),
    NatDPayload(data=b"d" * 32),
    NatOaPayload(id_type=IdType.IPV4_ADDR, data=bytes([198, 51, 100, 7])),
]


@pytest.mark.parametrize("payload", ALL_PAYLOADS, ids=lambda p: type(p).__name__)
def test_each_payload_round_trips(payload: Payload) -> None:
    wire = encode_payloads([payload])
    (decoded,) = decode_payloads(payload.payload_type, wire)
    assert decoded == payload
    assert decoded.raw == wire
    assert encode_payloads([decoded]) == wire


def test_message_round_trip_keeps_chain_and_raw_bytes() -> None:
    wire = encode_message(b"I" * 8, b"R" * 8, ExchangeType.MAIN, 0, 0, ALL_PAYLOADS)
    msg = decode_message(wire)
    assert msg.header.exchange == ExchangeType.MAIN
    assert msg.header.length == len(wire)
    assert msg.payloads == ALL_PAYLOADS
    assert b"".join(p.raw for p in msg.payloads) == wire[28:]


def test_sa_raw_body_is_what_was_received_not_reencoded() -> None:
    # A peer may send a small lifetime as a 4-byte TLV; HASH_I must cover those bytes as sent.
    odd = Attribute(Phase1Attr.LIFE_DURATION, b"\x00\x00\x0e\x10")
    sa = SaPayload(proposals=[Proposal(1, 1, b"", [Transform(1, 1, [odd])])])
    wire = encode_payloads([sa])
    (decoded,) = decode_payloads(1, wire)
    assert isinstance(decoded, SaPayload)
    assert decoded.raw_body() == wire[4:]
    attr = decoded.proposals[0].transforms[0].attr(Phase1Attr.LIFE_DURATION)
    assert attr is not None and attr.as_int() == 3600


def test_attribute_forms() -> None:
    assert Attribute.of(12, 28800).encode() == bytes.fromhex("800c7080")
    assert Attribute.of(12, 86400 * 10).encode() == bytes.fromhex("000c0004000d2f00")
    assert decode_attributes(bytes.fromhex("800c7080000c0004000d2f00")) == [
        Attribute(12, 28800), Attribute(12, bytes.fromhex("000d2f00"))]


def test_trailing_padding_after_chain_is_ignored() -> None:
    wire = encode_payloads([HashPayload(data=b"x" * 20)]) + bytes(8)
    assert decode_payloads(8, wire) == [HashPayload(data=b"x" * 20)]


def test_unknown_payload_is_kept_with_its_bytes() -> None:
    wire = bytes([0, 0, 0, 8]) + b"abcd"
    (p,) = decode_payloads(99, wire)
    assert isinstance(p, UnknownPayload) and p.data == b"abcd" and p.raw == wire


@pytest.mark.parametrize(
    "first,data",
    [
        (8, b"\x00\x00\x00"),  # truncated generic header
        (8, b"\x00\x00\x00\x10abc"),  # length beyond data
        (8, b"\x00\x00\x00\x02"),  # length below 4
        (1, b"\x00\x00\x00\x08\x00\x00\x00\x01"),  # SA too short
        (12, b"\x00\x00\x00\x0c\x00\x00\x00\x01\x03\x04\x00\x02"),  # delete count mismatch
        (2, b"\x00\x00\x00\x08abcd"),  # proposal outside SA
    ],
)
def test_malformed_payloads_raise_decode_error(first: int, data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_payloads(first, data)


def test_header_rejects_wrong_version_and_length() -> None:
    good = encode_message(b"I" * 8, b"\x00" * 8, ExchangeType.MAIN, 0, 0, [NoncePayload(data=b"n")])
    Header.decode(good)
    with pytest.raises(DecodeError):
        Header.decode(good[:17] + b"\x20" + good[18:])
    with pytest.raises(DecodeError):
        Header.decode(good[:-1])
    with pytest.raises(DecodeError):
        Header.decode(good[:20])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=255))
def test_random_bytes_only_ever_raise_decode_error(data: bytes, first: int) -> None:
    try:
        decode_payloads(first, data)
    except DecodeError:
        pass
    try:
        decode_message(data)
    except DecodeError:
        pass
