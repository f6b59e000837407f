"""Topology errors a person can act on: file, line, column, field path, what was wrong and what was expected."""

from __future__ import annotations

from dataclasses import dataclass

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """('nodes', 'host-a', 'interfaces', 0, 'address') -> 'nodes.host-a.interfaces[0].address'."""
    text = ""
    for part in path:
        if part == "[key]":
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class Issue:
    path: Path
    message: str
    file: str = "<topology>"
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = format_path(self.path)
        return f"{where}: {field}: {self.message}" if field else f"{where}: {self.message}"


class TopologyError(Exception):
    """One or more problems in a topology file; str() lists them one per line."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues
