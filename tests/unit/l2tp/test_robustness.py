"""Malformed or hostile input never raises out of the cores; it is counted and dropped."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import Wire, make_pair


def _up() -> Wire:
    wire = make_pair()
    wire.clients["alice"].connect(0.0)
    wire.run(5.0)
    return wire


REFERENCE = _up().log  # real datagrams of a whole bring-up, both directions


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(REFERENCE) - 1),
    position=st.integers(0, 200),
    value=st.integers(0, 255),
    cut=st.integers(0, 300),
)
def test_mutated_datagrams_never_raise(index: int, position: int, value: int, cut: int) -> None:
    wire = _up()
    sender, _receiver, datagram = REFERENCE[index]
    mutated = bytearray(datagram)
    if mutated:
        mutated[position % len(mutated)] = value
    mutated = mutated[: max(cut, 1)]
    if sender == "lns":
        wire.clients["alice"].receive_datagram(bytes(mutated), "lns", wire.now)
    else:
        wire.server.receive_datagram(bytes(mutated), "alice", wire.now)
    wire.run(wire.now + 100.0)  # whatever happened, the endpoints keep working through their timers
    wire.server.status()
    wire.clients["alice"].status()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(["alice", "stranger"]))
def test_random_bytes_never_raise(data: bytes, peer: str) -> None:
    wire = _up()
    wire.server.receive_datagram(data, peer, wire.now)
    wire.server.receive_datagram(b"\xc8\x02" + data, peer, wire.now)
    wire.server.receive_datagram(b"\x00\x02" + data, peer, wire.now)
    wire.clients["alice"].receive_datagram(b"\xc8\x02" + data, "lns", wire.now)
    wire.clients["alice"].receive_datagram(b"\x00\x02" + data, "lns", wire.now)
    wire.server.datagrams_to_send()
