"""Reparented processes: find orphans that became dinit's children and apply the policy (§6.2, §6.3).

Reparenting sends no signal to the new parent, so orphans are found by reading dinit's children list
(``/proc/self/task/*/children``, one small read) on a timer: every 0.5 s, every 50 ms during teardown.
A candidate younger than 10 ms is looked at again shortly, so a process caught between ``fork`` and
``exec`` is named by what it runs. dinit's own programs are registered in the same loop iteration that
spawns them, before any scan can run, so they are never mistaken for orphans.

The reparenter knows the supervisor only as a ``ReparentHost``. Scans run only from the loop's timer,
never from inside a call into the host, so a scan never runs inside another: what a scan sets off
(teardown, a zombie to reap) is scheduled, not done on the spot.
"""

from __future__ import annotations

import os

from ..config import Policy
from ..lean import suppress
from ..log import logger
from .procfs import children, cmdline, program_name, state_and_age
from .programs import Program, Role

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from ..loop import Loop, Timer
    from ..output.multiplexer import Multiplexer


SCAN_INTERVAL = 0.5
TEARDOWN_SCAN_INTERVAL = 0.05
MIN_AGE = 0.010


if TYPE_CHECKING:
    class ReparentHost(Protocol):
        """What the reparenter needs of the supervisor, and nothing more."""

        loop: Loop
        mux: Multiplexer

        @property
        def terminating(self) -> bool: ...
        def known(self, pid: int) -> bool: ...                  # a PID dinit already tracks
        def add_program(self, program: Program) -> None: ...    # the one way any program gets registered
        def programs_with_role(self, *roles: Role) -> list[Program]: ...
        def terminate(self, program: Program) -> None: ...      # SIGTERM, remembered as caused by dinit
        def kill(self, program: Program) -> None: ...           # SIGKILL if still registered
        def exited(self, pid: int, status: int) -> None: ...    # an exit status is known (e.g. from ptrace)
        def reap_soon(self) -> None: ...                        # schedule a reap on the loop (0 delay)


def _exited(pid: int) -> bool:
    """Whether a child has exited (a zombie, or already gone)."""
    try:
        return state_and_age(pid)[0] == "Z"
    except (OSError, ValueError, IndexError):
        return True


class Reparenter:
    """Detects reparented processes and handles them by policy, on the host's loop."""

    def __init__(self, host: ReparentHost, policy: Policy, kill_timeout: float) -> None:
        self._host = host
        self._policy = policy
        self._kill_timeout = kill_timeout
        self._interval = SCAN_INTERVAL
        self._timer: Timer | None = None
        self._fifo_dir: str | None = None
        #: Whether the running scan found a zombie, to be reaped once it is over.
        self._zombie_seen = False

    def start(self) -> None:
        self._schedule(self._interval)

    def teardown(self) -> None:
        """From now on scan fast, terminate every orphan found, and terminate the ones kept so far
        (ignored or adopted) so dinit can exit once they are gone (§5.2). The first fast scan is
        scheduled at once, not run here: teardown may be called from inside a scan."""
        self._interval = TEARDOWN_SCAN_INTERVAL
        for program in self._host.programs_with_role(Role.ORPHAN, Role.ADOPTED):
            if not program.signalled:
                self._terminate(program)
        self._schedule(0)

    def has_children(self) -> bool:
        return bool(children())

    def _schedule(self, delay: float) -> None:
        """Scan after ``delay``, unless a scan is due sooner already."""
        loop = self._host.loop
        if self._timer is not None:
            if self._timer.when <= loop.time() + delay:
                return
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        """Scan now, then schedule the next scan unless the scan asked for one already."""
        self._timer = None
        self.scan()
        self._schedule(self._interval)

    def scan(self) -> None:
        """Handle every child dinit does not know yet. Zombies among them are left to one reap on
        the loop after the scan (which names them, ``reaping_unknown``)."""
        young = False
        self._zombie_seen = False
        for pid in children():
            if not self._host.known(pid):
                young |= self._consider(pid)
        if young:
            self._schedule(MIN_AGE)
        if self._zombie_seen:
            self._host.reap_soon()

    def _consider(self, pid: int) -> bool:
        """Apply the policy to a new child; True if it is too young to judge yet."""
        try:
            state, age = state_and_age(pid)
        except (OSError, ValueError, IndexError):
            return False
        if state == "Z":
            self._zombie_seen = True
            return False
        if age < MIN_AGE:
            return True
        command = cmdline(pid)
        name = program_name(pid, command)
        policy = Policy.TERMINATE if self._host.terminating else self._policy
        role = Role.ADOPTED if policy is Policy.ADOPT else Role.ORPHAN
        program = Program(pid, name, str(pid), role)
        self._host.add_program(program)
        fields = {"service": name, "stage": pid, "pid": pid, "command": command,
                  "detail": f": {command}" if command else ""}
        if policy is Policy.TERMINATE:
            logger.warning("terminating reparented child process with PID {pid}{detail}", **fields)
            self._terminate(program)
        elif policy is Policy.ADOPT:
            logger.warning("adopting reparented child process with PID {pid}{detail}", **fields)
            self._redirect(program)
        else:
            logger.debug("ignoring reparented child process with PID {pid}{detail}", **fields)
        return False

    def reaping_unknown(self, pid: int) -> None:
        """A child dinit never saw alive is about to be reaped: name it while /proc still can. Nothing
        needed doing (it exited by itself), so this is information, not a warning (§16)."""
        name = program_name(pid, cmdline(pid))
        logger.info("reaping process with PID {pid}", service=name, stage=pid, pid=pid)

    def _terminate(self, program: Program) -> None:
        """SIGTERM now, SIGKILL after DINIT_KILL_TIMEOUT if it is still there (§6.2)."""
        self._host.terminate(program)
        program.timers.append(self._host.loop.call_later(self._kill_timeout, self._host.kill, program))

    # -- adoption with output capture ---------------------------------------------------------------

    def _redirect(self, program: Program) -> None:
        """Point the adopted process's fds 1 and 2 at new pipes read by dinit (§6.3)."""
        from . import redirect  # ptrace via ctypes: only adoption needs it

        reason = redirect.supported()
        if reason is not None:
            logger.warning("not redirecting output: {reason}", service=program.name, stage=program.stage,
                           reason=reason)
            return
        try:
            reads, paths, release = self._capture_ends(program.pid)
        except OSError as error:
            logger.warning("not redirecting output: {reason}", service=program.name, stage=program.stage,
                           reason=error)
            return
        try:
            redirect.redirect_stdio(program.pid, *paths)
        except (OSError, redirect.RedirectError, redirect.TargetExited) as error:
            for fd in reads:
                os.close(fd)
            self._not_redirected(program, error)
            return
        finally:
            release()
        mux = self._host.mux
        mux.add(reads[0], program.name, program.stage, is_stdout=True, owner=program.pid)
        mux.add(reads[1], program.name, program.stage, is_stdout=False, owner=program.pid)

    def _capture_ends(self, pid: int) -> tuple[list[int], tuple[str, str], Callable[[], None]]:
        """Read ends for dinit's stdout and stderr streams of ``pid``, the paths the target opens for
        writing, and what to undo once it has. FIFOs come first: a daemon running as another user
        can open them (mode 0622). Where no directory can hold a FIFO (§16), the paths are dinit's
        own pipe write ends as ``/proc/<dinit>/fd/<n>``, which need no writable file system but
        ptrace-like access to dinit, so only a target of dinit's own user (root) can open them."""
        try:
            paths = self._fifos(pid)
        except OSError as error:
            logger.debug("no FIFOs for PID {pid} ({reason}): its output goes through /proc/{dinit}/fd",
                         pid=pid, reason=error, dinit=os.getpid())
            return _proc_pipes()
        reads: list[int] = []
        try:
            for path in paths:
                reads.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError:
            for fd in reads:
                os.close(fd)
            _unlink(paths)
            raise
        return reads, paths, lambda: _unlink(paths)

    def _not_redirected(self, program: Program, error: Exception) -> None:
        """Adoption goes on without redirection; a target that exited meanwhile is reaped already."""
        from .redirect import TargetExited

        if isinstance(error, TargetExited):
            self._host.exited(error.pid, error.status)
            return
        # A process that already exited needs no redirection; only a refusal is worth a warning.
        report = logger.debug if _exited(program.pid) else logger.warning
        report("not redirecting output: {reason}", service=program.name, stage=program.stage,
               reason=error)

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
            _unlink(paths)
            raise
        return paths

    def close(self) -> None:
        """Remove the FIFO directory at exit."""
        if self._fifo_dir is not None:
            import shutil

            shutil.rmtree(self._fifo_dir, ignore_errors=True)


def _unlink(paths: tuple[str, ...]) -> None:
    for path in paths:
        with suppress(FileNotFoundError):
            os.unlink(path)


def _proc_pipes() -> tuple[list[int], tuple[str, str], Callable[[], None]]:
    """Two pipes whose write ends the target opens as ``/proc/<dinit>/fd/<n>`` (a new open of the
    same pipe, like a FIFO's); dinit closes its own write ends once the target has opened them."""
    from ..output.multiplexer import make_pipe

    ends = (make_pipe(), make_pipe())
    me = os.getpid()
    paths = (f"/proc/{me}/fd/{ends[0][1]}", f"/proc/{me}/fd/{ends[1][1]}")

    def release() -> None:
        for _, write_end in ends:
            os.close(write_end)

    return [read_end for read_end, _ in ends], paths, release


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
