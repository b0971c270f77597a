"""Processes: what dinit records about each one, and how it signals them (§5, §6), plus fd and
subreaper set-up of dinit itself. What it reads about processes from ``/proc`` is in ``procfs``.

Nothing here waits for a child: reaping is the supervisor's job alone, with ``waitid``/``waitpid`` on
the event loop thread, so no exit status can be taken by anyone else.
"""

from __future__ import annotations

import os

from ..lean import suppress
from ..loop import Timer
from .procfs import session_members

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from enum import Enum
else:
    import _signal as signal  # signal without its enums (lean.py: start-up)

    from ..lean import Enum


_PR_SET_CHILD_SUBREAPER = 36
#: At most this many list-and-kill rounds when SIGKILLing a session.
_KILL_ROUNDS = 100


class Role(Enum):
    """Why dinit has a process, which decides what its exit means (§5.1)."""

    RUN = "run"
    LOG = "log"
    HOOK = "hook"
    FINISH = "finish"
    CONTAINER_HOOK = "container-hook"
    ADOPTED = "adopted"
    ORPHAN = "orphan"


class Program:
    """A process dinit waits for: one it started, or one reparented to it."""

    __slots__ = ("name", "on_exit", "pid", "role", "signalled", "stage", "timers")

    def __init__(self, pid: int, name: str, stage: str, role: Role) -> None:
        self.pid = pid
        self.name = name
        self.stage = stage
        self.role = role
        #: Signals dinit sent it: a death by one of them is not a failure (§5.3).
        self.signalled: set[int] = set()
        #: Pending timers (e.g. SIGKILL after DINIT_KILL_TIMEOUT), cancelled when it exits.
        self.timers: list[Timer] = []
        #: Called with its wait status when it exits, for a program no service owns (§15 hooks).
        self.on_exit: Callable[[Program, int], None] | None = None

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
            with suppress(OSError):
                os.set_inheritable(fd, False)


def become_subreaper() -> None:
    """Register as child subreaper so orphans of our programs come to us, not to the real PID 1."""
    from .libc import get_errno, libc

    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = get_errno()
        raise OSError(error, os.strerror(error))


def signal_process(pid: int, signum: int) -> bool:
    """Send a signal; False if the process is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


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
        with suppress(ProcessLookupError):
            os.killpg(session, signal.SIGKILL)
        for pid in members:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        seen.update(members)
        killed.extend(members)
    return killed
