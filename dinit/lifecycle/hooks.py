"""Container hooks: the executables of ``DINIT_START_DIR`` and ``DINIT_STOP_DIR`` (§15).

Start hooks (s6-overlay ``cont-init.d``, miekg dinit ``-start``) prepare the container before any
service starts: one at a time, in byte order, and the first that fails ends the container with exit
code 1 before a service has run. Stop hooks (``cont-finish.d``, miekg ``-stop``) clean up after every
process is gone, told the exit code dinit is about to use in ``DINIT_STATUS``; a failing one is only
a warning, since the exit code is decided already.

Both directories are checked completely at start (like the service directory, §2), so a typo or a
forgotten ``chmod +x`` fails the container at once rather than at its first shutdown. Hooks are
programs like any other (§3): spawned, reaped and, after ``DINIT_TIMEOUT``, SIGKILLed by the event
loop thread, their output labelled ``start.d/<file>`` or ``stop.d/<file>``.
"""

from __future__ import annotations

import os

from ..log import logger
from ..loop import Loop
from ..process.programs import Program, Role, kill_session, signal_process
from ..service.discovery import program_problem
from .outcome import describe, explain

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Mapping
    from typing import NamedTuple, Protocol
else:
    import _signal as signal  # signal without its enums (lean.py: start-up)

    from ..lean import NamedTuple


START, STOP = "start.d", "stop.d"


class HookError(Exception):
    """A hook directory that cannot be used; the message is dinit's one error line (exit 1)."""


class HookPaths(NamedTuple):
    """The start and stop hooks found at start, in the order they run."""

    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()


def scan(variable: str, directory: str, label: str) -> tuple[str, ...]:
    """The hooks of ``directory`` in byte order: every entry not starting with ``.``, each of which
    must be an executable file. A missing directory means no hooks; a file in its place, or an entry
    that cannot be run, is a start-up error naming it."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return ()
    except NotADirectoryError:
        raise HookError(f"{variable} {directory}: not a directory") from None
    except OSError as error:
        raise HookError(f"{variable} {directory}: {error.strerror}") from None
    paths = []
    for name in sorted((name for name in names if not name.startswith(".")), key=os.fsencode):
        path = os.path.join(directory, name)
        _check_executable(f"{label}/{name}", path)
        paths.append(path)
    return tuple(paths)


def _check_executable(label: str, path: str) -> None:
    if (problem := program_problem(path)) is not None:
        raise HookError(f"{label}: {path}: {problem}")


def scan_all(start_variable: str, start_dir: str, stop_variable: str, stop_dir: str) -> HookPaths:
    """Both hook directories, checked before anything starts."""
    return HookPaths(scan(start_variable, start_dir, START), scan(stop_variable, stop_dir, STOP))


if TYPE_CHECKING:
    class HookHost(Protocol):
        """What the hooks need of the supervisor: the loop, the output, and taking part in reaping."""

        loop: Loop

        @property
        def devnull(self) -> int: ...

        def add_program(self, program: Program) -> None: ...

        def spawn_labelled(self, name: str, path: str, argv: tuple[str, ...], cwd: str, stage: str,
                           stdin: int, stdout: int | None, env: Mapping[str, str]) -> int: ...


class HookRunner:
    """Runs one directory's hooks one after the other on the event loop.

    ``fatal`` hooks (start) stop at the first failure and report it through ``on_failure``; the
    others (stop) warn and go on. ``then`` is called once every hook has run (not after a failure
    or :meth:`cancel`)."""

    def __init__(self, host: HookHost, label: str, paths: tuple[str, ...], timeout: float | None,
                 fatal: bool) -> None:
        self._host = host
        self._label = label
        self._pending = list(paths)
        self._timeout = timeout
        self._fatal = fatal
        self._current: Program | None = None
        self._then: Callable[[], None] = _nothing
        self._on_failure: Callable[[], None] = _nothing
        self._env: Mapping[str, str] = {}
        self.finished = False

    @property
    def running(self) -> bool:
        return self._current is not None

    def run(self, env: Mapping[str, str], then: Callable[[], None],
            on_failure: Callable[[], None] = lambda: None) -> None:
        self._env, self._then, self._on_failure = env, then, on_failure
        self._next()

    def cancel(self) -> None:
        """Teardown began during start hooks: SIGTERM the one running, start no more."""
        self._pending.clear()
        self._then = _nothing
        if self._current is not None:
            self._current.signalled.add(signal.SIGTERM)
            logger.info("sending SIGTERM to PID {pid}", service=self._current.name,
                        stage=self._current.stage, pid=self._current.pid)
            signal_process(self._current.pid, signal.SIGTERM)

    def _next(self) -> None:
        while self._pending:
            path = self._pending.pop(0)
            try:
                self._current = self._start(path)
                return
            except OSError as error:
                name = os.path.basename(path)
                if self._fail("cannot run {path}: {reason}", name, path=path,
                              reason=error.strerror or error):
                    return
        self.finished = True
        self._then()

    def _start(self, path: str) -> Program:
        """Spawn one hook as §3 says: argv its path, in its directory, stdin /dev/null, stdout and
        stderr labelled ``<label>/<file>``, a session of its own. Raises OSError."""
        name = os.path.basename(path)
        logger.info("starting", service=self._label, stage=name)
        pid = self._host.spawn_labelled(self._label, path, (path,), os.path.dirname(path), name,
                                        self._host.devnull, None, self._env)
        program = Program(pid, self._label, name, Role.CONTAINER_HOOK)
        program.on_exit = self._exited
        if self._timeout is not None:
            program.timers.append(self._host.loop.call_later(self._timeout, self._kill, program))
        self._host.add_program(program)
        logger.info("running with PID {pid}", service=self._label, stage=name, pid=pid)
        return program

    def _kill(self, program: Program) -> None:
        """DINIT_TIMEOUT passed and the hook still runs: SIGKILL its whole session."""
        program.signalled.add(signal.SIGKILL)
        killed = kill_session(program.pid)
        logger.warning("still running {timeout:g} s after it started (DINIT_TIMEOUT), sent SIGKILL to "
                       "session {session}: PIDs {pids}", service=program.name, stage=program.stage,
                       timeout=self._timeout, session=program.pid, pids=" ".join(map(str, killed)))

    def _exited(self, program: Program, status: int) -> None:
        self._current = None
        if (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or self._then is _nothing:
            # Success, or a start hook that teardown stopped on purpose: nothing went wrong.
            logger.info("PID {pid} finished with {how}", service=program.name, stage=program.stage,
                        pid=program.pid, how=describe(status))
        elif self._fail("PID {pid} {how}", program.stage, pid=program.pid, how=explain(status)):
            return
        self._next()

    def _fail(self, template: str, name: str, **fields: object) -> bool:
        """Report a failed hook; True if no more hooks run (a start hook's failure is fatal)."""
        if not self._fatal:
            logger.warning(template, service=self._label, stage=name, **fields)
            return False
        logger.error(template + ", not starting any service", service=self._label, stage=name, **fields)
        self._pending.clear()
        self._on_failure()
        return True


class ContainerHooks:
    """Both runners, as the supervisor uses them: start hooks before the services, stop hooks once
    every process is gone."""

    def __init__(self, host: HookHost, paths: HookPaths, timeout: float | None) -> None:
        self._host = host
        self._start = HookRunner(host, START, paths.start, timeout, fatal=True)
        self._stop = HookRunner(host, STOP, paths.stop, timeout, fatal=False)
        self._has_stop = bool(paths.stop)
        self._stop_started = False

    def start(self, then: Callable[[], None], on_failure: Callable[[], None]) -> None:
        """Run the start hooks, then call ``then`` (at once when there are none)."""
        self._start.run(dict(os.environ), then, on_failure)

    def teardown(self) -> None:
        """Teardown began: a start hook still running is stopped and no more start."""
        if not self._start.finished:
            self._start.cancel()

    def stop_pending(self, status: int, check_done: Callable[[], None]) -> bool:
        """Called once nothing is left: True while stop hooks still run (``check_done`` is called
        again, from the loop, when the last one is done)."""
        if not self._has_stop:
            return False
        if not self._stop_started:
            self._stop_started = True
            env = dict(os.environ, DINIT_STATUS=str(status))
            self._stop.run(env, lambda: self._later(check_done))
        return not self._stop.finished

    def _later(self, callback: Callable[[], None]) -> None:
        """From the loop, not from inside the runner: the caller may be mid-check."""
        self._host.loop.call_later(0, callback)


def _nothing() -> None:
    """The continuation of a runner that was cancelled."""
