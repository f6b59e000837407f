"""Two IKEv2 engines back to back in memory, with injected time, loss and reordering."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from labctl.gateway.ike.certs import WallClock
from labctl.gateway.ike.v2.config import ChildConfig, ConnectionConfig
from labctl.gateway.ike.v2.engine import Ikev2Engine
from labctl.gateway.ike.v2.events import Event

from .x509_factory import AT_NOW

A_ADDR = "192.0.2.1"
B_ADDR = "192.0.2.2"


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def conn_pair(**kw: object) -> tuple[ConnectionConfig, ConnectionConfig]:
    child_kw = {k[6:]: v for k, v in kw.items() if k.startswith("child_")}
    a_child_kw = {k[8:]: v for k, v in kw.items() if k.startswith("a_child_")}
    b_child_kw = {k[8:]: v for k, v in kw.items() if k.startswith("b_child_")}
    common = {k: v for k, v in kw.items() if not k.startswith(("child_", "a_", "b_"))}
    a_only = {k[2:]: v for k, v in kw.items() if k.startswith("a_") and not k.startswith("a_child_")}
    b_only = {k[2:]: v for k, v in kw.items() if k.startswith("b_") and not k.startswith("b_child_")}
    ca = ChildConfig("net", **{"local_ts": ("10.1.0.0/16",), "remote_ts": ("10.2.0.0/16",), **child_kw,
                               **a_child_kw})  # type: ignore[arg-type]
    cb = ChildConfig("net", **{"local_ts": ("10.2.0.0/16",), "remote_ts": ("10.1.0.0/16",), **child_kw,
                               **b_child_kw})  # type: ignore[arg-type]
    base_a = {"name": "s2s", "local_addrs": (A_ADDR,), "remote_addrs": (B_ADDR,), "local_id": "a.example",
              "remote_id": "b.example", "psk": b"sesame-open-up-0123456789", "children": (ca,)}
    base_b = {"name": "s2s", "local_addrs": (B_ADDR,), "remote_addrs": (A_ADDR,), "local_id": "b.example",
              "remote_id": "a.example", "psk": b"sesame-open-up-0123456789", "children": (cb,)}
    a = ConnectionConfig(**{**base_a, **common, **a_only})  # type: ignore[arg-type]
    b = ConnectionConfig(**{**base_b, **common, **b_only})  # type: ignore[arg-type]
    return a, b


@dataclass
class Pair:
    a: Ikev2Engine
    b: Ikev2Engine
    now: float = 1000.0
    events_a: list[Event] = field(default_factory=list)
    events_b: list[Event] = field(default_factory=list)
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    count: int = 0  # datagrams moved so far; the index handed to drop()

    def drain_events(self) -> None:
        for eng, sink in ((self.a, self.events_a), (self.b, self.events_b)):
            while (ev := eng.next_event()) is not None:
                sink.append(ev)

    def collect(self) -> list[tuple[str, bytes, tuple[str, int], tuple[str, int]]]:
        out = []
        for name, eng in (("a", self.a), ("b", self.b)):
            for data, src, dst in eng.datagrams_to_send(self.now):
                out.append((name, data, src, dst))
                self.sent.append((name, data))
        return out

    def deliver(self, item: tuple[str, bytes, tuple[str, int], tuple[str, int]]) -> None:
        name, data, src, dst = item
        target = self.b if name == "a" else self.a
        target.receive_datagram(data, src, dst, self.now)

    def transfer(self, drop: Callable[[int, str, bytes], bool] | None = None, max_rounds: int = 50,
                 reorder: bool = False) -> int:
        """Move datagrams until both are quiet; ``drop(index, sender, data)`` loses chosen ones."""
        start = self.count
        for _ in range(max_rounds):
            batch = self.collect()
            if not batch:
                break
            if reorder:
                batch.reverse()
            for item in batch:
                if drop is None or not drop(self.count, item[0], item[1]):
                    self.deliver(item)
                self.count += 1
        self.drain_events()
        return self.count - start

    def advance(self, seconds: float, drop: Callable[[int, str, bytes], bool] | None = None) -> None:
        """Let time pass in timer steps, exchanging messages as the engines produce them."""
        end = self.now + seconds
        for _ in range(10000):
            self.transfer(drop)
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            nxt = min(timers) if timers else None
            if nxt is None or nxt > end:
                self.now = end
                self.a.handle_timer(self.now)
                self.b.handle_timer(self.now)
                self.transfer(drop)
                return
            self.now = max(self.now, nxt)
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
        raise AssertionError("timers do not make progress")


def make_pair(seed: int = 1, wall_clock: WallClock | None = AT_NOW, **kw: object) -> Pair:
    """``wall_clock``: both engines' calendar time for certificate validity (default x509_factory.NOW)."""
    ca, cb = conn_pair(**kw)
    return Pair(Ikev2Engine([ca], rng=seeded_rng(seed), wall_clock=wall_clock),
                Ikev2Engine([cb], rng=seeded_rng(seed + 1000), wall_clock=wall_clock))
