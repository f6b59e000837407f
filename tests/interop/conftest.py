"""Fixtures for the strongSwan interop tests: a fresh four-namespace lab per test, always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from strongswan import Lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(workdir=tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        problems = lab.close()
    if problems:
        pytest.fail("interop lab not cleaned up: " + "; ".join(problems), pytrace=False)
