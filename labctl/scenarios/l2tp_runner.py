"""Run an L2TP/IPsec remote-access scenario (RFC 3193): the tunnel run's steps, with the L2TP checks.

Per scenario, in order:
1. `up` the lab; the clients dial in by themselves (IKEv1, ESP transport for UDP 1701, L2TP, PPP). The runner
   waits until every binding is installed and every user has a PPP session.
2. Captures on the LNS's network and on every client's own network (a home LAN behind a NAT); each client
   re-keys its ISAKMP SA so a whole Main Mode exchange is on the wire (RFC 2409 §5: phase 1 may be
   negotiated again at any time), then ping and TCP both ways between every client's PPP address and the
   LAN host -> l2tp-sessions, reachability, SA state per client, wire (no L2TP/PPP in clear), decryption.
3. fail closed: the LNS's gateway is stopped; the same traffic must fail and nothing may cross in clear.
4. `down`, then hygiene, as for tunnels.
"""

from __future__ import annotations

import dataclasses
import time

from labctl.backends.base import Backend
from labctl.checks.decryption import check_decryption
from labctl.checks.frames import read_frames
from labctl.checks.l2tp import assigned, check_l2tp_sa_state, check_l2tp_sessions, check_l2tp_wire, clear_l2tp
from labctl.checks.reachability import Probe, check_probes, ping
from labctl.checks.result import CheckResult, combine, verdict
from labctl.checks.wire import check_no_cleartext
from labctl.lab.gateways import GATEWAY_PROGRAM, query
from labctl.lab.model import Plan
from labctl.lab.state import LabState
from labctl.scenarios.expect_l2tp import L2tpExpectations, derive_l2tp
from labctl.scenarios.runner import _Run, load_scenario_topology
from labctl.topology.model import Topology


class L2tpRun(_Run):
    ra: L2tpExpectations

    def prepare(self) -> Topology:
        topology = load_scenario_topology(self.scenario)
        self.ra = derive_l2tp(topology, self.scenario)
        return topology

    def addresses(self, backend: Backend, state: LabState) -> dict[str, str]:
        """User -> the PPP address the LNS assigned."""
        return assigned((query(backend, state, self.ra.lns).get("gateway") or {}).get("l2tp") or {})

    def refusals_seen(self, backend: Backend, state: LabState) -> bool:
        return all(((query(backend, state, c.node).get("gateway") or {}).get("l2tp") or {}).get("last_error")
                   for c in self.ra.clients if c.refused)

    def wait_sessions(self, backend: Backend, state: LabState) -> dict[str, str]:
        """Until every admitted user has a session and every refused client has its error (or the timeout; the
        l2tp-sessions check then says what is missing)."""
        users = {c.user for c in self.ra.admitted}
        deadline = time.monotonic() + self.options.establish_timeout
        while True:
            addresses = self.addresses(backend, state)
            done = users <= set(addresses) and self.refusals_seen(backend, state)
            if done or time.monotonic() > deadline:
                return addresses
            time.sleep(0.2)

    def probes(self, backend: Backend, state: LabState, addresses: dict[str, str], fail_closed: bool
               ) -> list[Probe]:
        target = (self.ra.target, self.ra.target_address)
        probes = []
        for client in self.ra.admitted:
            # A user without a session has no PPP address: the probes to it fail and say so.
            mine = addresses.get(client.user, f"{client.user}-has-no-address")
            probes += self.exchange(backend, state, (client.node, mine), target, fail_closed)
        return probes

    def reachability(self, backend: Backend, state: LabState, probes: list[Probe]) -> CheckResult:
        """The admitted clients' probes get through; a refused client reaches nothing."""
        result = check_probes(probes, expect_ok=True)
        refused = [ping(backend, state, c.node, self.ra.target_address, count=2, wait=1)
                   for c in self.ra.clients if c.refused]
        if not refused:
            return result
        return combine("reachability", [("admitted", result),
                                        ("refused", check_probes(refused, expect_ok=False))])

    def phases(self, backend: Backend, state: LabState, plan: Plan) -> None:
        self.protected_phase_l2tp(backend, state, plan)
        self.fail_closed_phase_l2tp(backend, state)

    def protected_phase_l2tp(self, backend: Backend, state: LabState, plan: Plan) -> None:
        ra = self.ra
        self.wait_control(backend, state, plan)
        self.wait_installed(backend, state, plan)
        addresses = self.wait_sessions(backend, state)
        with self.capturing(backend, state, ra.segments, "traffic") as pcaps:
            for client in ra.clients:
                reply = query(backend, state, client.node, "rekey", name=ra.connection, what="ike")
                if not reply.get("ok"):
                    self.say(f"rekey on {client.node}: {reply.get('error')}")
            probes = self.probes(backend, state, addresses, fail_closed=False)
            reachability = self.reachability(backend, state, probes)
        self.add(reachability)
        statuses, sas = self.collect(backend, state, plan)
        self.guarded("l2tp-sessions", lambda: check_l2tp_sessions(statuses, ra.sessions()))
        self.guarded("sa-state", lambda: check_l2tp_sa_state(statuses, sas, ra.lns, ra.clients, ra.sa()))
        self.guarded("wire", lambda: combine("wire", [
            (seg, check_l2tp_wire(read_frames(pcap), ra.wire(seg))) for seg, pcap in pcaps.items()]))
        self.judge_decryption(lambda prefs: combine("decryption", [
            (seg, check_decryption(read_frames(pcap, prefs), ra.flows(seg, addresses), carrier="l2tp"))
            for seg, pcap in pcaps.items()]))

    def fail_closed_phase_l2tp(self, backend: Backend, state: LabState) -> None:
        if "fail-closed" not in self.scenario.checks:
            return
        ra = self.ra
        addresses = self.addresses(backend, state)
        backend.stop_program(state, ra.lns, GATEWAY_PROGRAM)
        with self.capturing(backend, state, ra.segments, "fail-closed") as pcaps:
            probes = self.probes(backend, state, addresses, fail_closed=True)

        def judge() -> CheckResult:
            parts = [("", check_probes(probes, expect_ok=False, name="fail-closed"))]
            for seg, pcap in pcaps.items():
                frames = read_frames(pcap)
                clear = [f"L2TP/PPP in clear: {f.describe()}" for f in frames if clear_l2tp(f)]
                parts += [(seg, check_no_cleartext(frames, ra.protected(), name="fail-closed")),
                          (seg, verdict("fail-closed", clear, "no L2TP/PPP (UDP 1701) in clear",
                                        f"{len(clear)} clear L2TP/PPP frame(s)"))]
            result = combine("fail-closed", parts)
            return dataclasses.replace(result, expected=f"with {ra.lns}'s gateway stopped: {result.expected}")

        self.guarded("fail-closed", judge)
