"""The l2tp-ipsec lab on the Docker backend: the same checks as on network namespaces (tests/netns)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "netns"))

from test_l2tp_ipsec import (  # noqa: E402
    bring_up,
    check_clear_l2tp_is_refused,
    check_everyone_reaches_lan_b,
    check_killed_client_is_cleaned_up,
)

pytestmark = [pytest.mark.docker, pytest.mark.root]


def test_l2tp_ipsec_lab_on_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_images: dict[str, str], docker_client: Any
) -> None:
    monkeypatch.setenv("LABCTL_STATE_DIR", str(tmp_path / "state"))
    try:
        with bring_up("docker", "t8-l2tp-dk") as lab:
            check_everyone_reaches_lan_b(lab, tmp_path)
            check_clear_l2tp_is_refused(lab, tmp_path)
            check_killed_client_is_cleaned_up(lab)
    finally:
        from labctl.backends.docker import remove_lab_objects

        remove_lab_objects(docker_client, "t8-l2tp-dk")
