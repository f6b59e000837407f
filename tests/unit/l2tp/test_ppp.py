"""The PPP link on its own (no L2TP): the RFC 1661 automaton, LCP option handling, loopback detection."""

from __future__ import annotations

from ipaddress import IPv4Address

from labctl.gateway.l2tp.auth_method import AuthMethod
from labctl.gateway.l2tp.ppp import Phase, PppConfig, PppFinished, PppNetworkUp, PppSession
from labctl.gateway.l2tp.ppp_frame import (
    CODE_REJECT,
    CONFIGURE_REJECT,
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
from labctl.gateway.l2tp.ppp_fsm import State

from .harness import counter_rng


def _pair() -> tuple[PppSession, PppSession]:
    server = PppSession(
        authenticator=True,
        config=PppConfig(),
        rng=counter_rng(1),
        auth_methods=(AuthMethod.CHAP_MD5,),
        users={"alice": "pw"},
        allocate=lambda user: IPv4Address("10.1.0.2"),
        local_address=IPv4Address("10.1.0.1"),
    )
    client = PppSession(
        authenticator=False,
        config=PppConfig(),
        rng=counter_rng(2),
        auth_methods=(AuthMethod.CHAP_MD5,),
        user="alice",
        password="pw",
    )
    return server, client


def _shuttle(a: PppSession, b: PppSession, now: float = 0.0) -> None:
    while a.outbox or b.outbox:
        for src, dst in ((a, b), (b, a)):
            frames, src.outbox = src.outbox, []
            for frame in frames:
                dst.receive_frame(frame, now)


def _lcp(session: PppSession) -> list[ControlPacket]:
    packets = []
    for frame in session.outbox:
        protocol, information = pull_frame(frame)
        if protocol == PROTO_LCP:
            packets.append(pull_packet(information))
    session.outbox.clear()
    return packets


def test_direct_bring_up_reaches_network_phase() -> None:
    server, client = _pair()
    server.start(0.0)
    client.start(0.0)
    _shuttle(server, client)
    assert server.phase is client.phase is Phase.NETWORK
    assert [e for e in client.events if isinstance(e, PppNetworkUp)][0].address == IPv4Address("10.1.0.2")
    assert server.lcp.state is State.OPENED and server.ipcp is not None and server.ipcp.state is State.OPENED


def test_unsupported_options_are_rejected_alone() -> None:
    # RFC 1661 §5.4: Configure-Reject lists exactly the options we will not take (here PFC and ACFC).
    server, _client = _pair()
    server.start(0.0)
    server.outbox.clear()
    options = [Option(1, b"\x05\xdc"), Option(7), Option(8), Option(5, b"\x11\x22\x33\x44")]
    request = push_frame(PROTO_LCP, push_packet(ControlPacket(1, 42, push_options(options))))
    server.receive_frame(request, 0.0)
    [reply] = _lcp(server)
    assert (reply.code, reply.identifier) == (CONFIGURE_REJECT, 42)
    assert pull_options(reply.data) == [Option(7), Option(8)]


def test_unknown_lcp_code_gets_code_reject() -> None:
    server, client = _pair()
    server.start(0.0)
    client.start(0.0)
    _shuttle(server, client)
    strange = push_packet(ControlPacket(77, 5, b"abc"))
    server.receive_frame(push_frame(PROTO_LCP, strange), 1.0)
    [reply] = _lcp(server)
    assert reply.code == CODE_REJECT and reply.data == strange  # RFC 1661 §5.6
    assert server.phase is Phase.NETWORK


def test_peer_terminate_request_finishes_the_link() -> None:
    server, client = _pair()
    server.start(0.0)
    client.start(0.0)
    _shuttle(server, client)
    client.close(1.0, "user hung up")
    _shuttle(server, client, 1.0)
    # RFC 1661 §4.1 Opened + RTR: tld, zrc, sta -> Stopping; the zeroed counter expires one restart later.
    assert server.lcp.state is State.STOPPING
    server.handle_timer(1.0 + PppConfig().restart_interval)
    assert server.lcp.state is State.STOPPED and server.phase is Phase.DEAD
    assert any(isinstance(e, PppFinished) for e in server.events)
    assert any(isinstance(e, PppFinished) for e in client.events)


def test_looped_back_link_is_detected() -> None:
    # Every frame comes straight back: our magic number keeps returning (RFC 1661 §6.4).
    _server, client = _pair()
    client.start(0.0)
    now = 0.0
    for _ in range(40):
        frames, client.outbox = client.outbox, []
        for frame in frames:
            client.receive_frame(frame, now)
        if client.phase is Phase.DEAD or client.finished_reason:
            break
        now += 3.0
        client.handle_timer(now)
    assert "looped back" in client.finished_reason


def test_restart_timer_gives_up_after_max_configure() -> None:
    _server, client = _pair()
    client.start(0.0)
    now = 0.0
    requests = 0
    while client.get_timer() is not None and now < 1000:
        requests += len(_lcp(client))
        now = client.get_timer() or now
        client.handle_timer(now)
    assert requests == PppConfig().max_configure  # RFC 1661 §4.6 Max-Configure
    assert client.lcp.state is State.STOPPED
    assert any(isinstance(e, PppFinished) for e in client.events)
