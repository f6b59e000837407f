"""Labs on network namespaces, driven through the labctl CLI as a person would (needs root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from netns_labtools import CLI, labctl, leftovers

from labctl.lab.state import LabState

pytestmark = pytest.mark.root

ROUTED = Path(__file__).resolve().parents[2] / "topologies" / "routed.yaml"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def cleanup(state_dir: Path):  # type: ignore[no-untyped-def]
    """Labs a test brought up are taken down even when the test fails half-way."""
    labs: list[str] = []
    yield labs
    for lab in labs:
        labctl(state_dir, "down", lab)


def _routed_with_programs(tmp_path: Path) -> Path:
    text = ROUTED.read_text().replace(
        "    gateway: 10.2.0.1\n",
        "    gateway: 10.2.0.1\n    programs:\n      - {name: sink, argv: [sleep, '31415']}\n",
    ).replace(
        "    gateway: 10.1.0.1\n",
        "    gateway: 10.1.0.1\n    programs:\n      - {name: crash, argv: [sh, -c, 'echo started in $PWD; exit 3']}\n",
    )
    path = tmp_path / "routed-programs.yaml"
    path.write_text(text)
    return path


def _ping(state_dir: Path, lab: str, node: str, address: str) -> subprocess.CompletedProcess[str]:
    return labctl(state_dir, "exec", lab, node, "--", "ping", "-c", "1", "-W", "2", address)


def test_routed_lab_lifecycle(tmp_path: Path, state_dir: Path, cleanup: list[str]) -> None:
    lab = "t2-life"
    cleanup.append(lab)
    result = labctl(state_dir, "up", str(_routed_with_programs(tmp_path)), "--backend", "netns", "--name", lab)
    assert result.returncode == 0, result.stderr
    assert f"lab {lab} is up on the netns backend" in result.stdout
    assert "198.51.100.10/24" in result.stdout

    # host-a reaches host-b through both routers: the reply's TTL (64) was decremented twice.
    ping = _ping(state_dir, lab, "host-a", "10.2.0.10")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "ttl=62" in ping.stdout

    # exec passes the exit status through
    assert labctl(state_dir, "exec", lab, "host-b", "--", "sh", "-c", "exit 7").returncode == 7

    # status shows the nodes and their programs; the crashed one as not running
    time.sleep(0.3)
    status = json.loads(labctl(state_dir, "status", lab, "--json").stdout)
    assert status["phase"] == "up"
    assert [(n["name"], n["present"]) for n in status["nodes"]] == [
        ("host-a", True), ("router-a", True), ("router-b", True), ("host-b", True)]
    programs = {p["name"]: p for n in status["nodes"] for p in n["programs"]}
    assert programs["sink"]["running"] is True
    assert programs["crash"]["running"] is False
    assert "started in " + str(state_dir / lab / "nodes" / "host-a") in Path(programs["crash"]["log"]).read_text()

    # a second `up` of the same lab refuses and builds nothing
    again = labctl(state_dir, "up", "routed", "--backend", "netns", "--name", lab)
    assert again.returncode == 1
    assert f"lab {lab} is already up" in again.stderr

    # a process started by exec, living on in the node, is removed by down too
    stray = labctl(state_dir, "exec", lab, "router-a", "--", "sh", "-c", "sleep 27182 >/dev/null 2>&1 & echo $!")
    pids = [programs["sink"]["pid"], int(stray.stdout)]
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)

    down = labctl(state_dir, "down", lab)
    assert down.returncode == 0, down.stderr
    assert f"removed namespace labctl-{lab}-router-a" in down.stdout
    assert f"removed namespace labctl-{lab}-sw" in down.stdout
    assert "(sink on host-b)" in down.stdout
    assert f"(sleep) in labctl-{lab}-router-a" in down.stdout
    assert leftovers(lab, state_dir, pids) == []

    again = labctl(state_dir, "down", lab)
    assert again.returncode == 0
    assert f"lab {lab} is not up; nothing to remove." in again.stdout


def test_capture_on_a_lab_network(
    state_dir: Path, tmp_path: Path, cleanup: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from labctl.backends.netns import NetnsBackend

    lab = "t2-cap"
    cleanup.append(lab)
    assert labctl(state_dir, "up", "routed", "--backend", "netns", "--name", lab).returncode == 0
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state_dir))
    backend, state = NetnsBackend(), LabState(lab)
    capture = backend.start_capture(state, "internet", tmp_path / "internet.pcap", bpf_filter="icmp")
    assert _ping(state_dir, lab, "host-a", "10.2.0.10").returncode == 0
    pcap = capture.stop()
    decoded = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True, check=True).stdout
    # the internet segment carries the LAN addresses in clear: this lab has no IPsec
    assert "10.1.0.10 > 10.2.0.10: ICMP echo request" in decoded
    assert "10.2.0.10 > 10.1.0.10: ICMP echo reply" in decoded


def test_two_labs_at_once(state_dir: Path, cleanup: list[str]) -> None:
    labs = ["t2-one", "t2-two"]
    cleanup.extend(labs)
    for lab in labs:
        result = labctl(state_dir, "up", "routed", "--backend", "netns", "--name", lab)
        assert result.returncode == 0, result.stderr
    for lab in labs:
        assert _ping(state_dir, lab, "host-a", "10.2.0.10").returncode == 0
    listed = json.loads(labctl(state_dir, "status", "--json").stdout)
    assert [row["lab"] for row in listed] == labs
    assert labctl(state_dir, "down", "t2-one").returncode == 0
    assert leftovers("t2-one", state_dir) == []
    assert _ping(state_dir, "t2-two", "host-b", "10.1.0.10").returncode == 0
    assert labctl(state_dir, "down", "t2-two").returncode == 0
    assert leftovers("t2-two", state_dir) == []


def _big_topology(tmp_path: Path, hosts: int) -> Path:
    lines = ["name: big", "networks:", "  lan: {subnet: 10.5.0.0/24}", "nodes:"]
    for index in range(1, hosts + 1):
        address = f"10.5.0.{index}"
        lines += [f"  h{index}:", "    kind: host", "    interfaces:", f"      - {{network: lan, address: {address}}}"]
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_kill_9_during_up_then_down_leaves_nothing(tmp_path: Path, state_dir: Path, cleanup: list[str]) -> None:
    lab = "t2-kill"
    cleanup.append(lab)
    env = {**os.environ, "LABCTL_STATE_DIR": str(state_dir)}
    process = subprocess.Popen([*CLI, "up", str(_big_topology(tmp_path, 40)), "--backend", "netns", "--name", lab],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = state_dir / lab / "objects.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 20:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = LabState(lab, state_dir)
    assert state.phase == "building", "labctl finished `up` before it could be killed; the test needs a bigger lab"
    assert leftovers(lab, state_dir) != []

    status = json.loads(labctl(state_dir, "status", "--json").stdout)
    assert status == [{"lab": lab, "topology": "big", "backend": "netns", "phase": "building"}]
    again = labctl(state_dir, "up", str(_big_topology(tmp_path, 40)), "--backend", "netns", "--name", lab)
    assert again.returncode == 1
    assert "already up" in again.stderr

    down = labctl(state_dir, "down", lab)
    assert down.returncode == 0, down.stderr
    assert f"removed namespace labctl-{lab}-sw" in down.stdout
    assert leftovers(lab, state_dir) == []
