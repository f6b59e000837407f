"""Scenario files (YAML) and the scenarios expanded from them.

The file schema is pydantic (unknown fields are errors, so a typo cannot silently change a test); the
expanded `Scenario` is a frozen dataclass the runner executes. See scenarios/README.md for the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

CheckName = Literal["reachability", "l2tp-sessions", "sa-state", "wire", "decryption", "fail-closed", "hygiene"]
CHECKS: tuple[CheckName, ...] = get_args(CheckName)
"""Every check, in the order the runner performs them (l2tp-sessions: remote-access scenarios only)."""
BACKENDS = ("netns", "docker")
TUNNEL_PREFIX = "tunnel."
"""In `set:` paths, `tunnel.X` stands for `tunnels.<the scenario's tunnel>.X`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TrafficSpec(_Strict):
    source: str = Field(default="host-a", alias="from")
    target: str = Field(default="host-b", alias="to")


class Part(_Strict):
    """What a scenario document, or one value of one of its axes, contributes."""

    description: str = ""
    topology: str | None = None
    variant: str | None = None
    tunnel: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    traffic: TrafficSpec | None = None
    checks: list[CheckName] | None = None
    expect: dict[str, Any] = Field(default_factory=dict)
    backends: list[Literal["netns", "docker"]] | None = None
    tags: list[str] = Field(default_factory=list)


class Exclusion(_Strict):
    when: dict[str, str | list[str]]
    """Axis name -> value (or list of values); a row matches when every axis given matches."""
    reason: str


class ScenarioFile(Part):
    name: str
    axes: dict[str, dict[str, Part | None]] = Field(default_factory=dict)
    exclude: list[Exclusion] = Field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    name: str
    source: Path
    description: str
    topology: str
    variant: str | None
    tunnel: str | None
    assignments: tuple[tuple[str, Any], ...]
    """--set overrides in order, `tunnel.` already expanded to `tunnels.<name>.`."""
    traffic: tuple[str, str]
    checks: tuple[str, ...]
    expect: dict[str, Any] = field(default_factory=dict)
    backends: tuple[str, ...] = BACKENDS
    tags: tuple[str, ...] = ()
    axes: dict[str, str] = field(default_factory=dict)
    """Axis name -> the value this row takes (empty for a plain scenario)."""

    def keywords(self) -> set[str]:
        """Words `-k` matches against: the name, its tags, axis values, topology and variant."""
        words = {self.name, *self.tags, *self.axes.values(), self.topology}
        if self.variant:
            words.add(self.variant)
        return words


@dataclass(frozen=True)
class Excluded:
    """A combination left out of the matrix, with the reason (listed, never silently dropped)."""

    name: str
    source: Path
    reason: str
    tags: tuple[str, ...] = ()
    axes: dict[str, str] = field(default_factory=dict)
