"""The Backend interface: what every backend (netns, Docker) does with a plan.

Backends only execute plans (`labctl.lab.plan.make_plan` decides everything). The lifecycle in
`labctl.lab.lifecycle` claims the lab's state directory before calling `up`, and removes it after
`down`; backends record each object in that state (`LabState.record`) BEFORE creating it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from labctl.lab import processes
from labctl.lab.model import NodePlan, Plan, ProgramPlan
from labctl.lab.state import LabState, all_labs

Progress = Callable[[str], None]
"""Receives one short line per step ("creating namespace labctl-x-host-a")."""


def no_progress(message: str) -> None:
    """A Progress that says nothing."""


class BackendError(Exception):
    """A backend operation failed; the message is meant for a person."""


class BackendUnavailable(BackendError):
    """The backend cannot run here (not root, no Docker engine, missing tool)."""


@dataclass(frozen=True)
class ProgramStatus:
    node: str
    name: str
    pid: int | None
    running: bool
    log: str


@dataclass(frozen=True)
class NodeStatus:
    name: str
    kind: str
    present: bool
    """The node's namespace/container exists."""
    addresses: tuple[str, ...]
    programs: tuple[ProgramStatus, ...] = ()


@dataclass(frozen=True)
class LabStatus:
    lab: str
    backend: str
    topology: str
    phase: str
    """"up" when `up` completed, "building" while (or when a crash left it) half built."""
    nodes: tuple[NodeStatus, ...]
    networks: Mapping[str, str] = field(default_factory=dict)
    """Network name -> subnet."""


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Capture(ABC):
    """A running packet capture on one lab network."""

    pcap: Path

    @abstractmethod
    def stop(self) -> Path:
        """Stop capturing, flush, and return the pcap file."""


class Backend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when this backend can build labs here; otherwise (False, one sentence why)."""

    @abstractmethod
    def up(self, plan: Plan, state: LabState, progress: Progress = no_progress) -> None:
        """Build the lab and start its node programs. Raise BackendError on failure (the caller runs `down`)."""

    @abstractmethod
    def down(self, state: LabState, progress: Progress = no_progress) -> list[str]:
        """Remove every object recorded in `state`, tolerating missing ones. Returns what was removed."""

    @abstractmethod
    def status(self, state: LabState) -> LabStatus:
        """What exists of the lab now."""

    @abstractmethod
    def exec(
        self,
        state: LabState,
        node: str,
        argv: Sequence[str],
        *,
        capture_output: bool = False,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run a command in a node and return its exit status (output too with capture_output)."""

    @abstractmethod
    def start_program(self, state: LabState, node: str, program: ProgramPlan) -> int:
        """Write the program's files, start it in the node (log in `state.log_path`), record and return its pid."""

    def stop_program(self, state: LabState, node: str, name: str) -> bool:
        """Stop one node program (by its recorded pid and start time); True when it was running."""
        for record in state.programs(node):
            if record.name == name:
                stopped = processes.terminate(record.pid, record.started)
                state.forget_program(node, name)
                return stopped
        return False

    @abstractmethod
    def node_pids(self, state: LabState, node: str) -> list[int]:
        """Every process running in the node (its programs and anything started by exec)."""

    @abstractmethod
    def start_capture(
        self, state: LabState, network: str, pcap: Path, *, bpf_filter: str | None = None
    ) -> Capture:
        """Start capturing all traffic of a lab network into `pcap`; returns when the capture is running."""

    def run_dir(self, state: LabState, node: str) -> Path:
        """Where a node program's runtime files live, as seen from the host (`{run_dir}` in a program's argv):
        the gateway's control socket and its Wireshark key tables."""
        return state.path / "run" / node

    def list_labs(self) -> list[LabState]:
        """Labs in the state directory that this backend built."""
        return [lab for lab in all_labs() if lab.backend == self.name]


# --- helpers every backend uses the same way ---


def planned_node(state: LabState, node: str) -> NodePlan:
    """The node's plan, or a BackendError a person can act on (no plan, no such node)."""
    plan = state.plan()
    if plan is None:
        raise BackendError(f"lab {state.lab} has no plan in {state.path}; run `labctl down {state.lab}`")
    try:
        return plan.node(node)
    except KeyError:
        known = ", ".join(n.name for n in plan.nodes)
        raise BackendError(f"lab {state.lab} has no node {node!r}; its nodes: {known}") from None


def write_program_files(state: LabState, node: str, program: ProgramPlan) -> Path:
    """Write the program's files into the node's directory (created if needed) and return that directory."""
    node_dir = state.node_dir(node)
    node_dir.mkdir(parents=True, exist_ok=True)
    for file in program.files:
        path = node_dir / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file.content)
        path.chmod(file.mode)
    state.log_path(node, program.name).parent.mkdir(exist_ok=True)
    return node_dir


def stop_recorded_programs(state: LabState, grace: float = 3.0) -> list[str]:
    """Stop every program the lab's state records (first step of `down`); what was running, for the report."""
    stopped = []
    for record in state.programs():
        if processes.terminate(record.pid, record.started, grace):
            stopped.append(f"process {record.pid} ({record.name} on {record.node})")
        state.forget_program(record.node, record.name)
    return stopped


def lab_status(state: LabState, backend: str, present: Callable[[str], bool]) -> LabStatus:
    """The lab as planned, with each node's presence (`present(node)`) and its programs' liveness."""
    plan = state.plan()
    if plan is None:
        return LabStatus(state.lab, backend, "?", state.phase, ())
    nodes = []
    for node in plan.nodes:
        programs = tuple(
            ProgramStatus(r.node, r.name, r.pid, processes.is_alive(r.pid, r.started), r.log)
            for r in state.programs(node.name)
        )
        addresses = tuple(a for iface in node.interfaces for a in (iface.address, iface.address6) if a)
        nodes.append(NodeStatus(node.name, node.kind, present(node.name), addresses, programs))
    networks = {network.name: network.subnet for network in plan.networks}
    return LabStatus(state.lab, backend, plan.topology, state.phase, tuple(nodes), networks)


NAT_TABLE = "labctl_nat"
"""The nftables table (family ip) that holds a node's masquerade rules; one per node namespace/container."""


def masquerade_commands(node: NodePlan) -> list[list[str]]:
    """The `nft` commands that make `node` source-NAT what leaves through its masquerade interfaces."""
    if not node.masquerade:
        return []
    commands = [
        ["nft", "add", "table", "ip", NAT_TABLE],
        # srcnat priority (100) in the postrouting hook: the address is rewritten after routing chose the way out.
        ["nft", "add", "chain", "ip", NAT_TABLE, "postrouting",
         "{ type nat hook postrouting priority srcnat ; policy accept ; }"],
    ]
    commands += [["nft", "add", "rule", "ip", NAT_TABLE, "postrouting", "oifname", ifname, "masquerade"]
                 for ifname in node.masquerade]
    return commands


def apply_masquerade(backend: Backend, state: LabState, node: NodePlan, progress: Progress = no_progress) -> None:
    """Install the node's masquerade rules with `nft` inside the node (both backends; Docker nodes have NET_ADMIN)."""
    if node.masquerade:
        progress(f"masquerading {', '.join(node.masquerade)} on {node.name}")
    for argv in masquerade_commands(node):
        result = backend.exec(state, node.name, argv, capture_output=True, timeout=30)
        if result.returncode != 0:
            raise BackendError(f"cannot set up masquerade on {node.name} ({' '.join(argv)}): "
                               f"{(result.stderr or result.stdout).strip() or f'exit {result.returncode}'}")
