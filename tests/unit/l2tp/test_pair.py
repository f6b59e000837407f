"""An LNS and clients back to back in memory, time injected: bring-up, loss, keepalive, teardown."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import Any

import pytest

from labctl.gateway.l2tp import (
    AuthFailed,
    AuthMethod,
    EchoTimeout,
    IpPacket,
    L2tpClient,
    L2tpServer,
    SessionDown,
    SessionUp,
    TunnelDown,
    TunnelSettings,
    TunnelUp,
)
from labctl.gateway.l2tp.avp import parse_message
from labctl.gateway.l2tp.constants import MessageType
from labctl.gateway.l2tp.header import pull_header, push_data
from labctl.gateway.l2tp.ppp_frame import PROTO_CCP, PROTO_LCP, PROTOCOL_REJECT, pull_frame, pull_packet, push_frame

from .harness import DNS, SERVER_ADDRESS, Wire, client_config, counter_rng, is_control, make_pair, server_config

# A minimal IPv4 header + payload; PPP does not look inside, so any bytes with a plausible start do.
IP_PACKET = bytes.fromhex("4500001c00000000400100000a63000a0a000002") + b"ping0123"


def bring_up(wire: Wire, until: float = 10.0) -> None:
    for client in wire.clients.values():
        client.connect(wire.now)
    wire.run(until)


def control_types(wire: Wire) -> list[str]:
    names = []
    for _sender, _receiver, datagram in wire.log:
        header, body = pull_header(datagram)
        if header.control:
            names.append(MessageType(parse_message(body).type).name if body else "ZLB")
    return names


@pytest.mark.parametrize("method", list(AuthMethod))
def test_bring_up_and_ip_both_ways(method: AuthMethod) -> None:
    wire = make_pair((method,))
    bring_up(wire)
    [server_up] = wire.of("lns", SessionUp)
    [client_up] = wire.of("alice", SessionUp)
    assert server_up.user == "alice" and client_up.user == "alice"
    assert client_up.address == server_up.address == "10.99.0.10"
    assert client_up.peer_address == str(SERVER_ADDRESS)
    assert client_up.dns == tuple(str(d) for d in DNS)
    assert len(wire.of("lns", TunnelUp)) == len(wire.of("alice", TunnelUp)) == 1
    assert [t for t in control_types(wire) if t != "ZLB"][:6] == ["SCCRQ", "SCCRP", "SCCCN", "ICRQ", "ICRP", "ICCN"]

    client = wire.clients["alice"]
    assert client.result == client_up
    for datagram, _peer in client.send_ip(None, IP_PACKET):
        wire.server.receive_datagram(datagram, "alice", wire.now)
    for datagram, peer in wire.server.send_ip(server_up.session, IP_PACKET[::-1]):
        assert peer == "alice"
        client.receive_datagram(datagram, "lns", wire.now)
    assert wire.server.next_event() == IpPacket(server_up.session, IP_PACKET)
    assert client.next_event() == IpPacket(client_up.session, IP_PACKET[::-1])

    status: Any = wire.server.status()
    [tunnel] = status["tunnels"]
    [session] = tunnel["sessions"]
    assert tunnel["state"] == "established" and tunnel["peer_host_name"] == "client-alice"
    assert session["phase"] == "network" and session["ipcp"] == "opened" and session["lcp"] == "opened"
    assert (session["user"], session["address"], session["auth"]) == ("alice", "10.99.0.10", method.label)
    assert client.status()["address"] == "10.99.0.10"
    json.dumps(status), json.dumps(client.status())  # JSON-ready for the control socket


def test_ip_is_not_carried_before_the_session_is_up() -> None:
    wire = make_pair()
    wire.clients["alice"].connect(0.0)
    assert wire.clients["alice"].send_ip(None, IP_PACKET) == []


def _clean_counts() -> tuple[int, int]:
    wire = make_pair()
    bring_up(wire, until=3.0)
    control = sum(1 for _s, _r, d in wire.log if is_control(d))
    return control, len(wire.log) - control


CONTROL_COUNT, DATA_COUNT = _clean_counts()


def _lose_one(index: int, control: bool) -> Wire:
    seen = [0]

    def drop(sender: str, receiver: str, datagram: bytes) -> bool:
        if is_control(datagram) != control:
            return False
        seen[0] += 1
        return seen[0] - 1 == index

    wire = make_pair()
    wire.drop = drop
    bring_up(wire, until=40.0)
    return wire


@pytest.mark.parametrize("index", range(CONTROL_COUNT))
def test_loss_of_any_single_l2tp_control_message(index: int) -> None:
    wire = _lose_one(index, control=True)
    assert len(wire.of("alice", SessionUp)) == 1 and len(wire.of("lns", SessionUp)) == 1
    assert not wire.of("lns", TunnelDown) and not wire.of("alice", SessionDown)


@pytest.mark.parametrize("index", range(DATA_COUNT))
def test_loss_of_any_single_ppp_frame(index: int) -> None:
    wire = _lose_one(index, control=False)
    assert len(wire.of("alice", SessionUp)) == 1 and len(wire.of("lns", SessionUp)) == 1
    assert not wire.of("lns", SessionDown)


def test_clean_exchange_sizes_are_plausible() -> None:
    # Six control messages and their acknowledgements, LCP + auth + IPCP frames: loss tests cover them all.
    assert CONTROL_COUNT >= 7 and DATA_COUNT >= 12


def test_echo_timeout_detects_a_dead_client_and_cleans_up() -> None:
    wire = make_pair(echo_interval=5.0, echo_failures=3)
    bring_up(wire)
    wire.dead.add("alice")
    wire.run(wire.now + 5.0 * 5)
    [timeout] = wire.of("lns", EchoTimeout)
    [down] = wire.of("lns", SessionDown)
    assert timeout.user == "alice" and "echo" in down.reason
    assert wire.server.pool.status()["in_use"] == {}
    wire.run(wire.now + 120.0)  # the CDN is never acknowledged: the tunnel is declared dead too
    assert wire.of("lns", TunnelDown) and wire.server.tunnels == {}


def test_echo_keeps_a_live_session_up() -> None:
    wire = make_pair(echo_interval=5.0, echo_failures=2)
    bring_up(wire)
    wire.run(wire.now + 300.0)  # also long past the 60 s HELLO interval
    assert not wire.of("lns", EchoTimeout) and not wire.of("lns", SessionDown)
    assert "HELLO" in control_types(wire)


def test_client_close_sends_cdn_then_stopccn() -> None:
    wire = make_pair()
    bring_up(wire)
    wire.clients["alice"].close(wire.now)
    wire.run(wire.now + 60.0)
    assert [d.reason for d in wire.of("alice", SessionDown)] == ["closed by the user"]
    assert "call disconnected by the peer" in wire.of("lns", SessionDown)[0].reason
    assert wire.of("lns", TunnelDown) and wire.of("alice", TunnelDown)
    types = control_types(wire)
    assert types.index("CDN") < types.index("STOPCCN")
    assert wire.server.tunnels == {} and wire.clients["alice"].tunnels == {}
    assert wire.server.pool.status()["in_use"] == {}


def test_server_disconnects_a_session_and_shuts_down() -> None:
    wire = make_pair(names=("alice", "bob"))
    bring_up(wire)
    alice = next(up for up in wire.of("lns", SessionUp) if up.user == "alice")
    wire.server.close_session(alice.session, wire.now)
    wire.run(wire.now + 30.0)
    assert wire.of("alice", SessionDown) and wire.of("alice", TunnelDown)
    assert not wire.of("bob", SessionDown)
    wire.server.close(wire.now)
    wire.run(wire.now + 60.0)
    [bob_down] = wire.of("bob", TunnelDown)
    assert "being shut down" in bob_down.reason
    assert wire.server.tunnels == {}


@pytest.mark.parametrize("method", list(AuthMethod))
def test_wrong_password_is_refused_with_a_clear_message(method: AuthMethod) -> None:
    wire = make_pair((method,), passwords={"alice": "not-the-password"})
    bring_up(wire, until=30.0)
    [server_fail] = wire.of("lns", AuthFailed)
    assert server_fail.reason == "PPP authentication failed for user 'alice': wrong password"
    [client_fail] = wire.of("alice", AuthFailed)
    assert client_fail.reason.startswith("PPP authentication failed for user 'alice': the server refused")
    assert not wire.of("lns", SessionUp) and not wire.of("alice", SessionUp)
    assert wire.of("lns", SessionDown) and wire.server.pool.status()["in_use"] == {}


def test_unknown_user_is_named_as_such() -> None:
    server = L2tpServer(server_config((AuthMethod.CHAP_MD5,)), rng=counter_rng(3))
    client = L2tpClient(client_config("mallory", "x", (AuthMethod.CHAP_MD5,)), "lns", rng=counter_rng(4))
    wire = Wire(server, {"lns-client": client})
    # the harness names clients by their peer key; reuse it as the user's key here
    wire.clients = {"mallory": client}
    bring_up(wire, until=30.0)
    [fail] = wire.of("lns", AuthFailed)
    assert fail.reason == "PPP authentication failed for user 'mallory': unknown user"


def test_two_clients_at_once_get_their_own_addresses_and_packets() -> None:
    wire = make_pair(names=("alice", "bob"))
    bring_up(wire)
    ups = {up.user: up for up in wire.of("lns", SessionUp)}
    assert sorted(ups) == ["alice", "bob"] and ups["alice"].address != ups["bob"].address
    assert wire.server.session_for(ups["bob"].address) == ups["bob"].session
    assert wire.server.session_for("10.99.0.99") is None
    for name in ("alice", "bob"):
        [datagram] = wire.server.send_ip(ups[name].session, name.encode() + IP_PACKET)
        assert datagram[1] == name
        wire.clients[name].receive_datagram(datagram[0], "lns", wire.now)
        event = wire.clients[name].next_event()
        assert isinstance(event, IpPacket) and event.packet == name.encode() + IP_PACKET


def test_same_tunnel_ids_from_two_peers_stay_apart() -> None:
    # Two clients behind one NAT with identical randomness pick identical tunnel and session ids;
    # only the caller's peer key tells them apart.
    server = L2tpServer(server_config(), rng=counter_rng(7))
    clients = {name: L2tpClient(client_config(name), "lns", rng=counter_rng(99)) for name in ("alice", "bob")}
    wire = Wire(server, clients)
    bring_up(wire)
    assert {up.user for up in wire.of("lns", SessionUp)} == {"alice", "bob"}
    assert clients["alice"].session == clients["bob"].session is not None
    assert sorted(str(peer) for peer, _ in server.tunnels) == ["alice", "bob"]


def test_ccp_is_protocol_rejected() -> None:
    wire = make_pair()
    bring_up(wire)
    client = wire.clients["alice"]
    assert client.tunnel is not None and client.call is not None
    ccp_request = bytes.fromhex("0101000a120601000000")  # CCP Configure-Request, one option
    frame = push_frame(PROTO_CCP, ccp_request)
    wire.server.receive_datagram(push_data(client.tunnel.peer_id, client.call.peer_id, frame), "alice", wire.now)
    [(datagram, peer)] = wire.server.datagrams_to_send()
    protocol, information = pull_frame(pull_header(datagram)[1])
    packet = pull_packet(information)
    assert (protocol, packet.code) == (PROTO_LCP, PROTOCOL_REJECT)
    assert packet.data == PROTO_CCP.to_bytes(2, "big") + ccp_request  # RFC 1661 §5.7 layout
    assert wire.server.tunnels[(peer, wire.of("lns", TunnelUp)[0].tunnel_id)].calls  # session still up


def test_auth_method_negotiated_by_nak() -> None:
    # The LNS prefers MS-CHAPv2; this client only does PAP and Naks with it (RFC 1661 §6.2).
    wire = make_pair((AuthMethod.MSCHAPV2, AuthMethod.PAP), client_methods=(AuthMethod.PAP,))
    bring_up(wire)
    assert wire.of("alice", SessionUp)
    status: Any = wire.server.status()
    [tunnel] = status["tunnels"]
    assert tunnel["sessions"][0]["auth"] == "pap"


def test_no_common_auth_method_fails_cleanly() -> None:
    wire = make_pair((AuthMethod.MSCHAPV2,), client_methods=(AuthMethod.PAP,))
    bring_up(wire, until=60.0)
    assert not wire.of("lns", SessionUp) and wire.of("lns", SessionDown)
    assert "authentication method" in wire.of("lns", SessionDown)[0].reason


def _with_secrets(server_secret: bytes | None, client_secret: bytes | None) -> Wire:
    import dataclasses

    server = L2tpServer(
        dataclasses.replace(server_config(), tunnel=TunnelSettings(host_name="lns", secret=server_secret)),
        rng=counter_rng(7),
    )
    client_cfg = dataclasses.replace(client_config(), tunnel=TunnelSettings(host_name="c", secret=client_secret))
    wire = Wire(server, {"alice": L2tpClient(client_cfg, "lns", rng=counter_rng(8))})
    bring_up(wire, until=60.0)
    return wire


def test_tunnel_authentication_with_a_shared_secret() -> None:
    wire = _with_secrets(b"tunnel-secret", b"tunnel-secret")
    assert wire.of("alice", SessionUp)


@pytest.mark.parametrize(("server_secret", "client_secret"), [(b"one", b"two"), (b"one", None), (None, b"two")])
def test_tunnel_authentication_failures(server_secret: bytes | None, client_secret: bytes | None) -> None:
    wire = _with_secrets(server_secret, client_secret)
    assert not wire.of("alice", SessionUp)
    downs = wire.of("alice", TunnelDown) + wire.of("lns", TunnelDown)
    assert downs and any("secret" in d.reason or "not authorized" in d.reason for d in downs)
    assert wire.server.tunnels == {}


def test_garbage_never_raises_and_is_counted() -> None:
    wire = make_pair()
    bring_up(wire)
    before = wire.server.counters.malformed
    for junk in (b"", b"\x00", bytes(range(40)), b"\xc8\x02" + bytes(30)):
        wire.server.receive_datagram(junk, "alice", wire.now)
    assert wire.server.counters.malformed > before
    assert len(wire.server.tunnels) == 1


def test_pool_is_released_and_reused() -> None:
    wire = make_pair()
    bring_up(wire)
    wire.clients["alice"].close(wire.now)
    wire.run(wire.now + 60.0)
    wire.clients["alice"].connect(wire.now)
    wire.run(wire.now + 10.0)
    assert [up.address for up in wire.of("alice", SessionUp)] == ["10.99.0.10", "10.99.0.10"]
    pool: Any = wire.server.pool.status()
    assert IPv4Address("10.99.0.10") in [IPv4Address(a) for a in pool["in_use"]]


def _teardown_with_loss(index: int | None) -> tuple[Wire, int]:
    wire = make_pair()
    bring_up(wire)
    start = len(wire.log)
    seen = [0]

    def drop(sender: str, receiver: str, datagram: bytes) -> bool:
        if not is_control(datagram):
            return False
        seen[0] += 1
        return seen[0] - 1 == index

    wire.drop = drop
    wire.clients["alice"].close(wire.now)
    wire.run(wire.now + 120.0)
    return wire, sum(1 for _s, _r, d in wire.log[start:] if is_control(d))


TEARDOWN_CONTROL_COUNT = _teardown_with_loss(None)[1]


@pytest.mark.parametrize("index", range(TEARDOWN_CONTROL_COUNT))
def test_teardown_survives_loss_of_any_single_control_message(index: int) -> None:
    # CDN, StopCCN and their ZLBs: a lost acknowledgement makes the sender retransmit, and the LNS,
    # holding state after StopCCN (RFC 2661 §5.7), acknowledges the repeat.
    wire, _ = _teardown_with_loss(index)
    assert len(wire.of("lns", SessionDown)) == 1 and len(wire.of("lns", TunnelDown)) == 1
    assert wire.server.tunnels == {} and wire.clients["alice"].tunnels == {}
    [client_down] = wire.of("alice", TunnelDown)
    assert "stopped answering" not in client_down.reason


def test_stopccn_sender_leaves_once_acknowledged() -> None:
    wire = make_pair()
    bring_up(wire)
    closed_at = wire.now
    wire.clients["alice"].close(wire.now)
    wire.run(wire.now + 1.0)
    assert wire.clients["alice"].tunnels == {}  # acknowledged at once: no need to wait the hold time
    assert wire.server.tunnels  # the receiver holds state for a retransmission cycle
    wire.run(closed_at + 40.0)
    assert wire.server.tunnels == {}
