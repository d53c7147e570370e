"""Shared fixtures: a lock directory per test, and the native CLI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def lockdir(tmp_path: Path) -> Path:
    """An empty directory for the test's locks."""
    d = tmp_path / "locks"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def cli() -> str:
    """The native `uuidlock` (on PATH, or $UUIDLOCK_CLI): the other process
    the tests contend with, as the package's install needs it too."""
    found = os.environ.get("UUIDLOCK_CLI") or shutil.which("uuidlock")
    if not found:
        pytest.fail("these tests need the native uuidlock CLI: put it on PATH (cargo install --path host/cli) "
                    "or set UUIDLOCK_CLI")
    return found


