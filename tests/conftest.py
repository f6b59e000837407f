"""Shared test settings: tests marked `root` (network namespaces) fail loudly, never skip, without root."""

from __future__ import annotations

import os

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.fail(
            "this test builds network namespaces and needs root: run the suite as root (CI does; "
            "locally: sudo ./scripts/test)",
            pytrace=False,
        )
