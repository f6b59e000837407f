"""Talk to a lab's gateways from the orchestrator: their control sockets, tunnel state, key tables.

The control socket lives in the program's run directory, which every backend exposes on the host
(`Backend.run_dir`), so this works the same on netns and Docker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.backends.base import Backend
from labctl.gateway.control import ControlClient
from labctl.lab.model import Plan
from labctl.lab.state import LabState

GATEWAY_PROGRAM = "gateway"


def gateway_nodes(plan: Plan) -> list[str]:
    return [n.name for n in plan.nodes if any(p.name == GATEWAY_PROGRAM for p in n.programs)]


def control_socket(backend: Backend, state: LabState, node: str) -> Path:
    return backend.run_dir(state, node) / "control.sock"


def keys_dir(backend: Backend, state: LabState, node: str) -> Path:
    return backend.run_dir(state, node) / "keys"


def query(backend: Backend, state: LabState, node: str, cmd: str = "status", **args: Any) -> dict[str, Any]:
    """One control request; {"ok": False, "error": ...} when the gateway cannot be reached."""
    path = control_socket(backend, state, node)
    try:
        return ControlClient(path, timeout=3.0).request(cmd, **args)
    except (OSError, ValueError) as exc:
        return {"ok": False, "error": f"gateway on {node} does not answer at {path}: {exc}"}


@dataclass(frozen=True)
class TunnelState:
    node: str
    name: str
    state: str
    keying: str
    detail: str  # last error in plain words, or ""


def tunnel_states(backend: Backend, state: LabState, plan: Plan) -> list[TunnelState]:
    out = []
    for node in gateway_nodes(plan):
        reply = query(backend, state, node)
        if not reply.get("ok"):
            out.append(TunnelState(node, "-", "unreachable", "-", str(reply.get("error", ""))))
            continue
        for b in reply["gateway"].get("bindings", []):
            out.append(TunnelState(node, b["name"], b["state"], b["keying"], b.get("last_error", "")))
    return out


def wait_established(
    backend: Backend, state: LabState, plan: Plan, timeout: float, poll: float = 0.1
) -> tuple[bool, list[TunnelState]]:
    """Wait until every tunnel end has its SAs installed; (all up, last states seen)."""
    deadline = time.monotonic() + timeout
    while True:
        states = tunnel_states(backend, state, plan)
        if states and all(s.state == "installed" for s in states):
            return True, states
        if time.monotonic() >= deadline:
            return False, states
        time.sleep(poll)


def list_sas(backend: Backend, state: LabState, plan: Plan) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for node in gateway_nodes(plan):
        reply = query(backend, state, node, "list-sas")
        out[node] = reply.get("sas", []) if reply.get("ok") else []
    return out
