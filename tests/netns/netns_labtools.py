"""Helpers for netns tests: run the labctl CLI as a separate process, and find what a lab left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from labctl.lab.naming import lab_tag

CLI = [sys.executable, "-c", "from labctl.cli import main; main()"]


def labctl(state_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABCTL_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def leftovers(lab: str, state_dir: Path, pids: Sequence[int] = ()) -> list[str]:
    """Everything of the lab that still exists: namespaces, host links carrying its tag, processes, state."""
    found = []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"namespace {line.split()[0]}" for line in namespaces.splitlines()
              if line.split() and line.split()[0].startswith(f"labctl-{lab}-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [f"host link {line.split(':')[1].strip()}" for line in links.splitlines() if lab_tag(lab) in line]
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(f"process {pid}")
    if (state_dir / lab).exists():
        found.append(f"state directory {state_dir / lab}")
    return found
