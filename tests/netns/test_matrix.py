"""The whole scenario matrix on the netns backend, run once through `labctl test -j 2` as CI runs it, then
judged scenario by scenario (one test per row, each showing its failed checks), plus the command's own
behaviour: artifacts and exit status of a failing scenario, --keep-failed, and `labctl capture`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_labtools import CLI, labctl, leftovers

from labctl.scenarios.load import load_catalog

pytestmark = pytest.mark.root

SCENARIOS = [s.name for s in load_catalog().scenarios]
# Remote access (L2TP/IPsec) rows also judge the PPP sessions (labctl.checks.l2tp).
REMOTE_ACCESS = {s.name for s in load_catalog().scenarios if "l2tp" in s.tags}
JOBS = 2


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    # Short: the gateways' control sockets live under it (unix socket paths are limited to 108 bytes).
    path = Path(tempfile.mkdtemp(prefix="t7-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def matrix(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("matrix")
    started = time.monotonic()
    run = labctl(state_dir, "test", "--backend", "netns", "-j", str(JOBS), "--lab-prefix", "t7-m",
                 "--artifacts", str(out / "artifacts"), "--json", str(out / "report.json"),
                 "--junit", str(out / "junit.xml"), timeout=3600)
    wall = time.monotonic() - started
    assert (out / "report.json").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    print(f"\nmatrix: {len(report['scenarios'])} scenarios on netns with -j {JOBS}: {wall:.1f} s wall")
    return {"run": run, "report": report, "junit": out / "junit.xml", "state_dir": state_dir}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(matrix: dict[str, Any], name: str) -> None:
    results = {r["scenario"]: r for r in matrix["report"]["scenarios"]}
    result = results[name]
    failed = [f"{c['name']}: expected {c['expected']}; observed {c['observed']}\n    " + "\n    ".join(c["details"][:8])
              for c in result["checks"] if c["status"] == "fail"]
    explanation = "\n".join([result["error"], *failed, f"artifacts: {result['artifacts']}"])
    assert result["outcome"] == "pass", explanation
    ran = {c["name"] for c in result["checks"]}
    assert {"reachability", "sa-state", "wire", "fail-closed", "hygiene"} <= ran
    assert "decryption" in ran
    if name in REMOTE_ACCESS:
        assert "l2tp-sessions" in ran


def test_matrix_exit_status_reports_and_cleanliness(matrix: dict[str, Any]) -> None:
    report = matrix["report"]
    all_passed = all(r["outcome"] == "pass" for r in report["scenarios"])
    assert matrix["run"].returncode == (0 if all_passed else 1)
    assert "labctl test:" in matrix["run"].stdout  # the summary table
    suite = ET.parse(matrix["junit"]).getroot()
    assert int(suite.get("tests", "0")) == len(SCENARIOS) + len(report["excluded"])
    assert report["excluded"], "the excluded combinations are listed, not dropped"
    for index in range(len(SCENARIOS)):
        lab = f"t7-m{index:02d}"
        assert leftovers(lab, matrix["state_dir"]) == [], lab


def test_a_failing_scenario_keeps_its_evidence_and_fails_the_run(tmp_path: Path, state_dir: Path) -> None:
    # IKEv2 encrypts the identities; insisting they be readable must fail the wire check and nothing else.
    (tmp_path / "wrong.yaml").write_text(
        "name: t7-wrong\ntopology: site-to-site\ntunnel: s2s\nexpect: {identity_visible: true}\n"
        "checks: [reachability, sa-state, wire, decryption]\n")
    artifacts = tmp_path / "artifacts"
    run = labctl(state_dir, "test", str(tmp_path / "wrong.yaml"), "--backend", "netns", "--lab-prefix", "t7-f",
                 "--artifacts", str(artifacts), "--keep-failed", timeout=300)
    try:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "no identity payload readable in clear" in run.stdout
        folder = artifacts / "t7-wrong"
        for item in ("traffic.pcap", "keys/esp_sa", "keys/ikev2_decryption_table", "sa-dump.json", "result.json",
                     "logs/gw-a-gateway.log"):
            assert (folder / item).exists(), item
        result = json.loads((folder / "result.json").read_text())
        assert [c["name"] for c in result["checks"] if c["status"] == "fail"] == ["wire"]
        assert result["kept_up"] is True
        status = labctl(state_dir, "status", "t7-f00", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["phase"] == "up"
    finally:
        labctl(state_dir, "down", "t7-f00")
    assert leftovers("t7-f00", state_dir) == []


def test_capture_writes_a_pcap_and_keys_that_decrypt(tmp_path: Path, state_dir: Path) -> None:
    lab = "t7-cap"
    up = labctl(state_dir, "up", "site-to-site", "--backend", "netns", "--name", lab)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        pcap = tmp_path / "internet.pcap"
        capture = subprocess.Popen(
            [*CLI, "capture", lab, "internet", "-w", str(pcap), "--duration", "4"],
            env={**os.environ, "LABCTL_STATE_DIR": str(state_dir)}, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        ping = labctl(state_dir, "exec", lab, "host-a", "--", "ping", "-c", "2", "-i", "0.3", "10.2.0.10")
        assert ping.returncode == 0, ping.stdout
        out, _ = capture.communicate(timeout=30)
        assert capture.returncode == 0, out
        assert (tmp_path / "internet.keys" / "esp_sa").exists()
        command = out.strip().splitlines()[-1]
        assert command.startswith("tshark -r ")
        shown = subprocess.run(command + " -Y icmp", shell=True, capture_output=True, text=True, timeout=60)
        assert shown.stdout.count("Echo (ping) request") >= 2, shown.stdout + shown.stderr
    finally:
        labctl(state_dir, "down", lab)
