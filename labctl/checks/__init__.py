"""Checks a scenario runs against a lab, each reporting what it expected and what it saw (`CheckResult`).

Evaluators are pure where they can be, so unit tests feed them synthetic captures and status replies:
- `wire.check_wire(frames, WireExpectation)` — only IKE/ESP/AH/UDP-4500 between the ends; AH inner visible,
  ESP not; Aggressive Mode identity readable, Main Mode / IKEv2 not.
- `wire.check_no_cleartext(frames, protected_prefixes)` — fail closed: nothing of the protected traffic in clear.
- `decryption.check_decryption(frames, Flow | [Flow, ...], carrier=None)` — every ESP frame opens with the exported
  keys; inside (inside the carrier, e.g. L2TP): the test traffic.
- `sa_state.check_sa_state(statuses, sas, SaExpectation)` — the gateways' control API agrees with the scenario.
- `reachability.check_probes(probes, expect_ok)` — ping/TCP probes (run with `reachability.ping` / `tcp_transfer`).
- `hygiene.check_hygiene(leftovers(...), lab)` — nothing of the lab after teardown.
- `l2tp` — L2TP/IPsec remote access: `check_l2tp_sessions(statuses, SessionExpectation)` (a PPP session per user
  with its own pool address, the clients agree), `check_l2tp_wire(frames, WireExpectation)` (check_wire plus no
  L2TP/PPP/UDP 1701 in clear), `check_l2tp_sa_state(...)` (check_sa_state per client on the LNS's view of it);
  decryption is `check_decryption(frames, flows, carrier="l2tp")`.
- `result.combine(name, [(label, result), ...])` — one check made of parts (per segment, per client).
Frames come from `frames.read_frames(pcap, keytables.preferences(dir))` (tshark).
"""

from labctl.checks.result import CheckResult, Status

__all__ = ["CheckResult", "Status"]
