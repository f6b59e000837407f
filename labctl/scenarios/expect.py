"""What a scenario expects, derived from its (overridden) topology; `expect:` in the file overrides any of it.

Deriving instead of repeating keeps scenario files short and the expectations honest: they follow the
lab that is really built. Each derived rule cites why it holds.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any, TypeVar

from labctl.checks.decryption import Flow
from labctl.checks.reachability import TCP_PORT
from labctl.checks.sa_state import SaExpectation
from labctl.checks.wire import WireExpectation
from labctl.scenarios.model import Scenario
from labctl.topology.model import Topology
from labctl.topology.tunnels import Tunnel, endpoint_address, endpoint_network, peer_sees, protected_subnets

Derived = TypeVar("Derived", bound=Any)


class ExpectError(ValueError):
    """The scenario does not fit its topology (no such tunnel or node, an unknown expect: key)."""


@dataclass(frozen=True)
class Expectations:
    tunnel: str
    left: str
    right: str
    segment: str
    """The network the IPsec ends share, where captures are taken."""
    keying: str
    """manual | IKEv1 | IKEv2"""
    ike_mode: str | None
    protection: str
    mode: str
    encap: bool
    nat: bool | None
    identity_visible: bool | None
    ike_algorithms: str | None
    child_algorithms: dict[str, str]
    peers: frozenset[str]
    protected: tuple[str, ...]
    source: str
    target: str
    source_address: str
    target_address: str

    def wire(self) -> WireExpectation:
        version = None if self.keying == "manual" else int(self.keying[-1])
        return WireExpectation(self.peers, self.protection, self.encap, version, self.ike_mode,
                               self.identity_visible)

    def sa(self) -> SaExpectation:
        return SaExpectation(self.tunnel, self.keying, self.mode, self.protection, self.encap, self.ike_mode,
                             self.nat, self.ike_algorithms, self.child_algorithms)

    def flow(self) -> Flow:
        return Flow(self.source_address, self.target_address, TCP_PORT)


def _the_tunnel(topology: Topology, name: str | None) -> tuple[str, Tunnel]:
    if name is None:
        if len(topology.tunnels) != 1:
            raise ExpectError(f"topology {topology.name} has {len(topology.tunnels)} tunnels; name one with `tunnel:`")
        name = next(iter(topology.tunnels))
    if name not in topology.tunnels:
        raise ExpectError(f"topology {topology.name} has no tunnel {name!r} (it has: {', '.join(topology.tunnels)})")
    return name, topology.tunnels[name]


def _address(topology: Topology, node: str) -> str:
    if node not in topology.nodes:
        raise ExpectError(f"traffic node {node!r} is not in topology {topology.name}")
    return str(ipaddress.IPv4Interface(topology.nodes[node].interfaces[0].address).ip)


def _child_algorithms(t: Tunnel) -> dict[str, str]:
    if t.keying == "manual":
        out = {"ah": t.manual.ah_integ} if "ah" in t.protection else {}
        if "esp" in t.protection:
            out["esp"] = "-".join(a for a in (t.manual.encr, t.manual.integ) if a)
        return out
    # Our gateway proposes one child protocol with the first esp_proposals entry; AH proposals list integrity only.
    return {t.protection: t.ike.esp_proposals[0]} if t.protection in ("esp", "ah") and t.ike.esp_proposals else {}


def derive(topology: Topology, scenario: Scenario) -> Expectations:
    name, t = _the_tunnel(topology, scenario.tunnel)
    segment = endpoint_network(topology, t)
    if segment is None:
        raise ExpectError(f"tunnel {name}: its ends share no network")
    nat = t.left_network is not None
    keying = "manual" if t.keying == "manual" else f"IKEv{t.ike.version}"
    ike_mode = t.ike.mode if keying == "IKEv1" else None
    if t.mode == "tunnel":
        protected = tuple(protected_subnets(topology, t, "left") + protected_subnets(topology, t, "right"))
    else:
        protected = (f"{endpoint_address(topology, t.left, t.left_network or segment)}/32",
                     f"{endpoint_address(topology, t.right, segment)}/32")
    source, target = scenario.traffic
    derived = Expectations(
        tunnel=name, left=t.left, right=t.right, segment=segment, keying=keying, ike_mode=ike_mode,
        protection=t.protection, mode=t.mode,
        # RFC 3948 §2 / RFC 7296 §2.23: behind a NAT, ESP moves into UDP 4500; `encap` forces it without one.
        encap=t.encap or nat,
        # Forcing encapsulation is done by announcing a NAT that is not there (RFC 7296 §2.23 allows faking
        # NAT_DETECTION_SOURCE_IP), so with `encap` the NAT report is not judged.
        nat=True if nat else (None if t.encap else False),
        # RFC 2409 §5: Aggressive Mode's ID payloads are unencrypted; Main Mode's (msgs 5-6) and IKEv2's
        # (inside SK, RFC 7296 §3.14) are encrypted. Manual keys: no IKE at all.
        identity_visible=None if keying == "manual" else (keying == "IKEv1" and ike_mode == "aggressive"),
        ike_algorithms=t.ike.proposals[0] if keying != "manual" and t.ike.proposals else None,
        child_algorithms=_child_algorithms(t),
        peers=frozenset({peer_sees(topology, t, "left"), peer_sees(topology, t, "right")}),
        protected=protected, source=source, target=target,
        source_address=_address(topology, source), target_address=_address(topology, target),
    )
    return overridden(derived, scenario)


def overridden(derived: Derived, scenario: Scenario) -> Derived:
    """`derived` with the scenario's `expect:` values in place of the derived ones (unknown keys are errors)."""
    fields = {f.name: f for f in dataclasses.fields(derived)}
    unknown = sorted(set(scenario.expect) - set(fields))
    if unknown:
        raise ExpectError(f"unknown expect: key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    overrides: dict[str, Any] = dict(scenario.expect)
    for key, value in overrides.items():
        # YAML gives lists; the dataclasses keep sets and tuples (hashable, frozen).
        current = getattr(derived, key)
        if isinstance(current, (frozenset, tuple)) and isinstance(value, list):
            overrides[key] = type(current)(value)
    return dataclasses.replace(derived, **overrides)
