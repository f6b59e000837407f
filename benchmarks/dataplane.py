"""Data-plane benchmark: plain routing vs our gateway vs strongSwan kernel-libipsec, in one run (issue 9).

    sudo python3 -m benchmarks.dataplane            # full run: several minutes
    sudo python3 -m benchmarks.dataplane --quick    # smoke run: seconds per variant, one repetition

Prints a table (median [min-max] of the repetitions) with the ratios ours/strongSwan and ours/plain, and writes
the same figures as JSON (``--json``, default ``benchmark-results.json`` in the work directory). See
benchmarks/README.md for what each figure means and how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import measure
from .lab import (
    ALGORITHMS,
    CHARON,
    GW_A,
    GW_B,
    IKE_PROPOSAL,
    LAN_A,
    LAN_B,
    Charon,
    Lab,
    LabError,
    OurGateway,
    ours_ike_configs,
    ours_manual_configs,
    swanctl_conf,
    wait_for,
)

UDP_SIZES = (64, 512, 1400)


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # plain | ours | strongswan
    algorithm: str = ""  # a key of ALGORITHMS
    encap: bool = True  # ESP in UDP 4500 (strongSwan's libipsec always is)
    csum_proof: bool = False  # transmit checksum offload off on gw-b's LAN side (Lab.tx_checksum_offload)


def variants(quick: bool) -> list[Variant]:
    out = [Variant("plain", "plain")]
    for alg in ALGORITHMS if not quick else ("gcm128",):
        out += [Variant(f"ours-{alg}-udp", "ours", alg, True), Variant(f"ours-{alg}-esp", "ours", alg, False),
                Variant(f"strongswan-{alg}-udp", "strongswan", alg, True)]
    # The same as ours-gcm128-udp, but every TCP checksum our coalesced TUN writes leave to the kernel is computed
    # in software on gw-b and checked by host-b. Slower by construction (software checksums, no TSO to host-b).
    out.append(Variant("ours-gcm128-udp-csum", "ours", "gcm128", True, csum_proof=True))
    return out


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Runner:
    def __init__(self, lab: Lab, runs: int, seconds: float, quick: bool) -> None:
        self.lab = lab
        self.runs = runs
        self.seconds = seconds
        self.quick = quick

    def repeat(self, fn: Callable[[], dict[str, float]], warmup: bool = False) -> dict[str, dict[str, float]]:
        """Run ``fn`` ``runs`` times (after one discarded run with ``warmup``: first-use costs such as lazy imports
        are not what is compared); median, min and max of each figure."""
        if warmup:
            fn()
        samples: dict[str, list[float]] = {}
        for _ in range(self.runs):
            for key, value in fn().items():
                samples.setdefault(key, []).append(value)
        return {key: _stats(vals) for key, vals in samples.items()}

    def start(self, v: Variant) -> tuple[dict[str, int], Callable[[], None]]:
        """Bring variant ``v`` up; returns the gateway pids and a function that stops it."""
        lab = self.lab
        if v.kind == "plain":
            lab.route_plain(True)
            return {}, lambda: lab.route_plain(False)
        encr, integ = ALGORITHMS[v.algorithm]
        if v.kind == "ours":
            a, b = ours_manual_configs(encr, integ, v.encap)
            gws = [OurGateway(lab, "ga", a).start(), OurGateway(lab, "gb", b).start()]
            pids = {"ga": gws[0].pid, "gb": gws[1].pid}
        else:
            esp = f"{encr}-{integ}" if integ else encr
            charons = []
            for role, local, remote, lts, rts in (("gb", GW_B, GW_A, LAN_B, LAN_A), ("ga", GW_A, GW_B, LAN_A, LAN_B)):
                conf = swanctl_conf(local, remote, lts, rts, esp, IKE_PROPOSAL, 2, start=False)
                charons.append(Charon(lab, role, conf).start())
            charons[1].swanctl("--initiate", "--child", "bench", "--timeout", "10", timeout=20)
            gws = charons  # type: ignore[assignment]
            pids = {"ga": charons[1].pid, "gb": charons[0].pid}
        wait_for(f"{v.name}: a ping through the tunnel", lambda: lab.exec(
            "ha", ["ping", "-n", "-c", "1", "-W", "1", "10.2.0.10"], check=False).returncode == 0, 20)

        def stop() -> None:
            for g in gws:
                g.stop()

        return pids, stop

    def data_plane(self, v: Variant) -> dict[str, Any]:
        lab, t = self.lab, self.seconds
        csum_before = measure.snmp_counter(lab, "hb", "TcpInCsumErrors")
        if v.csum_proof:
            lab.tx_checksum_offload(False)
        pids, stop = self.start(v)
        try:
            figures: dict[str, Any] = {"ping_idle": self.repeat(lambda: measure.ping(lab, 10 if self.quick else 40))}
            with measure.iperf_server(lab):
                figures["tcp1"] = self.repeat(lambda: measure.tcp_with_load_figures(lab, t, pids))
                figures["tcp4"] = self.repeat(lambda: measure.tcp(lab, t, 4))
                for size in UDP_SIZES:
                    figures[f"udp{size}"] = self.repeat(lambda size=size: measure.udp(lab, t, size))  # type: ignore[misc]
        finally:
            stop()
            if v.csum_proof:
                lab.tx_checksum_offload(True)
        figures["tcp_csum_errors_host_b"] = measure.snmp_counter(lab, "hb", "TcpInCsumErrors") - csum_before
        return figures

    def ike(self) -> dict[str, Any]:
        """IKE setup (IKEv2 SA_INIT+AUTH: 4 packets; IKEv1 Main+Quick Mode: 9), ours-ours vs strongSwan-strongSwan."""
        out: dict[str, Any] = {}
        for version, packets in ((2, 4), (1, 9)):
            out[f"ours_ikev{version}"] = self._ike_ours(version, packets)
            out[f"strongswan_ikev{version}"] = self._ike_strongswan(version, packets)
        return out

    def _ike_ours(self, version: int, packets: int) -> dict[str, dict[str, float]]:
        lab = self.lab
        a, b = ours_ike_configs(version)
        gws = [OurGateway(lab, "gb", b).start(), OurGateway(lab, "ga", a).start()]
        ga = gws[1]

        def installed() -> bool:
            return any(x["state"] == "installed" for x in ga.ctl("status")["gateway"]["bindings"])

        def down() -> None:
            ga.ctl("terminate", "bench")
            wait_for("our SAs to go", lambda: not installed(), 10)

        try:
            return self.repeat(lambda: measure.ike_setup(lab, lambda: ga.ctl("initiate", "bench"), installed, down,
                                                         packets), warmup=True)
        finally:
            for g in gws:
                g.stop()

    def _ike_strongswan(self, version: int, packets: int) -> dict[str, dict[str, float]]:
        lab = self.lab
        charons: list[Charon] = []
        try:
            for role, local, remote, lts, rts in (("gb", GW_B, GW_A, LAN_B, LAN_A), ("ga", GW_A, GW_B, LAN_A, LAN_B)):
                conf = swanctl_conf(local, remote, lts, rts, "aes128gcm16", IKE_PROPOSAL, version, False)
                charons.append(Charon(lab, role, conf).start())
            ga = charons[1]
            return self.repeat(lambda: measure.ike_setup(
                lab,
                lambda: ga.swanctl("--initiate", "--child", "bench", "--timeout", "10", timeout=20),
                lambda: True,  # swanctl --initiate returns once the CHILD_SA is up
                lambda: ga.swanctl("--terminate", "--ike", "bench", "--timeout", "5", check=False),
                packets), warmup=True)
        finally:
            for c in charons:
                c.stop()


# --- report ---------------------------------------------------------------------------------------------------
ROWS = [  # (label, figure, key, format)
    ("TCP 1 stream Mbit/s", "tcp1", "mbit_s", "{:.0f}"),
    ("TCP 1 stream retransmits", "tcp1", "retransmits", "{:.0f}"),
    ("TCP 4 streams Mbit/s", "tcp4", "mbit_s", "{:.0f}"),
    ("TCP 4 streams retransmits", "tcp4", "retransmits", "{:.0f}"),
    *[(f"UDP {s} B delivered pps", f"udp{s}", "delivered_pps", "{:.0f}") for s in UDP_SIZES],
    *[(f"UDP {s} B loss %", f"udp{s}", "loss_pct", "{:.1f}") for s in UDP_SIZES],
    ("ping RTT idle ms", "ping_idle", "rtt_ms", "{:.3f}"),
    ("ping RTT under TCP load ms", "tcp1", "rtt_load_ms", "{:.2f}"),
    ("CPU % gw-a (TCP 1 stream)", "tcp1", "cpu_pct_ga", "{:.0f}"),
    ("CPU % gw-b (TCP 1 stream)", "tcp1", "cpu_pct_gb", "{:.0f}"),
    ("Mbit/s per gateway CPU % (TCP 1)", "tcp1", "mbit_per_cpu_pct", "{:.1f}"),
]


def cell(figures: dict[str, Any], figure: str, key: str, fmt: str) -> str:
    f = figures.get(figure, {}).get(key)
    if not f:
        return "-"
    if f["min"] == f["max"]:
        return fmt.format(f["median"])
    return f"{fmt.format(f['median'])} [{fmt.format(f['min'])}-{fmt.format(f['max'])}]"


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Median ratios for the headline figures, from this one run."""
    out: dict[str, float] = {}
    dp = results["data_plane"]

    def med(variant: str, figure: str, key: str) -> float | None:
        f = dp.get(variant, {}).get(figure, {}).get(key)
        return f["median"] if f else None

    for alg in ALGORITHMS:
        ss = med(f"strongswan-{alg}-udp", "tcp1", "mbit_s")
        plain = med("plain", "tcp1", "mbit_s")
        for enc in ("udp", "esp"):
            ours = med(f"ours-{alg}-{enc}", "tcp1", "mbit_s")
            if ours and ss:
                out[f"tcp1 ours-{alg}-{enc} / strongswan-{alg}-udp"] = ours / ss
            if ours and plain:
                out[f"tcp1 ours-{alg}-{enc} / plain"] = ours / plain
        ours_eff = med(f"ours-{alg}-udp", "tcp1", "mbit_per_cpu_pct")
        ss_eff = med(f"strongswan-{alg}-udp", "tcp1", "mbit_per_cpu_pct")
        if ours_eff and ss_eff:
            out[f"tcp1 Mbit/s per CPU % ours-{alg}-udp / strongswan-{alg}-udp"] = ours_eff / ss_eff
        ours_rtt, ss_rtt = med(f"ours-{alg}-udp", "ping_idle", "rtt_ms"), med(f"strongswan-{alg}-udp", "ping_idle",
                                                                                 "rtt_ms")
        if ours_rtt and ss_rtt:
            out[f"idle RTT ours-{alg}-udp / strongswan-{alg}-udp"] = ours_rtt / ss_rtt
    ike = results.get("ike", {})
    for v in (2, 1):
        o, s = ike.get(f"ours_ikev{v}"), ike.get(f"strongswan_ikev{v}")
        if o and s:
            out[f"IKEv{v} setup ours / strongswan"] = o["setup_ms"]["median"] / s["setup_ms"]["median"]
    return out


def table(results: dict[str, Any]) -> str:
    dp = results["data_plane"]
    names = list(dp)
    rows = [(label, [cell(dp[n], figure, key, fmt) for n in names]) for label, figure, key, fmt in ROWS]
    rows = [(label, cells) for label, cells in rows if any(c != "-" for c in cells)]
    rows.append(("TCP checksum errors on host-b", [str(dp[n].get("tcp_csum_errors_host_b", "-")) for n in names]))
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(n), *(len(cells[i]) for _, cells in rows)) + 2 for i, n in enumerate(names)]
    lines = ["".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols, strict=True))]
    for label, cells in rows:
        lines.append(label.ljust(width) + "".join(c.rjust(w) for c, w in zip(cells, cols, strict=True)))
    ike = results.get("ike", {})
    if ike:
        lines.append("")
        lines.append("IKE setup ms (first to last packet on the wire)")
        for name, f in ike.items():
            lines.append(f"  {name:<22}{cell({'x': f}, 'x', 'setup_ms', '{:.1f}')}")
    lines.append("")
    lines.append("Ratios (medians, this run)")
    for name, value in results["ratios"].items():
        lines.append(f"  {name:<64}{value:6.2f}")
    lines.append("")
    lines.append("labctl up -> first packet (netns / Docker): measured by `python3 -m benchmarks.labup`")
    return "\n".join(lines)


def preflight() -> None:
    missing = [t for t in ("iperf3", "ping", "tcpdump", "ip", "swanctl") if shutil.which(t) is None]
    if not Path(CHARON).exists():
        missing.append(CHARON)
    if missing:
        raise SystemExit("the benchmark needs: " + ", ".join(missing) + " (apt-get install iperf3 tcpdump "
                         "strongswan-charon strongswan-swanctl libcharon-extra-plugins)")
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces: run it as root")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.dataplane", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s tests, one repetition, AES-GCM only")
    p.add_argument("--runs", type=int, help="repetitions of each figure (default 3; 1 with --quick)")
    p.add_argument("--seconds", type=float, help="length of each iperf3 test (default 5; 1 with --quick)")
    p.add_argument("--only", help="comma-separated variant names to run (plain, ours-gcm128-udp, ...)")
    p.add_argument("--no-ike", action="store_true", help="skip the IKE setup timing")
    p.add_argument("--workdir", help="where logs and the JSON go (default: a new temporary directory)")
    p.add_argument("--json", help="result file (default WORKDIR/benchmark-results.json)")
    ns = p.parse_args(argv)
    preflight()
    runs = ns.runs or (1 if ns.quick else 3)
    seconds = ns.seconds or (1.0 if ns.quick else 5.0)
    workdir = Path(ns.workdir or tempfile.mkdtemp(prefix="labctl-bench-"))
    lab = Lab(workdir)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs, "seconds": seconds,
                               "quick": ns.quick, "lab_tag": lab.tag, "load_average_start": os.getloadavg(),
                               "data_plane": {}}
    chosen = [v for v in variants(ns.quick) if not ns.only or v.name in ns.only.split(",")]
    failed = False
    try:
        lab.build()
        runner = Runner(lab, runs, seconds, ns.quick)
        for v in chosen:
            print(f"... {v.name}", file=sys.stderr, flush=True)
            try:
                results["data_plane"][v.name] = runner.data_plane(v)
            except LabError as exc:  # one variant failing must not cost the others' figures
                print(f"{v.name} failed: {exc}", file=sys.stderr)
                results["data_plane"][v.name] = {"error": str(exc)}
                failed = True
        if not ns.no_ike:
            print("... IKE setup", file=sys.stderr, flush=True)
            results["ike"] = runner.ike()
    except LabError as exc:
        print(f"benchmark failed: {exc}\n(logs in {workdir})", file=sys.stderr)
        return 1
    finally:
        problems = lab.close()
        if problems:
            print("could not remove: " + "; ".join(problems), file=sys.stderr)
    results["load_average_end"] = os.getloadavg()
    results["ratios"] = ratios(results)
    out = Path(ns.json) if ns.json else workdir / "benchmark-results.json"
    out.write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"\nJSON: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
