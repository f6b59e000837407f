"""Compose files: the shipped ones are up to date, and one brought up by the compose tool is a working lab."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker_labtools import REPO, TOPOLOGIES, labctl, leftovers, wait_ready

from labctl.backends.docker_compose import COMPOSE_FILE, render_compose
from labctl.lab.plan import make_plan
from labctl.topology.load import load_topology

COMPOSE_DIR = REPO / "compose"
SHIPPED = sorted(path.stem for path in TOPOLOGIES.glob("*.yaml"))


@pytest.mark.parametrize("topology", SHIPPED)
def test_shipped_compose_files_are_up_to_date(topology: str) -> None:
    expected = render_compose(make_plan(load_topology(TOPOLOGIES / f"{topology}.yaml")))
    directory = COMPOSE_DIR / topology
    actual = {p.relative_to(directory).as_posix(): p.read_text() for p in directory.rglob("*") if p.is_file()} \
        if directory.is_dir() else {}
    assert actual == expected, (
        f"compose/{topology} is out of date with topologies/{topology}.yaml: "
        f"run `labctl render compose {topology}` and commit the result"
    )


def _compose_tool() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("no compose tool: install Debian's docker-compose (scripts/docker-engine does)",
                pytrace=False)


@dataclass(frozen=True)
class ComposeLab:
    topology: str
    nodes: tuple[str, ...]
    gateways: tuple[str, ...]
    """Nodes running labctl-gateway: their tunnels must be established before the check."""
    source: str
    target: str
    first_hop: str


COMPOSE_LABS = [
    ComposeLab("routed", ("host-a", "router-a", "router-b", "host-b"), (), "host-a", "10.2.0.10", "10.1.0.1"),
    ComposeLab("site-to-site", ("host-a", "gw-a", "gw-b", "host-b"), ("gw-a", "gw-b"), "host-a", "10.2.0.10",
               "10.1.0.1"),
]
# In a compose lab the gateway's run directory is the image's default (no labctl maps it to the host).
COMPOSE_CONTROL_SOCKET = "/run/labctl/control.sock"


def _wait_tunnels(container: Any, timeout: float = 30) -> None:
    """Ask the gateway in the container (its own control client) until every binding has its SAs."""
    deadline = time.monotonic() + timeout
    reply: Any = None
    while time.monotonic() < deadline:
        done = container.exec_run(["python", "-m", "labctl.gateway", "ctl", "--socket", COMPOSE_CONTROL_SOCKET,
                                   "status"])
        if done.exit_code == 0:
            reply = json.loads(done.output)
            bindings = reply["gateway"]["bindings"]
            if bindings and all(b["state"] == "installed" for b in bindings):
                return
        time.sleep(0.3)
    raise AssertionError(f"tunnels on {container.name} not established in {timeout} s: {reply}")


@pytest.mark.docker
@pytest.mark.parametrize("case", COMPOSE_LABS, ids=[c.topology for c in COMPOSE_LABS])
def test_compose_file_brings_up_a_working_lab(
    case: ComposeLab, tmp_path: Path, state_dir: Path, lab_images: dict[str, str], docker_client: Any
) -> None:
    lab = f"t6-compose-{case.topology[:4]}"
    out = tmp_path / "compose"
    rendered = labctl(state_dir, "render", "compose", case.topology, "--name", lab, "--output", str(out))
    assert rendered.returncode == 0, rendered.stderr
    for gateway in case.gateways:  # the rendered gateway configs travel with the compose file
        assert (out / gateway / "gateway.json").is_file()
    compose = [*_compose_tool(), "-p", lab, "-f", str(out / COMPOSE_FILE)]
    try:
        up = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, timeout=300, check=False)
        assert up.returncode == 0, up.stderr
        for node in case.nodes:
            wait_ready(docker_client, f"labctl-{lab}-{node}")
        for gateway in case.gateways:
            _wait_tunnels(docker_client.containers.get(f"labctl-{lab}-{gateway}"))
        source = docker_client.containers.get(f"labctl-{lab}-{case.source}")
        ping = source.exec_run(["ping", "-c", "2", "-W", "2", case.target])
        assert ping.exit_code == 0, ping.output
        route = source.exec_run(["ip", "route", "get", case.target]).output.decode()
        assert f"via {case.first_hop}" in route
    finally:
        down = subprocess.run([*compose, "down"], capture_output=True, text=True, timeout=300, check=False)
    assert down.returncode == 0, down.stderr
    assert leftovers(docker_client, lab) == []
