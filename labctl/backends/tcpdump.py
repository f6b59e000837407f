"""Packet captures with tcpdump, the same way for every backend: start, wait until it listens, stop with a flush."""

from __future__ import annotations

import select
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from labctl.backends.base import BackendError, Capture

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class TcpdumpCapture(Capture):
    def __init__(self, process: subprocess.Popen[bytes], pcap: Path) -> None:
        self.process = process
        self.pcap = pcap

    def stop(self) -> Path:
        if self.process.poll() is None:
            # SIGINT lets tcpdump flush its buffer and write the last packets.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.pcap


def tcpdump_argv(interface: str, pcap: Path, bpf_filter: str | None = None) -> list[str]:
    # --immediate-mode: without it packets wait in the capture ring for up to a second, and a capture
    # stopped right after the traffic loses them. -U writes each packet to the file as it comes.
    # -Z root: tcpdump would otherwise drop to its own user and fail to write into root-only directories.
    argv = ["tcpdump", "-n", "--immediate-mode", "-U", "-Z", "root", "-i", interface, "-w", str(pcap)]
    if bpf_filter:
        argv.append(bpf_filter)
    return argv


def start_tcpdump(
    interface: str, pcap: Path, *, bpf_filter: str | None = None, prefix: Sequence[str] = (), what: str = ""
) -> TcpdumpCapture:
    """Capture on `interface` into `pcap`; returns once tcpdump listens (`prefix` runs it elsewhere, e.g.
    `ip netns exec NS`). `what` names the capture in errors ("internet (bridge dk1a2b3c-1)")."""
    if shutil.which("tcpdump") is None:
        raise BackendError("tcpdump is missing; install the tcpdump package to capture")
    argv = [*prefix, *tcpdump_argv(interface, pcap, bpf_filter)]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        raise BackendError(f"cannot start tcpdump on {what or interface}: {exc}") from exc
    stderr = process.stderr
    if stderr is None:
        raise BackendError("tcpdump started without its stderr pipe")
    # tcpdump says "listening on ..." once the capture is attached; until then packets would be missed.
    ready, _, _ = select.select([stderr], [], [], START_TIMEOUT)
    line = stderr.readline().decode(errors="replace") if ready else ""
    if "listening on" not in line:
        process.kill()
        rest = stderr.read().decode(errors="replace") if ready else f"(no answer within {START_TIMEOUT:g} s)"
        process.wait()
        raise BackendError(f"tcpdump on {what or interface} did not start: {(line + rest).strip()}")
    stderr.close()
    return TcpdumpCapture(process, pcap)
