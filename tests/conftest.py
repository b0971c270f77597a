"""Shared fixtures: a fresh service directory per test, and dinit processes that never outlive it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Dinit, Services


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
