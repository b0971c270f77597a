"""Reparented processes: find orphans that became dinit's children and apply the policy (§6.2, §6.3).

Reparenting sends no signal to the new parent, so orphans are found by reading dinit's children list
(``/proc/self/task/*/children``, one small read) on a timer: every 0.5 s, every 50 ms during teardown.
A candidate younger than 10 ms is looked at again shortly, so a process caught between ``fork`` and
``exec`` is named by what it runs. dinit's own programs are registered in the same loop iteration that
spawns them, before any scan can run, so they are never mistaken for orphans.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from ..config import Policy
from ..log import logger
from ..loop import Timer
from .programs import Program, Role, children, cmdline, program_name, state_and_age

if TYPE_CHECKING:
    from ..lifecycle.supervisor import Supervisor

SCAN_INTERVAL = 0.5
TEARDOWN_SCAN_INTERVAL = 0.05
MIN_AGE = 0.010


def _exited(pid: int) -> bool:
    """Whether a child has exited (a zombie, or already gone)."""
    try:
        return state_and_age(pid)[0] == "Z"
    except (OSError, ValueError, IndexError):
        return True


class Reparenter:
    """Detects reparented processes and handles them by policy, on the supervisor's loop."""

    def __init__(self, supervisor: Supervisor, policy: Policy, kill_timeout: float) -> None:
        self._supervisor = supervisor
        self._policy = policy
        self._kill_timeout = kill_timeout
        self._interval = SCAN_INTERVAL
        self._timer: Timer | None = None
        self._fifo_dir: str | None = None

    def start(self) -> None:
        self._schedule(self._interval)

    def teardown(self) -> None:
        """From now on scan fast, terminate every orphan found, and terminate the ones kept so far
        (ignored or adopted) so dinit can exit once they are gone (§5.2)."""
        self._interval = TEARDOWN_SCAN_INTERVAL
        for program in list(self._supervisor.programs.values()):
            if program.role in (Role.ORPHAN, Role.ADOPTED) and not program.signalled:
                self._terminate(program)
        self._tick()

    def has_children(self) -> bool:
        return bool(children())

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._supervisor.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        """Scan now and schedule the next scan (replacing a pending one, e.g. the slower one that
        was armed before teardown)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self.scan()
        if self._timer is None:
            self._schedule(self._interval)

    def scan(self) -> None:
        """Handle every child dinit does not know yet."""
        known = self._supervisor.programs
        young = False
        for pid in children().difference(known):
            # Handling one orphan can start teardown, which scans at once: skip what that found.
            if pid not in known:
                young |= self._consider(pid)
        if young:
            self._schedule(MIN_AGE)

    def _consider(self, pid: int) -> bool:
        """Apply the policy to a new child; True if it is too young to judge yet."""
        try:
            state, age = state_and_age(pid)
        except (OSError, ValueError, IndexError):
            return False
        if state == "Z":
            self._supervisor.reap()
            return False
        if age < MIN_AGE:
            return True
        command = cmdline(pid)
        name = program_name(pid, command)
        policy = Policy.TERMINATE if self._supervisor.terminating else self._policy
        role = Role.ADOPTED if policy is Policy.ADOPT else Role.ORPHAN
        program = Program(pid, name, str(pid), role)
        self._supervisor.programs[pid] = program
        detail = f": {command}" if command else ""
        if policy is Policy.TERMINATE:
            logger.warning(f"{program.label}: terminating reparented child process with PID {pid}{detail}")
            self._terminate(program)
        elif policy is Policy.ADOPT:
            logger.warning(f"{program.label}: adopting reparented child process with PID {pid}{detail}")
            self._redirect(program)
        else:
            logger.debug(f"{program.label}: ignoring reparented child process with PID {pid}{detail}")
        return False

    def reaping_unknown(self, pid: int) -> None:
        """A child dinit never saw alive is about to be reaped: name it while /proc still can."""
        name = program_name(pid, cmdline(pid))
        logger.warning(f"{name}/{pid}: reaping process with PID {pid}")

    def _terminate(self, program: Program) -> None:
        """SIGTERM now, SIGKILL after DINIT_KILL_TIMEOUT if it is still there (§6.2)."""
        self._supervisor.terminate(program)
        program.timers.append(self._supervisor.loop.call_later(
            self._kill_timeout, self._supervisor.kill, program))

    # -- adoption with output capture ---------------------------------------------------------------

    def _redirect(self, program: Program) -> None:
        """Point the adopted process's fds 1 and 2 at new pipes read by dinit (§6.3)."""
        from . import redirect  # ptrace via ctypes: only adoption needs it

        reason = redirect.supported()
        if reason is not None:
            logger.warning(f"{program.label}: not redirecting output: {reason}")
            return
        try:
            paths = self._fifos(program.pid)
        except OSError as error:  # e.g. a read-only file system everywhere a FIFO could go
            logger.warning(f"{program.label}: not redirecting output: cannot make FIFOs: {error}")
            return
        fds: list[int] = []
        try:
            for path in paths:
                fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            redirect.redirect_stdio(program.pid, *paths)
        except (OSError, redirect.RedirectError, redirect.TargetExited) as error:
            for fd in fds:
                os.close(fd)
            self._not_redirected(program, error)
            return
        finally:
            for path in paths:
                os.unlink(path)
        mux = self._supervisor.mux
        mux.add(fds[0], program.name, program.stage, is_stdout=True, owner=program.pid)
        mux.add(fds[1], program.name, program.stage, is_stdout=False, owner=program.pid)

    def _not_redirected(self, program: Program, error: Exception) -> None:
        """Adoption goes on without redirection; a target that exited meanwhile is reaped already."""
        from .redirect import TargetExited

        if isinstance(error, TargetExited):
            self._supervisor.exited(error.pid, error.status)
            return
        # A process that already exited needs no redirection; only a refusal is worth a warning.
        report = logger.debug if _exited(program.pid) else logger.warning
        report(f"{program.label}: not redirecting output: {error}")

    def _fifos(self, pid: int) -> tuple[str, str]:
        """Two fresh FIFOs the target can open for writing, whatever user it runs as. Raises OSError
        when no directory can hold them."""
        if self._fifo_dir is None:
            self._fifo_dir = _fifo_directory()
        paths = (os.path.join(self._fifo_dir, f"{pid}.out"), os.path.join(self._fifo_dir, f"{pid}.err"))
        try:
            for path in paths:
                os.mkfifo(path)
                os.chmod(path, 0o622)
        except OSError:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            raise
        return paths

    def close(self) -> None:
        """Remove the FIFO directory at exit."""
        if self._fifo_dir is not None:
            import shutil

            shutil.rmtree(self._fifo_dir, ignore_errors=True)


def _fifo_directory() -> str:
    """A private directory for FIFOs: in the usual temporary directory, else in ``/dev/shm`` or
    ``/run``, which stay writable in containers with a read-only root file system."""
    import tempfile  # only adoption needs it; kept off the start-up path

    error: OSError | None = None
    for parent in (None, "/dev/shm", "/run"):
        try:
            directory = tempfile.mkdtemp(prefix="dinit-", dir=parent)
        except OSError as failure:
            error = failure
            continue
        os.chmod(directory, 0o711)
        return directory
    assert error is not None
    raise error
