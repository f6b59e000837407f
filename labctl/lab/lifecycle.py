"""Bring labs up and down: claim the state directory, let the backend build, clean up on any failure."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from labctl.backends import choose_backend, get_backend
from labctl.backends.base import Backend, LabStatus, Progress, no_progress
from labctl.lab.model import Plan
from labctl.lab.plan import make_plan
from labctl.lab.state import LabExistsError, LabState
from labctl.topology.model import Topology


@dataclass(frozen=True)
class UpResult:
    plan: Plan
    backend: str
    status: LabStatus
    seconds: float


def up_lab(
    topology: Topology, *, backend: str = "auto", lab: str | None = None, progress: Progress = no_progress
) -> UpResult:
    """Build a lab; on any failure (or Ctrl-C) remove what was built and re-raise.

    Raises LabExistsError when the lab's state directory exists (the lab is up, or a crash left it).
    """
    started = time.monotonic()
    plan = make_plan(topology, lab)
    chosen = choose_backend(backend)
    state = LabState(plan.lab)
    if state.exists():
        raise LabExistsError(plan.lab)
    state.create(chosen.name, plan)
    try:
        chosen.up(plan, state, progress)
    except BaseException:
        with contextlib.suppress(Exception):
            chosen.down(state, no_progress)
            state.remove()
        raise
    state.set_phase("up")
    return UpResult(plan, chosen.name, chosen.status(state), time.monotonic() - started)


def backend_of(state: LabState) -> Backend:
    # lab.json is written right after the state directory is claimed; a crash in between leaves
    # an empty directory, which the netns backend's down handles (nothing recorded, nothing to remove).
    return get_backend(state.backend or "netns")


def down_lab(lab: str, progress: Progress = no_progress) -> list[str] | None:
    """Remove everything of a lab; None when the lab is not up (nothing to do)."""
    state = LabState(lab)
    if not state.exists():
        return None
    removed = backend_of(state).down(state, progress)
    state.remove()
    removed.append(f"state directory {state.path}")
    return removed
