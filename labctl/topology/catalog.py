"""Shipped topologies: found by name (`labctl up routed`) or given as a path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

# labctl/topologies is a link to the repository's topologies/ (and package data in a wheel).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "topologies"


@dataclass(frozen=True)
class ShippedTopology:
    name: str
    path: Path
    description: str


def shipped_topologies() -> list[ShippedTopology]:
    found = []
    for path in sorted(SHIPPED_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
            description = str(data.get("description", "")) if isinstance(data, dict) else ""
        except (OSError, yaml.YAMLError):
            description = "(unreadable)"
        found.append(ShippedTopology(path.stem, path, description))
    return found


def resolve_topology(spec: str) -> Path:
    """A path to a topology file: `spec` itself when it names a file, else the shipped topology of that name."""
    path = Path(spec)
    if path.exists() and not path.is_dir():  # also /dev/fd/N from a shell's <(...)
        return path
    shipped = SHIPPED_DIR / f"{spec.removesuffix('.yaml')}.yaml"
    if "/" not in spec and shipped.is_file():
        return shipped
    names = ", ".join(t.name for t in shipped_topologies())
    raise FileNotFoundError(f"no topology file {spec!r} and no shipped topology of that name (shipped: {names})")
