"""Per-packet cost of the data plane alone (no I/O): ``python3 -m benchmarks.micro``.

Two DataPlanes back to back (tunnel mode, one TCP flow of 1400-byte packets), microseconds per packet for
``outbound`` and ``inbound_*`` (the per-packet tier), and for the uniform tier the daemon uses on bulk traffic
(``outbound_uniform`` / ``inbound_udp_uniform`` on runs of 40 equal packets, fastpath.py), best of several rounds
(the minimum is the least disturbed by other load), next to the bare ``cryptography`` call the packet cannot
avoid. Needs no root.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from labctl.gateway.ipsec.dataplane import DataPlane, IpSend, UdpSend
from labctl.gateway.ipsec.sad import SaParams
from labctl.gateway.ipsec.spd import Policy
from labctl.gateway.ipsec.transforms import encr_algorithm, integ_algorithm

GW_A, GW_B = "198.51.100.1", "198.51.100.2"
SUITES = (("aes128gcm16", None), ("aes128", "sha256"), ("chacha20poly1305", None))


def tcp_packet(size: int = 1400) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0x4000, 64, 6, 0, socket.inet_aton("10.1.0.10"),
                         socket.inet_aton("10.2.0.10"))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1000, 0, 0x80, 0x10, 500, 0, 0) + bytes(12)
    return header + tcp + os.urandom(size - len(header) - len(tcp))


def pair(encr: str, integ: str | None, encap: bool) -> tuple[DataPlane, DataPlane]:
    a = DataPlane([Policy("p", "10.1.0.0/16", "10.2.0.0/16")])
    b = DataPlane([Policy("p", "10.2.0.0/16", "10.1.0.0/16")])
    integ_key = os.urandom(integ_algorithm(integ).key_len) if integ else b""
    params = SaParams(0x1001, "esp", "tunnel", GW_A, GW_B, encr, os.urandom(encr_algorithm(encr).keymat_len), integ,
                      integ_key, encap=(4500, 4500) if encap else None)
    a.add_sa(params, "out", 0.0)
    b.add_sa(params, "in", 0.0)
    return a, b


def best(fn: Callable[[], object], n: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e6 * min(times) / n


def measure(encr: str, integ: str | None, encap: bool, n: int, rounds: int) -> tuple[float, float]:
    a, b = pair(encr, integ, encap)
    pkt = tcp_packet()
    out: list[IpSend | UdpSend] = []

    def send() -> None:
        out.clear()
        out.extend(a.outbound(pkt, 1.0) for _ in range(n))  # type: ignore[misc]

    t_out = best(send, n, rounds)
    batches = []
    for _ in range(rounds):
        send()
        batches.append(list(out))
    it = iter(batches)

    def receive() -> None:
        batch = next(it)
        if encap:
            for r in batch:
                b.inbound_udp(r.payload, GW_A, 4500, GW_B, 4500, 1.0)  # type: ignore[union-attr]
        else:
            for r in batch:
                b.inbound_ip(r.packet, 1.0)  # type: ignore[union-attr]

    t_in = best(receive, n, rounds)
    if b.counters()["dropped"]:
        raise SystemExit(f"inbound dropped packets: {b.counters()['drops']}")
    return t_out, t_in


RUN = 40  # packets per uniform run: one TUN drain / one UDP GRO receive in a bulk transfer (daemon.TUN_BATCH)


def measure_uniform(encr: str, n: int, rounds: int) -> tuple[float, float]:
    """Per-packet µs of the uniform tier, ESP in UDP: runs of RUN equal packets (frames with a 10-byte virtio
    header, as read from TUN) sealed into one GSO buffer, and that buffer opened as one GRO receive."""
    a, b = pair(encr, None, True)
    pkt = tcp_packet()
    first = a.outbound(pkt, 1.0)  # the per-packet tier checks the flow against the SPD once, on both sides
    if not isinstance(first, UdpSend) or b.inbound_udp(first.payload, GW_A, 4500, GW_B, 4500, 1.0) is None:
        raise SystemExit("the first packet of the flow did not go through")
    frames = [bytes(10) + pkt] * RUN
    runs = max(1, n // RUN)
    sealed: list[tuple[bytes, int]] = []

    def send() -> None:
        sealed.clear()
        for _ in range(runs):
            got = a.outbound_uniform(frames, 10, 1.0)
            if got is None:
                raise SystemExit("outbound_uniform refused the run")
            sealed.append((got[0], got[1]))

    t_out = best(send, runs * RUN, rounds)
    batches = []
    for _ in range(rounds):
        send()
        batches.append(list(sealed))
    it = iter(batches)

    def receive() -> None:
        for data, size in next(it):
            if b.inbound_udp_uniform(data, size, 1.0) is None:
                raise SystemExit("inbound_udp_uniform refused the run")

    return t_out, best(receive, runs * RUN, rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    ns = p.parse_args()
    gcm = AESGCM(os.urandom(16))
    body = os.urandom(1420)

    def bare() -> None:
        for _ in range(ns.packets):
            gcm.encrypt(b"n" * 12, body, b"aad45678")

    c_call = best(bare, ns.packets, ns.rounds)
    print(f"bare AESGCM.encrypt, 1420 bytes: {c_call:.2f} µs")
    for encr, integ in SUITES:
        for encap in (True, False):
            t_out, t_in = measure(encr, integ, encap, ns.packets, ns.rounds)
            name = f"{encr}{'+' + integ if integ else ''} {'udp' if encap else 'raw'}"
            print(f"{name:<28} outbound {t_out:5.2f} µs   inbound {t_in:5.2f} µs")
    for encr, integ in SUITES:
        if integ is None:
            t_out, t_in = measure_uniform(encr, ns.packets, ns.rounds)
            print(f"{encr + ' udp, uniform x' + str(RUN):<28} outbound {t_out:5.2f} µs   inbound {t_in:5.2f} µs")


if __name__ == "__main__":
    main()
