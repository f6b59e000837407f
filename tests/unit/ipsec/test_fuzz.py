"""Property tests: random and mutated bytes on every inbound path never raise and never get through."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.gateway.ipsec.dataplane import DataPlane, IpSend, UdpSend

from .lab import GW_A, GW_B, HOST_A, HOST_B, gateway_pair

_PING = bytes.fromhex("4500001c00010000400100000a0100050a020007") + bytes.fromhex("0800f7ff00000000")

CONFIGS = {
    "esp-gcm": (("esp",), "tunnel", "aes128gcm16", None, False),
    "esp-cbc": (("esp",), "transport", "aes128", "sha1", False),
    "ah": (("ah",), "tunnel", None, None, False),
    "bundle": (("esp", "ah"), "transport", "aes256ctr", "sha256", False),
    "natt": (("esp",), "tunnel", "chacha20poly1305", None, True),
}
# Header bytes AH leaves out of the ICV (RFC 4302 §3.3.3.1.1.1): TOS, flags/fragment offset, TTL, checksum.
AH_MUTABLE = {1, 6, 7, 8, 10, 11}


def fresh_pair(name: str) -> tuple[DataPlane, DataPlane]:
    protocols, mode, encr, integ, encap = CONFIGS[name]
    return gateway_pair(protocols, mode, encr=encr, integ=integ, encap=encap)


def receive(b: DataPlane, name: str, packet: bytes) -> bytes | None:
    if name == "natt":
        return b.inbound_udp(packet, GW_A, 4500, GW_B, 4500, 1.0)
    return b.inbound_ip(packet, 1.0)


GATEWAYS = {name: fresh_pair(name) for name in CONFIGS}
SAMPLES: dict[str, bytes] = {}
for _name, (_a, _b) in GATEWAYS.items():
    _src, _dst = (HOST_A, HOST_B) if _name in ("esp-gcm", "ah", "natt") else (GW_A, GW_B)
    _packet = bytearray(_PING)
    _packet[12:20] = bytes(map(int, _src.split("."))) + bytes(map(int, _dst.split(".")))
    _out = _a.outbound(bytes(_packet), 0.5)
    assert isinstance(_out, IpSend | UdpSend), _out
    SAMPLES[_name] = _out.packet if isinstance(_out, IpSend) else _out.payload


def no_internal_errors(dp: DataPlane) -> None:
    drops = dp.counters()["drops"]
    assert isinstance(drops, dict) and drops.get("internal_error", 0) == 0, drops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(GATEWAYS)), st.binary(max_size=200))
def test_random_bytes(name: str, data: bytes) -> None:
    _, b = GATEWAYS[name]
    assert b.inbound_ip(data, 1.0) is None
    assert b.inbound_udp(data, GW_A, 4500, GW_B, 4500, 1.0) is None
    no_internal_errors(b)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 400),
)
def test_mutated_packets(name: str, flips: list[tuple[int, int]], cut: int) -> None:
    _, b = fresh_pair(name)  # a fresh receiver: the replay window must not hide what the ICV should catch
    original = SAMPLES[name]
    packet = bytearray(original)
    for pos, value in flips:
        if pos < len(packet):
            packet[pos] = value
    changed = [i for i in range(len(packet)) if packet[i] != original[i]]
    protected_change = any(
        name == "natt" or i >= 20 or (name in ("ah", "bundle") and i not in AH_MUTABLE) for i in changed
    )
    if cut and cut < len(packet):
        del packet[cut:]
        protected_change = True
    got = receive(b, name, bytes(packet))
    if protected_change:
        assert got is None
    no_internal_errors(b)


def test_unmodified_samples_are_accepted() -> None:
    for name, sample in SAMPLES.items():
        _, b = fresh_pair(name)
        assert receive(b, name, sample) is not None, (name, b.counters())


def test_outbound_never_raises_on_garbage() -> None:
    a, _ = GATEWAYS["esp-gcm"]
    for data in (b"", b"\x45", bytes(19), b"\x46" + bytes(19), b"\x45" + bytes(60), b"\x60" + bytes(40)):
        a.outbound(data, 1.0)
