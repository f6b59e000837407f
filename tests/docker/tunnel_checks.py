"""End-to-end checks of an IPsec lab that hold on every backend: bring-up, reachability, wire evidence, teardown.

Wire evidence is read with tshark (written by nobody here), from captures taken by the backend on the untrusted
segment. Used by the tunnel tests, which run each check on netns and on Docker.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from labctl.backends import get_backend
from labctl.backends.base import Backend, Capture
from labctl.lab.gateways import wait_established
from labctl.lab.lifecycle import down_lab, up_lab
from labctl.lab.model import Plan
from labctl.lab.state import LabState
from labctl.topology.catalog import resolve_topology
from labctl.topology.load import load_topology

# IKE on UDP 500, and 4500 once NAT-T or forced encapsulation moved it there (RFC 7296 §2.23, RFC 3948 §2).
IKE_PORTS = frozenset({"500", "4500"})
ESP, AH, UDP = "50", "51", "17"
# IGMP membership reports go out when an interface comes up (RFC 3376 §4.2.14): the segment's own chatter.
CAPTURE_FILTER = "ip and not igmp"
ESTABLISH_TIMEOUT = 30.0


@dataclass(frozen=True)
class Tunnel:
    topology: str
    variant: str | None
    source: str
    """The node that sends the test traffic."""
    target: str
    """An address behind (or of) the other tunnel end."""
    reverse_source: str
    reverse_target: str
    end: str
    """The tunnel end on the source's side (its gateway is the one stopped in the fail-closed checks)."""
    peers: frozenset[str]
    """The tunnel ends' addresses on the internet segment (as seen there: behind a NAT, the router's): the only
    ones any packet there may carry."""


SITE_TO_SITE = Tunnel("site-to-site", None, "host-a", "10.2.0.10", "host-b", "10.1.0.10", "gw-a",
                      frozenset({"198.51.100.10", "198.51.100.20"}))
# Transport mode: the hosts' own addresses are the outer ones, so "in clear" shows as a plain ICMP packet.
HOST_TO_HOST = Tunnel("host-to-host", None, "host-a", "203.0.113.20", "host-b", "203.0.113.10", "host-a",
                      frozenset({"203.0.113.10", "203.0.113.20"}))


@dataclass
class Lab:
    name: str
    backend: Backend
    state: LabState
    plan: Plan
    up_seconds: float


@contextmanager
def lab_up(tunnel: Tunnel, backend: str, name: str) -> Iterator[Lab]:
    """The lab, up with its tunnels established; taken down afterwards whatever happened."""
    topology = load_topology(resolve_topology(tunnel.topology), tunnel.variant)
    try:
        result = up_lab(topology, backend=backend, lab=name)
        lab = Lab(name, get_backend(result.backend), LabState(name), result.plan, result.seconds)
        ok, states = wait_established(lab.backend, lab.state, lab.plan, ESTABLISH_TIMEOUT)
        assert ok, f"tunnels of {name} on {backend} not established within {ESTABLISH_TIMEOUT} s: {states}"
        yield lab
    finally:
        down_lab(name)


def ping(lab: Lab, node: str, target: str, count: int = 3) -> bool:
    done = lab.backend.exec(lab.state, node, ["ping", "-c", str(count), "-W", "2", "-i", "0.3", target],
                            capture_output=True, timeout=30)
    return done.returncode == 0


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: str
    ports: frozenset[str]
    protocols: str
    """tshark's protocol stack, e.g. "eth:ethertype:ip:esp"."""


def read_packets(pcap: Path) -> list[Packet]:
    """Every IPv4 packet of the capture as tshark dissects it (outermost header first)."""
    fields = ["ip.src", "ip.dst", "ip.proto", "udp.srcport", "udp.dstport", "frame.protocols"]
    argv = ["tshark", "-n", "-r", str(pcap), "-Y", "ip", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for field in fields:
        argv += ["-e", field]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"tshark could not read {pcap}: {done.stderr}", pytrace=False)
    packets = []
    for line in done.stdout.splitlines():
        src, dst, proto, sport, dport, protocols = (line.split("\t") + [""] * 6)[:6]
        packets.append(Packet(src, dst, proto, frozenset(p for p in (sport, dport) if p), protocols))
    return packets


def _quotes_ipsec(p: Packet) -> bool:
    """An ICMP error (RFC 792) about an IPsec packet: a tunnel end whose gateway is stopped has no socket for
    ESP/AH, so its kernel answers "protocol unreachable" quoting the ESP header, which still hides the payload."""
    quoted = p.protocols.partition(":icmp:ip:")[2]
    return p.proto == "1" and (quoted.startswith(("esp", "ah")) or (quoted.startswith("udp") and bool(
        p.ports & IKE_PORTS)))


def wire_problems(packets: list[Packet], tunnel: Tunnel) -> list[str]:
    """What on the internet segment is not IPsec between the tunnel ends, or shows protected traffic."""
    problems = []
    for p in packets:
        between_peers = p.src != p.dst and {p.src, p.dst} <= tunnel.peers
        ipsec = p.proto in (ESP, AH) or (p.proto == UDP and bool(p.ports & IKE_PORTS)) or _quotes_ipsec(p)
        if not (between_peers and ipsec):
            problems.append(f"not IPsec between the tunnel ends: {p}")
        elif p.proto == ESP and set(p.protocols.partition(":esp")[2].split(":")) & {"ip", "icmp", "tcp", "udp"}:
            # ESP hides its payload (RFC 4303 §1); only AH leaves the inner packet readable (RFC 4302 §1).
            problems.append(f"inner traffic readable: {p}")
    return problems


def capture(lab: Lab, pcap: Path) -> Capture:
    return lab.backend.start_capture(lab.state, "internet", pcap, bpf_filter=CAPTURE_FILTER)


def gateway_running(lab: Lab, node: str) -> bool:
    return any(p.name == "gateway" and p.running for n in lab.backend.status(lab.state).nodes if n.name == node
               for p in n.programs)

