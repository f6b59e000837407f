"""The site-to-site and transport rows of the scenario matrix on the Docker backend, through `labctl test`.

Docker labs share the host's address space (two labs with the same subnets cannot coexist), so `labctl test`
runs them one after the other whatever -j says; this test asks for -j 2 and checks that it said so."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_labtools import labctl, leftovers

pytestmark = [pytest.mark.docker, pytest.mark.root]

ROWS = ["ipsec-ikev2-esp-tunnel", "ipsec-ikev1-main-esp-tunnel", "ipsec-manual-ah-tunnel",
        "ipsec-ikev2-esp-transport", "ipsec-manual-esp-transport", "nat-t-ikev2-esp"]


@pytest.fixture(scope="module")
def short_state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="t7-"))  # unix socket paths below it are limited to 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def report(short_state: Path, tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
           lab_images: dict[str, str]) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("docker-matrix")
    run = labctl(short_state, "test", *ROWS, "--backend", "docker", "-j", "2", "--lab-prefix", "t7-d",
                 "--artifacts", str(out / "artifacts"), "--json", str(out / "report.json"), timeout=1800)
    assert (out / "report.json").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    assert "run one at a time" in run.stdout
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    for index in range(len(ROWS)):
        assert leftovers(docker_client, f"t7-d{index:02d}", short_state) == []
    return data


@pytest.mark.parametrize("name", ROWS)
def test_row_on_docker(report: dict[str, Any], name: str) -> None:
    result = {r["scenario"]: r for r in report["scenarios"]}[name]
    assert result["backend"] == "docker"
    failed = [f"{c['name']}: expected {c['expected']}; observed {c['observed']}\n    " + "\n    ".join(c["details"][:8])
              for c in result["checks"] if c["status"] == "fail"]
    assert result["outcome"] == "pass", "\n".join([result["error"], *failed, f"artifacts: {result['artifacts']}"])
