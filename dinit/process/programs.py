"""Processes: what dinit records about each one, and the facts it reads about them from ``/proc``
(§6), plus fd and subreaper set-up of dinit itself.

Nothing here waits for a child: reaping is the supervisor's job alone, with ``waitid``/``waitpid`` on
the event loop thread, so no exit status can be taken by anyone else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from enum import Enum

from ..loop import Timer

_PR_SET_CHILD_SUBREAPER = 36
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: At most this many list-and-kill rounds when SIGKILLing a session.
_KILL_ROUNDS = 100


class Role(Enum):
    """Why dinit has a process, which decides what its exit means (§5.1)."""

    RUN = "run"
    LOG = "log"
    HOOK = "hook"
    FINISH = "finish"
    ADOPTED = "adopted"
    ORPHAN = "orphan"


class Program:
    """A process dinit waits for: one it started, or one reparented to it."""

    __slots__ = ("name", "pid", "role", "signalled", "stage", "timers")

    def __init__(self, pid: int, name: str, stage: str, role: Role) -> None:
        self.pid = pid
        self.name = name
        self.stage = stage
        self.role = role
        #: Signals dinit sent it: a death by one of them is not a failure (§5.3).
        self.signalled: set[int] = set()
        #: Pending timers (e.g. SIGKILL after DINIT_KILL_TIMEOUT), cancelled when it exits.
        self.timers: list[Timer] = []

    @property
    def label(self) -> str:
        return f"{self.name}/{self.stage}"


def prepare_own_fds() -> None:
    """Make sure fds 0-2 exist (so pipes never land on them) and no inherited fd leaks into
    programs: every other fd dinit inherited becomes close-on-exec, so programs see only 0, 1, 2."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def become_subreaper() -> None:
    """Register as child subreaper so orphans of our programs come to us, not to the real PID 1."""
    import ctypes  # only needed when not PID 1; kept off the PID-1 start-up path

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def signal_process(pid: int, signum: int) -> bool:
    """Send a signal; False if the process is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def children() -> set[int]:
    """PIDs of dinit's direct children, living or zombie, from every thread's children list."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children", "rb") as file:
                pids.update(map(int, file.read().split()))
        except FileNotFoundError:
            continue
    return pids


def _stat_fields(pid: int) -> list[bytes]:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces and parens)."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    return data[data.rindex(b")") + 2:].split()


def state_and_age(pid: int) -> tuple[str, float]:
    """The process state letter and its age in seconds, at least: the start time is counted in clock
    ticks, rounded down, so one tick is taken off. ``Z`` means every thread has exited: a main
    thread that exited while other threads run shows ``Z`` too, but that process is alive, so it
    gets its live state ``R`` here. Raises OSError if gone."""
    fields = _stat_fields(pid)
    started = (int(fields[19]) + 1) / _CLOCK_TICKS
    state = fields[0].decode()
    if state == "Z" and int(fields[17]) > 1:  # num_threads: a zombie leader counts itself
        state = "R"
    return state, time.clock_gettime(time.CLOCK_BOOTTIME) - started


def session_of(pid: int) -> int:
    """The session ID of a process. Raises OSError if gone."""
    return int(_stat_fields(pid)[3])


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def cmdline(pid: int) -> str:
    """The command line with arguments joined by spaces (empty for zombies and kernel threads).
    A process whose main thread has exited shows none of its own: a live thread's is read then."""
    data = _read(f"/proc/{pid}/cmdline")
    if not data:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                if data := _read(f"/proc/{pid}/task/{task}/cmdline"):
                    break
    return os.fsdecode(data.rstrip(b"\0").replace(b"\0", b" "))


def program_name(pid: int, command: str) -> str:
    """The name a process is labelled with: the last path part of the first word of its command
    line, else its ``comm`` (§6.2)."""
    words = command.split()
    if words and (name := words[0].rsplit("/", 1)[-1]):
        return name
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
        return os.fsdecode(data[data.index(b"(") + 1:data.rindex(b")")]) or "unknown"
    except (OSError, ValueError):
        return "unknown"


def session_members(session: int) -> list[int]:
    """Every process whose session ID is ``session`` (zombies included)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if session_of(int(name)) == session:
                    members.append(int(name))
    return members


def kill_session(session: int) -> list[int]:
    """SIGKILL every process of a session (its leader's process group and any process that moved
    to another group of the same session). The members are listed before they are killed, so the
    returned list names them all, even those already gone by the end; listing and killing repeat
    until no new member shows up, so a process forked between a listing and the kill does not
    escape (a killed process forks no more, so this ends; the bound is only a safeguard)."""
    killed: list[int] = []
    seen: set[int] = set()
    for _ in range(_KILL_ROUNDS):
        members = [pid for pid in session_members(session) if pid not in seen]
        if not members:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session, signal.SIGKILL)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        seen.update(members)
        killed.extend(members)
    return killed
