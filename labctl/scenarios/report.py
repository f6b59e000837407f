"""Reports of a `labctl test` run: JUnit XML (for CI test tabs), JSON, and a GitHub Actions matrix."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from labctl.scenarios.model import Excluded, Scenario
from labctl.scenarios.runner import ScenarioResult

SUITE = "labctl.scenarios"


def _classname(result_source: str) -> str:
    stem = result_source.rsplit("/", 1)[-1].removesuffix(".yaml") if result_source else "scenarios"
    return f"{SUITE}.{stem}"


def _failure_text(result: ScenarioResult) -> str:
    lines = [f"error: {result.error}"] if result.error else []
    for check in result.checks:
        if check.status == "fail":
            lines += [f"{check.name}: expected {check.expected}", f"  observed {check.observed}"]
            lines += [f"  {d}" for d in check.details]
    if result.artifacts:
        lines.append(f"artifacts: {result.artifacts}")
    return "\n".join(lines)


def junit_xml(results: Sequence[ScenarioResult], excluded: Sequence[Excluded] = ()) -> str:
    """One <testcase> per scenario (failure/error with every failed check's expected and observed) and one
    skipped <testcase> per excluded combination, with its reason."""
    suite = ET.Element("testsuite", name=SUITE, tests=str(len(results) + len(excluded)),
                       failures=str(sum(r.outcome == "fail" for r in results)),
                       errors=str(sum(r.outcome == "error" for r in results)), skipped=str(len(excluded)),
                       time=f"{sum(r.seconds for r in results):.2f}")
    for result in results:
        case = ET.SubElement(suite, "testcase", classname=_classname(result.source), name=result.scenario,
                             time=f"{result.seconds:.2f}")
        if result.outcome != "pass":
            failed = [c.name for c in result.checks if c.status == "fail"]
            message = result.error or f"failed checks: {', '.join(failed)}"
            element = ET.SubElement(case, "failure" if result.outcome == "fail" else "error", message=message)
            element.text = _failure_text(result)
        out = "\n".join(f"{c.name}: {c.status} — expected {c.expected}; observed {c.observed}" for c in result.checks)
        ET.SubElement(case, "system-out").text = out
    for item in excluded:
        case = ET.SubElement(suite, "testcase", classname=_classname(str(item.source)), name=item.name, time="0")
        ET.SubElement(case, "skipped", message=f"excluded: {item.reason}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def json_report(results: Sequence[ScenarioResult], excluded: Sequence[Excluded] = (), wall: float = 0.0,
                jobs: int = 1) -> dict[str, Any]:
    counts = {outcome: sum(r.outcome == outcome for r in results) for outcome in ("pass", "fail", "error")}
    return {
        "summary": {**counts, "excluded": len(excluded), "total": len(results), "wall_seconds": round(wall, 2),
                    "jobs": jobs},
        "scenarios": [r.to_dict() for r in results],
        "excluded": [{"name": e.name, "reason": e.reason, "source": str(e.source)} for e in excluded],
    }


def github_matrix(scenarios: Sequence[Scenario], backends: Sequence[str] = ("netns",)) -> dict[str, Any]:
    """A `strategy.matrix` value: `matrix: ${{ fromJSON(needs.list.outputs.matrix) }}` fans out one job per row."""
    include = [{"scenario": s.name, "backend": backend, "topology": s.topology}
               for s in scenarios for backend in backends if backend in s.backends]
    return {"include": include}
