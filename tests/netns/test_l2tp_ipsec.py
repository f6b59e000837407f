"""The l2tp-ipsec lab on network namespaces (needs root): road warriors reach LAN-B over L2TP/IPsec.

Three users dial in (one on the internet, two behind one masquerading router, both sending L2TP from port
1701). Checked from outside the gateways: pings to host-b, what crosses the internet segment (only IKE and ESP),
L2TP sent in clear (refused and counted), a killed client (LCP echo ends its session) and a wrong password.
The checks are shared with the Docker test (tests/docker/test_l2tp_docker.py) through `L2tpLab`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labctl.backends.base import Backend
from labctl.gateway.l2tp import ClientConfig, L2tpClient
from labctl.lab.gateways import query
from labctl.lab.lifecycle import backend_of, down_lab, up_lab
from labctl.lab.model import Plan
from labctl.lab.state import LabState
from labctl.topology.load import load_topology

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "l2tp-ipsec.yaml"
CLIENTS = {"road-1": "alice", "road-2": "bob", "road-3": "carol"}
HOST_B = "10.2.0.10"
ECHO_INTERVAL = 2.0  # LCP echo in the tests: a dead client is found within about 3 intervals

# Sends an L2TP SCCRQ in clear, three times, from port 1701 (the nodes need only python3, not labctl).
CLEAR_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 1701))
for _ in range(3):
    s.sendto(bytes.fromhex(sys.argv[1]), ("198.51.100.20", 1701))
"""


def sccrq() -> bytes:
    """An SCCRQ as a client sends it first, built by our client core (so it is well formed)."""
    client = L2tpClient(ClientConfig(user="mallory", password="x"), "lns")
    client.connect(0.0)
    return client.datagrams_to_send()[0][0]


@dataclass
class L2tpLab:
    backend: Backend
    state: LabState
    plan: Plan

    def status(self, node: str) -> dict[str, Any]:
        gateway: dict[str, Any] = query(self.backend, self.state, node)["gateway"]
        return gateway

    def l2tp(self, node: str) -> dict[str, Any]:
        l2tp: dict[str, Any] = self.status(node)["l2tp"]
        return l2tp

    def users_up(self) -> set[str]:
        return {s["user"] for s in self.l2tp("gw")["sessions_up"]}

    def wait(self, what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ok():
                    return
            except (KeyError, OSError):
                pass  # the gateways are still starting (no control socket or no answer yet)
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:g}s; LNS: {json.dumps(self.l2tp('gw'))[:3000]}")
            time.sleep(0.25)

    def ping(self, node: str, address: str = HOST_B, count: int = 2) -> bool:
        res = self.backend.exec(self.state, node, ["ping", "-c", str(count), "-W", "2", "-i", "0.3", address],
                                capture_output=True, timeout=30)
        return res.returncode == 0

    def capture(self, network: str, path: Path, action: Callable[[], object]) -> Path:
        cap = self.backend.start_capture(self.state, network, path)
        try:
            action()
            time.sleep(0.5)
        finally:
            pcap = cap.stop()
        return pcap


@contextmanager
def bring_up(backend: str, lab: str, variant: str | None = None) -> Iterator[L2tpLab]:
    topology = load_topology(TOPOLOGY, variant, [("l2tp.echo_interval", ECHO_INTERVAL)])
    result = up_lab(topology, backend=backend, lab=lab)
    try:
        state = LabState(result.plan.lab)
        yield L2tpLab(backend_of(state), state, result.plan)
    finally:
        down_lab(lab)


def decode(pcap: Path, display_filter: str = "") -> list[str]:
    argv = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.protocols", "-e", "ip.src", "-e",
            "ip.dst", "-e", "udp.srcport", "-e", "udp.dstport"]
    if display_filter:
        argv += ["-Y", display_filter]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    return [line for line in out.stdout.splitlines() if line.strip()]


def check_everyone_reaches_lan_b(lab: L2tpLab, tmp: Path) -> None:
    """Each user: a session with its own pool address, pings to host-b, and nothing but IKE/ESP on the wire."""
    lab.wait("all three users up", lambda: lab.users_up() == set(CLIENTS.values()))
    sessions = lab.l2tp("gw")["sessions_up"]
    addresses = {s["user"]: s["address"] for s in sessions}
    assert len(set(addresses.values())) == 3 and all(a.startswith("10.2.100.") for a in addresses.values())
    # road-2 and road-3 share the NAT's address: their peers differ only by the outer UDP port.
    natted = sorted(s["peer"] for s in sessions if s["peer"].startswith("198.51.100.30:"))
    assert len(natted) == 2 and natted[0] != natted[1], sessions
    for node, user in CLIENTS.items():
        client = lab.l2tp(node)
        assert client["user"] == user and client["address"] == addresses[user], client
        assert client["sessions_up"] and client["last_error"] == ""

    def pings() -> None:
        for node in CLIENTS:
            assert lab.ping(node), f"{node} cannot reach host-b through L2TP/IPsec"

    internet = lab.capture("internet", tmp / "internet.pcap", pings)
    home = lab.capture("home", tmp / "home.pcap", lambda: lab.ping("road-2"))
    for pcap in (internet, home):
        frames = decode(pcap, "ip")
        assert frames, f"nothing captured in {pcap}"
        # RFC 3193 §4: L2TP (and the PPP inside it) must never be seen in clear; only IKE and ESP.
        clear = decode(pcap, "ip and not (udp.port == 500 or udp.port == 4500 or esp or isakmp)")
        assert clear == [], f"{pcap.name}: not IKE/ESP: {clear[:5]}"
        assert not decode(pcap, "l2tp or ppp or icmp")
        assert decode(pcap, "esp"), f"{pcap.name}: no ESP seen"


def check_clear_l2tp_is_refused(lab: L2tpLab, tmp: Path) -> None:
    """L2TP sent to the LNS outside IPsec is counted and dropped: no answer, no tunnel, no ICMP."""
    before = lab.l2tp("gw")
    refused = before["counters"].get("refused_clear", 0)

    def attack() -> None:
        res = lab.backend.exec(lab.state, "home-router", ["python3", "-c", CLEAR_SENDER, sccrq().hex()],
                               capture_output=True, timeout=30)
        assert res.returncode == 0, res.stderr

    pcap = lab.capture("internet", tmp / "clear.pcap", attack)
    assert len(decode(pcap, "l2tp and ip.src == 198.51.100.30")) == 3, "the clear SCCRQs did not go out"
    assert decode(pcap, "ip.src == 198.51.100.20 and not (esp or udp.port == 500 or udp.port == 4500)") == []
    after = lab.l2tp("gw")
    assert after["counters"].get("refused_clear", 0) == refused + 3
    assert len(after["tunnels"]) == len(before["tunnels"])
    assert "mallory" not in str(after)


def check_killed_client_is_cleaned_up(lab: L2tpLab) -> None:
    """kill -9 road-3's gateway: no goodbye; LCP echo on the LNS must notice and clean up (RFC 1661 §5.8)."""
    carol = next(s["address"] for s in lab.l2tp("gw")["sessions_up"] if s["user"] == "carol")
    record = next(r for r in lab.state.programs("road-3") if r.name == "gateway")
    os.kill(record.pid, signal.SIGKILL)
    lab.wait("carol's session ended by LCP echo", lambda: lab.users_up() == {"alice", "bob"},
             timeout=ECHO_INTERVAL * 3 + 15)
    lns = lab.l2tp("gw")
    assert lns["counters"].get("sessions_echo_timeout") == 1
    assert carol not in lns["pool"]["in_use"]
    assert all(s["user"] != "carol" for t in lns["tunnels"] for s in t["sessions"])
    for node in ("road-1", "road-2"):
        assert lab.ping(node), f"{node} lost LAN-B after road-3 died"
    assert not lab.ping("road-3", count=1)


def test_l2tp_ipsec_lab_on_netns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_STATE_DIR", str(tmp_path / "state"))
    with bring_up("netns", "t8-l2tp") as lab:
        check_everyone_reaches_lan_b(lab, tmp_path)
        check_clear_l2tp_is_refused(lab, tmp_path)
        check_killed_client_is_cleaned_up(lab)


def test_wrong_password_is_refused_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_STATE_DIR", str(tmp_path / "state"))
    with bring_up("netns", "t8-l2tp-pw", variant="wrong-password") as lab:
        lab.wait("bob and carol up", lambda: {"bob", "carol"} <= lab.users_up())
        lab.wait("alice refused", lambda: bool(lab.l2tp("road-1")["last_error"]))
        message = lab.l2tp("road-1")["last_error"]
        assert "alice" in message and "authentication" in message.lower(), message
        assert "alice" not in lab.users_up()
        assert lab.l2tp("road-1")["sessions_up"] == []
        assert not lab.ping("road-1", count=1)
        assert lab.ping("road-2")


pytestmark = pytest.mark.root
