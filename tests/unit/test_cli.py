"""The CLI without root: validate, graph, list, and the clear refusals (not root, Docker not there yet)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state))
    return state


def test_validate_ok() -> None:
    result = runner.invoke(app, ["validate", "topologies/routed.yaml"])
    assert result.exit_code == 0, result.output
    assert "topologies/routed.yaml: topology routed is valid (3 networks, 4 nodes)" in result.output


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path("topologies/routed.yaml").read_text().replace("kind: router", "kind: switch", 1)
                   .replace("address: 10.2.0.10}", "address: 10.2.0.300}"))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:26:11: nodes.router-a.kind: unknown node kind 'switch'" in result.output
    assert f"{bad}:44:35: nodes.host-b.interfaces[0].address: '10.2.0.300' is not an IPv4 address" in result.output
    assert "2 problem(s) in the topology; nothing was built" in result.output


def test_graph_mermaid_by_name() -> None:
    result = runner.invoke(app, ["graph", "routed", "--format", "mermaid"])
    assert result.exit_code == 0
    assert result.output.startswith("graph LR\n")


def test_graph_unknown_format() -> None:
    result = runner.invoke(app, ["graph", "routed", "--format", "svg"])
    assert result.exit_code == 2
    assert "unknown format 'svg'; expected one of: mermaid, dot" in result.output


def test_unknown_topology_names_the_shipped_ones() -> None:
    result = runner.invoke(app, ["validate", "nonexistent"])
    assert result.exit_code == 1
    assert ("no topology file 'nonexistent' and no shipped topology of that name "
            "(shipped: host-to-host, l2tp-ipsec, nat-t, routed, site-to-site)") in result.output


def test_list_json() -> None:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert [t["name"] for t in data["topologies"]] == ["host-to-host", "l2tp-ipsec", "nat-t", "routed", "site-to-site"]
    assert data["labs"] == []


def test_up_without_root_says_so_and_creates_nothing(monkeypatch: pytest.MonkeyPatch, private_state_dir: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = runner.invoke(app, ["up", "routed", "--name", "t2-noroot"])
    assert result.exit_code == 2
    assert "labctl up needs root" in result.output
    assert not private_state_dir.exists()


@pytest.mark.parametrize("command", [["down", "t2-x"], ["exec", "t2-x", "host-a", "--", "true"]])
def test_other_root_commands_refuse_without_root(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert f"labctl {command[0]} needs root" in result.output


def test_unknown_backend() -> None:
    result = runner.invoke(app, ["up", "routed", "--backend", "vm"])
    assert result.exit_code == 2
    assert "unknown backend 'vm'; expected one of: auto, netns, docker" in result.output


def test_status_and_down_of_a_lab_that_is_not_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    result = runner.invoke(app, ["down", "t2-absent"])
    assert result.exit_code == 0
    assert "lab t2-absent is not up; nothing to remove." in result.output
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == []


def test_every_command_has_help() -> None:
    for command in ("up", "down", "status", "exec", "validate", "graph", "list"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Usage:" in result.output
