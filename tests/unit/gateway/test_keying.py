"""The keying layer between configuration, IKE engines and the data plane."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from labctl.gateway.config import parse_config
from labctl.gateway.ike_adapter import Driver
from labctl.gateway.keying import Keying


def ike_config() -> dict[str, Any]:
    return {
        "name": "gw", "state_dir": "/tmp/unused", "local": "198.51.100.10",
        "connections": [{
            "name": "c", "version": 2, "local": "198.51.100.10", "remote": "198.51.100.20",
            "auth": {"method": "psk", "psk": "x"},
            "children": [{"name": "c", "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"]}],
        }],
    }


@dataclass(frozen=True)
class PeerDead:  # shaped like an engine event, but missing the `reason` the adapter reads
    conn: str


class BrokenEngine:
    def __init__(self) -> None:
        self.events: list[Any] = [PeerDead("c")]

    def next_event(self) -> Any:
        return self.events.pop() if self.events else None

    def receive_datagram(self, *args: Any) -> None:
        raise RuntimeError("engine bug")

    def handle_timer(self, now: float) -> None:
        raise RuntimeError("engine bug")

    def get_timer(self) -> float:
        return 0.0


def test_engine_bugs_are_counted_not_fatal() -> None:
    k = Keying(parse_config(ike_config()))
    k.engines[2] = Driver(BrokenEngine(), 2)
    k.process_events(1.0)
    k.receive_ike(b"\x00" * 17 + b"\x20" + b"\x00" * 10, ("198.51.100.20", 500), ("198.51.100.10", 500), 1.0)
    k.handle_timers(1.0)
    assert k.internal_errors == 3


def test_policies_fail_closed_before_any_sa() -> None:
    k = Keying(parse_config(ike_config()))
    assert k.tunnel_prefixes() == ["10.2.0.0/24"]
    [policy] = k.dataplane.policies
    assert policy.action == "protect" and policy.local == "10.1.0.0/24" and policy.remote == "10.2.0.0/24"


def test_the_daemon_gives_both_ike_engines_the_real_wall_clock() -> None:
    # The IKE cores never read a clock; the adapter hands them calendar time for certificate validity.
    cfg = ike_config()
    v1 = {**cfg["connections"][0], "name": "c1", "version": 1, "proposals": ["aes128-sha256-modp2048"]}
    v1["children"] = [{**v1["children"][0], "name": "c1", "proposals": ["aes128-sha256"]}]
    cfg["connections"].append(v1)
    k = Keying(parse_config(cfg))
    k.start(0.0)
    before = dt.datetime.now(dt.UTC)
    v2_time = k.engines[2].engine.wall_clock()
    v1_time = k.engines[1].engine._wall_clock()
    for t in (v2_time, v1_time):
        assert t.utcoffset() == dt.timedelta(0)
        assert abs((t - before).total_seconds()) < 60
