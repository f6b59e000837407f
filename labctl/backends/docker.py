"""The Docker backend: a lab as Docker networks and containers (needs a Docker engine, no registry).

Layout of a lab (see `docker_spec` for the mapping, shared with compose files):
  labctl-<lab>-<network>   one `internal` bridge network per topology network (lab traffic never leaves the
                           machine), the topology's subnet, Docker's gateway on an address no node uses,
                           host bridge `dk<tag>-<n>` (captures listen there)
  labctl-<lab>-<node>      one container per node: image by kind, only the capabilities it needs, addresses
                           from the plan; its entry point renames interfaces, replaces Docker's default
                           route by the topology's routes and installs the node's masquerade (nftables)
                           before anything runs
Every object carries the label labctl.lab=<lab>, so `down` finds it even when labctl was killed during `up`
(objects are also recorded in the lab's state before they are created).
Node programs run through `docker exec`; the lab's state directory is bind-mounted, so their config files
(`nodes/<node>/` -> /etc/labctl) and logs (`logs/` -> /var/log/labctl) are the same files as on netns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from labctl.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Capture,
    ExecResult,
    LabStatus,
    Progress,
    lab_status,
    no_progress,
    planned_node,
    stop_recorded_programs,
    write_program_files,
)
from labctl.backends.docker_engine import EngineUnavailable, connect
from labctl.backends.docker_spec import (
    IDLE_COMMAND,
    LABEL_LAB,
    LOG_DIR,
    NODE_DIR,
    READY_FILE,
    ContainerSpec,
    NetworkSpec,
    SpecError,
    container_name,
    container_run_dir,
    container_spec,
    network_specs,
    program_argv,
)
from labctl.backends.tcpdump import start_tcpdump
from labctl.lab import processes
from labctl.lab.model import Plan, ProgramPlan
from labctl.lab.state import LabState, ProgramRecord

READY_TIMEOUT = 30.0
CREATE_WORKERS = 8
EXEC_GRACE = 5.0


def _lab_filter(lab: str) -> dict[str, str]:
    return {"label": f"{LABEL_LAB}={lab}"}


class DockerBackend(Backend):
    name = "docker"

    def __init__(self) -> None:
        self._client: Any = None

    # --- engine ---

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = connect()
            except EngineUnavailable as exc:
                raise BackendUnavailable(str(exc)) from exc
        return self._client

    def available(self) -> tuple[bool, str]:
        try:
            self.client  # noqa: B018 - connecting is the check
        except BackendUnavailable as exc:
            return False, str(exc)
        return True, ""

    def _api_error(self) -> type[Exception]:
        from docker.errors import DockerException

        return DockerException

    # --- up ---

    def up(self, plan: Plan, state: LabState, progress: Progress = no_progress) -> None:
        from labctl.images import ImageError, ensure_images

        try:
            networks = network_specs(plan)
            containers = [container_spec(plan, node) for node in plan.nodes]
        except SpecError as exc:
            raise BackendError(str(exc)) from exc
        try:
            tags = ensure_images(self.client, sorted({c.image for c in containers}), progress)
        except ImageError as exc:
            raise BackendError(f"cannot build the lab's images: {exc}") from exc
        try:
            self._check_subnets(networks)
            for net in networks:
                self._create_network(state, net, progress)
            for spec in containers:
                state.record("docker-container", spec.name, node=spec.node)
            # Each container takes several engine round trips (create, attach, start): make them side by side.
            # Leaving the pool waits for all, so nothing is still being made when an error goes to `down`.
            with ThreadPoolExecutor(max_workers=CREATE_WORKERS, thread_name_prefix="labctl-docker") as pool:
                made = [pool.submit(self._create_container, state, spec, tags[spec.image], progress)
                        for spec in containers]
                for future in made:
                    future.result()
            for spec in containers:
                self._wait_ready(spec, progress)
        except self._api_error() as exc:
            raise BackendError(f"Docker: {_explain(exc)}") from exc
        for node in plan.nodes:
            for program in node.programs:
                progress(f"starting {program.name} on {node.name}")
                self.start_program(state, node.name, program)

    def _check_subnets(self, networks: Sequence[NetworkSpec]) -> None:
        """Docker bridges live in the host's namespace: a lab subnet must not overlap another network there."""
        import ipaddress

        wanted = {net.name: ipaddress.ip_network(net.subnet) for net in networks}
        for existing in self.client.networks.list():
            for pool in (existing.attrs.get("IPAM") or {}).get("Config") or []:
                subnet = pool.get("Subnet")
                if not subnet:
                    continue
                for name, net in wanted.items():
                    other = ipaddress.ip_network(subnet)
                    if net.version == other.version and net.overlaps(other):
                        raise BackendError(
                            f"network {name} ({net}) overlaps the Docker network {existing.name} ({other}); "
                            "Docker networks share the host's address space, so two Docker labs with the "
                            "same subnets cannot run at once (use the netns backend for that)"
                        )
        with contextlib.suppress(OSError, ValueError):
            host = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=False)
            for line in host.stdout.splitlines():
                parts = line.split()
                if len(parts) > 3 and parts[2] in ("inet", "inet6"):
                    iface = ipaddress.ip_interface(parts[3])
                    for name, net in wanted.items():
                        if iface.version == net.version and iface.network.overlaps(net):
                            raise BackendError(
                                f"network {name} ({net}) overlaps the host's own network {iface.network} on "
                                f"{parts[1]}; a Docker lab on it would cut the host off from that network"
                            )

    def _create_network(self, state: LabState, net: NetworkSpec, progress: Progress) -> None:
        from docker.types import IPAMConfig, IPAMPool

        progress(f"creating network {net.name} ({net.subnet}, bridge {net.bridge})")
        pools = [IPAMPool(subnet=net.subnet, gateway=net.gateway)]
        if net.subnet6:
            pools.append(IPAMPool(subnet=net.subnet6, gateway=net.gateway6))
        state.record("docker-network", net.name, bridge=net.bridge, network=net.network)
        self.client.networks.create(
            net.name,
            driver="bridge",
            internal=True,
            enable_ipv6=bool(net.subnet6),
            ipam=IPAMConfig(pool_configs=pools),
            options={"com.docker.network.bridge.name": net.bridge},
            labels=net.labels,
            check_duplicate=True,
        )

    def _create_container(self, state: LabState, spec: ContainerSpec, image: str, progress: Progress) -> None:
        progress(f"creating container {spec.name} ({image})")
        node_dir = state.node_dir(spec.node)
        node_dir.mkdir(parents=True, exist_ok=True)
        log_dir = state.path / "logs"
        log_dir.mkdir(exist_ok=True)
        first, *rest = spec.attachments
        api = self.client.api
        networking = api.create_networking_config(
            {first.network: api.create_endpoint_config(ipv4_address=first.address, ipv6_address=first.address6)}
        )
        host_config = api.create_host_config(
            cap_drop=["ALL"],
            cap_add=list(spec.cap_add),
            devices=[f"{d}:{d}:rwm" for d in spec.devices],
            sysctls=spec.sysctls,
            binds={str(node_dir): {"bind": NODE_DIR, "mode": "ro"}, str(log_dir): {"bind": LOG_DIR, "mode": "rw"}},
            init=True,  # reaps orphans of exec'd programs
            network_mode=first.network,
        )
        api.create_container(
            image,
            command=list(IDLE_COMMAND),
            name=spec.name,
            hostname=spec.node,
            environment=spec.environment,
            labels=spec.labels,
            host_config=host_config,
            networking_config=networking,
        )
        for attachment in rest:
            # Attached before start, so the entry point sees every interface.
            api.connect_container_to_network(
                spec.name, attachment.network, ipv4_address=attachment.address, ipv6_address=attachment.address6
            )
        api.start(spec.name)

    def _wait_ready(self, spec: ContainerSpec, progress: Progress) -> None:
        progress(f"waiting for {spec.node}'s network set-up")
        deadline = time.monotonic() + READY_TIMEOUT
        container = self.client.containers.get(spec.name)
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running":
                logs = container.logs(tail=20).decode(errors="replace").strip()
                raise BackendError(f"container {spec.name} stopped during its set-up:\n{logs}")
            if container.exec_run(["test", "-e", READY_FILE]).exit_code == 0:
                return
            time.sleep(0.1)
        raise BackendError(f"container {spec.name} did not finish its network set-up in {READY_TIMEOUT:.0f} s")

    # --- down ---

    def down(self, state: LabState, progress: Progress = no_progress) -> list[str]:
        # Removing a container ends its processes anyway: a short grace for a clean exit is enough.
        removed = stop_recorded_programs(state, grace=1.0)
        try:
            removed += remove_lab_objects(self.client, state.lab, state, progress)
        except self._api_error() as exc:
            raise BackendError(f"Docker: {_explain(exc)}") from exc
        return removed

    # --- inspection and use ---

    def _containers(self, lab: str) -> dict[str, Any]:
        found = self.client.containers.list(all=True, filters=_lab_filter(lab))
        return {c.labels.get("labctl.node", c.name): c for c in found}

    def status(self, state: LabState) -> LabStatus:
        running = {node for node, c in self._containers(state.lab).items() if c.status == "running"}
        return lab_status(state, self.name, running.__contains__)

    def _running(self, state: LabState, node: str) -> Any:
        from docker.errors import NotFound

        planned_node(state, node)
        name = container_name(state.lab, node)
        try:
            container = self.client.containers.get(name)
        except NotFound:
            raise BackendError(f"node {node} of lab {state.lab} is not running (no container {name})") from None
        if container.status != "running":
            raise BackendError(
                f"node {node} of lab {state.lab} is not running (container {name} is {container.status})"
            )
        return container

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
        container = self._running(state, node)
        inner = list(argv)
        if timeout is not None:
            # Ends the command inside the container too, not only the client waiting for it.
            inner = ["timeout", "--kill-after=1", f"{timeout:g}", *inner]
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            result = container.exec_run(inner, environment=dict(env or {}), demux=True)
            out, err = result.output
            stdout, stderr = (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")
            if not capture_output:
                print(stdout, end="")
                print(stderr, end="", file=sys.stderr)
                stdout = stderr = ""
            return ExecResult(result.exit_code, stdout, stderr)
        cmd = [docker_cli, "exec", "-i"]
        if not capture_output and os.isatty(0) and os.isatty(1):
            cmd.append("-t")
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [container.name, *inner]
        try:
            done = subprocess.run(cmd, capture_output=capture_output, text=True, check=False,
                                  stdin=None if not capture_output else subprocess.DEVNULL,
                                  timeout=None if timeout is None else timeout + EXEC_GRACE)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"{' '.join(argv)} on {node} did not finish within {timeout} s") from exc
        return ExecResult(done.returncode, done.stdout or "", done.stderr or "")

    def start_program(self, state: LabState, node: str, program: ProgramPlan) -> int:
        container = self._running(state, node)
        write_program_files(state, node, program)  # the node directory is the container's NODE_DIR mount
        log = state.log_path(node, program.name)
        inner_log = f"{LOG_DIR}/{log.name}"
        argv = program_argv(program, container_run_dir(node))
        # `exec` keeps one process: the pid Docker reports is the program itself.
        shell = ['sh', '-c', f'exec "$0" "$@" >>{inner_log} 2>&1 </dev/null', *argv]
        api = self.client.api
        exec_id = api.exec_create(container.id, shell, environment=program.env, workdir=NODE_DIR)["Id"]
        api.exec_start(exec_id, detach=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = api.exec_inspect(exec_id)
            if info.get("Pid"):
                pid = int(info["Pid"])
                state.record_program(ProgramRecord(node, program.name, pid, processes.start_time(pid), str(log)))
                return pid
            if not info.get("Running") and info.get("ExitCode") is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise BackendError(f"{program.name} on {node} exited at once (status {info['ExitCode']}):\n{tail}")
            time.sleep(0.02)
        raise BackendError(f"{program.name} on {node} did not start within 10 s")

    def node_pids(self, state: LabState, node: str) -> list[int]:
        top = self._running(state, node).top()
        column = top["Titles"].index("PID")
        return [int(row[column]) for row in top.get("Processes") or []]

    def run_dir(self, state: LabState, node: str) -> Path:
        return state.path / "logs" / f"run-{node}"

    def logs(self, state: LabState, node: str, tail: int | None = None) -> str:
        """The container's own output (its entry point's set-up lines) followed by its programs' logs."""
        container = self._running(state, node)
        text = container.logs(tail=tail if tail is not None else "all").decode(errors="replace")
        for record in state.programs(node):
            with contextlib.suppress(OSError):
                text += f"--- {record.name} ({record.log})\n" + Path(record.log).read_text(errors="replace")
        return text

    def start_capture(
        self, state: LabState, network: str, pcap: Path, *, bpf_filter: str | None = None
    ) -> Capture:
        plan = state.plan()
        names = [n.name for n in plan.networks] if plan else []
        if plan is None or network not in names:
            raise BackendError(f"lab {state.lab} has no network {network!r}; its networks: {', '.join(names)}")
        # Every Docker network is a Linux bridge in the host's namespace: capture there, outside the nodes.
        bridge = next(spec.bridge for spec in network_specs(plan) if spec.network == network)
        return start_tcpdump(bridge, pcap, bpf_filter=bpf_filter, what=f"{network} (bridge {bridge})")


def remove_lab_objects(
    client: Any, lab: str, state: LabState | None = None, progress: Progress = no_progress
) -> list[str]:
    """Remove the lab's containers, then its networks: those labelled with the lab AND those recorded in
    `state` (an object whose creation was cut short may carry no label yet)."""
    containers = client.containers.list(all=True, filters=_lab_filter(lab))
    networks = client.networks.list(filters=_lab_filter(lab))
    removed = _remove(
        "container", containers, client.containers.get, state, progress, lambda c: c.remove(force=True, v=True)
    )
    return removed + _remove("network", networks, client.networks.get, state, progress, lambda n: n.remove())


def _remove(
    kind: str,
    labelled: list[Any],
    get: Callable[[str], Any],
    state: LabState | None,
    progress: Progress,
    remove: Callable[[Any], None],
) -> list[str]:
    from docker.errors import NotFound

    found = {obj.name: obj for obj in labelled}
    recorded = {r.name for r in state.objects(f"docker-{kind}")} if state else set()
    for name in sorted(recorded - found.keys()):
        with contextlib.suppress(NotFound):
            found[name] = get(name)
    removed = []
    for name, obj in sorted(found.items()):
        progress(f"removing {kind} {name}")
        with contextlib.suppress(NotFound):  # already gone: removed by someone else in between
            remove(obj)
            removed.append(f"{kind} {name}")
    return removed


def _explain(exc: BaseException) -> str:
    text = str(exc)
    return text.split("(\"", 1)[-1].rstrip('")') if "(\"" in text else text
