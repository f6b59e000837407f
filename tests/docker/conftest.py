"""Docker tests: every test here that is marked `docker` needs a Docker engine and fails (never skips) without."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docker_labtools import engine  # noqa: E402

from labctl.images import ensure_images  # noqa: E402


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = engine()
    yield client
    client.close()


@pytest.fixture(scope="session")
def lab_images(docker_client: Any) -> dict[str, str]:
    """The node images, built once per session (a no-op when the tree is unchanged)."""
    return ensure_images(docker_client, progress=lambda line: None)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short state root: a gateway's control socket lives under it, and unix socket paths are limited to
    108 bytes (pytest's tmp_path alone takes about 70 of them)."""
    path = Path(tempfile.mkdtemp(prefix="t6-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
