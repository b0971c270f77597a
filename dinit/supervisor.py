"""The lifecycle: start every service, reap every child, tear down, choose the exit code (§3, §5, §8).

Everything runs on one event loop thread, which alone spawns, signals and reaps (the project's
"one owner for processes" rule). Reaping peeks with ``waitid(WNOWAIT)`` first, so a process dinit did
not start can be named from ``/proc`` before its zombie is collected, and an exit status of a program
dinit started can never be taken by anyone else.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import termios
from collections.abc import Mapping

from .config import Config
from .log import logger
from .loop import Loop
from .output.multiplexer import Multiplexer, make_pipe
from .process.exec_errors import explain
from .process.programs import Program, Role, kill_session, signal_process
from .process.reparent import Reparenter
from .process.spawn import spawn
from .service import envdir
from .service.discovery import Service

#: Exit code a service uses to say "I disabled myself", and a logger "read my stdout yourself".
DISABLED = 115
EXIT_OK, EXIT_ERROR, EXIT_FAILURE = 0, 1, 3

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM)
_HANDLED = {*STOP_SIGNALS, *_FORWARDED_SIGNALS, signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP}
#: How often a logger's input is checked once its service is gone, and how long it may go on
#: neither exiting nor reading after its input was closed before it gets SIGTERM (§4.5).
_LOGGER_POLL = 0.05
_LOGGER_GRACE = 1.0


class ServiceState:
    """A service and its running processes."""

    def __init__(self, service: Service, base_env: Mapping[str, str]) -> None:
        self.service = service
        self.env = envdir.apply(base_env, service.env)
        self.run: Program | None = None
        self.logger: Program | None = None
        self.hook: Program | None = None
        #: dinit's copies of the logger's input pipe: the write end for the stop hook while ``run``
        #: runs, the read end to see when the input is closed and to read it once the logger is gone.
        self.pipe_write: int | None = None
        self.pipe_read: int | None = None
        self.disabled = False
        #: Since when the logger's input has been closed with ``unread`` bytes left in it, unchanged
        #: (the logger is not reading): after a grace period it gets SIGTERM (§4.5).
        self.closed_since: float | None = None
        self.unread: int | None = None

    @property
    def name(self) -> str:
        return self.service.name


def _describe(status: int) -> str:
    if os.WIFEXITED(status):
        return f"status {os.WEXITSTATUS(status)}"
    return f"signal {os.WTERMSIG(status)}"


def _disabled(status: int) -> bool:
    """Exit code 115: a service disabled itself, or a logger asks dinit to read its input (§4.5, §5.1)."""
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == DISABLED


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


class Supervisor:
    """Runs the services of one dinit process from start to exit."""

    def __init__(self, config: Config, services: list[Service], mux: Multiplexer,
                 loop: Loop, propagate: bool) -> None:
        self.config = config
        self.loop = loop
        self.mux = mux
        self.programs: dict[int, Program] = {}
        self.terminating = False
        self._propagate = propagate
        self._outcome: tuple[int, int] | None = None
        self._done = False
        self._states = [ServiceState(service, os.environ) for service in services if not service.down]
        self._by_pid_state: dict[int, ServiceState] = {}
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.reparenter = Reparenter(self, config.policy, config.kill_timeout)
        mux.on_idle = self._check_done

    # -- running ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, wait until teardown is complete, return the exit code (§5.3)."""
        self._install_signals()
        for state in self._states:
            if self.terminating:
                break
            self.loop.call(self._start_service, (state,))
        self.reparenter.start()
        self.reap()
        self._check_done()
        if not self._done:
            self.loop.run()
        return self.exit_code()

    def exit_code(self) -> int:
        if self._outcome is None:
            return EXIT_OK
        return self._outcome[1] if self._propagate else self._outcome[0]

    def _install_signals(self) -> None:
        """Teardown, forwarding and reaping signals get loop handlers; every other catchable signal
        is ignored so nothing but SIGKILL ends dinit without teardown (§8). Programs still get
        default dispositions: spawn resets every signal."""
        for signum in STOP_SIGNALS:
            self.loop.add_signal_handler(signum, self._on_stop_signal, signum)
        for signum in _FORWARDED_SIGNALS:
            self.loop.add_signal_handler(signum, self._forward, signum)
        self.loop.add_signal_handler(signal.SIGCHLD, self.reap)
        for signum in signal.valid_signals() - _HANDLED:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_IGN)

    def _on_stop_signal(self, signum: int) -> None:
        if self.terminating:
            logger.info(f"got signal {signum}, already terminating services")
            return
        logger.info(f"got signal {signum}, terminating services")
        self.teardown(EXIT_OK, EXIT_OK)

    def _forward(self, signum: int) -> None:
        for state in self._states:
            if state.run is not None:
                logger.info(f"{state.run.label}: forwarding signal {signum} to PID {state.run.pid}")
                state.run.signalled.add(signum)
                signal_process(state.run.pid, signum)

    # -- starting ----------------------------------------------------------------------------------

    def _spawn(self, state: ServiceState, path: str, argv: tuple[str, ...], cwd: str, stage: str,
               stdin: int, stdout: int | None, env: dict[str, str],
               search_path: bool = False) -> tuple[int, int | None]:
        """Start one program of a service with a new stderr pipe (and a new stdout pipe unless one is
        given). Returns the PID and the stdout read end it created. Raises OSError."""
        out_read = None
        if stdout is None:
            out_read, stdout = make_pipe()
        err_read, err_write = make_pipe()
        try:
            pid = spawn(path, argv, cwd, env, stdin, stdout, err_write, search_path)
        except OSError:
            _close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(err_write)
            if out_read is not None:
                os.close(stdout)
        self.mux.add(err_read, state.name, stage, is_stdout=False, owner=pid)
        return pid, out_read

    def _exec_failed(self, label: str, path: str, error: OSError, command: bool = False) -> None:
        """An exec failure is a start-up error (exit 1); only dinit's own command propagates the
        status a shell would give (127 not found, 126 not executable)."""
        logger.error(f"{label}: cannot run {path}: {explain(path, error)}")
        shell = _SHELL_CODES.get(error.errno or 0, EXIT_ERROR) if command else EXIT_ERROR
        self.teardown(EXIT_ERROR, shell)

    def _start_service(self, state: ServiceState) -> None:
        """Start the logger (if any), then ``run`` (§3, §4.5)."""
        service = state.service
        run_stdout = None
        if service.log_run is not None:
            state.pipe_read, state.pipe_write = make_pipe()
            os.set_blocking(state.pipe_read, True)
            if not self._start_logger(state):
                return
            run_stdout = state.pipe_write
        logger.info(f"{service.name}/run: starting")
        try:
            pid, out_read = self._spawn(state, service.run, service.argv, service.directory, "run",
                                        self._devnull, run_stdout, state.env, service.command)
        except OSError as error:
            self._close_logger_pipe(state)
            self._exec_failed(f"{service.name}/run", service.run, error, service.command)
            return
        if out_read is not None:
            self.mux.add(out_read, service.name, "run", is_stdout=True, owner=pid)
        state.run = self._register(pid, service.name, "run", Role.RUN, state)

    def _start_logger(self, state: ServiceState) -> bool:
        service = state.service
        assert service.log_run is not None and state.pipe_read is not None
        logger.info(f"{service.name}/log: starting")
        try:
            pid, out_read = self._spawn(state, service.log_run, (service.log_run,),
                                        os.path.dirname(service.log_run), "log", state.pipe_read,
                                        None, state.env)
        except OSError as error:
            self._close_logger_pipe(state)
            self._exec_failed(f"{service.name}/log", service.log_run, error)
            return False
        assert out_read is not None
        self.mux.add(out_read, service.name, "run", is_stdout=True, owner=pid)
        state.logger = self._register(pid, service.name, "log", Role.LOG, state)
        return True

    def _register(self, pid: int, name: str, stage: str, role: Role, state: ServiceState) -> Program:
        program = Program(pid, name, stage, role)
        self.programs[pid] = program
        self._by_pid_state[pid] = state
        logger.info(f"{program.label}: running with PID {pid}")
        return program

    def _close_logger_pipe(self, state: ServiceState) -> None:
        _close(state.pipe_write)
        _close(state.pipe_read)
        state.pipe_write = state.pipe_read = None

    # -- stopping ----------------------------------------------------------------------------------

    def teardown(self, summary: int, propagated: int) -> None:
        """Record why, then stop every service, adopted and reparented process (§5.2)."""
        self._record(summary, propagated)
        if self.terminating:
            return
        self.terminating = True
        for state in self._states:
            if state.run is not None:
                self._stop_service(state)
        self.reparenter.teardown()
        self._check_done()

    def _record(self, summary: int, propagated: int) -> None:
        """The first recorded reason decides the exit code (§5.3)."""
        if self._outcome is None:
            self._outcome = (summary, propagated)

    def _stop_service(self, state: ServiceState) -> None:
        """Run the stop hook instead of SIGTERM when there is one; SIGTERM if it cannot run."""
        run = state.run
        assert run is not None
        logger.info(f"{run.label}: stopping")
        hook = state.service.hook
        if hook is None or not self._start_hook(state, run, hook):
            self.terminate(run)
        if self.config.timeout is not None:
            self.loop.call_later(self.config.timeout, self._timeout, state, run)
        _close(state.pipe_write)
        state.pipe_write = None

    def _start_hook(self, state: ServiceState, run: Program, hook: str) -> bool:
        stage = state.service.hook_stage
        env = dict(state.env, DINIT_PID=str(run.pid))
        logger.info(f"{state.name}/{stage}: starting")
        try:
            pid, out_read = self._spawn(state, hook, (hook,), state.service.directory, stage,
                                        self._devnull, state.pipe_write, env)
        except OSError as error:
            logger.error(f"{state.name}/{stage}: cannot run {hook}: {explain(hook, error)},"
                         " sending SIGTERM instead")
            return False
        if out_read is not None:
            self.mux.add(out_read, state.name, stage, is_stdout=True, owner=pid)
        state.hook = self._register(pid, state.name, stage, Role.HOOK, state)
        return True

    def terminate(self, program: Program) -> None:
        """SIGTERM a program, remembering dinit caused any death by it."""
        logger.info(f"{program.label}: sending SIGTERM to PID {program.pid}")
        program.signalled.add(signal.SIGTERM)
        signal_process(program.pid, signal.SIGTERM)

    def _timeout(self, state: ServiceState, run: Program) -> None:
        """DINIT_TIMEOUT passed since the service was asked to stop: SIGKILL the whole session of
        ``run`` (its session ID is its PID) and of a stop hook still running, so the deadline holds
        for a hook that hangs too."""
        if self.programs.get(run.pid, run) is run:  # else run is gone and its PID reused by dinit
            self._kill_session(run)
        if state.hook is not None:
            self._kill_session(state.hook)

    def _kill_session(self, leader: Program) -> None:
        leader.signalled.add(signal.SIGKILL)
        killed = kill_session(leader.pid)
        if killed:
            logger.warning(f"{leader.label}: still running {self.config.timeout:g}s after being "
                           f"stopped, sent SIGKILL to session {leader.pid}: PIDs "
                           + " ".join(map(str, killed)))

    # -- reaping -----------------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect every exited child. Unknown ones are named from /proc before being collected."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is None or not info.si_pid:
                break
            pid = info.si_pid
            if pid not in self.programs:
                self.reparenter.reaping_unknown(pid)
            _, status = os.waitpid(pid, 0)
            self.exited(pid, status)
        self._check_done()

    def exited(self, pid: int, status: int) -> None:
        """A child's exit status is known (reaped here, or by the ptrace code while it held it)."""
        if pid not in self.programs:
            return
        self.mux.drain(pid)  # its last lines first, then the line saying it finished
        program = self.programs.pop(pid)
        for timer in program.timers:
            timer.cancel()
        state = self._by_pid_state.pop(pid, None)
        if program.role is Role.RUN and state is not None and self._disables_itself(state, status):
            logger.info(f"{program.label}: PID {pid} finished and disabled itself")
        else:
            logger.info(f"{program.label}: PID {pid} finished with {_describe(status)}")
        handler = {Role.RUN: self._run_exited, Role.LOG: self._logger_exited,
                   Role.HOOK: self._hook_exited}.get(program.role)
        if handler is not None and state is not None:
            handler(state, program, status)
        elif program.role is Role.ADOPTED:
            self.teardown(*self._reason(program, status))

    def _reason(self, program: Program, status: int) -> tuple[int, int]:
        """Exit code reasons for a program's exit: (summary code, propagated status)."""
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            return (EXIT_OK if code == 0 else EXIT_FAILURE), code
        signum = os.WTERMSIG(status)
        return (EXIT_OK if signum in program.signalled else EXIT_FAILURE), 128 + signum

    def _run_exited(self, state: ServiceState, program: Program, status: int) -> None:
        state.run = None
        _close(state.pipe_write)
        state.pipe_write = None
        self._watch_logger(state)
        if self._disables_itself(state, status):
            state.disabled = True
            if all(s.disabled for s in self._states):
                logger.warning("all services have disabled themselves, waiting for a signal to exit")
            return
        self.teardown(*self._reason(program, status))

    def _disables_itself(self, state: ServiceState, status: int) -> bool:
        """Exit code 115 of a directory service's ``run`` before teardown (§5.1). dinit's own command
        is no runit service: like tini, its every exit ends the container and its status propagates."""
        return _disabled(status) and not self.terminating and not state.service.command

    def _logger_exited(self, state: ServiceState, program: Program, status: int) -> None:
        """A logger exit tears down while its service runs, except 115, which disables it. Either way
        dinit reads the service's stdout itself from now on, so nothing written later is lost."""
        state.logger = None
        if state.pipe_read is not None:
            self.mux.add(state.pipe_read, state.name, "run", is_stdout=True)
            state.pipe_read = None
        if _disabled(status):
            logger.info(f"{program.label}: logger disabled, reading {state.name}/run stdout directly")
            return
        if state.run is not None:
            self.teardown(*self._reason(program, status))

    def _hook_exited(self, state: ServiceState, _program: Program, _status: int) -> None:
        state.hook = None
        self._watch_logger(state)

    # -- loggers that do not exit by themselves ---------------------------------------------------

    def _watch_logger(self, state: ServiceState) -> None:
        """Once a service's programs are gone, watch its logger's input (§4.5)."""
        if state.logger is not None and state.run is None and state.hook is None:
            self.loop.call_later(_LOGGER_POLL, self._check_logger, state, state.logger)

    def _check_logger(self, state: ServiceState, program: Program) -> None:
        """SIGTERM a logger whose input is closed (every writer gone) and which has neither exited
        nor read anything for the grace period -- whether it ignores EOF or never reads at all;
        SIGKILL follows after DINIT_KILL_TIMEOUT. A logger still working through its input is
        left alone, and what it leaves unread, dinit reads once it is gone (§4.5)."""
        if state.logger is not program or state.pipe_read is None:
            return
        now = self.loop.time()
        unread = _unread_after_close(state.pipe_read)
        # While dinit's own output is congested the logger is blocked on its writes by dinit: that
        # is no sign of a logger that stopped reading.
        if unread is None or unread != state.unread or self.mux.paused:
            state.closed_since = None if unread is None else now
            state.unread = unread
        elif state.closed_since is not None and now - state.closed_since >= _LOGGER_GRACE:
            logger.warning(f"{program.label}: still running after its input was closed")
            self.terminate(program)
            program.timers.append(self.loop.call_later(
                self.config.kill_timeout, self.kill, program))
            return
        self.loop.call_later(_LOGGER_POLL, self._check_logger, state, program)

    def kill(self, program: Program) -> None:
        """SIGKILL a program that outlived DINIT_KILL_TIMEOUT after SIGTERM."""
        if self.programs.get(program.pid) is program:
            logger.info(f"{program.label}: sending SIGKILL to PID {program.pid}")
            program.signalled.add(signal.SIGKILL)
            signal_process(program.pid, signal.SIGKILL)

    # -- the end -----------------------------------------------------------------------------------

    def _check_done(self) -> None:
        """Exit as soon as nothing is left: no program, no open pipe, no child at all (§5.2)."""
        if self._done or not self.terminating:
            return
        if self.programs or self.mux.open_streams or self.reparenter.has_children():
            return
        self._done = True
        self.loop.stop()


def _unread_after_close(fd: int) -> int | None:
    """How many bytes are left in a pipe whose writers are all gone (the read end reports EPOLLHUP
    then, data or not), or None while a writer is left."""
    with select.epoll() as poller:
        poller.register(fd, select.EPOLLIN)
        if not any(events & select.EPOLLHUP for _, events in poller.poll(0)):
            return None
    pending = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, pending)
    return int.from_bytes(pending, "little")


#: Exit codes a shell (and Docker) uses when a command cannot be run, for propagation mode.
_SHELL_CODES = {2: 127, 13: 126, 8: 126}

