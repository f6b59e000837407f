"""Compose files: the shipped ones are up to date, and one brought up by the compose tool is a working lab."""

from __future__ import annotations

import shutil
import subprocess
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
    pytest.fail("no compose tool: install Debian's docker-compose (scripts/docker-engine --with-compose)",
                pytrace=False)


@pytest.mark.docker
def test_compose_file_brings_up_a_working_lab(
    tmp_path: Path, state_dir: Path, lab_images: dict[str, str], docker_client: Any
) -> None:
    lab = "t6-compose"
    out = tmp_path / "compose"
    rendered = labctl(state_dir, "render", "compose", "routed", "--name", lab, "--output", str(out))
    assert rendered.returncode == 0, rendered.stderr
    compose = [*_compose_tool(), "-p", lab, "-f", str(out / COMPOSE_FILE)]
    try:
        up = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, timeout=300, check=False)
        assert up.returncode == 0, up.stderr
        for node in ("host-a", "router-a", "router-b", "host-b"):
            wait_ready(docker_client, f"labctl-{lab}-{node}")
        host_a = docker_client.containers.get(f"labctl-{lab}-host-a")
        ping = host_a.exec_run(["ping", "-c", "2", "-W", "2", "10.2.0.10"])
        assert ping.exit_code == 0, ping.output
        route = host_a.exec_run(["ip", "route", "get", "10.2.0.10"]).output.decode()
        assert "via 10.1.0.1" in route
    finally:
        down = subprocess.run([*compose, "down"], capture_output=True, text=True, timeout=300, check=False)
    assert down.returncode == 0, down.stderr
    assert leftovers(docker_client, lab) == []
