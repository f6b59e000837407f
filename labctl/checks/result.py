"""What a check reports: its verdict, what it expected and what it saw (so a failure explains itself)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pass", "fail", "n/a"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    expected: str
    observed: str
    details: tuple[str, ...] = field(default_factory=tuple)
    """Evidence lines: the offending frames, the SA fields that differ, the command output."""

    @property
    def passed(self) -> bool:
        return self.status != "fail"


def verdict(
    name: str, problems: list[str], expected: str, observed: str, details: list[str] | None = None
) -> CheckResult:
    """pass when `problems` is empty; otherwise fail with the problems first among the details."""
    return CheckResult(name, "fail" if problems else "pass", expected, observed, tuple(problems + (details or [])))


def not_applicable(name: str, why: str) -> CheckResult:
    return CheckResult(name, "n/a", why, "-")


def combine(name: str, parts: Sequence[tuple[str, CheckResult]]) -> CheckResult:
    """One check made of several labelled parts (per segment, per client, probes + capture): it fails when any
    part fails; expected, observed and details keep each part's label, the failing parts' details first."""
    status: Status = "fail" if any(r.status == "fail" for _, r in parts) else (
        "pass" if any(r.status == "pass" for _, r in parts) else "n/a")
    expected = "; ".join(f"{label}: {r.expected}" if label else r.expected for label, r in parts)
    observed = "; ".join(f"{label}: {r.observed}" if label else r.observed for label, r in parts)
    ordered = sorted(parts, key=lambda part: part[1].status != "fail")
    details = tuple(f"{label}: {d}" if label else d for label, r in ordered for d in r.details)
    return CheckResult(name, status, expected, observed, details)
