"""Run scenarios: build each lab, drive traffic, capture the untrusted segment, run the checks, tear down.

Per scenario, in order:
1. `up` the lab; for IKE tunnels the left end's start action is set to `none` and the runner initiates
   after the capture has started, so the whole IKE exchange is on the wire (identity visibility needs it).
2. ping and a TCP transfer both ways, captured -> reachability, SA state (control API), wire, decryption.
3. fail closed: the right end's gateway is stopped; the same traffic must fail and nothing may cross in clear.
4. `down`, then hygiene: nothing of the lab is left.
Remote-access (L2TP/IPsec) scenarios run the same way with their own phases (`labctl.scenarios.l2tp_runner`).
Artifacts (pcaps, merged key tables, SA dumps, gateway logs, result.json) go to `<artifacts>/<scenario>/` and
are kept for failed scenarios. Independent scenarios run in parallel threads, each lab under its own name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from labctl.backends import choose_backend
from labctl.backends.base import Backend, BackendError
from labctl.checks.decryption import check_decryption
from labctl.checks.frames import TsharkError, read_frames
from labctl.checks.gso import split_gso
from labctl.checks.hygiene import check_hygiene, leftovers
from labctl.checks.keytables import merge_tables, preferences, read_table, refused_rows
from labctl.checks.reachability import Probe, check_probes, ping, tcp_transfer
from labctl.checks.result import CheckResult, combine, not_applicable
from labctl.checks.sa_state import check_sa_state
from labctl.checks.wire import check_no_cleartext, check_wire
from labctl.lab.gateways import GATEWAY_PROGRAM, gateway_nodes, keys_dir, list_sas, query, wait_established
from labctl.lab.lifecycle import backend_of, down_lab, up_lab
from labctl.lab.model import Plan
from labctl.lab.state import LabExistsError, LabState
from labctl.scenarios.expect import Expectations, ExpectError, derive
from labctl.scenarios.expect_l2tp import is_remote_access
from labctl.scenarios.model import Scenario
from labctl.topology.catalog import resolve_topology
from labctl.topology.errors import TopologyError
from labctl.topology.load import load_topology
from labctl.topology.model import Topology

Outcome = Literal["pass", "fail", "error"]
Events = Callable[[str, str], None]
"""(scenario name, one line of progress)."""

SERIAL_BACKENDS = frozenset({"docker"})
"""Docker networks share the host's address space: two labs with the same subnets cannot coexist, so Docker
scenarios run one after the other (netns labs are isolated by their namespaces and run in parallel)."""


def no_events(scenario: str, message: str) -> None:
    """An Events sink that says nothing."""


@dataclass(frozen=True)
class RunOptions:
    backend: str = "netns"
    artifacts: Path = Path("labctl-test-artifacts")
    keep_failed: bool = False
    """Leave a failed scenario's lab up for inspection (its name is in the result)."""
    keep_artifacts: bool = False
    """Keep the artifacts of passing scenarios too."""
    lab_prefix: str = "test-"
    establish_timeout: float = 30.0


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    outcome: Outcome
    seconds: float
    backend: str
    lab: str
    checks: tuple[CheckResult, ...] = ()
    error: str = ""
    artifacts: str | None = None
    kept_up: bool = False
    description: str = ""
    source: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_scenario_topology(scenario: Scenario, extra: Sequence[tuple[str, Any]] = ()) -> Topology:
    return load_topology(resolve_topology(scenario.topology), scenario.variant, [*scenario.assignments, *extra])


class _Run:
    """One scenario on one lab; collects check results as it goes."""

    exp: Expectations
    """What the scenario expects (set by `prepare`)."""

    def __init__(self, scenario: Scenario, lab: str, options: RunOptions, events: Events) -> None:
        self.scenario = scenario
        self.lab = lab
        self.options = options
        self.events = events
        self.checks: list[CheckResult] = []
        self.art = options.artifacts / scenario.name

    def say(self, message: str) -> None:
        self.events(self.scenario.name, message)

    def add(self, result: CheckResult) -> None:
        if result.name in self.scenario.checks or result.name == "established":
            self.checks.append(result)
            self.say(f"{result.name}: {result.status.upper()} — {result.observed}")

    def guarded(self, name: str, action: Callable[[], CheckResult]) -> None:
        """Run one check; a tool failure (tshark missing, a gateway gone) fails that check, not the run."""
        if name not in self.scenario.checks:
            return
        try:
            self.add(action())
        except (TsharkError, BackendError, OSError, ValueError) as exc:
            self.add(CheckResult(name, "fail", "the check runs", f"could not run: {exc}", (str(exc),)))

    # --- shared by every kind of scenario ---

    def prepare(self) -> Topology:
        """The topology to bring up, with `self.exp` derived from it; raises when the scenario does not fit."""
        topology = load_scenario_topology(self.scenario)
        self.exp = derive(topology, self.scenario)
        if self.exp.keying != "manual":
            topology = load_scenario_topology(self.scenario, [(f"tunnels.{self.exp.tunnel}.ike.start_action", "none")])
        return topology

    def exchange(self, backend: Backend, state: LabState, a: tuple[str, str], b: tuple[str, str],
                 fail_closed: bool) -> list[Probe]:
        """Ping both ways and TCP between nodes a and b, each given as (node, address to reach it at)."""
        (node_a, addr_a), (node_b, addr_b) = a, b
        if fail_closed:
            return [ping(backend, state, node_a, addr_b, count=2, wait=1),
                    ping(backend, state, node_b, addr_a, count=2, wait=1),
                    tcp_transfer(backend, state, node_a, node_b, addr_b, size=4096, timeout=3)]
        return [ping(backend, state, node_a, addr_b), ping(backend, state, node_b, addr_a),
                tcp_transfer(backend, state, node_a, node_b, addr_b),
                tcp_transfer(backend, state, node_b, node_a, addr_a)]

    @contextlib.contextmanager
    def capturing(self, backend: Backend, state: LabState, segments: Sequence[str], stem: str
                  ) -> Iterator[dict[str, Path]]:
        """Capture every segment while the block runs; yields segment -> pcap (GSO runs split afterwards)."""
        pcaps = {seg: self.art / (f"{stem}.pcap" if len(segments) == 1 else f"{stem}-{seg}.pcap") for seg in segments}
        captures = []
        try:
            for seg, pcap in pcaps.items():
                captures.append(backend.start_capture(state, seg, pcap))
            yield pcaps
        finally:
            for capture in captures:
                capture.stop()
        for pcap in pcaps.values():
            split_gso(pcap)

    def wait_control(self, backend: Backend, state: LabState, plan: Plan) -> None:
        """Until every gateway answers on its control socket (they start in parallel with `up` returning)."""
        deadline = time.monotonic() + self.options.establish_timeout
        while time.monotonic() < deadline:
            if all(query(backend, state, n).get("ok") for n in gateway_nodes(plan)):
                return
            time.sleep(0.05)

    def wait_installed(self, backend: Backend, state: LabState, plan: Plan) -> None:
        ok, tunnels = wait_established(backend, state, plan, self.options.establish_timeout)
        if not ok:
            down = [f"{t.node}/{t.name}: {t.state} {t.detail}".strip() for t in tunnels if t.state != "installed"]
            self.add(CheckResult("established", "fail", "every tunnel end installed within "
                                 f"{self.options.establish_timeout:.0f} s", "; ".join(down), tuple(down)))

    def collect(self, backend: Backend, state: LabState, plan: Plan
                ) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Every gateway's status and SAs (kept as sa-dump.json) and their key tables merged into keys/."""
        statuses = {n: dict(query(backend, state, n).get("gateway") or {}) for n in gateway_nodes(plan)}
        sas = list_sas(backend, state, plan)
        (self.art / "sa-dump.json").write_text(json.dumps({"status": statuses, "sas": sas}, indent=1, default=str))
        merge_tables([keys_dir(backend, state, n) for n in gateway_nodes(plan)], self.art / "keys")
        return statuses, sas

    def judge_decryption(self, action: Callable[[list[str]], CheckResult]) -> None:
        """Run the decryption check with tshark preferences for the merged keys, unless tshark knows none of
        the SAs' ESP algorithms (then it is not applicable, with the reason)."""
        keys = self.art / "keys"
        refused = refused_rows(keys)
        if refused and len(refused) == len(read_table(keys / "esp_sa")):
            why = f"this tshark does not know the SAs' ESP algorithm ({refused[0][1]})"
            self.add(not_applicable("decryption", why))
        else:
            self.guarded("decryption", lambda: action(preferences(keys)))

    # --- tunnel scenarios ---

    def traffic(self, backend: Backend, state: LabState, exp: Expectations, fail_closed: bool) -> list[Probe]:
        return self.exchange(backend, state, (exp.source, exp.source_address), (exp.target, exp.target_address),
                             fail_closed)

    def phases(self, backend: Backend, state: LabState, plan: Plan) -> None:
        self.protected_phase(backend, state, plan, self.exp)
        self.fail_closed_phase(backend, state, self.exp)

    def protected_phase(self, backend: Backend, state: LabState, plan: Plan, exp: Expectations) -> None:
        with self.capturing(backend, state, [exp.segment], "traffic") as pcaps:
            if exp.keying != "manual":
                self.wait_control(backend, state, plan)
                reply = query(backend, state, exp.left, "initiate", name=exp.tunnel)
                if not reply.get("ok"):
                    self.say(f"initiate on {exp.left}: {reply.get('error')}")
            self.wait_installed(backend, state, plan)
            probes = self.traffic(backend, state, exp, fail_closed=False)
        pcap = pcaps[exp.segment]
        self.add(check_probes(probes, expect_ok=True))
        statuses, sas = self.collect(backend, state, plan)
        self.guarded("sa-state", lambda: check_sa_state(statuses, sas, exp.sa()))
        self.guarded("wire", lambda: check_wire(read_frames(pcap), exp.wire()))
        if "esp" in exp.protection:
            self.judge_decryption(lambda prefs: check_decryption(read_frames(pcap, prefs), exp.flow()))
        elif "decryption" in self.scenario.checks:
            self.add(not_applicable("decryption", "AH only authenticates (RFC 4302): there is nothing to decrypt"))

    def fail_closed_phase(self, backend: Backend, state: LabState, exp: Expectations) -> None:
        if "fail-closed" not in self.scenario.checks:
            return
        backend.stop_program(state, exp.right, GATEWAY_PROGRAM)
        with self.capturing(backend, state, [exp.segment], "fail-closed") as pcaps:
            probes = self.traffic(backend, state, exp, fail_closed=True)

        def judge() -> CheckResult:
            blocked = check_probes(probes, expect_ok=False, name="fail-closed")
            clear = check_no_cleartext(read_frames(pcaps[exp.segment]), exp.protected, name="fail-closed")
            result = combine("fail-closed", [("", blocked), ("", clear)])
            return dataclasses.replace(result, expected=f"with {exp.right}'s gateway stopped: {result.expected}")

        self.guarded("fail-closed", judge)

    def run(self) -> ScenarioResult:
        started = time.monotonic()
        shutil.rmtree(self.art, ignore_errors=True)
        self.art.mkdir(parents=True)
        try:
            topology = self.prepare()
        except (TopologyError, ExpectError, FileNotFoundError, ValueError) as exc:
            return self.finish(started, "error", f"scenario does not fit its topology: {exc}")
        self.say(f"up ({self.options.backend}, lab {self.lab})")
        try:
            result = up_lab(topology, backend=self.options.backend, lab=self.lab)
        except (BackendError, LabExistsError, ValueError) as exc:
            return self.finish(started, "error", f"lab did not come up: {exc}")
        state = LabState(self.lab)
        backend = backend_of(state)
        pids = [r.pid for r in state.programs()]
        error = ""
        try:
            self.phases(backend, state, result.plan)
        except (BackendError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                shutil.copytree(state.path / "logs", self.art / "logs", dirs_exist_ok=True)
        failed = bool(error) or any(c.status == "fail" for c in self.checks)
        kept_up = failed and self.options.keep_failed
        if not kept_up:
            self.say("down")
            try:
                down_lab(self.lab)
            except BackendError as exc:
                error = error or f"down failed: {exc}"
            if "hygiene" in self.scenario.checks:
                self.guarded("hygiene", lambda: check_hygiene(
                    leftovers(backend.name, self.lab, state.path, pids), self.lab))
        outcome: Outcome = "error" if error else "fail" if any(c.status == "fail" for c in self.checks) else "pass"
        return self.finish(started, outcome, error, kept_up)

    def finish(self, started: float, outcome: Outcome, error: str = "", kept_up: bool = False) -> ScenarioResult:
        keep = outcome != "pass" or self.options.keep_artifacts
        result = ScenarioResult(
            scenario=self.scenario.name, outcome=outcome, seconds=round(time.monotonic() - started, 2),
            backend=self.options.backend, lab=self.lab, checks=tuple(self.checks), error=error,
            artifacts=str(self.art) if keep else None, kept_up=kept_up, description=self.scenario.description,
            source=str(self.scenario.source),
        )
        if keep:
            (self.art / "result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
        else:
            shutil.rmtree(self.art, ignore_errors=True)
        if error:
            self.say(f"ERROR: {error}")
        return result


def run_scenario(scenario: Scenario, lab: str, options: RunOptions, events: Events = no_events) -> ScenarioResult:
    from labctl.scenarios.l2tp_runner import L2tpRun  # builds on _Run, so it is imported here, not at the top

    try:
        remote = is_remote_access(load_scenario_topology(scenario), scenario)
    except (TopologyError, FileNotFoundError, ValueError):
        remote = False  # the run reports why the topology does not load
    return (L2tpRun if remote else _Run)(scenario, lab, options, events).run()


def effective_jobs(backend: str, jobs: int) -> int:
    return 1 if backend in SERIAL_BACKENDS else max(1, jobs)


def run_scenarios(
    scenarios: Sequence[Scenario], options: RunOptions, jobs: int = 1, events: Events = no_events
) -> list[ScenarioResult]:
    """Run every scenario (in parallel up to `jobs`; Docker serially) and return results in input order."""
    chosen = choose_backend(options.backend)
    options = RunOptions(**{**asdict(options), "backend": chosen.name})
    lock = threading.Lock()

    def locked(name: str, message: str) -> None:
        with lock:
            events(name, message)

    def one(index: int) -> ScenarioResult:
        scenario = scenarios[index]
        lab = f"{options.lab_prefix}{index:02d}"
        if chosen.name not in scenario.backends:
            return ScenarioResult(scenario.name, "error", 0.0, chosen.name, lab,
                                  error=f"this scenario runs only on {', '.join(scenario.backends)}")
        return run_scenario(scenario, lab, options, locked)

    with ThreadPoolExecutor(max_workers=effective_jobs(chosen.name, jobs)) as pool:
        return list(pool.map(one, range(len(scenarios))))
