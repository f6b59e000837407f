"""L2TP/IPsec service: an LNS and remote users back to back through real data planes (ESP-in-UDP transport SAs).

No sockets: each side's protected output is handed to the other side's data plane, as the wire would, with a
NAT in the middle rewriting the clients' outer address and port. Two users sit behind that one NAT and both
send from inner UDP port 1701: only their SAs tell them apart.
"""

from __future__ import annotations

import hashlib
import itertools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from labctl.gateway.config import TunConfig
from labctl.gateway.ipsec import ipv4
from labctl.gateway.ipsec.dataplane import DataPlane, UdpSend
from labctl.gateway.ipsec.sad import SaParams
from labctl.gateway.ipsec.spd import Policy
from labctl.gateway.l2tp_config import L2tpConfig
from labctl.gateway.l2tp_service import AddressDown, AddressUp, L2tpService

GW = "198.51.100.20"
NAT = "198.51.100.30"
HOST_B = "10.2.0.10"
PASSWORDS = {"alice": "LAB-ONLY-alice", "bob": "LAB-ONLY-bob"}


def _rng(seed: int) -> Callable[[int], bytes]:
    """Deterministic and different per endpoint (equal LCP magic numbers would look like a loop, RFC 1661 §6.4)."""
    state = hashlib.sha256(seed.to_bytes(4, "big")).digest()
    counter = itertools.count()

    def rng(n: int) -> bytes:
        blocks = (hashlib.sha256(state + next(counter).to_bytes(8, "big")).digest() for _ in range(n // 32 + 1))
        return b"".join(blocks)[:n]

    return rng


@dataclass
class Client:
    name: str
    local: str
    nat_port: int
    dp: DataPlane
    service: L2tpService
    tun_in: list[bytes] = field(default_factory=list)
    links: list[object] = field(default_factory=list)
    alive: bool = True


def _key(tag: int) -> bytes:
    return bytes([tag]) * 20  # AES-GCM-128 key + 4-byte salt (RFC 4106 §8.1)


def _sa(spi: int, src: str, dst: str, encap: tuple[int, int]) -> SaParams:
    return SaParams(spi=spi, protocol="esp", mode="transport", src=src, dst=dst, encr="aes128gcm16",
                    encr_key=_key(spi & 0xFF), encap=encap, reqid=1)


class Lab:
    """One LNS, clients behind one NAT, a clock; ``run`` moves packets until nothing is left to move."""

    def __init__(self, users: dict[str, str] | None = None, echo_interval: float = 2.0) -> None:
        self.now = 0.0
        self.echo = echo_interval
        self.lns_dp = DataPlane([Policy("l2tp", f"{GW}/32", "0.0.0.0/0", reqid=1)], rng=_rng(1))
        self.lns = L2tpService(L2tpConfig(
            role="lns", tun=TunConfig("l2tp0"), local_address="10.2.100.1", pool_first="10.2.100.10",
            pool_last="10.2.100.20", dns=("10.2.0.53",), users=users or PASSWORDS, echo_interval=echo_interval,
            echo_failures=3,
        ), GW, 1, self.lns_dp, rng=_rng(2))
        self.clients: dict[str, Client] = {}
        self.lns_tun: list[bytes] = []

    def add_client(self, name: str, local: str, nat_port: int, user: str, password: str) -> Client:
        n = len(self.clients) + 1
        to_client, from_client = 0x1000 + 2 * n, 0x1001 + 2 * n
        self.lns_dp.add_sa(_sa(to_client, GW, NAT, (4500, nat_port)), "out", 0.0)
        self.lns_dp.add_sa(_sa(from_client, NAT, GW, (nat_port, 4500)), "in", 0.0)
        dp = DataPlane([Policy("l2tp", f"{local}/32", f"{GW}/32", reqid=1)], rng=_rng(10 * n))
        dp.add_sa(_sa(from_client, local, GW, (4500, 4500)), "out", 0.0)
        dp.add_sa(_sa(to_client, GW, local, (4500, 4500)), "in", 0.0)
        service = L2tpService(L2tpConfig(
            role="client", tun=TunConfig("ppp0"), server=GW, user=user, password=password,
            routes=("10.2.0.0/24",), echo_interval=self.echo, echo_failures=3,
        ), local, 1, dp, rng=_rng(10 * n + 1))
        client = Client(name, local, nat_port, dp, service)
        self.clients[name] = client
        return client

    def run(self, seconds: float = 0.0, step: float = 0.25) -> None:
        end = self.now + seconds
        while True:
            for _ in range(50):
                if not self._move():
                    break
            services = [self.lns] + [c.service for c in self.clients.values() if c.alive]
            timers = [t for s in services if (t := s.get_timer()) is not None]
            nxt = min(timers, default=end + 1)
            if nxt > end:
                self.now = end
                return
            self.now = max(self.now, min(nxt, end)) if nxt <= end else min(self.now + step, end)
            for s in services:
                t = s.get_timer()
                if t is not None and t <= self.now:
                    s.handle_timer(self.now)

    def _move(self) -> bool:
        moved = False
        for c in self.clients.values():
            if not c.alive:
                c.service.take_outbound()
                continue
            for res in c.service.take_outbound():
                assert isinstance(res, UdpSend) and res.dst == GW and res.dport == 4500
                # The NAT rewrites the outer source to its own address and this client's port.
                plain = self.lns_dp.inbound_udp(res.payload, NAT, c.nat_port, GW, 4500, self.now)
                assert plain is not None, self.lns_dp.counters()
                assert self.lns.take_udp(plain, res.payload, self.now)
                moved = True
            c.tun_in += c.service.take_tun_writes()
            c.links += c.service.take_link_changes()
        for res in self.lns.take_outbound():
            assert isinstance(res, UdpSend) and res.dst == NAT
            target = next(c for c in self.clients.values() if c.nat_port == res.dport)
            if not target.alive:
                continue
            plain = target.dp.inbound_udp(res.payload, GW, 4500, target.local, 4500, self.now)
            assert plain is not None, target.dp.counters()
            assert target.service.take_udp(plain, res.payload, self.now)
            moved = True
        self.lns_tun += self.lns.take_tun_writes()
        return moved


def _ping(src: str, dst: str, ident: int) -> bytes:
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"labctl")
    struct.pack_into("!H", icmp, 2, ipv4.internet_checksum(icmp))
    return ipv4.build_header(socket.inet_aton(src), socket.inet_aton(dst), 1, len(icmp), ident) + bytes(icmp)


def _assigned(c: Client) -> str:
    ups = [link for link in c.links if isinstance(link, AddressUp)]
    assert ups, f"{c.name} got no address: {c.service.status()}"
    return ups[-1].address


def test_two_users_behind_one_nat_with_the_same_inner_port_get_their_own_sessions() -> None:
    lab = Lab()
    alice = lab.add_client("alice", "192.168.1.10", 4500, "alice", PASSWORDS["alice"])
    bob = lab.add_client("bob", "192.168.1.11", 40123, "bob", PASSWORDS["bob"])
    lab.run(3.0)
    a, b = _assigned(alice), _assigned(bob)
    assert a != b and {a, b} <= {f"10.2.100.{i}" for i in range(10, 21)}
    status = lab.lns.status()
    assert sorted(s["user"] for s in status["sessions_up"]) == ["alice", "bob"]
    peers = {s["peer"] for s in status["sessions_up"]}
    assert peers == {f"{NAT}:4500 (udp 1701)", f"{NAT}:40123 (udp 1701)"}
    # Each user's packets reach LAN-B, and LAN-B's answers reach only that user.
    alice.service.from_tun(_ping(a, HOST_B, 1), lab.now)
    bob.service.from_tun(_ping(b, HOST_B, 2), lab.now)
    lab.run()
    assert [socket.inet_ntoa(p[12:16]) for p in lab.lns_tun] == [a, b]
    lab.lns.from_tun(_ping(HOST_B, b, 3), lab.now)
    lab.run()
    assert bob.tun_in and not alice.tun_in
    assert socket.inet_ntoa(bob.tun_in[0][16:20]) == b


def test_client_waits_for_its_sa_and_never_sends_l2tp_in_clear() -> None:
    dp = DataPlane([Policy("l2tp", "192.168.1.10/32", f"{GW}/32", reqid=1)])
    service = L2tpService(L2tpConfig(role="client", tun=TunConfig("ppp0"), server=GW, user="alice",
                                     password="x", routes=("10.2.0.0/24",)), "192.168.1.10", 1, dp)
    for now in (0.0, 0.5, 1.0, 5.0):
        service.handle_timer(now)
    assert service.take_outbound() == []
    assert service.client is not None and service.client.tunnel is None


def test_l2tp_in_clear_is_refused_and_counted() -> None:
    lab = Lab()
    lab.lns.refuse_clear(("198.51.100.66", 1701))
    lab.lns.refuse_clear(("198.51.100.66", 1701))
    assert lab.lns.status()["counters"]["refused_clear"] == 2
    assert lab.lns.server is not None and not lab.lns.server.tunnels
    # A decapsulated packet whose SA is gone (or was never ours) is not processed either.
    alice = lab.add_client("alice", "192.168.1.10", 4500, "alice", PASSWORDS["alice"])
    alice.service.handle_timer(0.0)
    res = alice.service.take_outbound()[0]
    assert isinstance(res, UdpSend)
    plain = lab.lns_dp.inbound_udp(res.payload, NAT, 4500, GW, 4500, 0.0)
    assert plain is not None
    assert lab.lns.take_udp(plain, b"\x00\x00\x99\x99" + res.payload[4:], 0.0)
    assert lab.lns.status()["counters"]["no_sa"] == 1 and not lab.lns.server.tunnels


def test_a_user_cannot_send_from_another_address() -> None:
    lab = Lab()
    alice = lab.add_client("alice", "192.168.1.10", 4500, "alice", PASSWORDS["alice"])
    lab.run(3.0)
    _assigned(alice)
    alice.service.from_tun(_ping("10.2.0.99", HOST_B, 7), lab.now)
    lab.run()
    assert lab.lns_tun == []
    assert lab.lns.status()["counters"]["spoofed"] == 1


def test_wrong_password_is_refused_with_a_clear_message_and_not_retried() -> None:
    lab = Lab()
    mallory = lab.add_client("alice", "192.168.1.10", 4500, "alice", "not-the-password")
    lab.run(20.0)
    status = mallory.service.status()
    assert "alice" in status["last_error"] and "authentication" in status["last_error"].lower()
    assert not [link for link in mallory.links if isinstance(link, AddressUp)]
    assert lab.lns.status()["sessions_up"] == []
    assert mallory.service.client is not None and mallory.service.client.tunnel is None
    assert mallory.service.get_timer() is None  # gives up instead of hammering the LNS


def test_a_killed_client_is_found_by_lcp_echo_and_its_session_cleaned_up() -> None:
    lab = Lab(echo_interval=2.0)
    alice = lab.add_client("alice", "192.168.1.10", 4500, "alice", PASSWORDS["alice"])
    bob = lab.add_client("bob", "192.168.1.11", 40123, "bob", PASSWORDS["bob"])
    lab.run(3.0)
    a = _assigned(alice)
    _assigned(bob)
    alice.alive = False  # kill -9: nothing more from alice, no goodbye
    lab.run(2.0 * 3 + 6.0)
    status = lab.lns.status()
    assert [s["user"] for s in status["sessions_up"]] == ["bob"]
    assert status["counters"]["sessions_echo_timeout"] == 1
    assert lab.lns.server is not None and lab.lns.server.session_for(a) is None
    # Bob is untouched and alice's address went back to the pool.
    assert a not in status["pool"]["in_use"] and len(status["pool"]["in_use"]) == 1


def test_client_gives_back_its_address_when_the_lns_closes() -> None:
    lab = Lab()
    alice = lab.add_client("alice", "192.168.1.10", 4500, "alice", PASSWORDS["alice"])
    lab.run(3.0)
    a = _assigned(alice)
    lab.lns.close(lab.now)
    lab.run(2.0)
    assert AddressDown(a) in alice.links
