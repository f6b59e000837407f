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


def check_decryption(frames: Sequence[Frame], flow: Flow, name: str = "decryption") -> CheckResult:
    esp = [f for f in frames if "esp" in f.layers]
    problems: list[str] = []
    if not esp:
        problems.append("no ESP frame in the capture")
    opened = [f for f in esp if decrypted(f)]
    problems += [f"did not decrypt with the exported keys: {f.describe()} (SPI {','.join(f.esp_spis)})"
                 for f in esp if not decrypted(f)]
    seen: dict[str, int] = {}
    for frame in opened:
        kind = classify_inner(frame, flow)
        if kind is None:
            problems.append(f"decrypted, but not the test traffic between {flow.a} and {flow.b}: {frame.describe()}")
            continue
        seen[kind] = seen.get(kind, 0) + 1
    wanted = ["echo-request a->b", "echo-reply b->a", "echo-request b->a", "echo-reply a->b"]
    if flow.tcp_port is not None:
        wanted += ["tcp a->b", "tcp b->a"]
    names = {"a->b": f"{flow.a} -> {flow.b}", "b->a": f"{flow.b} -> {flow.a}"}
    problems += [f"no decrypted {kind.split()[0]} {names[kind.split()[1]]}" for kind in wanted if not seen.get(kind)]
    tcp = f" and TCP port {flow.tcp_port}" if flow.tcp_port else ""
    expected = f"every ESP frame decrypts; inside: ICMP echo{tcp} between {flow.a} and {flow.b}, both ways"
    observed = f"{len(opened)}/{len(esp)} ESP frames decrypted; " + (
        ", ".join(f"{n} {k}" for k, n in sorted(seen.items())) or "no test traffic inside")
    return verdict(name, problems, expected, observed)
