"""Checks for L2TP/IPsec remote access (RFC 3193): PPP sessions on the LNS and its clients, no L2TP or PPP in
clear on the wire, and the IPsec SAs judged per client (each has its own, NAT-traversed or not).

They reuse the tunnel checks wherever the rule is the same: `wire.check_wire` (only IKE/ESP between the ends),
`sa_state.check_sa_state` (on a per-client view of the LNS) and `decryption.check_decryption` (with L2TP as
the carrier of the test traffic).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labctl.checks.frames import Frame
from labctl.checks.result import CheckResult, combine, verdict
from labctl.checks.sa_state import SaExpectation, check_sa_state
from labctl.checks.wire import WireExpectation, check_wire

L2TP_PORT = 1701  # RFC 2661 §8.1
CLEAR_LAYERS = frozenset({"l2tp", "ppp"})


@dataclass(frozen=True)
class Client:
    """One remote user: the node that dials in, its user name, and its address as the LNS sees it."""

    node: str
    user: str
    address: str
    """The client's own address, on the network it dials from."""
    seen: str
    """Its address as the LNS sees it, on the LNS's network (behind a NAT: the router's)."""
    nat: bool
    """Behind a NAT: NAT-T detected, ESP in UDP 4500 (RFC 3947, RFC 3948)."""
    refused: bool = False
    """It dials in with a password that is not its user's: IPsec comes up, PPP authentication must fail."""


@dataclass(frozen=True)
class SessionExpectation:
    lns: str
    clients: tuple[Client, ...]
    pool: tuple[str, str]
    """First and last address IPCP may hand out (RFC 1332 §3.3)."""


def clear_l2tp(frame: Frame) -> bool:
    """L2TP, PPP or UDP port 1701 readable outside ESP: what RFC 3193 §4 says IPsec must hide."""
    outside = frame.layers[:frame.layers.index("esp")] if "esp" in frame.layers else frame.layers
    return bool(CLEAR_LAYERS & set(outside)) or ("esp" not in frame.layers and L2TP_PORT in frame.udp_ports)


def check_l2tp_wire(frames: Sequence[Frame], expect: WireExpectation, name: str = "wire") -> CheckResult:
    """The tunnel wire rules (only IKE/ESP between the LNS and its clients, Main Mode hiding identities, ESP
    unreadable, UDP 4500 behind a NAT), and by name: no L2TP (UDP 1701) or PPP in clear."""
    wire = check_wire(frames, expect, name)
    clear = [f for f in frames if clear_l2tp(f)]
    problems = [f"{len(clear)} frame(s) carry L2TP/PPP (UDP {L2TP_PORT}) in clear; RFC 3193 §4 keeps them inside "
                f"ESP: {clear[0].describe()}"] if clear else []
    return CheckResult(name, "fail" if problems or wire.status == "fail" else wire.status,
                       f"{wire.expected}; no L2TP/PPP (UDP {L2TP_PORT}) in clear",
                       f"{wire.observed}; {len(clear)} clear L2TP/PPP frame(s)", tuple(problems) + wire.details)


def assigned(l2tp: Mapping[str, Any]) -> dict[str, str]:
    """User -> the address IPCP assigned, from an `l2tp` status object (LNS or client)."""
    return {str(s.get("user")): str(s.get("address")) for s in l2tp.get("sessions_up", [])}


def _l2tp(status: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (status or {}).get("l2tp") or {}


def _in_pool(address: str, pool: tuple[str, str]) -> bool:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ipaddress.IPv4Address(pool[0]) <= ip <= ipaddress.IPv4Address(pool[1])


def check_l2tp_sessions(
    statuses: Mapping[str, Mapping[str, Any]], expect: SessionExpectation, name: str = "l2tp-sessions",
) -> CheckResult:
    """Every user has exactly one PPP session on the LNS, with its own address from the pool (IPCP, RFC 1332),
    and every client agrees: its user, the same address, its session up and no error. A client with a wrong
    password has no session anywhere, and says that authentication failed.

    `statuses`: node -> its `status` reply's "gateway" object."""
    problems: list[str] = []
    lns = _l2tp(statuses.get(expect.lns))
    if not lns:
        problems.append(f"{expect.lns}: no L2TP status (the LNS did not answer, or runs no L2TP)")
    sessions = list(lns.get("sessions_up", []))
    users = [str(s.get("user")) for s in sessions]
    addresses = assigned(lns)
    wanted = {c.user for c in expect.clients if not c.refused}
    problems += [f"{expect.lns}: no session for {u}" for u in sorted(wanted - set(users))]
    problems += [f"{expect.lns}: a session for {u}, who is not expected to be up" for u in sorted(set(users) - wanted)]
    problems += [f"{expect.lns}: {u} has {users.count(u)} sessions; expected one" for u in sorted(set(users))
                 if users.count(u) > 1]
    for user, address in sorted(addresses.items()):
        if not _in_pool(address, expect.pool):
            problems.append(f"{expect.lns}: {user} got {address}, outside the pool {expect.pool[0]}-{expect.pool[1]}")
    shared = sorted({a for a in addresses.values() if list(addresses.values()).count(a) > 1})
    problems += [f"{expect.lns}: address {a} assigned to more than one user" for a in shared]
    in_use = (lns.get("pool") or {}).get("in_use", {})
    problems += [f"{expect.lns}: the pool does not record {a} as {u}'s (in use: {in_use})"
                 for u, a in sorted(addresses.items()) if in_use.get(a) != u]
    for client in expect.clients:
        mine = _l2tp(statuses.get(client.node))
        where = f"{client.node} ({client.user})"
        if not mine:
            problems.append(f"{where}: no L2TP status")
            continue
        if mine.get("user") != client.user:
            problems.append(f"{where}: dials in as {mine.get('user')!r}")
        if client.refused:
            problems += _refusal_problems(where, mine)
        elif not mine.get("sessions_up"):
            problems.append(f"{where}: no session up{_error(mine)}")
        elif mine.get("address") != addresses.get(client.user):
            problems.append(f"{where}: has address {mine.get('address')}, the LNS assigned "
                            f"{addresses.get(client.user)}")
        if mine.get("last_error") and not client.refused:
            problems.append(f"{where}: last error {mine.get('last_error')!r}")
    refused = sorted(f"{c.node} ({c.user})" for c in expect.clients if c.refused)
    expected = (f"one PPP session per user ({', '.join(sorted(wanted))}) on {expect.lns} and each client, each with "
                f"its own address from {expect.pool[0]}-{expect.pool[1]}"
                + (f"; {', '.join(refused)} refused (wrong password)" if refused else ""))
    observed = ", ".join(f"{u} {a}" for u, a in sorted(addresses.items())) or "no session up"
    refusals = [f"{c.node}: {_l2tp(statuses.get(c.node)).get('last_error') or 'no error'}"
                for c in expect.clients if c.refused]
    return verdict(name, problems, expected, "; ".join([f"{expect.lns}: {observed}", *refusals]))


def _error(l2tp: Mapping[str, Any]) -> str:
    return f" ({l2tp['last_error']})" if l2tp.get("last_error") else ""


def _refusal_problems(where: str, l2tp: Mapping[str, Any]) -> list[str]:
    problems = []
    if l2tp.get("sessions_up"):
        problems.append(f"{where}: has a session, though its password is wrong")
    if "authentication" not in str(l2tp.get("last_error", "")).lower():
        problems.append(f"{where}: does not say that authentication failed (last error: "
                        f"{l2tp.get('last_error')!r})")
    return problems


def lns_view(status: Mapping[str, Any], sas: Sequence[Mapping[str, Any]], seen: str
             ) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """The LNS's status and SA rows restricted to one client address (its ISAKMP SAs and IPsec SAs), so the
    tunnel SA check judges each client's SAs on their own: one %any connection serves them all."""
    view = dict(status)
    ike = dict(status.get("ike") or {})
    v1 = dict(ike.get("v1") or {})
    v1["isakmp_sas"] = [sa for sa in v1.get("isakmp_sas", []) if str(sa.get("remote", "")).split("[")[0] == seen]
    ike["v1"] = v1
    view["ike"] = ike
    return view, [row for row in sas if seen in (row.get("src"), row.get("dst"))]


def check_l2tp_sa_state(
    statuses: Mapping[str, Mapping[str, Any]], sas: Mapping[str, Sequence[Mapping[str, Any]]], lns: str,
    clients: Sequence[Client], expect: SaExpectation, name: str = "sa-state",
) -> CheckResult:
    """`check_sa_state` for each client against the LNS's view of that client: IKEv1 mode, ESP transport,
    algorithms, and UDP encapsulation and NAT detection exactly for the clients behind a NAT."""
    parts = []
    for client in clients:
        view, rows = lns_view(statuses.get(lns) or {}, sas.get(lns, ()), client.seen)
        per_client = dataclasses.replace(expect, encap=client.nat, nat=client.nat)
        result = check_sa_state({client.node: statuses.get(client.node) or {}, lns: view},
                                {client.node: sas.get(client.node, ()), lns: rows}, per_client, name)
        parts.append((f"{client.node} <-> {lns}", result))
    return combine(name, parts)
