"""The project's style rule (DEVELOPERS.md: ``ruff`` clean) is part of the test suite, so CI enforces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    """``ruff check`` finds nothing in the package, the tests and the benchmarks."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "dinit", "tests", "bench"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
