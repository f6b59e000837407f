"""Codec round-trips (L2TP header and AVPs; PPP frames, LCP/IPCP options, PAP/CHAP packets)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labctl.gateway.l2tp.avp import (
    Avp,
    build_message,
    parse_message,
    parse_result_code,
    pull_avps,
    push_avps,
    result_code,
    u16,
)
from labctl.gateway.l2tp.constants import AvpType, MessageType
from labctl.gateway.l2tp.errors import MalformedPacket
from labctl.gateway.l2tp.header import L2tpHeader, pull_header, push_control, push_data
from labctl.gateway.l2tp.ppp_frame import (
    PROTO_IPCP,
    PROTO_LCP,
    ControlPacket,
    Option,
    pull_frame,
    pull_options,
    pull_packet,
    push_frame,
    push_options,
    push_packet,
)
from labctl.gateway.l2tp.reliable import seq_before

# A hand-assembled SCCRQ per RFC 2661 §3.1/§4.1: flags 0xC802 (T, L, S, version 2), length 20,
# tunnel 0, session 0, Ns 0, Nr 0, then one AVP: M bit, length 8, vendor 0, type 0 (Message Type) = 1.
SCCRQ_HEAD = bytes.fromhex("c802 0014 0000 0000 0000 0000 8008 0000 0000 0001".replace(" ", ""))


def test_control_header_matches_rfc_layout() -> None:
    body = push_avps([u16(AvpType.MESSAGE_TYPE, MessageType.SCCRQ)])
    assert push_control(0, 0, 0, 0, body) == SCCRQ_HEAD
    header, parsed = pull_header(SCCRQ_HEAD)
    assert header == L2tpHeader(True, 0, 0, 0, 0)
    assert parse_message(parsed).type == MessageType.SCCRQ


@given(
    tunnel=st.integers(0, 0xFFFF),
    session=st.integers(0, 0xFFFF),
    ns=st.integers(0, 0xFFFF),
    nr=st.integers(0, 0xFFFF),
    body=st.binary(max_size=64),
)
def test_control_header_round_trip(tunnel: int, session: int, ns: int, nr: int, body: bytes) -> None:
    header, parsed = pull_header(push_control(tunnel, session, ns, nr, body) + b"trailing")
    assert header == L2tpHeader(True, tunnel, session, ns, nr)
    assert parsed == body  # the Length field cuts the trailing octets off


@given(tunnel=st.integers(0, 0xFFFF), session=st.integers(0, 0xFFFF), payload=st.binary(max_size=64))
def test_data_header_round_trip(tunnel: int, session: int, payload: bytes) -> None:
    for with_length in (False, True):
        header, parsed = pull_header(push_data(tunnel, session, payload, with_length=with_length))
        assert (header.control, header.tunnel_id, header.session_id, header.ns) == (False, tunnel, session, None)
        assert parsed == payload


def test_data_header_with_offset_and_priority() -> None:
    # RFC 2661 §3.1: O bit -> Offset Size then that many pad octets before the payload.
    raw = struct.pack("!HHHH", 0x0302, 7, 9, 3) + b"pad" + b"\xff\x03\xc0\x21"
    header, payload = pull_header(raw)
    assert header.priority and (header.tunnel_id, header.session_id) == (7, 9)
    assert payload == b"\xff\x03\xc0\x21"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc8\x02\x00",
        bytes.fromhex("c8030014000000000000000080080000"),  # version 3
        bytes.fromhex("8002000000000000"),  # control without L and S
        bytes.fromhex("c8020064000000000000000080080000"),  # Length beyond the datagram
        bytes.fromhex("0202000100020009"),  # Offset runs past the end
    ],
)
def test_bad_headers_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedPacket):
        pull_header(raw)


@given(
    st.lists(
        st.builds(
            Avp,
            type=st.integers(0, 0xFFFF),
            value=st.binary(max_size=40),
            mandatory=st.booleans(),
            hidden=st.booleans(),
            vendor=st.integers(0, 0xFFFF),
        ),
        max_size=6,
    )
)
def test_avp_round_trip(avps: list[Avp]) -> None:
    assert pull_avps(push_avps(avps)) == avps


def test_avp_bits_on_the_wire() -> None:
    # RFC 2661 §4.1: M is the top bit, H the next, then 4 reserved bits and a 10-bit length.
    raw = push_avps([Avp(7, b"lns", mandatory=True, hidden=True)])
    assert raw == bytes.fromhex("c009 0000 0007".replace(" ", "")) + b"lns"
    with pytest.raises(MalformedPacket):
        pull_avps(bytes.fromhex("8408000000000001"))  # a reserved bit set
    with pytest.raises(MalformedPacket):
        pull_avps(bytes.fromhex("8005000000000001"))  # length below the 6-octet header
    with pytest.raises(ValueError):
        push_avps([Avp(7, bytes(1020))])


def test_message_type_must_come_first() -> None:
    with pytest.raises(MalformedPacket):
        parse_message(push_avps([u16(AvpType.ASSIGNED_TUNNEL_ID, 5), u16(AvpType.MESSAGE_TYPE, 1)]))
    message = parse_message(build_message(MessageType.CDN, [result_code(3, 0, "bye")]))
    value = message.get(AvpType.RESULT_CODE)
    assert value is not None
    parsed = parse_result_code(value)
    assert (parsed.result, parsed.error, parsed.message) == (3, 0, "bye")
    assert parse_result_code(struct.pack("!H", 1)).error is None
    with pytest.raises(MalformedPacket):
        parse_result_code(b"\x00\x01\x00")


def test_sequence_comparison_wraps() -> None:
    assert seq_before(0xFFFF, 0) and seq_before(1, 2) and not seq_before(2, 1) and not seq_before(5, 5)


def test_ppp_frame_address_control_and_protocol() -> None:
    frame = push_frame(PROTO_LCP, b"\x01\x01\x00\x04")
    assert frame == bytes.fromhex("ff03c02101010004")
    assert pull_frame(frame) == (PROTO_LCP, b"\x01\x01\x00\x04")
    assert pull_frame(bytes.fromhex("c02101010004")) == (PROTO_LCP, b"\x01\x01\x00\x04")  # ACFC
    assert pull_frame(bytes.fromhex("2145")) == (0x21, b"\x45")  # PFC: one-octet IPv4 protocol
    for bad in (b"", b"\xff\x03", b"\xc0\x20\x00"):
        with pytest.raises(MalformedPacket):
            pull_frame(bad)


# LCP Configure-Request: MRU 1400, Authentication-Protocol CHAP/MS-CHAPv2, Magic-Number 0x01020304
# (RFC 1661 §6.1, §6.2, §6.4; RFC 2759 §2 algorithm 0x81).
LCP_CONFREQ = bytes.fromhex("0101 0013 0104 0578 0305 c223 81 0506 01020304".replace(" ", ""))


def test_lcp_configure_request_layout() -> None:
    options = [Option(1, b"\x05\x78"), Option(3, b"\xc2\x23\x81"), Option(5, b"\x01\x02\x03\x04")]
    packet = ControlPacket(1, 1, push_options(options))
    assert push_packet(packet) == LCP_CONFREQ
    assert pull_packet(LCP_CONFREQ) == packet
    assert pull_options(pull_packet(LCP_CONFREQ).data) == options


def test_ipcp_request_with_dns_layout() -> None:
    # RFC 1332 §3.3 IP-Address and RFC 1877 §1.1/§1.3 DNS options, all 0.0.0.0 as a client asks.
    options = [Option(3, bytes(4)), Option(129, bytes(4)), Option(131, bytes(4))]
    raw = push_packet(ControlPacket(1, 7, push_options(options)))
    assert raw == bytes.fromhex("01070016" + "0306" + "00" * 4 + "8106" + "00" * 4 + "8306" + "00" * 4)
    assert pull_frame(push_frame(PROTO_IPCP, raw)) == (PROTO_IPCP, raw)


def test_pap_and_chap_packet_layouts() -> None:
    # RFC 1334 §2.2.1: Peer-ID Length, Peer-ID, Passwd-Length, Password.
    pap = ControlPacket(1, 9, b"\x05alice\x02pw")
    assert push_packet(pap) == b"\x01\x09\x00\x0d\x05alice\x02pw"
    # RFC 1994 §4.1: Value-Size, Value, Name.
    chap = ControlPacket(1, 3, b"\x04abcd" + b"lns")
    assert pull_packet(push_packet(chap) + b"\x00\x00") == chap  # padding past Length is ignored


@given(st.binary(max_size=40))
def test_option_and_packet_parsers_only_raise_malformed(data: bytes) -> None:
    for parser in (pull_options, pull_packet, pull_frame, pull_avps, pull_header):
        try:
            parser(data)
        except MalformedPacket:
            pass
