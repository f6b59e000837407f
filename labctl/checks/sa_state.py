"""SA state as the gateways report it over their control API (`status` and `list-sas`), against what the
scenario asks for: established, keying and IKE version/mode, protocol, encapsulation mode, algorithms, NAT."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labctl.checks.result import CheckResult, verdict

DH_TOKEN = re.compile(r"^(modp\d+|ecp\d+|x25519|x448|curve25519|curve448|ecp\d+bp)$")
# Two spellings of one DH group (RFC 8031: Curve25519 is group 31, strongSwan's keyword is x25519).
ALIASES = {"x25519": "curve25519", "x448": "curve448"}


def algorithm_tokens(text: str | None) -> tuple[str, ...]:
    """`aes128-sha256-modp2048` or `aes128gcm16/prfsha256/ecp256` -> its tokens, lower case, aliases unified."""
    return tuple(ALIASES.get(t, t) for t in re.split(r"[-/ ]+", (text or "").lower()) if t)


def same_suite(reported: str | None, proposed: str) -> bool:
    """Whether the negotiated suite is the proposed one. A proposal without a PRF gets the PRF of its
    integrity algorithm (RFC 7296 §3.3.2; strongSwan's proposal syntax), which the gateway then names."""
    want = algorithm_tokens(proposed)
    got = algorithm_tokens(reported)
    if not any(t.startswith("prf") for t in want):
        got = tuple(t for t in got if not t.startswith("prf"))
    return got == want


def without_dh(tokens: Sequence[str]) -> tuple[str, ...]:
    return tuple(t for t in tokens if not DH_TOKEN.match(t))


@dataclass(frozen=True)
class SaExpectation:
    tunnel: str
    keying: str
    """manual | IKEv1 | IKEv2 (as the gateway reports a binding's keying)."""
    mode: str
    protection: str
    encap: bool
    """UDP-encapsulated SAs expected (NAT or forced)."""
    ike_mode: str | None = None
    nat: bool | None = None
    """True: some gateway must report a NAT; False: none may; None: not judged."""
    ike_algorithms: str | None = None
    """The IKE/ISAKMP SA's suite, e.g. aes128gcm16-prfsha256-ecp256."""
    child_algorithms: Mapping[str, str] | None = None
    """Per protocol (esp, ah), the child SA's algorithms without DH, e.g. {"esp": "aes128-sha256"}."""


def _ike_sas(status: Mapping[str, Any], version: int, tunnel: str) -> list[dict[str, Any]]:
    ike = status.get("ike", {}).get(f"v{version}", {})
    key, conn = ("ike_sas", "conn") if version == 2 else ("isakmp_sas", "connection")
    return [sa for sa in ike.get(key, []) if sa.get(conn) == tunnel]


def _nat_reported(sa: Mapping[str, Any], version: int) -> bool:
    if version == 2:
        return bool(sa.get("nat_local") or sa.get("nat_remote"))
    nat = sa.get("nat") or {}
    return bool(nat.get("local") or nat.get("remote"))


def check_sa_state(
    statuses: Mapping[str, Mapping[str, Any]], sas: Mapping[str, Sequence[Mapping[str, Any]]],
    expect: SaExpectation, name: str = "sa-state",
) -> CheckResult:
    """`statuses`: gateway node -> its `status` reply's "gateway" object (None/{} when unreachable);
    `sas`: gateway node -> its `list-sas` rows."""
    problems: list[str] = []
    seen: list[str] = []
    nat_seen = False
    for node, status in statuses.items():
        if not status:
            problems.append(f"{node}: the gateway did not answer its control socket")
            continue
        internal = _internal_errors(status)
        if internal:
            problems.append(f"{node}: {internal} internal errors in the gateway (a bug, never a peer's fault: its log "
                            "has the first ones)")
        bindings = [b for b in status.get("bindings", []) if b.get("name") == expect.tunnel]
        if not bindings:
            problems.append(f"{node}: no binding named {expect.tunnel}")
        for b in bindings:
            seen.append(f"{node}: {b.get('keying')} {b.get('protection')} {b.get('mode')} {b.get('state')}")
            for field, want in (("state", "installed"), ("keying", expect.keying), ("mode", expect.mode),
                                ("protection", expect.protection)):
                if b.get(field) != want:
                    extra = f" ({b.get('last_error')})" if field == "state" and b.get("last_error") else ""
                    problems.append(f"{node}: {field} is {b.get(field)!r}{extra}; expected {want!r}")
        if expect.keying in ("IKEv1", "IKEv2"):
            problems += _ike_problems(node, status, expect)
            version = 1 if expect.keying == "IKEv1" else 2
            nat_seen |= any(_nat_reported(sa, version) for sa in _ike_sas(status, version, expect.tunnel))
        problems += _child_problems(node, sas.get(node, ()), expect)
    if expect.nat is True and not nat_seen:
        problems.append("no gateway reports a NAT between the ends (NAT detection, RFC 7296 §2.23 / RFC 3947)")
    if expect.nat is False and nat_seen:
        problems.append("a gateway reports a NAT, but there is none between the ends")
    expected = (f"{expect.tunnel} installed on every end: {expect.keying}"
                f"{' ' + expect.ike_mode + ' mode' if expect.ike_mode else ''}, {expect.protection} {expect.mode}"
                f"{', UDP-encapsulated' if expect.encap else ''}"
                f"{', NAT detected' if expect.nat else ''}")
    return verdict(name, problems, expected, "; ".join(seen) or "no bindings")


def _internal_errors(status: Mapping[str, Any]) -> int:
    """What the gateway counted as its own bugs: IKE event handling, the data plane's guards, the I/O loop."""
    dataplane = status.get("dataplane") or {}
    return (int(status.get("internal_errors") or 0) + int((dataplane.get("drops") or {}).get("internal_error", 0))
            + int((status.get("io_drops") or {}).get("internal_errors", 0)))


def _ike_problems(node: str, status: Mapping[str, Any], expect: SaExpectation) -> list[str]:
    version = 1 if expect.keying == "IKEv1" else 2
    ike = _ike_sas(status, version, expect.tunnel)
    up = [sa for sa in ike if sa.get("state") in ("established", "ESTABLISHED")]
    if not up:
        states = ", ".join(str(sa.get("state")) for sa in ike) or "none"
        return [f"{node}: no established IKEv{version} SA for {expect.tunnel} (states: {states})"]
    problems = []
    sa = up[0]
    if version == 1 and expect.ike_mode and sa.get("mode") != expect.ike_mode:
        problems.append(f"{node}: ISAKMP SA negotiated in {sa.get('mode')!r} mode; expected {expect.ike_mode!r}")
    if expect.ike_algorithms and not same_suite(sa.get("algorithms"), expect.ike_algorithms):
        problems.append(f"{node}: IKE SA uses {sa.get('algorithms')!r}; expected {expect.ike_algorithms!r}")
    return problems


def _child_problems(node: str, rows: Sequence[Mapping[str, Any]], expect: SaExpectation) -> list[str]:
    problems = []
    for protocol in expect.protection.split("+"):
        mine = [r for r in rows if r.get("protocol") == protocol]
        directions = {r.get("direction") for r in mine}
        if not {"in", "out"} <= directions:
            problems.append(f"{node}: {protocol} SAs {sorted(str(d) for d in directions)}; expected one in, one out")
        for row in mine:
            where = f"{node}: {protocol} SA {row.get('spi')} ({row.get('direction')})"
            if row.get("mode") != expect.mode:
                problems.append(f"{where} is in {row.get('mode')} mode; expected {expect.mode}")
            encapsulated = bool(row.get("encap"))
            if protocol == "esp" and encapsulated != expect.encap:
                problems.append(f"{where} is {'' if encapsulated else 'not '}UDP-encapsulated; expected the opposite")
            want = (expect.child_algorithms or {}).get(protocol)
            if want is not None:
                got = algorithm_tokens("-".join(str(a) for a in (row.get("encr"), row.get("integ")) if a))
                if got != without_dh(algorithm_tokens(want)):
                    problems.append(f"{where} uses {'-'.join(got)!r}; expected {want!r}")
    return problems
