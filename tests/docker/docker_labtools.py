"""Helpers for Docker tests: the labctl CLI as a separate process, the engine, and what a lab left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labctl.backends.docker_engine import EngineUnavailable, connect
from labctl.backends.docker_spec import LABEL_LAB, READY_FILE
from labctl.lab.naming import lab_tag

CLI = [sys.executable, "-c", "from labctl.cli import main; main()"]
REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "topologies"


def labctl(state_dir: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LABCTL_STATE_DIR": str(state_dir), "COLUMNS": "200", **env}
    return subprocess.run([*CLI, *args], env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def engine() -> Any:
    """The Docker engine; a test that needs one fails loudly (never skips) when there is none."""
    try:
        return connect()
    except EngineUnavailable as exc:
        pytest.fail(f"these tests need a Docker engine: {exc}", pytrace=False)


def leftovers(client: Any, lab: str, state_dir: Path | None = None) -> list[str]:
    """Everything of the lab that still exists: containers and networks (by label and name), bridges, state."""
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab}"})]
    found += [f"container {c.name}" for c in client.containers.list(all=True, filters={"name": f"labctl-{lab}-"})
              if f"container {c.name}" not in found]
    found += [f"network {n.name}" for n in client.networks.list(filters={"label": f"{LABEL_LAB}={lab}"})]
    found += [f"network {n.name}" for n in client.networks.list(names=[f"labctl-{lab}-"])
              if f"network {n.name}" not in found and n.name.startswith(f"labctl-{lab}-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [f"host link {line.split(':')[1].strip()}" for line in links.splitlines()
              if f"dk{lab_tag(lab)}-" in line]
    if state_dir is not None and (state_dir / lab).exists():
        found.append(f"state directory {state_dir / lab}")
    return found


def wait_ready(client: Any, container: str, timeout: float = 30) -> None:
    """Wait until a node container's entry point has set up its network (compose labs have no labctl to wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = client.containers.get(container)
        if c.status == "running" and c.exec_run(["test", "-e", READY_FILE]).exit_code == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{container} did not finish its set-up: {client.containers.get(container).logs()!r}")
