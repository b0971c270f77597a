"""The project's style rules (``ruff`` clean, ``mypy --strict`` clean, no import cycle in the package)
are part of the test suite, so CI enforces them."""

from __future__ import annotations

import ast
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


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere: at the top, for type checking only
    (a cycle there is still a cycle of design), or inside a function."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: "." is the package itself, each further dot its parent
                base = ".".join([*package[:len(package) - node.level + 1], base]).strip(".")
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return (found & modules) - {module}


def test_no_import_cycle() -> None:
    """No two modules of ``dinit`` depend on each other, directly or through others (a part that
    needs the supervisor gets a Protocol of what it needs, as ``ReparentHost`` does)."""
    paths = {}
    for path in (ROOT / "dinit").rglob("*.py"):
        parts = path.with_suffix("").relative_to(ROOT).parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {module: _imports(module, path, set(paths)) for module, path in paths.items()}
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in trail:
                cycles.append([*trail[trail.index(imported):], imported])
            elif imported not in done:
                visit(imported, [*trail, imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == [], [" -> ".join(cycle) for cycle in cycles]
