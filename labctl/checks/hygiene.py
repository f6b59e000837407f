"""Hygiene after teardown: nothing of the lab is left (namespaces, host links, containers, networks,
processes, state directory) — so scenarios never disturb the next one, and `down` keeps its promise."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from labctl.checks.result import CheckResult, verdict
from labctl.lab.naming import lab_tag

NETNS_DIR = Path("/run/netns")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def netns_leftovers(lab: str) -> list[str]:
    found = [f"namespace {p.name}" for p in sorted(NETNS_DIR.glob(f"labctl-{lab}-*"))] if NETNS_DIR.is_dir() else []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    tag = lab_tag(lab)
    found += [f"host link {line.split(':')[1].strip()}" for line in links.splitlines() if tag in line]
    return found


def docker_leftovers(lab: str) -> list[str]:
    from labctl.backends.docker import DockerBackend
    from labctl.backends.docker_spec import LABEL_LAB

    client = DockerBackend().client
    label = {"label": f"{LABEL_LAB}={lab}"}
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    found += [f"network {n.name}" for n in client.networks.list(filters=label)]
    return found


def leftovers(backend: str, lab: str, state_path: Path, pids: Sequence[int] = ()) -> list[str]:
    found = netns_leftovers(lab) if backend == "netns" else docker_leftovers(lab)
    found += [f"process {pid}" for pid in pids if _alive(pid)]
    if state_path.exists():
        found.append(f"state directory {state_path}")
    return found


def check_hygiene(found: Sequence[str], lab: str, name: str = "hygiene") -> CheckResult:
    problems = [f"left behind: {item}" for item in found]
    return verdict(name, problems, f"nothing of lab {lab} left after teardown",
                   "nothing left" if not found else f"{len(found)} object(s) left")
