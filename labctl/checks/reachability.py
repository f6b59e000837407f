"""Reachability through the lab: ping and a TCP transfer between two nodes, run inside the nodes.

The TCP check needs only python3 in the nodes (both backends' images have it): a one-shot sink that
answers with the byte count and SHA-256 of what it received, and a source that compares that answer.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from labctl.backends.base import Backend, BackendError
from labctl.checks.result import CheckResult, verdict
from labctl.lab.state import LabState

TCP_PORT = 5399
TCP_BYTES = 256 * 1024

_SINK = """
import hashlib, socket, sys
port, timeout = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(1); s.settimeout(timeout)
c, peer = s.accept(); c.settimeout(timeout)
h, n = hashlib.sha256(), 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d); n += len(d)
c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
print(f"received {n} bytes from {peer[0]}")
"""

_SOURCE = """
import hashlib, os, socket, sys, time
host, port, size, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
data = os.urandom(size); deadline = time.monotonic() + timeout
while True:
    try:
        c = socket.create_connection((host, port), timeout=max(0.5, deadline - time.monotonic())); break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
c.settimeout(timeout); c.sendall(data); c.shutdown(socket.SHUT_WR)
reply = b""
while True:
    d = c.recv(4096)
    if not d:
        break
    reply += d
want = f"{size} {hashlib.sha256(data).hexdigest()}"
print("sent", size, "bytes; sink answered", reply.decode(errors="replace"))
sys.exit(0 if reply.decode(errors="replace") == want else 1)
"""


@dataclass(frozen=True)
class Probe:
    """One attempt to reach `target` from `node` (ping or TCP) and what came of it."""

    kind: str
    node: str
    target: str
    ok: bool
    detail: str

    def describe(self) -> str:
        return f"{self.kind} {self.node} -> {self.target}: {'ok' if self.ok else 'failed'} ({self.detail})"


_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ping(backend: Backend, state: LabState, node: str, target: str, count: int = 3, wait: float = 2) -> Probe:
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", str(wait), target]
    try:
        result = backend.exec(state, node, argv, capture_output=True, timeout=count * (wait + 1) + 5)
    except BackendError as exc:
        return Probe("ping", node, target, False, str(exc))
    match = _PING_SUMMARY.search(result.stdout)
    if match is None:
        return Probe("ping", node, target, False, result.stderr.strip() or "ping printed no summary")
    sent, received = match.group(1), match.group(2)
    return Probe("ping", node, target, result.returncode == 0 and sent == received, f"{received}/{sent} replies")


def tcp_transfer(
    backend: Backend, state: LabState, source: str, sink: str, sink_address: str, *,
    size: int = TCP_BYTES, port: int = TCP_PORT, timeout: float = 10,
) -> Probe:
    """Send `size` random bytes from `source` to a sink on `sink`; ok when the sink's digest matches."""
    sink_result: list[str] = []

    def run_sink() -> None:
        try:
            r = backend.exec(state, sink, ["python3", "-c", _SINK, str(port), str(timeout)],
                             capture_output=True, timeout=timeout + 10)
            sink_result.append((r.stdout + r.stderr).strip())
        except BackendError as exc:
            sink_result.append(str(exc))

    thread = threading.Thread(target=run_sink, daemon=True)
    thread.start()
    try:
        r = backend.exec(state, source, ["python3", "-c", _SOURCE, sink_address, str(port), str(size), str(timeout)],
                         capture_output=True, timeout=timeout + 10)
        ok, detail = r.returncode == 0, (r.stdout.strip() or r.stderr.strip().splitlines()[-1:] or ["no output"])
    except BackendError as exc:
        ok, detail = False, str(exc)
    thread.join(timeout + 12)
    text = detail if isinstance(detail, str) else detail[0]
    if not ok and sink_result:
        text += f"; sink: {sink_result[0].splitlines()[-1] if sink_result[0] else 'no output'}"
    return Probe(f"tcp {size // 1024} KiB", source, sink_address, ok, text)


def check_probes(probes: Sequence[Probe], expect_ok: bool, name: str = "reachability") -> CheckResult:
    wrong = [p for p in probes if p.ok != expect_ok]
    problems = [f"{'unexpectedly ' if not expect_ok else ''}{p.describe()}" for p in wrong]
    expected = "every probe gets through" if expect_ok else "every probe fails (nothing gets through)"
    observed = f"{sum(p.ok for p in probes)}/{len(probes)} probes got through"
    return verdict(name, problems, expected, observed, [p.describe() for p in probes if p not in wrong])
