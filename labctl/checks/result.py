"""What a check reports: its verdict, what it expected and what it saw (so a failure explains itself)."""

from __future__ import annotations

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
