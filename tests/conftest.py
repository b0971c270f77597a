"""Shared fixtures: a fresh service directory per test, and dinit processes that never outlive it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Collector, Dinit, Services
from hypothesis import settings

from dinit import log

# CI runs are derandomized (the same examples on every run, so a failure reproduces); the seed is
# printed in the report header.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_report_header() -> str:
    profile = settings._current_profile
    return f"hypothesis profile: {profile} (derandomize={settings.default.derandomize})"


@pytest.fixture(params=[True, False], ids=["pid1", "subreaper"])
def pid1(request: pytest.FixtureRequest) -> bool:
    """Every test that takes ``pid1`` runs twice: dinit as PID 1 of a fresh PID namespace, and as a
    plain process registered as child subreaper (§6.1)."""
    return bool(request.param)


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return Services(tmp_path / "service")


@pytest.fixture(autouse=True)
def _no_leftover_dinit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kill any dinit a failing test left running, so one failure does not cascade."""
    started: list[Dinit] = []
    original = Dinit.__init__

    def tracking(self: Dinit, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        started.append(self)

    monkeypatch.setattr(Dinit, "__init__", tracking)
    yield
    for dinit in started:
        dinit.kill()


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    """dinit's own messages of every level, collected as text (structlog configured as in a run, so
    ``capture_logs`` sees the events); the log module's state is restored afterwards."""
    collector = Collector()
    for name in ("_threshold", "_writer", "_json"):
        monkeypatch.setattr(log, name, getattr(log, name))
    log.setup("debug", collector, "text")  # type: ignore[arg-type]
    log._structlog()  # configured before capture_logs, as in a run (dinit configures it once)
    yield collector
