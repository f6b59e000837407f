"""Processes identified by (pid, start time), so that a recycled pid is never mistaken for ours."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (proc(5), /proc/pid/stat field 22), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; the fields after it are plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_alive(pid: int, started: int | None) -> bool:
    current = start_time(pid)
    return current is not None and (started is None or current == started)


def _reap(pid: int) -> None:
    # When the process is our own child (tests call backends in-process), it stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, started: int | None, grace: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds. True when the process was running and is now gone."""
    if not is_alive(pid, started):
        _reap(pid)
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not is_alive(pid, started):
                return True
            time.sleep(0.02)
    return not is_alive(pid, started)
