"""Labs on the Docker backend, driven through the labctl CLI as a person would (needs a Docker engine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from docker_labtools import CLI, TOPOLOGIES, labctl, leftovers

from labctl.lab.state import LabState

pytestmark = [pytest.mark.docker, pytest.mark.root]

ROUTED = TOPOLOGIES / "routed.yaml"


@pytest.fixture
def cleanup(state_dir: Path, docker_client: Any):  # type: ignore[no-untyped-def]
    """Labs a test brought up are taken down even when the test fails half-way."""
    labs: list[str] = []
    yield labs
    for lab in labs:
        labctl(state_dir, "down", lab)
        from labctl.backends.docker import remove_lab_objects

        remove_lab_objects(docker_client, lab)


def _routed_with_programs(tmp_path: Path) -> Path:
    text = ROUTED.read_text().replace(
        "    gateway: 10.2.0.1\n",
        "    gateway: 10.2.0.1\n    programs:\n      - {name: echo, argv: [labctl-echo, serve, --port, '7']}\n",
    )
    path = tmp_path / "routed-echo.yaml"
    path.write_text(text)
    return path


def _exec(state_dir: Path, lab: str, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return labctl(state_dir, "exec", lab, node, "--", *argv)


def test_routed_lab_up_ping_down(
    state_dir: Path, tmp_path: Path, cleanup: list[str], lab_images: dict[str, str], docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = "t6-routed"
    cleanup.append(lab)
    up = labctl(state_dir, "up", str(_routed_with_programs(tmp_path)), "--backend", "docker", "--name", lab)
    assert up.returncode == 0, up.stderr
    assert "is up on the docker backend" in up.stdout

    status = json.loads(labctl(state_dir, "status", lab, "--json").stdout)
    assert status["backend"] == "docker"
    assert {node["name"]: node["present"] for node in status["nodes"]} == {
        "host-a": True, "router-a": True, "router-b": True, "host-b": True}

    # across both routers, and only through them: the Docker host is on no node's path
    ping = _exec(state_dir, lab, "host-a", "ping", "-c", "2", "-W", "2", "10.2.0.10")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    route = _exec(state_dir, lab, "host-a", "ip", "-4", "route", "show")
    assert route.stdout.splitlines()[0].startswith("default via 10.1.0.1 dev eth0"), route.stdout
    assert ".254" not in route.stdout  # Docker's bridge address is not a next hop
    trace = _exec(state_dir, lab, "host-a", "ip", "route", "get", "10.2.0.10")
    assert "via 10.1.0.1" in trace.stdout

    # interfaces carry the plan's names and addresses; forwarding only on routers
    addrs = _exec(state_dir, lab, "router-b", "ip", "-br", "-4", "addr")
    assert any(line.split()[0].startswith("eth0") and "10.2.0.1/24" in line for line in addrs.stdout.splitlines())
    assert any(line.split()[0].startswith("eth1") and "198.51.100.20/24" in line for line in addrs.stdout.splitlines())
    assert _exec(state_dir, lab, "router-a", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert _exec(state_dir, lab, "host-a", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"

    # the host-b program (TCP/UDP echo) runs, answers across the lab, and logs
    echo = _exec(state_dir, lab, "host-a", "labctl-echo", "send", "10.2.0.10", "7", "--udp", "--message", "t6")
    assert echo.returncode == 0 and echo.stdout.strip() == "t6", echo.stdout + echo.stderr
    assert _exec(state_dir, lab, "host-a", "labctl-echo", "send", "10.2.0.10", "7").returncode == 0
    program = status["nodes"][3]["programs"][0]
    assert program["name"] == "echo" and program["running"] is True
    logs = labctl(state_dir, "logs", lab, "host-b")
    assert "labctl-node: ready" in logs.stdout and "labctl-echo: serving on port 7" in logs.stdout, logs.stdout

    # exit status passes through exec
    assert _exec(state_dir, lab, "router-a", "sh", "-c", "exit 7").returncode == 7

    # capture on the internet segment: plain routing, so the LAN addresses are seen in clear
    from labctl.backends.docker import DockerBackend

    monkeypatch.setenv("LABCTL_STATE_DIR", str(state_dir))
    capture = DockerBackend().start_capture(LabState(lab), "internet", tmp_path / "internet.pcap", bpf_filter="icmp")
    assert _exec(state_dir, lab, "host-a", "ping", "-c", "1", "-W", "2", "10.2.0.10").returncode == 0
    decoded = subprocess.run(["tcpdump", "-n", "-r", str(capture.stop())], capture_output=True, text=True,
                             check=True).stdout
    assert "10.1.0.10 > 10.2.0.10: ICMP echo request" in decoded

    again = labctl(state_dir, "up", "routed", "--backend", "docker", "--name", lab)
    assert again.returncode == 1 and f"lab {lab} is already up" in again.stderr

    pid = program["pid"]
    down = labctl(state_dir, "down", lab)
    assert down.returncode == 0, down.stderr
    assert f"removed container labctl-{lab}-router-a" in down.stdout
    assert f"removed network labctl-{lab}-internet" in down.stdout
    assert leftovers(docker_client, lab, state_dir) == []
    assert not Path(f"/proc/{pid}").exists()


def test_capabilities_are_only_what_a_node_needs(
    state_dir: Path, cleanup: list[str], lab_images: dict[str, str], docker_client: Any
) -> None:
    lab = "t6-caps"
    cleanup.append(lab)
    assert labctl(state_dir, "up", "site-to-site", "--backend", "docker", "--name", lab).returncode == 0
    gateway = docker_client.containers.get(f"labctl-{lab}-gw-a").attrs["HostConfig"]
    host = docker_client.containers.get(f"labctl-{lab}-host-a").attrs["HostConfig"]
    assert gateway["Privileged"] is False and host["Privileged"] is False
    assert gateway["CapDrop"] == ["ALL"] and host["CapDrop"] == ["ALL"]
    assert sorted(gateway["CapAdd"]) == ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"]
    assert sorted(host["CapAdd"]) == ["NET_ADMIN", "NET_RAW"]
    assert [d["PathOnHost"] for d in gateway["Devices"]] == ["/dev/net/tun"]
    assert not host["Devices"]
    for network in ("lan-a", "internet", "lan-b"):
        attrs = docker_client.networks.get(f"labctl-{lab}-{network}").attrs
        assert attrs["Internal"] is True  # lab traffic can never leave the machine
        assert attrs["Labels"]["labctl.lab"] == lab
    # with these capabilities alone the gateway runs: its TUN device is up and the tunnel carries the LANs
    assert labctl(state_dir, "exec", lab, "gw-a", "--", "ip", "link", "show", "ipsec0").returncode == 0
    assert labctl(state_dir, "exec", lab, "gw-a", "--", "ip", "tuntap", "add", "dev", "t6tun", "mode", "tun"
                  ).returncode == 0
    assert labctl(state_dir, "exec", lab, "host-a", "--", "ping", "-c", "1", "-W", "2", "10.2.0.10").returncode == 0
    assert labctl(state_dir, "down", lab).returncode == 0
    assert leftovers(docker_client, lab, state_dir) == []


def test_down_after_docker_kill_of_a_node(
    state_dir: Path, cleanup: list[str], lab_images: dict[str, str], docker_client: Any
) -> None:
    lab = "t6-dkill"
    cleanup.append(lab)
    assert labctl(state_dir, "up", "routed", "--backend", "docker", "--name", lab).returncode == 0
    docker_client.containers.get(f"labctl-{lab}-router-a").kill()
    status = json.loads(labctl(state_dir, "status", lab, "--json").stdout)
    assert {n["name"]: n["present"] for n in status["nodes"]}["router-a"] is False
    gone = labctl(state_dir, "exec", lab, "router-a", "--", "true")
    assert gone.returncode == 1 and "is not running" in gone.stderr
    down = labctl(state_dir, "down", lab)
    assert down.returncode == 0, down.stderr
    assert f"removed container labctl-{lab}-router-a" in down.stdout
    assert leftovers(docker_client, lab, state_dir) == []


def _many_hosts(tmp_path: Path, hosts: int) -> Path:
    lines = ["name: many", "networks:", "  lan: {subnet: 10.66.0.0/24}", "nodes:"]
    for index in range(1, hosts + 1):
        lines += [f"  h{index}:", "    kind: host", "    interfaces:",
                  f"      - {{network: lan, address: 10.66.0.{index}}}"]
    path = tmp_path / "many.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_kill_9_during_up_then_down_leaves_nothing(
    tmp_path: Path, state_dir: Path, cleanup: list[str], lab_images: dict[str, str], docker_client: Any
) -> None:
    lab = "t6-kill"
    cleanup.append(lab)
    env = {**os.environ, "LABCTL_STATE_DIR": str(state_dir)}
    topology = _many_hosts(tmp_path, 12)
    process = subprocess.Popen([*CLI, "up", str(topology), "--backend", "docker", "--name", lab],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = state_dir / lab / "objects.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count("docker-container") >= 4:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert LabState(lab, state_dir).phase == "building", "`up` finished before the kill; the test needs more hosts"
    assert leftovers(docker_client, lab, state_dir) != []

    again = labctl(state_dir, "up", str(topology), "--backend", "docker", "--name", lab)
    assert again.returncode == 1 and "already up" in again.stderr
    down = labctl(state_dir, "down", lab)
    assert down.returncode == 0, down.stderr
    assert f"removed network labctl-{lab}-lan" in down.stdout
    assert leftovers(docker_client, lab, state_dir) == []


def test_overlapping_docker_labs_are_refused_before_building(
    state_dir: Path, cleanup: list[str], lab_images: dict[str, str], docker_client: Any
) -> None:
    cleanup.extend(["t6-first", "t6-second"])
    assert labctl(state_dir, "up", "routed", "--backend", "docker", "--name", "t6-first").returncode == 0
    second = labctl(state_dir, "up", "routed", "--backend", "docker", "--name", "t6-second")
    assert second.returncode == 1
    assert "overlaps the Docker network labctl-t6-first-" in second.stderr
    assert leftovers(docker_client, "t6-second", state_dir) == []
    assert labctl(state_dir, "down", "t6-first").returncode == 0


def test_kill_9_while_gateways_start_then_down_leaves_nothing(
    state_dir: Path, cleanup: list[str], lab_images: dict[str, str], docker_client: Any
) -> None:
    lab = "t6-kill-gw"
    cleanup.append(lab)
    env = {**os.environ, "LABCTL_STATE_DIR": str(state_dir)}
    process = subprocess.Popen([*CLI, "up", "site-to-site", "--backend", "docker", "--name", lab],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = LabState(lab, state_dir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and state.programs():  # the first gateway runs, labctl is still at work
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    pids = [record.pid for record in state.programs()]
    assert pids, "labctl was killed before any gateway started"
    assert leftovers(docker_client, lab, state_dir) != []

    down = labctl(state_dir, "down", lab)
    assert down.returncode == 0, down.stderr
    assert f"removed container labctl-{lab}-gw-a" in down.stdout
    assert leftovers(docker_client, lab, state_dir) == []
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
