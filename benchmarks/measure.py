"""One measurement each: iperf3 TCP/UDP, ping, CPU of the gateway processes, IKE setup time on the wire.

Every function returns plain numbers (a dict), so the runner can repeat it and take median/min/max.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .lab import HOST_B, Lab, LabError, run, stop_process, tail, wait_for

IPERF_PORT = 5201
CLK_TCK = os.sysconf("SC_CLK_TCK")


class IperfServer:
    """iperf3 -s in host-b's namespace, restarted when it is found gone (it exits on some client errors, and
    nothing else on a shared machine is guaranteed to leave it alone)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.log = lab.workdir / "iperf3-server.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.stop()
        self.proc = self.lab.popen("hb", ["iperf3", "-s", "-p", str(IPERF_PORT)], self.log)
        wait_for("iperf3 server", lambda: f":{IPERF_PORT} " in self.lab.exec("hb", ["ss", "-ltnH"]).stdout, 10,
                 lambda: tail(self.log))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


_SERVERS: dict[int, IperfServer] = {}  # id(lab) -> its server, so that a client can restart it


@contextmanager
def iperf_server(lab: Lab) -> Iterator[None]:
    server = _SERVERS[id(lab)] = IperfServer(lab)
    server.start()
    try:
        yield
    finally:
        server.stop()
        del _SERVERS[id(lab)]


def _iperf(lab: Lab, args: list[str], seconds: float) -> dict[str, Any]:
    cmd = ["iperf3", "-c", HOST_B, "-p", str(IPERF_PORT), "-J", "-t", str(seconds), "--connect-timeout", "3000",
           *args]
    for attempt in range(3):
        res = lab.exec("ha", cmd, check=False, timeout=seconds + 30)
        try:
            data: dict[str, Any] = json.loads(res.stdout)
        except json.JSONDecodeError:
            data = {"error": res.stderr.strip() or res.stdout[-300:]}
        if "error" not in data:
            return data
        error = str(data["error"])
        if attempt == 2:
            raise LabError(f"iperf3 {' '.join(args)}: {error}")
        if "busy" in error:
            time.sleep(0.5)  # the server is still closing the previous test
        elif id(lab) in _SERVERS:
            # Refused, reset, control message lost: iperf3 3.12's server does not always survive an overrun UDP
            # test. A fresh server and one more try; the figure is only lost if that fails twice.
            _SERVERS[id(lab)].start()
    raise LabError("unreachable")


def tcp(lab: Lab, seconds: float, streams: int = 1) -> dict[str, float]:
    data = _iperf(lab, ["-P", str(streams)], seconds)
    end = data["end"]
    return {"mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
            "retransmits": float(end["sum_sent"].get("retransmits", 0))}


def udp(lab: Lab, seconds: float, packet_size: int) -> dict[str, float]:
    """UDP at an unlimited offered rate; ``packet_size`` is the IP packet size (payload = size - 28)."""
    data = _iperf(lab, ["-u", "-b", "0", "-l", str(packet_size - 28)], seconds)
    s = data["end"]["sum"]
    packets, lost = float(s["packets"]), float(s["lost_packets"])
    return {"delivered_pps": (packets - lost) / max(s["seconds"], 1e-9), "loss_pct": float(s["lost_percent"])}


def ping(lab: Lab, count: int, interval: float = 0.05) -> dict[str, float]:
    res = lab.exec("ha", ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", HOST_B],
                   check=False, timeout=count * interval + 15)
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", res.stdout)
    if not m:
        raise LabError(f"ping through the tunnel failed: {res.stdout}{res.stderr}")
    return {"rtt_ms": float(m.group(2))}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads of the process


def tcp_with_load_figures(lab: Lab, seconds: float, pids: dict[str, int]) -> dict[str, float]:
    """One TCP stream, while a ping measures the RTT under load and /proc gives each gateway's CPU %."""
    log = lab.workdir / "ping-load.log"
    log.unlink(missing_ok=True)
    count = max(3, int(seconds / 0.05) - 10)
    pinger = lab.popen("ha", ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1", HOST_B], log)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    out = tcp(lab, seconds, 1)
    wall = time.monotonic() - t0
    for name, pid in pids.items():
        out[f"cpu_pct_{name}"] = 100 * (cpu_seconds(pid) - before[name]) / wall
    if pids:
        # Throughput per CPU the gateways burned: less sensitive to what else runs on the machine than Mbit/s,
        # because a gateway starved of CPU moves fewer bits but also burns less.
        out["mbit_per_cpu_pct"] = out["mbit_s"] / max(sum(out[f"cpu_pct_{n}"] for n in pids), 1e-9)
    try:
        pinger.wait(15)
    except subprocess.TimeoutExpired:
        stop_process(pinger)
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", tail(log))
    if m:
        out["rtt_load_ms"] = float(m.group(2))
    return out


# --- IKE setup time, read from a capture of the internet link ------------------------------------------------
def _pcap_times(path: Path) -> list[float]:
    data = path.read_bytes()
    if len(data) < 24:
        return []
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    rec = struct.Struct(endian + "IIII")
    times, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        times.append(sec + frac / (1e9 if nano else 1e6))
        off += 16 + incl
    return times


def ike_setup(lab: Lab, initiate: Callable[[], object], established: Callable[[], bool],
              terminate: Callable[[], object], expected_packets: int) -> dict[str, float]:
    """Milliseconds from the first to the last IKE packet of one setup (the same clock for both daemons)."""
    pcap = lab.workdir / "ike.pcap"
    pcap.unlink(missing_ok=True)
    log = lab.workdir / "ike-tcpdump.log"
    log.write_text("")
    cap = lab.popen("ga", ["tcpdump", "-i", lab.link("wa"), "-n", "-U", "-s", "128", "-w", str(pcap),
                           "udp port 500 or (udp port 4500 and udp[8:4] = 0)"], log)
    try:
        wait_for("tcpdump", lambda: "listening on" in tail(log), 10, lambda: tail(log))
        initiate()
        wait_for("the IKE SA and child SA", established, 15)
        deadline = time.monotonic() + 2
        while len(_pcap_times(pcap)) < expected_packets and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        time.sleep(0.1)
        stop_process(cap, sig=2)
        terminate()
    times = _pcap_times(pcap)[:expected_packets]
    if len(times) < 2:
        raise LabError(f"IKE capture holds {len(times)} packets")
    return {"setup_ms": 1000 * (times[-1] - times[0])}


def snmp_counter(lab: Lab, role: str, name: str) -> int:
    """A counter of the namespace's /proc/net/snmp (e.g. Tcp InCsumErrors)."""
    proto, field = re.match(r"([A-Z][a-z]+)(\w+)", name).groups()  # type: ignore[union-attr]
    lines = [ln.split() for ln in run(["ip", "netns", "exec", lab.ns(role), "cat", "/proc/net/snmp"]).stdout
             .splitlines() if ln.startswith(proto + ":")]
    return int(lines[1][lines[0].index(field)])
