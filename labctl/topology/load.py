"""Load a topology file: YAML -> schema -> cross-field checks, every problem reported with file and line."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from labctl.lab.naming import NAME_RULE
from labctl.topology.checks import check_topology
from labctl.topology.errors import Issue, Path, TopologyError
from labctl.topology.model import Topology
from labctl.topology.variants import apply_variant
from labctl.topology.yamlpos import KEY, Positions, load_yaml, position_of


def load_topology(
    path: str | FilePath, variant: str | None = None, assignments: Iterable[tuple[str, Any]] = ()
) -> Topology:
    """Read and validate a topology file (with a variant and `--set` overrides applied); raise TopologyError
    listing every problem."""
    file = FilePath(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise TopologyError([Issue((), f"cannot read the file: {exc.strerror}", str(file))]) from None
    return parse_topology(text, str(file), variant, assignments)


def parse_topology(
    text: str, filename: str = "<topology>", variant: str | None = None, assignments: Iterable[tuple[str, Any]] = ()
) -> Topology:
    data, positions = load_yaml(text, filename)
    if not isinstance(data, dict):
        raise TopologyError([Issue((), f"expected a mapping with name, networks and nodes, got {_kind(data)}",
                                   filename, 1, 1)])
    data = apply_variant(data, variant, list(assignments), filename)
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        issues = [_schema_issue(error, data, positions, filename) for error in exc.errors()]
        raise TopologyError(issues) from None
    issues = [_locate(issue, positions, filename) for issue in check_topology(topology)]
    if issues:
        raise TopologyError(issues)
    return topology


def _locate(issue: Issue, positions: Positions, filename: str) -> Issue:
    line, column = position_of(issue.path, positions)
    return Issue(issue.path, issue.message, filename, line, column)


def _schema_issue(error: Any, data: Any, positions: Positions, filename: str) -> Issue:
    loc: Path = tuple(error["loc"])
    if loc and loc[-1] == KEY:
        # pydantic reports a bad mapping key as (..., key, "[key]"): the problem is the key itself.
        message = f"invalid name {loc[-2]!r}: expected {NAME_RULE}"
    else:
        message = _message(error, loc)
    line, column = position_of(loc, positions)
    return Issue(loc, message, filename, line, column)


def _message(error: Any, loc: Path) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    field = loc[-1] if loc else ""
    if kind == "literal_error" and field == "kind":
        return f"unknown node kind {value!r}; expected one of {ctx.get('expected')}"
    if kind == "literal_error":
        return f"unknown value {value!r}; expected one of {ctx.get('expected')}"
    if kind == "missing":
        return f"required field {field!r} is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"unknown field {field!r}{hint}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch" and "interfaces" in loc:
        return f"invalid interface name {value!r}: expected a letter then up to 14 of a-z, A-Z, 0-9, '_', '.', '-'"
    if kind == "string_pattern_mismatch":
        return f"invalid name {value!r}: expected {NAME_RULE}"
    if kind in ("too_short", "list_type", "dict_type", "string_type", "model_type"):
        return f"{error['msg'].lower()} (got {_kind(value)} {value!r})"
    return f"{error['msg']} (got {value!r})"


def _allowed_fields(loc: Path) -> list[str]:
    """The field names the schema accepts at `loc`, found by walking the models along the path."""
    model: Any = Topology
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            continue  # a mapping key (node or network name): the value's model comes next
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside list[X], dict[str, X] or X | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)
