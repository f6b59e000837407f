"""Fixtures for the strongSwan interop tests: a fresh four-namespace lab per test, always cleaned up.

A missing charon/swanctl/tshark fails the test with the install command (CI installs them); it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from strongswan import HarnessError, Lab, require_tools


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    try:
        require_tools()
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    lab = Lab(workdir=tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        problems = lab.close()
    if problems:
        pytest.fail("interop lab not cleaned up: " + "; ".join(problems), pytrace=False)
