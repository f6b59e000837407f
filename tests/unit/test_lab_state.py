"""The per-lab state directory: exclusive creation, the object journal, program records."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.lab.model import Plan
from labctl.lab.naming import lab_tag
from labctl.lab.state import LabExistsError, LabState, ProgramRecord, all_labs

PLAN = Plan(lab="t2-s", topology="routed", networks=(), nodes=())


def test_create_claims_the_name_once(tmp_path: Path) -> None:
    state = LabState("t2-s", tmp_path)
    state.create("netns", PLAN)
    assert state.backend == "netns"
    assert state.phase == "building"
    assert state.plan() == PLAN
    with pytest.raises(LabExistsError):
        LabState("t2-s", tmp_path).create("netns", PLAN)
    state.set_phase("up")
    assert [lab.lab for lab in all_labs(tmp_path)] == ["t2-s"]
    assert LabState("t2-s", tmp_path).phase == "up"


def test_journal_survives_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    state = LabState("t2-s", tmp_path)
    state.create("netns", PLAN)
    state.record("netns", "labctl-t2-s-sw")
    state.record("veth", "v123456-0-0", netns="labctl-t2-s-sw")
    with open(state.path / "objects.jsonl", "a") as journal:
        journal.write('{"kind": "netns", "na')
    assert [(o.kind, o.name) for o in state.objects()] == [("netns", "labctl-t2-s-sw"), ("veth", "v123456-0-0")]
    assert [o.name for o in state.objects("veth")] == ["v123456-0-0"]
    assert state.objects("veth")[0].extra == {"netns": "labctl-t2-s-sw"}


def test_a_state_dir_without_lab_json_still_counts(tmp_path: Path) -> None:
    (tmp_path / "t2-s").mkdir()
    state = LabState("t2-s", tmp_path)
    assert state.exists()
    assert state.backend is None
    assert state.plan() is None
    assert state.phase == "broken"


def test_program_records(tmp_path: Path) -> None:
    state = LabState("t2-s", tmp_path)
    state.create("netns", PLAN)
    record = ProgramRecord("host-a", "web", 1234, 99, str(state.log_path("host-a", "web")))
    state.record_program(record)
    assert state.programs() == [record]
    assert state.programs("host-b") == []
    state.forget_program("host-a", "web")
    assert state.programs() == []


def test_lab_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid lab name '../etc'"):
        LabState("../etc", tmp_path)


def test_lab_tag_fits_interface_names() -> None:
    tag = lab_tag("a-very-long-lab-name-of-31-char")
    assert len(tag) == 6
    assert tag != lab_tag("a-very-long-lab-name-of-31-chas")
    assert len(f"v{tag}-99-9") <= 15
