"""The per-lab state directory: what a lab is, and every object it created, written down before it exists.

Layout of `<root>/<lab>/` (root is `/run/labctl`, or `$LABCTL_STATE_DIR`):
  lab.json            lab name, backend, topology, phase ("building" | "up"), the plan
  objects.jsonl       one line per object, appended (and synced) BEFORE the object is created, so that
                      `down` finds everything even after `kill -9` in the middle of `up`
  programs/*.json     one record per node program: node, name, pid, start time, log file
  logs/<node>-<program>.log
  nodes/<node>/       files written for the node's programs (configs)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labctl.lab.model import Plan, plan_from_dict
from labctl.lab.naming import check_name

DEFAULT_ROOT = Path("/run/labctl")


def state_root() -> Path:
    return Path(os.environ.get("LABCTL_STATE_DIR") or DEFAULT_ROOT)


class LabExistsError(Exception):
    """The lab already has a state directory: it is up, or a crashed `up` left it (then `down` cleans it)."""


@dataclass(frozen=True)
class ObjectRecord:
    kind: str
    name: str
    extra: dict[str, Any]


@dataclass(frozen=True)
class ProgramRecord:
    node: str
    name: str
    pid: int
    started: int | None
    log: str


class LabState:
    def __init__(self, lab: str, root: Path | None = None) -> None:
        self.lab = check_name(lab)
        self.path = (root or state_root()) / lab

    # --- whole lab ---

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self, backend: str, plan: Plan) -> None:
        """Claim the lab name atomically (mkdir), then write what the lab is."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError:
            raise LabExistsError(self.lab) from None
        self._write_meta({"lab": self.lab, "backend": backend, "topology": plan.topology,
                          "phase": "building", "plan": plan.to_dict()})

    def meta(self) -> dict[str, Any]:
        """What lab.json says; empty when a crash left it missing or unreadable."""
        try:
            data = json.loads((self.path / "lab.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def backend(self) -> str | None:
        value = self.meta().get("backend")
        return value if isinstance(value, str) else None

    @property
    def phase(self) -> str:
        return str(self.meta().get("phase", "broken"))

    def plan(self) -> Plan | None:
        data = self.meta().get("plan")
        if not isinstance(data, dict):
            return None
        try:
            return plan_from_dict(data)
        except (KeyError, TypeError):
            return None

    def set_phase(self, phase: str) -> None:
        meta = self.meta()
        meta["phase"] = phase
        self._write_meta(meta)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.path / "lab.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self.path / "lab.json")

    # --- objects ---

    def record(self, kind: str, name: str, **extra: Any) -> None:
        """Write the intent to create an object; call it BEFORE creating the object."""
        line = json.dumps({"kind": kind, "name": name, **extra}) + "\n"
        fd = os.open(self.path / "objects.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def objects(self, kind: str | None = None) -> list[ObjectRecord]:
        """Recorded objects in creation order; a line cut short by a crash is ignored."""
        try:
            lines = (self.path / "objects.jsonl").read_text().splitlines()
        except OSError:
            return []
        records = []
        for line in lines:
            try:
                data = json.loads(line)
                record = ObjectRecord(str(data.pop("kind")), str(data.pop("name")), data)
            except (ValueError, KeyError, AttributeError):
                continue
            if kind is None or record.kind == kind:
                records.append(record)
        return records

    # --- programs ---

    def node_dir(self, node: str) -> Path:
        return self.path / "nodes" / node

    def log_path(self, node: str, program: str) -> Path:
        return self.path / "logs" / f"{node}-{program}.log"

    def _program_file(self, node: str, program: str) -> Path:
        return self.path / "programs" / f"{node}-{program}.json"

    def record_program(self, record: ProgramRecord) -> None:
        path = self._program_file(record.node, record.name)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)

    def forget_program(self, node: str, program: str) -> None:
        self._program_file(node, program).unlink(missing_ok=True)

    def programs(self, node: str | None = None) -> list[ProgramRecord]:
        records = []
        for path in sorted((self.path / "programs").glob("*.json")):
            try:
                record = ProgramRecord(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if node is None or record.node == node:
                records.append(record)
        return records


def all_labs(root: Path | None = None) -> list[LabState]:
    base = root or state_root()
    if not base.is_dir():
        return []
    labs = []
    for path in sorted(base.iterdir()):
        try:
            labs.append(LabState(path.name, base))
        except ValueError:
            continue
    return [lab for lab in labs if lab.exists()]
