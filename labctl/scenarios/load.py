"""Load scenario files and expand matrices into scenarios (and the excluded combinations, with reasons)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from labctl.scenarios.model import (
    BACKENDS,
    CHECKS,
    TUNNEL_PREFIX,
    Excluded,
    Exclusion,
    Part,
    Scenario,
    ScenarioFile,
    TrafficSpec,
)
from labctl.topology.catalog import resolve_topology

# labctl/scenario_files links to the repository's scenarios/ folder (package data in a wheel).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "scenario_files"


class ScenarioError(ValueError):
    """A scenario file cannot be read; the message names the file and the field."""


@dataclass(frozen=True)
class Catalog:
    scenarios: tuple[Scenario, ...]
    excluded: tuple[Excluded, ...]

    def __add__(self, other: Catalog) -> Catalog:
        return Catalog(self.scenarios + other.scenarios, self.excluded + other.excluded)


def scenario_files(paths: Sequence[Path] = ()) -> list[Path]:
    """The YAML files to load: each path given (a folder means its *.yaml), or the shipped scenarios."""
    found: list[Path] = []
    for path in paths or [SHIPPED_DIR]:
        found += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return found


def load_catalog(paths: Sequence[Path] = ()) -> Catalog:
    catalog = Catalog((), ())
    for path in scenario_files(paths):
        catalog = catalog + load_file(path)
    names = [s.name for s in catalog.scenarios] + [e.name for e in catalog.excluded]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScenarioError(f"scenario names must be unique; duplicated: {', '.join(duplicates)}")
    return catalog


def load_file(path: Path) -> Catalog:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    try:
        doc = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{path}: {problems}") from None
    return expand(doc, path)


def expand(doc: ScenarioFile, source: Path) -> Catalog:
    """One scenario per combination of axis values (the cartesian product, in the file's order)."""
    axes = [[(axis, value, part or Part()) for value, part in values.items()] for axis, values in doc.axes.items()]
    scenarios: list[Scenario] = []
    excluded: list[Excluded] = []
    for combo in itertools.product(*axes):
        chosen = {axis: value for axis, value, _ in combo}
        name = "-".join([doc.name, *(value for _, value, _ in combo)])
        parts = [doc, *(part for _, _, part in combo)]
        tags = tuple(dict.fromkeys(t for p in parts for t in p.tags))
        reason = _exclusion(doc.exclude, chosen)
        if reason is None:
            reason, scenario = _build(name, source, parts, chosen, tags)
            if scenario is not None:
                scenarios.append(scenario)
                continue
        excluded.append(Excluded(name, source, reason, tags, chosen))
    return Catalog(tuple(scenarios), tuple(excluded))


def _exclusion(rules: Iterable[Exclusion], chosen: dict[str, str]) -> str | None:
    for rule in rules:
        if all(chosen.get(axis) in ([want] if isinstance(want, str) else want) for axis, want in rule.when.items()):
            return " ".join(rule.reason.split())
    return None


def _last(parts: Sequence[Part], field: str) -> Any:
    value = None
    for part in parts:
        if getattr(part, field) is not None:
            value = getattr(part, field)
    return value


def _build(
    name: str, source: Path, parts: Sequence[Part], chosen: dict[str, str], tags: tuple[str, ...]
) -> tuple[str, Scenario | None]:
    """The merged scenario (later parts override earlier ones), or the reason it cannot run here."""
    topology = _last(parts, "topology")
    if topology is None:
        return "no topology given", None
    relative = source.parent / topology
    topology_ref = str(relative) if ("/" in topology or topology.endswith(".yaml")) and relative.exists() else topology
    try:
        resolve_topology(topology_ref)
    except FileNotFoundError:
        return f"topology {topology!r} is not available (not shipped and no such file next to {source.name})", None
    tunnel = _last(parts, "tunnel")
    assignments: list[tuple[str, Any]] = []
    for part in parts:
        for path, value in part.set.items():
            if path.startswith(TUNNEL_PREFIX):
                if tunnel is None:
                    return f"`set: {path}` names the tunnel, but the scenario gives no `tunnel:`", None
                path = f"tunnels.{tunnel}.{path.removeprefix(TUNNEL_PREFIX)}"
            assignments.append((path, value))
    expect: dict[str, Any] = {}
    for part in parts:
        expect.update(part.expect)
    traffic: TrafficSpec = _last(parts, "traffic") or TrafficSpec()
    description = " — ".join(p.description for p in parts if p.description)
    return "", Scenario(
        name=name, source=source, description=description, topology=topology_ref, variant=_last(parts, "variant"),
        tunnel=tunnel, assignments=tuple(assignments), traffic=(traffic.source, traffic.target),
        checks=tuple(_last(parts, "checks") or CHECKS), expect=expect,
        backends=tuple(_last(parts, "backends") or BACKENDS), tags=tags, axes=dict(chosen),
    )
