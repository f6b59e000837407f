"""`labctl up` to the first packet through the tunnel, on the netns and Docker backends (issue 9).

    sudo python3 -m benchmarks.labup [--runs 3] [--backends netns,docker] [--topology site-to-site]

Each run: `up` (images already built for Docker: the first Docker run builds them and is not counted), then pings
host-a -> host-b until one answers; the figure is the time from the start of `up` to that answer. Prints
median [min-max] per backend and writes JSON with every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from labctl.backends import get_backend
from labctl.lab.lifecycle import down_lab, up_lab
from labctl.lab.state import LabState
from labctl.topology.catalog import resolve_topology
from labctl.topology.load import load_topology

LAB = "bn-labup"
PING_TIMEOUT = 30.0


def first_packet(backend_name: str, topology: str, src: str, dst_addr: str) -> float:
    started = time.monotonic()
    up_lab(load_topology(resolve_topology(topology)), backend=backend_name, lab=LAB)
    backend = get_backend(backend_name)
    state = LabState(LAB)
    try:
        while time.monotonic() - started < PING_TIMEOUT:
            result = backend.exec(state, src, ["ping", "-c", "1", "-W", "0.2", dst_addr], capture_output=True)
            if result.returncode == 0:
                return time.monotonic() - started
        raise RuntimeError(f"no answer from {dst_addr} within {PING_TIMEOUT:.0f} s of `up` on {backend_name}")
    finally:
        down_lab(LAB)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.labup", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--backends", default="netns,docker")
    p.add_argument("--topology", default="site-to-site")
    p.add_argument("--src", default="host-a")
    p.add_argument("--dst", default="10.2.0.10")
    p.add_argument("--json", default="labup-results.json")
    ns = p.parse_args(argv)
    down_lab(LAB)  # a lab left by an interrupted earlier run
    results: dict[str, list[float]] = {}
    for backend in ns.backends.split(","):
        if backend == "docker":
            # Build (or find) the images first so that the runs time `up`, not an image build.
            subprocess.run([sys.executable, "-c", "from labctl.cli import main; main()", "image", "build"],
                           check=True, stdout=subprocess.DEVNULL)
        results[backend] = [first_packet(backend, ns.topology, ns.src, ns.dst) for _ in range(ns.runs)]
    print(f"`labctl up {ns.topology}` to the first ping answered through the tunnel ({ns.runs} runs):")
    for backend, times in results.items():
        print(f"  {backend:7s} {statistics.median(times):.2f} s [{min(times):.2f}-{max(times):.2f}]")
    Path(ns.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
