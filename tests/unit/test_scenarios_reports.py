"""JUnit XML, JSON and GitHub Actions matrix output, and `labctl test --list` (no root needed)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from labctl.checks.result import CheckResult
from labctl.cli import app
from labctl.scenarios.load import load_catalog
from labctl.scenarios.model import Excluded
from labctl.scenarios.report import github_matrix, json_report, junit_xml
from labctl.scenarios.runner import ScenarioResult

PASSED = ScenarioResult("ipsec-ikev2-esp-tunnel", "pass", 9.5, "netns", "t7-00",
                        (CheckResult("wire", "pass", "only ESP", "386 esp"),), source="scenarios/ipsec-matrix.yaml")
FAILED = ScenarioResult("nat-t-ikev2-esp", "fail", 12.25, "netns", "t7-01",
                        (CheckResult("wire", "fail", "only ESP", "1 esp", ("cleartext on the segment: frame 3",)),
                         CheckResult("decryption", "n/a", "AH only authenticates", "-")),
                        artifacts="/tmp/a/nat-t-ikev2-esp", source="scenarios/nat-t.yaml")
BROKEN = ScenarioResult("udp-encap-manual", "error", 1.0, "netns", "t7-02", error="lab did not come up: boom")
EXCLUDED = Excluded("ipsec-ikev2-ah+esp-tunnel", Path("scenarios/ipsec-matrix.yaml"), "RFC 7296 §3.3")


def test_junit_has_one_case_per_scenario_and_excluded_ones_as_skipped() -> None:
    suite = ET.fromstring(junit_xml([PASSED, FAILED, BROKEN], [EXCLUDED]).split("\n", 1)[1])
    assert suite.tag == "testsuite"
    counts = [suite.get(k) for k in ("tests", "failures", "errors", "skipped")]
    assert counts == ["4", "1", "1", "1"]
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["ipsec-ikev2-esp-tunnel"].get("classname") == "labctl.scenarios.ipsec-matrix"
    assert cases["ipsec-ikev2-esp-tunnel"].find("failure") is None
    failure = cases["nat-t-ikev2-esp"].find("failure")
    assert failure is not None and failure.get("message") == "failed checks: wire"
    assert "cleartext on the segment: frame 3" in (failure.text or "")
    assert "artifacts: /tmp/a/nat-t-ikev2-esp" in (failure.text or "")
    error = cases["udp-encap-manual"].find("error")
    assert error is not None and error.get("message") == "lab did not come up: boom"
    skipped = cases["ipsec-ikev2-ah+esp-tunnel"].find("skipped")
    assert skipped is not None and skipped.get("message") == "excluded: RFC 7296 §3.3"


def test_json_report() -> None:
    report = json.loads(json.dumps(json_report([PASSED, FAILED], [EXCLUDED], wall=21.5, jobs=2)))
    assert report["summary"] == {"pass": 1, "fail": 1, "error": 0, "excluded": 1, "total": 2, "wall_seconds": 21.5,
                                 "jobs": 2}
    assert report["scenarios"][1]["checks"][0]["details"] == ["cleartext on the segment: frame 3"]
    assert report["excluded"][0]["reason"] == "RFC 7296 §3.3"


def test_github_matrix_lists_runnable_scenarios_per_backend() -> None:
    catalog = load_catalog()
    matrix = github_matrix(catalog.scenarios, ["netns", "docker"])
    rows = {(r["scenario"], r["backend"]) for r in matrix["include"]}
    assert ("ipsec-ikev2-esp-tunnel", "docker") in rows
    assert len(rows) == 2 * len(catalog.scenarios)
    assert not any(name == e.name for name, _ in rows for e in catalog.excluded)


def test_cli_list_json_prints_the_matrix_and_list_shows_exclusions() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["test", "--list", "--json", "-k", "nat"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"include": [
        {"scenario": "nat-t-ikev2-esp", "backend": "netns", "topology": "nat-t"},
        {"scenario": "nat-t-ikev1-main-esp", "backend": "netns", "topology": "nat-t"}]}
    listed = runner.invoke(app, ["test", "--list", "nat-t-*"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0
    assert "nat-t-ikev2-ah" in listed.stdout and "AH cannot cross a NAT" in listed.stdout


def test_cli_refuses_a_bad_keyword_expression() -> None:
    result = CliRunner().invoke(app, ["test", "--list", "-k", "ikev1 and"])
    assert result.exit_code == 2
    assert "ends too early" in result.output
