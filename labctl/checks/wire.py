"""Wire evidence from a capture on the untrusted segment, judged from tshark's dissection.

Rules (each with its reason):
- Between the two IPsec ends only IKE (UDP 500, or 4500 after a NAT was found), ESP, AH and ESP-in-UDP
  (UDP 4500, RFC 3948 §2) may cross; anything else on the segment is protected traffic leaking in clear.
- ESP hides its payload (RFC 4303 §1): without keys, nothing after the ESP header is readable.
- AH only authenticates (RFC 4302 §1): the inner packet stays readable, so it must be seen.
- IKEv1 Aggressive Mode sends the identities unencrypted (RFC 2409 §5 / §5.4); Main Mode encrypts them
  in messages 5 and 6 (RFC 2409 §5), and IKEv2 inside the SK payload of IKE_AUTH (RFC 7296 §1.2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from labctl.checks.frames import IKE_PORTS, NATT_PORT, Frame
from labctl.checks.result import CheckResult, verdict

# RFC 7296 §3.1 / RFC 2408 §3.1: the Version field is major.minor in one octet.
IKE_VERSION_FIELD = {1: "0x10", 2: "0x20"}
# RFC 2408 §4.1 / RFC 2409 §5: exchange types 2 = Identity Protection (Main Mode), 4 = Aggressive.
IKEV1_EXCHANGE = {"main": 2, "aggressive": 4}
TRANSPORT_LAYERS = frozenset({"ip", "ipv6", "icmp", "tcp", "udp", "icmpv6"})
# ICMP errors (RFC 792: destination unreachable, time exceeded, parameter problem) quote the packet's header.
ICMP_ERRORS = frozenset({3, 11, 12})
# ARP, IPv6 neighbour discovery and IGMP membership reports (sent to 224.0.0.22 when an interface comes up,
# RFC 3376 §4.2.14) are the segment's own chatter, never lab traffic.
LINK_LOCAL_LAYERS = frozenset({"arp", "icmpv6", "igmp"})


@dataclass(frozen=True)
class WireExpectation:
    peers: frozenset[str]
    """The two IPsec ends' addresses as seen on the segment (behind a NAT: the router's)."""
    protection: str
    """esp | ah | ah+esp"""
    encap: bool
    """ESP must travel in UDP 4500 (a NAT between the ends, or encapsulation forced)."""
    ike_version: int | None
    """1 or 2 when IKE keys the SAs (its messages must be on the wire); None with manual keys."""
    ike_mode: str | None = None
    """IKEv1 phase 1: main | aggressive."""
    identity_visible: bool | None = None
    """True: an identity payload must be readable in clear; False: none may be; None: not judged."""
    encap_peers: frozenset[str] = frozenset()
    """With more than two ends (remote access): the ends behind a NAT, whose ESP travels in UDP 4500 while the
    others' does not (RFC 3947 / RFC 3948 decide it per peer)."""
    hub: str | None = None
    """With more than two ends: the one every IPsec packet comes from or goes to (the LNS); the others never
    talk to each other."""

    def encap_for(self, outer: set[str]) -> bool:
        return self.encap or bool(outer & self.encap_peers)


def ipsec_kind(frame: Frame) -> str | None:
    """What IPsec-related thing the frame's outermost IPv4 packet is, or None when it is something else."""
    first = frame.after("ip")
    if first == "esp":
        return "esp"
    if first == "ah":
        return "ah"
    if first == "udp" and frame.udp_ports[:2] and set(frame.udp_ports[:2]) & IKE_PORTS:
        if "esp" in frame.layers:
            return "esp-in-udp"
        if "isakmp" in frame.layers:
            return "ike"
        if NATT_PORT in frame.udp_ports[:2]:
            return "natt-keepalive"  # RFC 3948 §2.3: one octet 0xFF
    return None


def icmp_error_about_ipsec(frame: Frame) -> bool:
    """An ICMP error (e.g. protocol unreachable from a stopped gateway) that quotes an IPsec packet's header."""
    if frame.after("ip") != "icmp" or not frame.icmp_types or frame.icmp_types[0] not in ICMP_ERRORS:
        return False
    quoted = frame.layers[frame.layers.index("icmp") + 1:]
    return bool(quoted) and quoted[0] == "ip" and len(quoted) > 1 and quoted[1] in ("esp", "ah", "udp")


def esp_inside_ah(frame: Frame) -> bool:
    """AH protecting ESP: directly (ah:esp, RFC 4301 §4.5 transport adjacency) or with an IP header between
    (ah:ip:esp, AH in tunnel mode around the ESP packet, iterated tunnelling)."""
    inner = frame.layers[frame.layers.index("ah") + 1:] if "ah" in frame.layers else []
    return inner[:1] == ("esp",) or inner[:2] == ("ip", "esp")


def link_local(frame: Frame) -> bool:
    """The segment's own chatter (see LINK_LOCAL_LAYERS)."""
    if frame.is_ipv4:
        return frame.after("ip") == "igmp" and bool(frame.dst) and frame.dst[0].startswith("224.0.0.")
    return bool(LINK_LOCAL_LAYERS & set(frame.layers))


def _payload_visible(frame: Frame, after: str) -> bool:
    nxt = frame.layers[frame.layers.index(after) + 1:] if after in frame.layers else []
    return bool(nxt) and nxt[0] in TRANSPORT_LAYERS


def check_wire(frames: Sequence[Frame], expect: WireExpectation, name: str = "wire") -> CheckResult:
    problems: list[str] = []
    counts: dict[str, int] = {}
    for frame in frames:
        if link_local(frame):
            continue
        kind = ipsec_kind(frame) if frame.is_ipv4 else None
        outer = {frame.src[0], frame.dst[0]} if frame.src and frame.dst else set()
        if kind is None and icmp_error_about_ipsec(frame):
            # e.g. "port unreachable" for a NAT keepalive sent before the peer's socket was open: it quotes
            # only an IPsec header, never protected data.
            kind = "icmp-error"
            counts[kind] = counts.get(kind, 0) + 1
            if not outer <= expect.peers:
                problems.append(f"ICMP error outside the ends {sorted(expect.peers)}: {frame.describe()}")
            continue
        if kind is None:
            problems.append(f"cleartext on the segment: {frame.describe()}")
            continue
        if not outer <= expect.peers or (expect.hub is not None and expect.hub not in outer):
            problems.append(f"IPsec traffic outside the ends {sorted(expect.peers)}"
                            f"{' (each with ' + expect.hub + ')' if expect.hub else ''}: {frame.describe()}")
        counts[kind] = counts.get(kind, 0) + 1
        problems += _protection_problems(frame, kind, expect, expect.encap_for(outer))
    problems += _evidence_problems(frames, counts, expect)
    observed = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no IPsec frames"
    expected = _describe(expect)
    return verdict(name, problems, expected, observed)


def _protection_problems(frame: Frame, kind: str, expect: WireExpectation, encap: bool) -> list[str]:
    problems = []
    if kind == "esp" and encap:
        problems.append(f"raw ESP although UDP encapsulation (RFC 3948) was expected: {frame.describe()}")
    if kind == "esp-in-udp" and not encap:
        problems.append(f"ESP in UDP although no NAT or forced encapsulation was expected: {frame.describe()}")
    if kind in ("esp", "esp-in-udp") and expect.protection == "ah" and "ah" not in frame.layers:
        problems.append(f"ESP where AH was expected: {frame.describe()}")
    if kind in ("esp", "esp-in-udp") and expect.protection == "ah+esp":
        problems.append(f"ESP outside AH where an AH+ESP bundle was expected: {frame.describe()}")
    if kind == "ah":
        if expect.protection == "esp":
            problems.append(f"AH where ESP was expected: {frame.describe()}")
        elif expect.protection == "ah" and esp_inside_ah(frame):
            problems.append(f"ESP inside AH where AH alone was expected: {frame.describe()}")
        elif expect.protection == "ah+esp" and not esp_inside_ah(frame):
            problems.append(f"AH without ESP inside where an AH+ESP bundle was expected: {frame.describe()}")
    if "esp" in frame.layers and _payload_visible(frame, "esp"):
        problems.append(f"ESP payload readable without keys: {frame.describe()}")
    if kind == "ike" and expect.ike_version is None:
        problems.append(f"IKE on the wire although the SAs are keyed by hand: {frame.describe()}")
    return problems


def _evidence_problems(frames: Sequence[Frame], counts: dict[str, int], expect: WireExpectation) -> list[str]:
    problems = []
    if not counts.get("esp", 0) + counts.get("esp-in-udp", 0) + counts.get("ah", 0):
        problems.append("no ESP or AH frame was captured: the test traffic did not cross this segment protected")
    if expect.protection == "ah":
        visible = [f for f in frames if ipsec_kind(f) == "ah" and _payload_visible(f, "ah")]
        if counts.get("ah") and not visible:
            problems.append("AH frames were seen but none shows its inner packet (AH does not encrypt)")
    if expect.ike_version is not None:
        problems += _ike_problems([f for f in frames if "isakmp" in f.layers], expect)
    return problems


def _ike_problems(ike: Sequence[Frame], expect: WireExpectation) -> list[str]:
    if not ike:
        return [f"no IKEv{expect.ike_version} message was captured"]
    problems = []
    wanted = IKE_VERSION_FIELD.get(expect.ike_version or 0)
    versions = {v for f in ike for v in f.ike_versions}
    if wanted and versions - {wanted}:
        problems.append(f"IKE version field(s) {sorted(versions)} seen; expected only {wanted} "
                        f"(IKEv{expect.ike_version})")
    if expect.ike_version == 1 and expect.ike_mode in IKEV1_EXCHANGE:
        exchanges = {x for f in ike for x in f.ike_exchanges}
        wanted_x = IKEV1_EXCHANGE[expect.ike_mode]
        if wanted_x not in exchanges:
            problems.append(f"no {expect.ike_mode} mode exchange (type {wanted_x}) seen; "
                            f"exchange types: {sorted(exchanges)}")
    readable = [f for f in ike if f.id_types]
    if expect.identity_visible is True and not readable:
        problems.append("no identity payload readable in clear, though this exchange sends it unencrypted")
    if expect.identity_visible is False:
        problems += [f"identity readable in clear: {f.describe()}" for f in readable]
    return problems


def _describe(expect: WireExpectation) -> str:
    parts = [f"only IKE/{expect.protection.upper()}{' in UDP 4500' if expect.encap else ''} between "
             f"{' and '.join(sorted(expect.peers))}"]
    if expect.encap_peers and not expect.encap:
        parts.append(f"ESP in UDP 4500 with {', '.join(sorted(expect.encap_peers))} (behind a NAT), raw ESP otherwise")
    if expect.protection == "ah":
        parts.append("inner packets visible (AH)")
    else:
        parts.append("ESP payload unreadable")
    if expect.identity_visible is not None:
        parts.append("identity readable in clear" if expect.identity_visible else "identity not readable")
    return "; ".join(parts)


def in_any(address: str, prefixes: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(prefix, strict=False) for prefix in prefixes)


def check_no_cleartext(frames: Sequence[Frame], protected: Sequence[str], name: str = "no-cleartext") -> CheckResult:
    """Fail closed: no packet to or from a protected prefix crosses the segment unprotected.

    ICMP errors about IPsec packets (a stopped gateway answering ESP with "protocol unreachable") quote only
    the IPsec header, never the protected payload, so they are not a leak."""
    problems = []
    protected_frames = 0
    for frame in frames:
        if link_local(frame) or not frame.src or not frame.dst:
            continue
        if ipsec_kind(frame) is not None or icmp_error_about_ipsec(frame):
            protected_frames += 1
            continue
        if in_any(frame.src[0], protected) or in_any(frame.dst[0], protected):
            problems.append(f"protected traffic crossed in clear: {frame.describe()}")
    observed = f"{len(problems)} cleartext frame(s) of {', '.join(protected)}; {protected_frames} IPsec frame(s)"
    return verdict(name, problems, f"no cleartext packet of {', '.join(protected)} on the segment", observed)
