"""The netns backend: a lab on plain Linux network namespaces (root only, no daemon needed).

Layout of a lab:
  labctl-<lab>-<node>   one namespace per node, its interfaces named as in the plan (eth0, ...)
  labctl-<lab>-sw       the lab's "switch" namespace: one bridge per network, and the other end of
                        every node's veth. A lab never adds anything to the host's own namespace.
Interface names are limited to 15 characters, so bridges and switch-side veths carry a 6-hex-digit
tag of the lab name (`br<tag>-<network #>`, `v<tag>-<node #>-<interface #>`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pyroute2 import NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from labctl.backends.base import (
    Backend,
    BackendError,
    Capture,
    ExecResult,
    LabStatus,
    Progress,
    apply_masquerade,
    lab_status,
    no_progress,
    planned_node,
    stop_recorded_programs,
    write_program_files,
)
from labctl.backends.tcpdump import start_tcpdump
from labctl.lab import processes
from labctl.lab.model import NodePlan, Plan, ProgramPlan
from labctl.lab.naming import lab_tag
from labctl.lab.state import LabState, ProgramRecord

NETNS_DIR = Path("/run/netns")


def node_namespace(lab: str, node: str) -> str:
    return f"labctl-{lab}-{node}"


def switch_namespace(lab: str) -> str:
    return f"labctl-{lab}-sw"


def bridge_name(lab: str, network_index: int) -> str:
    return f"br{lab_tag(lab)}-{network_index}"


def switch_port_name(lab: str, node_index: int, interface_index: int) -> str:
    return f"v{lab_tag(lab)}-{node_index}-{interface_index}"


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def namespace_pids(name: str) -> list[int]:
    """Every process whose network namespace is the named one (compared by nsfs inode)."""
    try:
        target = os.stat(NETNS_DIR / name)
    except OSError:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (ns.st_ino, ns.st_dev) == (target.st_ino, target.st_dev):
            pids.append(int(entry.name))
    return pids


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


@contextlib.contextmanager
def _netns(name: str) -> Iterator[NetNS]:
    ns = NetNS(name)
    try:
        yield ns
    finally:
        ns.close()


def _write_sysctl(namespace: str, key: str, value: str) -> None:
    # /proc/sys/net is resolved in the network namespace of the process that opens it.
    netns.pushns(namespace)
    try:
        Path("/proc/sys", *key.split(".")).write_text(value)
    finally:
        netns.popns()


class NetnsBackend(Backend):
    name = "netns"

    def available(self) -> tuple[bool, str]:
        if os.geteuid() != 0:
            return False, "the netns backend needs root to create network namespaces; run labctl as root (sudo)"
        if shutil.which("ip") is None:
            return False, "the `ip` command (iproute2) is missing; install iproute2"
        return True, ""

    # --- up ---

    def up(self, plan: Plan, state: LabState, progress: Progress = no_progress) -> None:
        try:
            self._build(plan, state, progress)
        except NetlinkError as exc:
            raise BackendError(f"netlink: {exc.args[-1] if exc.args else exc}") from exc
        except OSError as exc:  # e.g. a sysctl the kernel does not have
            raise BackendError(str(exc)) from exc
        for node in plan.nodes:
            apply_masquerade(self, state, node, progress)
        for node in plan.nodes:
            for program in node.programs:
                progress(f"starting {program.name} on {node.name}")
                self.start_program(state, node.name, program)

    def _build(self, plan: Plan, state: LabState, progress: Progress) -> None:
        lab = plan.lab
        switch = switch_namespace(lab)
        for name in [switch, *(node_namespace(lab, node.name) for node in plan.nodes)]:
            progress(f"creating namespace {name}")
            if namespace_exists(name):
                raise BackendError(f"namespace {name} already exists; another lab or a stale object uses the name")
            state.record("netns", name)
            netns.create(name)
        for node in plan.nodes:
            self._configure_node_before_links(lab, node)
        bridges: dict[str, str] = {}
        with _netns(switch) as sw:
            sw.link("set", index=sw.link_lookup(ifname="lo")[0], state="up")
            for index, network in enumerate(plan.networks):
                bridge = bridge_name(lab, index)
                progress(f"creating bridge {bridge} for network {network.name}")
                state.record("bridge", bridge, netns=switch, network=network.name)
                sw.link("add", ifname=bridge, kind="bridge")
                sw.link("set", index=sw.link_lookup(ifname=bridge)[0], state="up")
                bridges[network.name] = bridge
            for node_index, node in enumerate(plan.nodes):
                for if_index, iface in enumerate(node.interfaces):
                    port = switch_port_name(lab, node_index, if_index)
                    progress(f"linking {node.name}:{iface.name} to {iface.network}")
                    state.record("veth", port, netns=switch, peer=iface.name, node=node.name)
                    sw.link("add", ifname=port, kind="veth",
                            peer={"ifname": iface.name, "net_ns_fd": node_namespace(lab, node.name)})
                    port_index = sw.link_lookup(ifname=port)[0]
                    master = sw.link_lookup(ifname=bridges[iface.network])[0]
                    sw.link("set", index=port_index, master=master, state="up")
        for node in plan.nodes:
            progress(f"configuring {node.name}: addresses and routes")
            self._configure_node_links(lab, node)

    def _configure_node_before_links(self, lab: str, node: NodePlan) -> None:
        namespace = node_namespace(lab, node.name)
        for key, value in node.sysctls.items():
            _write_sysctl(namespace, key, value)

    def _configure_node_links(self, lab: str, node: NodePlan) -> None:
        with _netns(node_namespace(lab, node.name)) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            for iface in node.interfaces:
                index = ns.link_lookup(ifname=iface.name)[0]
                for address in filter(None, (iface.address, iface.address6)):
                    ip, prefix = address.split("/")
                    ns.addr("add", index=index, address=ip, prefixlen=int(prefix))
                ns.link("set", index=index, state="up")
            for route in node.routes:
                is_v6 = ":" in route.via
                destination = route.destination
                if destination == "default":
                    destination = "::/0" if is_v6 else "0.0.0.0/0"
                try:
                    ns.route("add", dst=destination, gateway=route.via)
                except NetlinkError as exc:
                    raise BackendError(
                        f"cannot add route {route.destination} via {route.via} on {node.name}: {exc.args[-1]}"
                    ) from exc

    # --- down ---

    def down(self, state: LabState, progress: Progress = no_progress) -> list[str]:
        removed = stop_recorded_programs(state)
        namespaces = [record.name for record in state.objects("netns")]
        for name in reversed(namespaces):
            for pid in namespace_pids(name):
                command = _command_name(pid)
                if processes.terminate(pid, processes.start_time(pid), grace=1.0):
                    removed.append(f"process {pid} ({command}) in {name}")
        for name in reversed(namespaces):
            if not namespace_exists(name):
                continue
            progress(f"removing namespace {name}")
            removed += self._remove_links(name)
            netns.remove(name)
            removed.append(f"namespace {name}")
        return removed

    def _remove_links(self, namespace: str) -> list[str]:
        """Delete the links of a namespace explicitly, so none outlives `down` while the kernel frees the namespace."""
        removed = []
        with _netns(namespace) as ns:
            links = [(link.get("ifname"), link["index"], link.get("kind") or link.get_nested("IFLA_LINKINFO",
                      "IFLA_INFO_KIND")) for link in ns.get_links()]
            for ifname, index, kind in links:
                if ifname == "lo":
                    continue
                with contextlib.suppress(NetlinkError):  # a veth is gone once its peer is deleted
                    ns.link("del", index=index)
                    removed.append(f"{kind or 'link'} {ifname} in {namespace}")
        return removed

    # --- inspection and use ---

    def status(self, state: LabState) -> LabStatus:
        return lab_status(state, self.name, lambda node: namespace_exists(node_namespace(state.lab, node)))

    def _node_namespace(self, state: LabState, node: str) -> str:
        planned_node(state, node)
        namespace = node_namespace(state.lab, node)
        if not namespace_exists(namespace):
            raise BackendError(f"node {node} of lab {state.lab} is not running (no namespace {namespace})")
        return namespace

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
        namespace = self._node_namespace(state, node)
        full_env = {**os.environ, **(env or {})}
        try:
            done = subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=capture_output,
                                  timeout=timeout, env=full_env, text=True, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"{' '.join(argv)} on {node} did not finish within {timeout} s") from exc
        return ExecResult(done.returncode, done.stdout or "", done.stderr or "")

    def start_program(self, state: LabState, node: str, program: ProgramPlan) -> int:
        namespace = self._node_namespace(state, node)
        node_dir = write_program_files(state, node, program)
        log = state.log_path(node, program.name)
        run_dir = self.run_dir(state, node)
        argv = [arg.replace("{node_dir}", str(node_dir)).replace("{run_dir}", str(run_dir)) for arg in program.argv]
        with open(log, "ab") as log_file:
            try:
                child = subprocess.Popen(
                    ["ip", "netns", "exec", namespace, *argv],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    cwd=node_dir, env={**os.environ, **program.env}, start_new_session=True,
                )
            except OSError as exc:
                raise BackendError(f"cannot start {program.name} on {node}: {exc}") from exc
        state.record_program(ProgramRecord(node, program.name, child.pid, processes.start_time(child.pid), str(log)))
        return child.pid

    def node_pids(self, state: LabState, node: str) -> list[int]:
        return namespace_pids(self._node_namespace(state, node))

    def start_capture(
        self, state: LabState, network: str, pcap: Path, *, bpf_filter: str | None = None
    ) -> Capture:
        plan = state.plan()
        names = [n.name for n in plan.networks] if plan else []
        if network not in names:
            raise BackendError(f"lab {state.lab} has no network {network!r}; its networks: {', '.join(names)}")
        bridge = bridge_name(state.lab, names.index(network))
        # The bridges live in the lab's switch namespace, not the host's.
        in_switch = ("ip", "netns", "exec", switch_namespace(state.lab))
        return start_tcpdump(bridge, pcap, bpf_filter=bpf_filter, prefix=in_switch, what=network)
