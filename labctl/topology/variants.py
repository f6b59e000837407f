"""Variants: one topology file, several labs. A variant is a named set of overrides applied before validation.

    variants:
      ah-tunnel:
        description: AH instead of ESP (integrity only, payload visible)
        set:
          tunnels.s2s.protection: ah

`labctl up site-to-site --variant ah-tunnel` applies it; `--set tunnels.s2s.encap=true` adds one override on
the command line (the value is read as YAML, so `true`, `2`, `[a, b]` mean what they look like).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml

from labctl.topology.errors import Issue, TopologyError


def parse_assignment(text: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", parsed value)."""
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise TopologyError([Issue((), f"--set {text!r}: expected PATH=VALUE, like tunnels.s2s.protection=ah",
                                   "<command line>")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        message = f"--set {text!r}: the value is not valid YAML ({exc})"
        raise TopologyError([Issue((), message, "<command line>")]) from None
    return path.strip(), value


def _set(data: Any, path: str, value: Any, origin: str) -> None:
    parts = path.split(".")
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise TopologyError([Issue((), f"{origin}: {where}: expected a list index below {len(node)}", origin)])
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise TopologyError([Issue((), f"{origin}: {where}: cannot set inside a {type(node).__name__}", origin)])
        if last:
            node[key] = value
            return
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]


def apply_variant(
    data: dict[str, Any], variant: str | None, assignments: Iterable[tuple[str, Any]] = (), filename: str = ""
) -> dict[str, Any]:
    """A copy of the topology data with the variant's overrides and then `assignments` applied."""
    variants = data.get("variants") or {}
    if variant is None and not assignments:
        return data
    out = copy.deepcopy(data)
    if variant is not None:
        if not isinstance(variants, dict) or variant not in variants:
            known = ", ".join(variants) if isinstance(variants, dict) and variants else "none defined"
            raise TopologyError([Issue(("variants",), f"unknown variant {variant!r}; expected one of: {known}",
                                       filename or "<topology>")])
        spec = variants[variant] or {}
        for path, value in (spec.get("set") or {}).items():
            _set(out, str(path), copy.deepcopy(value), f"variant {variant}")
    for path, value in assignments:
        _set(out, path, value, "--set")
    return out
