"""IPsec labs end to end, the same checks on every backend (netns and Docker): the tunnel carries the traffic,
only IKE/ESP cross the internet segment, a stopped or crashed gateway fails closed, and `down` leaves nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_labtools import TOPOLOGIES, labctl, leftovers
from tunnel_checks import (
    ESP,
    HOST_TO_HOST,
    SITE_TO_SITE,
    Lab,
    Tunnel,
    capture,
    gateway_running,
    lab_up,
    ping,
    read_packets,
    wire_problems,
)

from labctl.backends.docker_spec import container_name
from labctl.lab.gateways import wait_established
from labctl.lab.naming import lab_tag

BACKENDS = [
    pytest.param("netns", marks=pytest.mark.root, id="netns"),
    pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.root], id="docker"),
]


@pytest.fixture
def backend(request: pytest.FixtureRequest, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The backend under test, with the lab state in this test's own directory (and images for Docker)."""
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state_dir))
    name: str = request.param
    if name == "docker":
        request.getfixturevalue("lab_images")
    return name


def left_behind(backend: str, lab: str, state_dir: Path) -> list[str]:
    if backend == "docker":
        from docker_labtools import engine

        return leftovers(engine(), lab, state_dir)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found = [f"namespace {line.split()[0]}" for line in namespaces.splitlines()
             if line.split() and line.split()[0].startswith(f"labctl-{lab}-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [f"host link {line.split(':')[1].strip()}" for line in links.splitlines() if lab_tag(lab) in line]
    if (state_dir / lab).exists():
        found.append(f"state directory {state_dir / lab}")
    return found


def esp_both_ways(packets: list[Any], tunnel: Tunnel) -> bool:
    directions = {(p.src, p.dst) for p in packets if p.proto == ESP}
    a, b = sorted(tunnel.peers)
    return {(a, b), (b, a)} <= directions


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("tunnel", [SITE_TO_SITE, HOST_TO_HOST], ids=["tunnel-mode", "transport-mode"])
def test_tunnel_carries_traffic_and_fails_closed(
    backend: str, tunnel: Tunnel, tmp_path: Path, state_dir: Path
) -> None:
    lab_name = f"t6-e2e-{backend[:2]}-{tunnel.topology[:4]}"
    with lab_up(tunnel, backend, lab_name) as lab:
        # reachability, and on the wire only IKE/ESP between the tunnel ends
        cap = capture(lab, tmp_path / "up.pcap")
        assert ping(lab, tunnel.source, tunnel.target), f"{tunnel.source} cannot reach {tunnel.target}"
        assert ping(lab, tunnel.reverse_source, tunnel.reverse_target)
        packets = read_packets(cap.stop())
        assert esp_both_ways(packets, tunnel), packets
        assert wire_problems(packets, tunnel) == []

        # fail closed: with one end's gateway stopped nothing gets through, and nothing crosses in clear
        assert lab.backend.stop_program(lab.state, tunnel.end, "gateway") is True
        assert not gateway_running(lab, tunnel.end)
        cap = capture(lab, tmp_path / "stopped.pcap")
        assert not ping(lab, tunnel.source, tunnel.target, count=2)
        assert not ping(lab, tunnel.reverse_source, tunnel.reverse_target, count=2)
        stopped = read_packets(cap.stop())
        assert wire_problems(stopped, tunnel) == []

        # and it comes back when the gateway is started again
        program = next(p for p in lab.plan.node(tunnel.end).programs if p.name == "gateway")
        lab.backend.start_program(lab.state, tunnel.end, program)
        ok, states = wait_established(lab.backend, lab.state, lab.plan, 30)
        assert ok, states
        assert ping(lab, tunnel.source, tunnel.target)
    assert left_behind(backend, lab_name, state_dir) == []


def _crash_gateway(lab: Lab, backend: str, node: str) -> None:
    """Kill a tunnel end without letting it clean up: `docker kill` of its container, or SIGKILL on netns."""
    if backend == "docker":
        from docker_labtools import engine

        engine().containers.get(container_name(lab.name, node)).kill()
        return
    pid = next(r.pid for r in lab.state.programs(node) if r.name == "gateway")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while gateway_running(lab, node) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_crashed_gateway_fails_closed_and_down_removes_everything(
    backend: str, tmp_path: Path, state_dir: Path
) -> None:
    tunnel = SITE_TO_SITE
    lab_name = f"t6-crash-{backend[:2]}"
    with lab_up(tunnel, backend, lab_name) as lab:
        assert ping(lab, tunnel.source, tunnel.target)
        _crash_gateway(lab, backend, "gw-a")
        cap = capture(lab, tmp_path / "crashed.pcap")
        # host-b's side still has its SA: its traffic leaves as ESP towards the dead end, never in clear
        assert not ping(lab, tunnel.reverse_source, tunnel.reverse_target, count=2)
        if backend == "netns":  # on Docker, gw-a's node is gone and host-a has no way out at all
            assert not ping(lab, tunnel.source, tunnel.target, count=2)
        packets = read_packets(cap.stop())
        assert any(p.proto == ESP and p.src == "198.51.100.20" for p in packets), packets
        assert wire_problems(packets, tunnel) == []

        status = json.loads(labctl(state_dir, "status", lab_name, "--json").stdout)
        gw_a = next(n for n in status["nodes"] if n["name"] == "gw-a")
        assert gw_a["programs"][0]["running"] is False
        assert gw_a["present"] is (backend == "netns")
        down = labctl(state_dir, "down", lab_name)
        assert down.returncode == 0, down.stderr
        if backend == "docker":
            assert f"removed container labctl-{lab_name}-gw-a" in down.stdout
        assert left_behind(backend, lab_name, state_dir) == []


def test_wire_check_flags_what_is_not_ipsec_between_the_ends() -> None:
    from tunnel_checks import Packet

    peers = sorted(SITE_TO_SITE.peers)
    esp = Packet(peers[0], peers[1], ESP, frozenset(), "eth:ethertype:ip:esp")
    ike = Packet(peers[1], peers[0], "17", frozenset({"500"}), "eth:ethertype:ip:udp:isakmp")
    unreachable = Packet(peers[0], peers[1], "1", frozenset(), "eth:ethertype:ip:icmp:ip:esp")
    assert wire_problems([esp, ike, unreachable], SITE_TO_SITE) == []
    clear = Packet("10.1.0.10", "10.2.0.10", "1", frozenset(), "eth:ethertype:ip:icmp:data")
    ping_between_ends = Packet(peers[0], peers[1], "1", frozenset(), "eth:ethertype:ip:icmp:data")
    readable = Packet(peers[0], peers[1], ESP, frozenset(), "eth:ethertype:ip:esp:ip:icmp:data")
    other_udp = Packet(peers[0], peers[1], "17", frozenset({"1701"}), "eth:ethertype:ip:udp:l2tp")
    third = Packet(peers[0], "198.51.100.99", ESP, frozenset(), "eth:ethertype:ip:esp")
    for bad in (clear, ping_between_ends, readable, other_udp, third):
        assert len(wire_problems([esp, bad], SITE_TO_SITE)) == 1, bad


SITE_TO_SITE_VARIANTS = sorted(yaml.safe_load((TOPOLOGIES / "site-to-site.yaml").read_text())["variants"])


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize("variant", SITE_TO_SITE_VARIANTS)
def test_every_site_to_site_variant_on_docker(
    variant: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch, lab_images: dict[str, str]
) -> None:
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state_dir))
    lab_name = f"t6-var-{SITE_TO_SITE_VARIANTS.index(variant):02d}"
    with lab_up(replace(SITE_TO_SITE, variant=variant), "docker", lab_name) as lab:
        assert ping(lab, SITE_TO_SITE.source, SITE_TO_SITE.target)
    assert left_behind("docker", lab_name, state_dir) == []


# Remote access: three road warriors (road-2 and road-3 behind one NAT router, 198.51.100.30) dial into gw.
L2TP_IPSEC = Tunnel("l2tp-ipsec", None, "road-1", "10.2.0.10", "road-2", "10.2.0.10", "gw",
                    frozenset({"198.51.100.20", "198.51.100.30", "198.51.100.31"}))


@pytest.mark.docker
@pytest.mark.root
def test_l2tp_ipsec_on_docker(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch, lab_images: dict[str, str]
) -> None:
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state_dir))
    with lab_up(L2TP_IPSEC, "docker", "t6-l2tp") as lab:
        cap = capture(lab, tmp_path / "l2tp.pcap")
        for road in ("road-1", "road-2", "road-3"):
            assert ping(lab, road, "10.2.0.10"), f"{road} cannot reach host-b over L2TP/IPsec"
        packets = read_packets(cap.stop())
        # L2TP (UDP 1701) only inside ESP: nothing of it crosses the internet segment in clear (RFC 3193 §4)
        assert wire_problems(packets, L2TP_IPSEC) == []
        assert not [p for p in packets if "1701" in p.ports or ":l2tp" in p.protocols]
        assert {p.src for p in packets if p.proto == ESP or "4500" in p.ports} >= L2TP_IPSEC.peers
    assert left_behind("docker", "t6-l2tp", state_dir) == []
