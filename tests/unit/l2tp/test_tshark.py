"""tshark (an independent dissector) decodes our L2TP and PPP frames without complaint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from labctl.gateway.l2tp import AuthMethod
from labctl.gateway.l2tp.header import push_data
from labctl.gateway.l2tp.ppp_frame import PROTO_CCP, push_frame

from .harness import Wire, make_pair
from .pcap_writer import ipv4_udp, write_pcap

TSHARK = "/usr/bin/tshark"
SERVER_IP = "192.0.2.1"
CLIENT_IPS = {"alice": "198.51.100.10", "bob": "198.51.100.11"}


def _tshark() -> str:
    found = shutil.which("tshark") or (TSHARK if Path(TSHARK).exists() else None)
    if found is None:
        pytest.fail("tshark is required for this test (Debian package 'tshark'); it is not installed", pytrace=False)
    return found


def _exchange(method: AuthMethod, wrong_password: bool = False) -> Wire:
    wire = make_pair(
        (method,),
        names=("alice", "bob"),
        passwords={"bob": "wrong"} if wrong_password else None,
        echo_interval=5.0,
    )
    for client in wire.clients.values():
        client.connect(0.0)
    wire.run(12.0)  # bring-up and two LCP echo rounds
    client = wire.clients["alice"]
    if client.tunnel is not None and client.call is not None:
        # Something we do not speak: CCP, answered by an LCP Protocol-Reject.
        frame = push_frame(PROTO_CCP, bytes.fromhex("0101000a120601000000"))
        datagram = push_data(client.tunnel.peer_id, client.call.peer_id, frame)
        wire.log.append(("alice", "lns", datagram))
        wire.server.receive_datagram(datagram, "alice", wire.now)
    for name, c in wire.clients.items():
        c.close(wire.now)
        del name
    wire.run(wire.now + 30.0)
    return wire


def _pcap(wire: Wire, path: Path) -> None:
    packets = []
    for i, (sender, receiver, datagram) in enumerate(wire.log):
        src = SERVER_IP if sender == "lns" else CLIENT_IPS[sender]
        dst = SERVER_IP if receiver == "lns" else CLIENT_IPS[receiver]
        packets.append((1_700_000_000 + i * 0.001, ipv4_udp(src, dst, 1701, 1701, datagram, ident=i)))
    write_pcap(path, packets)


def _dissect(path: Path) -> str:
    result = subprocess.run([_tshark(), "-r", str(path), "-V"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _assert_clean(text: str) -> None:
    assert "Malformed" not in text
    assert "[Expert Info (Error" not in text
    assert "[Expert Info (Warning" not in text


@pytest.mark.parametrize("method", list(AuthMethod))
def test_tshark_dissects_bring_up_and_teardown(method: AuthMethod, tmp_path: Path) -> None:
    wire = _exchange(method)
    path = tmp_path / f"l2tp-{method.label}.pcap"
    _pcap(wire, path)
    text = _dissect(path)
    _assert_clean(text)
    assert "Layer 2 Tunneling Protocol" in text
    for message in ("Start_Control_Request", "Start_Control_Reply", "Start_Control_Connected"):
        assert message in text
    for message in ("Incoming_Call_Request", "Incoming_Call_Reply", "Incoming_Call_Connected"):
        assert message in text
    assert "Call_Disconnect_Notification" in text and "Stop_Control_Notification" in text
    assert "PPP Link Control Protocol" in text
    assert "Echo Request" in text and "Echo Reply" in text
    assert "Protocol Reject" in text
    assert "PPP IP Control Protocol" in text and "Primary DNS Server IP Address" in text
    if method is AuthMethod.PAP:
        assert "PPP Password Authentication Protocol" in text and "Authenticate-Ack" in text
    else:
        assert "PPP Challenge Handshake Authentication Protocol" in text
        assert "Success" in text


def test_tshark_dissects_a_refused_login(tmp_path: Path) -> None:
    wire = _exchange(AuthMethod.MSCHAPV2, wrong_password=True)
    path = tmp_path / "l2tp-refused.pcap"
    _pcap(wire, path)
    text = _dissect(path)
    _assert_clean(text)
    assert "Failure" in text and "Termination Request" in text


def test_the_check_catches_malformed_frames(tmp_path: Path) -> None:
    # Control: a truncated LCP packet and an AVP whose length overruns the message are flagged by
    # tshark, so the clean results above mean something.
    from labctl.gateway.l2tp.header import push_control

    bad_lcp = push_data(5, 6, bytes.fromhex("ff03c021010100140104"))
    bad_avp = push_control(5, 0, 0, 0, bytes.fromhex("800800000000000180ff00000007"))
    path = tmp_path / "bad.pcap"
    packets = [
        ipv4_udp(SERVER_IP, CLIENT_IPS["alice"], 1701, 1701, d, ident=i) for i, d in enumerate((bad_lcp, bad_avp))
    ]
    write_pcap(path, [(1.0 + i, packet) for i, packet in enumerate(packets)])
    text = _dissect(path)
    assert text.count("Malformed Packet: PPP LCP") == 1 and text.count("Malformed Packet: L2TP") == 1
    with pytest.raises(AssertionError):
        _assert_clean(text)
