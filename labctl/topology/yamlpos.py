"""YAML loading that remembers where every value came from, and refuses duplicate keys.

PyYAML silently keeps the last of two equal keys; in a topology that hides a duplicate node or
network name, so the composed node tree is walked first and duplicates are reported with both lines.
"""

from __future__ import annotations

from typing import Any

import yaml

from labctl.topology.errors import Issue, Path, TopologyError

KEY = "[key]"
"""Last element of a path that means the mapping key itself, not its value."""

Positions = dict[Path, tuple[int, int]]
"""Field path -> (line, column), both 1-based, of the value at that path."""


def load_yaml(text: str, filename: str) -> tuple[Any, Positions]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise TopologyError([Issue((), "the file is empty; expected a topology mapping", filename, 1, 1)])
        positions: Positions = {}
        issues: list[Issue] = []
        _walk(node, (), positions, issues, filename)
        if issues:
            raise TopologyError(issues)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{exc.context}, {problem}"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise TopologyError([Issue((), f"YAML syntax error: {problem}", filename, line, column)]) from None
    except yaml.YAMLError as exc:
        raise TopologyError([Issue((), f"YAML error: {exc}", filename)]) from None
    finally:
        loader.dispose()
    return data, positions


def _walk(node: yaml.Node, path: Path, positions: Positions, issues: list[Issue], filename: str) -> None:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    Issue(path + (key,), f"duplicate name {key!r} (first defined at line {seen[key]})",
                          filename, line, key_node.start_mark.column + 1)
                )
                continue
            seen[key] = line
            # Problems with a name (invalid, reserved) point at the key: pydantic's "[key]" convention.
            positions[path + (key, KEY)] = (line, key_node.start_mark.column + 1)
            _walk(value_node, path + (key,), positions, issues, filename)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), positions, issues, filename)


def position_of(path: Path, positions: Positions) -> tuple[int | None, int | None]:
    """The position of `path`, or of its nearest ancestor present in the file (e.g. for a missing field)."""
    for end in range(len(path), -1, -1):
        found = positions.get(path[:end])
        if found:
            return found
    return None, None
