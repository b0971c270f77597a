"""The project's style rules (``ruff`` clean, ``mypy --strict`` clean) are part of the test suite, so CI
enforces them."""

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


def test_mypy_strict() -> None:
    """``mypy --strict`` finds nothing in the package."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "dinit"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
