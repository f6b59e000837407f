"""Back-to-back wiring of an LNS and clients in memory, with injected time and optional loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from labctl.gateway.l2tp import (
    AuthMethod,
    ClientConfig,
    Event,
    L2tpClient,
    L2tpServer,
    PppConfig,
    ServerConfig,
    TunnelSettings,
)
from labctl.gateway.l2tp.header import FLAG_TYPE

USERS = {"alice": "alice-secret", "bob": "bob-secret", "User": "clientPass"}
SERVER_ADDRESS = IPv4Address("10.99.0.1")
DNS = (IPv4Address("10.0.2.53"), IPv4Address("10.0.2.54"))

# (sender, receiver, datagram) -> True to lose it.
DropRule = Callable[[str, str, bytes], bool]


def is_control(datagram: bytes) -> bool:
    return bool(datagram[0] << 8 & FLAG_TYPE)


def counter_rng(seed: int = 1) -> Callable[[int], bytes]:
    """Deterministic stand-in for os.urandom, so runs (and message counts) are reproducible."""
    state = [seed]

    def rng(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            state[0] = (state[0] * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            out += (state[0] >> 24).to_bytes(5, "big")
        return bytes(out[:n])

    return rng


def server_config(methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAPV2,), **ppp: float) -> ServerConfig:
    return ServerConfig(
        users=USERS,
        local_address=SERVER_ADDRESS,
        pool_first=IPv4Address("10.99.0.10"),
        pool_last=IPv4Address("10.99.0.20"),
        dns=DNS,
        auth_methods=methods,
        tunnel=TunnelSettings(host_name="lns", hello_interval=60.0),
        ppp=PppConfig(**ppp),  # type: ignore[arg-type]
    )


def client_config(
    user: str = "alice",
    password: str | None = None,
    methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAPV2,),
    **ppp: float,
) -> ClientConfig:
    return ClientConfig(
        user=user,
        password=USERS.get(user, "") if password is None else password,
        auth_methods=methods,
        tunnel=TunnelSettings(host_name=f"client-{user}"),
        ppp=PppConfig(**ppp),  # type: ignore[arg-type]
    )


@dataclass
class Wire:
    """Moves datagrams between the LNS ("lns") and named clients until quiet, advancing time to timers."""

    server: L2tpServer
    clients: dict[str, L2tpClient]
    now: float = 0.0
    drop: DropRule = lambda sender, receiver, datagram: False
    dead: set[str] = field(default_factory=set)  # clients whose datagrams vanish (a killed client)
    log: list[tuple[str, str, bytes]] = field(default_factory=list)
    events: dict[str, list[Event]] = field(default_factory=dict)

    def _drain_events(self) -> None:
        for name, endpoint in [("lns", self.server), *self.clients.items()]:
            while (event := endpoint.next_event()) is not None:
                self.events.setdefault(name, []).append(event)

    def _deliver(self) -> bool:
        moved = False
        for datagram, peer in self.server.datagrams_to_send():
            moved = True
            assert isinstance(peer, str)
            if peer in self.dead or self.drop("lns", peer, datagram):
                continue
            self.log.append(("lns", peer, datagram))
            self.clients[peer].receive_datagram(datagram, "lns", self.now)
        for name, client in self.clients.items():
            for datagram, peer in client.datagrams_to_send():
                moved = True
                assert peer == "lns"
                if name in self.dead or self.drop(name, "lns", datagram):
                    continue
                self.log.append((name, "lns", datagram))
                self.server.receive_datagram(datagram, name, self.now)
        self._drain_events()
        return moved

    def run(self, until: float) -> None:
        """Exchange datagrams and fire timers until ``until`` (simulated seconds)."""
        while True:
            while self._deliver():
                pass
            live = [c for name, c in self.clients.items() if name not in self.dead]
            timers = [t for t in [self.server.get_timer(), *(c.get_timer() for c in live)] if t is not None]
            if not timers or min(timers) > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, min(timers))
            self.server.handle_timer(self.now)
            for name, client in self.clients.items():
                if name not in self.dead:
                    client.handle_timer(self.now)

    def of(self, name: str, kind: type) -> list:
        return [event for event in self.events.get(name, []) if isinstance(event, kind)]


def make_pair(
    methods: tuple[AuthMethod, ...] = (AuthMethod.MSCHAPV2,),
    *,
    names: tuple[str, ...] = ("alice",),
    passwords: dict[str, str] | None = None,
    client_methods: tuple[AuthMethod, ...] | None = None,
    **ppp: float,
) -> Wire:
    server = L2tpServer(server_config(methods, **ppp), rng=counter_rng(7))
    clients = {
        name: L2tpClient(
            client_config(name, (passwords or {}).get(name), client_methods or methods, **ppp),
            "lns",
            rng=counter_rng(11 + i),
        )
        for i, name in enumerate(names)
    }
    return Wire(server, clients)
