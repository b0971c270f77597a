"""Unit tests of orphan detection details that cannot be timed from outside (§6.2)."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from dinit import log
from dinit.config import LEVELS, Policy
from dinit.process import programs as processes
from dinit.process import reparent
from dinit.process.programs import Role


class _Supervisor:
    """The few supervisor attributes the reparenter uses."""

    def __init__(self) -> None:
        self.programs: dict[int, Any] = {}
        self.terminating = False
        self.terminated: list[int] = []
        self.loop = None

    def terminate(self, program: Any) -> None:
        self.terminated.append(program.pid)

    def kill(self, program: Any) -> None:
        """Scheduled (SIGKILL after DINIT_KILL_TIMEOUT), never called here."""


@pytest.mark.parametrize(("age", "handled"), [(0.0, False), (0.009, False), (0.010, True), (2.0, True)])
def test_orphan_younger_than_10ms_is_looked_at_later(monkeypatch: pytest.MonkeyPatch, age: float,
                                                     handled: bool) -> None:
    """A candidate younger than 10 ms is not named or handled yet (it may be between fork and exec);
    the scan asks to be run again soon instead."""
    monkeypatch.setattr(reparent, "state_and_age", lambda pid: ("S", age))
    monkeypatch.setattr(reparent, "cmdline", lambda pid: "sleep 30")
    supervisor = _Supervisor()
    reparenter = reparent.Reparenter(supervisor, Policy.IGNORE, 30.0)  # type: ignore[arg-type]
    young = reparenter._consider(4242)
    assert young is not handled
    if handled:
        program = supervisor.programs[4242]
        assert (program.name, program.stage, program.role) == ("sleep", "4242", Role.ORPHAN)
    else:
        assert 4242 not in supervisor.programs


class _Loop:
    def call_later(self, _delay: float, _callback: Any, *_args: Any) -> object:
        return object()


def test_nested_scan_does_not_handle_an_orphan_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handling one orphan can start teardown, which scans at once, inside the first scan: every
    orphan is still handled (warned about, signalled) exactly once."""
    supervisor = _Supervisor()
    supervisor.loop = _Loop()  # type: ignore[assignment]
    reparenter = reparent.Reparenter(supervisor, Policy.TERMINATE, 30.0)  # type: ignore[arg-type]
    signalled = supervisor.terminate

    def terminate(program: Any) -> None:
        signalled(program)
        if len(supervisor.terminated) == 1:  # the first orphan's end starts teardown: a scan
            reparenter.scan()

    supervisor.terminate = terminate  # type: ignore[method-assign]
    monkeypatch.setattr(log, "_threshold", LEVELS["none"])  # no writer here: say nothing
    monkeypatch.setattr(reparent, "children", lambda: {10, 11, 12})
    monkeypatch.setattr(reparent, "state_and_age", lambda pid: ("S", 1.0))
    monkeypatch.setattr(reparent, "cmdline", lambda pid: "sleep 30")
    reparenter.scan()
    assert sorted(supervisor.terminated) == [10, 11, 12]


def test_age_is_never_overestimated() -> None:
    """§6.2 "not before it is 10 ms old": /proc counts start times in clock ticks, rounded down, so
    an age computed from it can be up to a tick too high; state_and_age never reports more than the
    time that really passed since just before the fork."""
    for _ in range(20):
        before = time.clock_gettime(time.CLOCK_BOOTTIME)
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        try:
            _, age = processes.state_and_age(pid)
            assert age <= time.clock_gettime(time.CLOCK_BOOTTIME) - before
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_fifos_are_removed_when_the_second_cannot_be_made(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """Adoption: when the second FIFO cannot be made, the first is not left behind."""
    reparenter = reparent.Reparenter(_Supervisor(), Policy.ADOPT, 30.0)  # type: ignore[arg-type]
    reparenter._fifo_dir = str(tmp_path)
    made = os.mkfifo

    def mkfifo(path: str, *args: Any) -> None:
        if path.endswith(".err"):
            raise OSError(errno.ENOSPC, "No space left on device")
        made(path, *args)

    monkeypatch.setattr(os, "mkfifo", mkfifo)
    with pytest.raises(OSError):
        reparenter._fifos(4242)
    assert os.listdir(tmp_path) == []
