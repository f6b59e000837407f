"""Decryption evidence: tshark, given the gateways' exported `esp_sa` table, opens every ESP packet of the
capture, and what is inside is exactly the test traffic (so the keys are the ones in use, RFC 4303 §2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labctl.checks.frames import Frame
from labctl.checks.result import CheckResult, verdict
from labctl.checks.wire import TRANSPORT_LAYERS

ICMP_ECHO_REQUEST = 8  # RFC 792
ICMP_ECHO_REPLY = 0


@dataclass(frozen=True)
class Flow:
    """Test traffic between two inner addresses: ICMP echo both ways, and TCP on `tcp_port` (if set)."""

    a: str
    b: str
    tcp_port: int | None = None


def decrypted(frame: Frame) -> bool:
    index = frame.layers.index("esp")
    return index + 1 < len(frame.layers) and frame.layers[index + 1] in TRANSPORT_LAYERS


def _inner(frame: Frame) -> tuple[str, str]:
    return (frame.src[-1], frame.dst[-1]) if frame.src and frame.dst else ("?", "?")


def classify_inner(frame: Frame, flow: Flow) -> str | None:
    """Which test traffic a decrypted frame carries (echo-request a->b, tcp, ...), None when it is something else."""
    src, dst = _inner(frame)
    if {src, dst} != {flow.a, flow.b}:
        return None
    direction = "a->b" if src == flow.a else "b->a"
    after = frame.layers[frame.layers.index("esp") + 1:]
    if "icmp" in after and frame.icmp_types:
        kind = {ICMP_ECHO_REQUEST: "echo-request", ICMP_ECHO_REPLY: "echo-reply"}.get(frame.icmp_types[-1])
        return f"{kind} {direction}" if kind else None
    if "tcp" in after and flow.tcp_port is not None and flow.tcp_port in frame.tcp_ports:
        return f"tcp {direction}"
    return None


def carried(frame: Frame, carrier: str) -> bool:
    """The decrypted payload is `carrier` (e.g. ESP transport mode -> udp -> l2tp, RFC 3193 §5)."""
    return carrier in frame.layers[frame.layers.index("esp") + 1:]


def carrier_own(frame: Frame, carrier: str) -> bool:
    """A message of the carrier itself, with no IP packet inside (L2TP control, PPP LCP/CHAP/IPCP)."""
    return "ip" not in frame.layers[frame.layers.index(carrier) + 1:]


def check_decryption(
    frames: Sequence[Frame], flows: Flow | Sequence[Flow], name: str = "decryption", carrier: str | None = None,
) -> CheckResult:
    """Every ESP frame decrypts with the exported keys and carries the test traffic of `flows` (each both ways).

    With a `carrier` (remote access: "l2tp"), every decrypted frame must carry that protocol; its own messages
    (no IP packet inside) are expected beside the test traffic, which travels inside it."""
    flows = [flows] if isinstance(flows, Flow) else list(flows)
    esp = [f for f in frames if "esp" in f.layers]
    problems: list[str] = []
    if not esp:
        problems.append("no ESP frame in the capture")
    opened = [f for f in esp if decrypted(f)]
    problems += [f"did not decrypt with the exported keys: {f.describe()} (SPI {','.join(f.esp_spis)})"
                 for f in esp if not decrypted(f)]
    seen: dict[tuple[int, str], int] = {}
    own = 0
    for frame in opened:
        if carrier is not None and not carried(frame, carrier):
            problems.append(f"decrypted, but it does not carry {carrier.upper()}: {frame.describe()}")
            continue
        if carrier is not None and carrier_own(frame, carrier):
            own += 1
            continue
        kinds = [(i, kind) for i, flow in enumerate(flows) if (kind := classify_inner(frame, flow)) is not None]
        if not kinds:
            between = " or ".join(f"{flow.a} and {flow.b}" for flow in flows)
            problems.append(f"decrypted, but not the test traffic between {between}: {frame.describe()}")
            continue
        seen[kinds[0]] = seen.get(kinds[0], 0) + 1
    for i, flow in enumerate(flows):
        problems += _missing(flow, {kind for (j, kind) in seen if j == i})
    inside = f" inside {carrier.upper()}" if carrier else ""
    tcp = " and TCP" if any(flow.tcp_port is not None for flow in flows) else ""
    pairs = ", ".join(f"{flow.a} <-> {flow.b}" for flow in flows)
    expected = f"every ESP frame decrypts; inside{inside}: ICMP echo{tcp} both ways between {pairs}"
    counts: dict[str, int] = {}
    for (_, kind), n in seen.items():
        counts[kind] = counts.get(kind, 0) + n
    observed = f"{len(opened)}/{len(esp)} ESP frames decrypted; " + (
        ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no test traffic inside")
    if carrier is not None:
        observed += f"; {own} {carrier.upper()} message(s) of its own"
    return verdict(name, problems, expected, observed)


def _missing(flow: Flow, seen: set[str]) -> list[str]:
    wanted = ["echo-request a->b", "echo-reply b->a", "echo-request b->a", "echo-reply a->b"]
    if flow.tcp_port is not None:
        wanted += ["tcp a->b", "tcp b->a"]
    names = {"a->b": f"{flow.a} -> {flow.b}", "b->a": f"{flow.b} -> {flow.a}"}
    return [f"no decrypted {kind.split()[0]} {names[kind.split()[1]]}" for kind in wanted if kind not in seen]
