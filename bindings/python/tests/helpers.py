"""Helpers the tests import (kept out of conftest.py, which pytest imports its own way)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List


def tree(directory: Path) -> List[str]:
    """Every file under ``directory``, relative, sorted."""
    out = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            out.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(out)


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
