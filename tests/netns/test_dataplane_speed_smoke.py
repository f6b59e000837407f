"""Smoke run of the data-plane benchmark (``python3 -m benchmarks.dataplane --quick``).

It asserts that the benchmark runs end to end and that its numbers are sane (traffic flowed through every
variant, the ratios are computed, no TCP checksum errors on the receiving host) — not a speed threshold: the
machines are shared and noisy. Needs root, iperf3, tcpdump and strongSwan; a missing tool fails loudly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_and_reports_sane_numbers(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "the benchmark builds network namespaces: run the netns tests as root"
    out = tmp_path / "results.json"
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.dataplane", "--quick", "--workdir", str(tmp_path), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    results = json.loads(out.read_text())
    dp = results["data_plane"]
    assert set(dp) == {"plain", "ours-gcm128-udp", "ours-gcm128-esp", "strongswan-gcm128-udp",
                       "ours-gcm128-udp-csum"}
    for name, figures in dp.items():
        assert figures["tcp1"]["mbit_s"]["median"] > 1, name
        assert figures["tcp4"]["mbit_s"]["median"] > 1, name
        for size in (64, 512, 1400):
            assert figures[f"udp{size}"]["delivered_pps"]["median"] > 100, (name, size)
            assert 0 <= figures[f"udp{size}"]["loss_pct"]["median"] <= 100
        assert 0 < figures["ping_idle"]["rtt_ms"]["median"] < 100, name
        assert figures["tcp_csum_errors_host_b"] == 0, name
        if name != "plain":
            for gw in ("ga", "gb"):
                assert 0 < figures["tcp1"][f"cpu_pct_{gw}"]["median"] <= 205, (name, gw)  # 2 vCPUs at most
    assert dp["plain"]["tcp1"]["mbit_s"]["median"] > dp["ours-gcm128-udp"]["tcp1"]["mbit_s"]["median"]
    for key in ("ours_ikev2", "strongswan_ikev2", "ours_ikev1", "strongswan_ikev1"):
        assert 0 < results["ike"][key]["setup_ms"]["median"] < 5000, key
    assert "tcp1 ours-gcm128-udp / strongswan-gcm128-udp" in results["ratios"]
    assert "Ratios (medians, this run)" in res.stdout
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"bn-{results['lab_tag']}-" not in leftovers
