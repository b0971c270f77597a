"""Unit tests of orphan detection details that cannot be timed from outside (§6.2, §16): ages,
names, and that scans never nest, against a fake host."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Collector
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from dinit import log
from dinit.config import LEVELS, Policy
from dinit.loop import Timer
from dinit.process import procfs, reparent
from dinit.process.programs import Program, Role


class _Loop:
    """Timers that run only when the test says so (``run_due``), in order of when they are due."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        timer = Timer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def run_next(self) -> float:
        """Run the timer due first (advancing the clock to it); returns when it was due."""
        timer = min((t for t in self.timers if not t.cancelled), key=lambda t: t.when)
        self.timers.remove(timer)
        self.now = max(self.now, timer.when)
        timer.callback(*timer.args)
        return timer.when

    def run_due(self, until: float) -> None:
        """Run every timer due by ``until``, including those they schedule."""
        while any(not t.cancelled and t.when <= until for t in self.timers):
            self.run_next()
        self.now = until


class _Host:
    """A ReparentHost that records what the reparenter asks of it."""

    def __init__(self) -> None:
        self.programs: dict[int, Program] = {}
        self.terminating = False
        self.terminated: list[int] = []
        self.reaps = 0
        self.loop = _Loop()
        self.mux = None

    def known(self, pid: int) -> bool:
        return pid in self.programs

    def add_program(self, program: Program) -> None:
        self.programs[program.pid] = program

    def programs_with_role(self, *roles: Role) -> list[Program]:
        return [program for program in self.programs.values() if program.role in roles]

    def terminate(self, program: Program) -> None:
        program.signalled.add(signal.SIGTERM)
        self.terminated.append(program.pid)

    def kill(self, program: Program) -> None:
        """Scheduled (SIGKILL after DINIT_KILL_TIMEOUT), never due here."""

    def exited(self, pid: int, status: int) -> None:
        raise AssertionError("no exit expected")

    def reap_soon(self) -> None:
        self.reaps += 1


def _reparenter(host: _Host, policy: Policy) -> reparent.Reparenter:
    return reparent.Reparenter(host, policy, 30.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(("age", "handled"), [(0.0, False), (0.009, False), (0.010, True), (2.0, True)])
def test_orphan_younger_than_10ms_is_looked_at_later(monkeypatch: pytest.MonkeyPatch, age: float,
                                                     handled: bool) -> None:
    """A candidate younger than 10 ms is not named or handled yet (it may be between fork and exec);
    the scan asks to be run again soon instead."""
    monkeypatch.setattr(reparent, "state_and_age", lambda pid: ("S", age))
    monkeypatch.setattr(reparent, "cmdline", lambda pid: "sleep 30")
    host = _Host()
    young = _reparenter(host, Policy.IGNORE)._consider(4242)
    assert young is not handled
    if handled:
        program = host.programs[4242]
        assert (program.name, program.stage, program.role) == ("sleep", "4242", Role.ORPHAN)
    else:
        assert 4242 not in host.programs


def _fake_children(monkeypatch: pytest.MonkeyPatch, pids: set[int], state: str = "S") -> None:
    monkeypatch.setattr(log, "_threshold", LEVELS["none"])  # no writer here: say nothing
    monkeypatch.setattr(reparent, "children", lambda: set(pids))
    monkeypatch.setattr(reparent, "state_and_age", lambda pid: (state, 1.0))
    monkeypatch.setattr(reparent, "cmdline", lambda pid: "sleep 30")


def test_a_scan_never_runs_inside_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handling one orphan can start teardown (here: the host's terminate() does, as an adopted
    process's exit would): teardown schedules its fast scan instead of scanning inside the running
    one. No scan starts while another runs, every orphan is signalled exactly once, and the
    teardown scan comes at once (0 delay), before the regular one."""
    host = _Host()
    reparenter = _reparenter(host, Policy.TERMINATE)
    depth = []
    scanning = 0
    scan = reparenter.scan

    def tracked_scan() -> None:
        nonlocal scanning
        scanning += 1
        depth.append(scanning)
        try:
            scan()
        finally:
            scanning -= 1

    signalled = host.terminate

    def terminate(program: Program) -> None:
        signalled(program)
        if len(host.terminated) == 1:  # the first orphan's end starts teardown
            host.terminating = True
            reparenter.teardown()

    monkeypatch.setattr(reparenter, "scan", tracked_scan)
    host.terminate = terminate  # type: ignore[method-assign]
    _fake_children(monkeypatch, {10, 11, 12})
    reparenter.start()
    assert host.loop.run_next() == reparent.SCAN_INTERVAL
    assert depth == [1]
    assert sorted(host.terminated) == [10, 11, 12]
    pending = [timer.when for timer in host.loop.timers if not timer.cancelled
               and timer.callback == reparenter._tick]
    assert pending == [reparent.SCAN_INTERVAL], "the teardown scan is due at once"
    host.loop.run_due(reparent.SCAN_INTERVAL + 1.0)
    assert depth == [1] * len(depth) and len(depth) > 2, depth
    assert sorted(host.terminated) == [10, 11, 12]


def test_teardown_schedules_its_scan_instead_of_scanning(monkeypatch: pytest.MonkeyPatch) -> None:
    """teardown() terminates the orphans kept so far at once, but finds new ones only in the scan it
    schedules (0 delay) on the loop."""
    host = _Host()
    reparenter = _reparenter(host, Policy.IGNORE)
    _fake_children(monkeypatch, {20})
    reparenter.start()
    host.loop.run_next()
    assert host.programs[20].role is Role.ORPHAN and host.terminated == []
    _fake_children(monkeypatch, {20, 21})
    host.terminating = True
    reparenter.teardown()
    assert host.terminated == [20] and 21 not in host.programs
    host.loop.run_due(host.loop.now)
    assert host.terminated == [20, 21]


def test_zombie_found_by_a_scan_is_reaped_by_the_host_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zombies found during a scan are not reaped inside it: the host is asked, once, to reap soon."""
    host = _Host()
    _fake_children(monkeypatch, {30, 31, 32}, state="Z")
    _reparenter(host, Policy.TERMINATE).scan()
    assert host.reaps == 1 and host.programs == {} and host.terminated == []


def test_reaping_an_unknown_process_is_information(monkeypatch: pytest.MonkeyPatch,
                                                   out: Collector) -> None:
    """§16: a reparented process that already exited is reaped with an info event, no warning."""
    monkeypatch.setattr(reparent, "cmdline", lambda pid: "")
    monkeypatch.setattr(procfs, "comm", lambda pid: "sshd")
    with capture_logs() as events:
        _reparenter(_Host(), Policy.TERMINATE).reaping_unknown(40)
    assert events == [{"event": "reaping process with PID {pid}", "service": "sshd", "stage": 40,
                       "pid": 40, "log_level": "info"}]


@pytest.mark.parametrize(("command", "comm", "name"), [
    ("sleep 30", "x", "sleep"),
    ("/usr/sbin/nginx -g daemon off;", "x", "nginx"),
    ("nginx: master process /usr/sbin/nginx", "x", "nginx"),
    ("postgres: checkpointer", "x", "postgres"),
    ("/opt/bin/worker:: busy", "x", "worker:"),  # one trailing ':' only
    ("nginx:worker", "x", "nginx:worker"),  # not trailing
    (": title only", "perl", "perl"),  # nothing left: comm
    ("/usr/bin/ start", "python3", "python3"),
    ("", "reapme", "reapme"),
    (" 102", "sleep", "sleep"),  # exec -a "" sleep 102: argv[0] is empty, the argument is no name
    ("", "", "unknown"),
])
def test_program_name(monkeypatch: pytest.MonkeyPatch, command: str, comm: str, name: str) -> None:
    """§6.2/§16: the last path part of the first word, one trailing ':' removed, else comm."""
    monkeypatch.setattr(procfs, "comm", lambda pid: comm)
    assert procfs.program_name(4242, command) == name


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_program_name_is_never_empty_nor_has_a_slash_or_a_space(command: str) -> None:
    """Whatever title a process gives itself, its name is a usable label part."""
    name = procfs.program_name(os.getpid(), command)
    assert name and "/" not in name and not any(c.isspace() for c in name)


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
            _, age = procfs.state_and_age(pid)
            assert age <= time.clock_gettime(time.CLOCK_BOOTTIME) - before
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_fifos_are_removed_when_the_second_cannot_be_made(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """Adoption: when the second FIFO cannot be made, the first is not left behind."""
    reparenter = _reparenter(_Host(), Policy.ADOPT)
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
