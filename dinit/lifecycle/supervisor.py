"""The lifecycle: start every service, reap every child, stop one service or all, choose the exit
code (§3, §5, §8, §10, §17).

Everything runs on one event loop thread, which alone spawns, signals and reaps (the project's
"one owner for processes" rule). Reaping peeks with ``waitid(WNOWAIT)`` first, so a process dinit did
not start can be named from ``/proc`` before its zombie is collected, and an exit status of a program
dinit started can never be taken by anyone else. Service phases change only through
:meth:`ServiceState.transition`; the container's through :meth:`Supervisor._container`.
"""

from __future__ import annotations

import os

from ..config import Config, StopIgnored
from ..lean import suppress
from ..log import logger
from ..loop import Loop
from ..output.multiplexer import Multiplexer, make_pipe
from ..process.procfs import blocked_pending, refuses_signal
from ..process.programs import Program, Role, kill_session, signal_process
from ..process.reparent import Reparenter
from ..process.spawn import spawn
from ..readiness.settings import Settings as ReadinessSettings
from ..readiness.sources import Readiness
from ..service.discovery import Service
from .hooks import ContainerHooks, HookPaths
from .outcome import Outcome, describe, explain, signal_name
from .signals import FORWARDED_SIGNALS, STOP_SIGNALS, ignorable, transparent_forwarded
from .state import UP, ContainerPhase, Phase, ServiceState, StopReason

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Mapping

    Observer = Callable[[ServiceState, Phase], None]
    #: Told of an exec failure (state, stage, error) first; True means handled, so not fatal (§11).
    ExecFailureHandler = Callable[[ServiceState, str, OSError], bool]
else:
    import _signal as signal  # signal without its enums (lean.py: start-up)


#: Exit code a service uses to say "I disabled myself", and a logger "read my stdout yourself".
DISABLED = 115
#: How often a logger's input is checked once its service is gone (§4.5).
_LOGGER_POLL = 0.05
#: When the first "still waiting" warning of a teardown comes, and how often it repeats (§5.2).
_FIRST_WAIT_WARNING = 5.0
_WAIT_WARNING_INTERVAL = 10.0
#: How long a SIGTERM that ``run`` had blocked may stay pending before dinit says it blocks it (§15).
_BLOCKED_GRACE = 0.1


def _disabled(status: int) -> bool:
    """Exit code 115: a service disabled itself, or a logger asks dinit to read its input (§4.5, §5.1)."""
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == DISABLED


def _why_not_run(path: str, error: OSError) -> str:
    """Why ``path`` could not be executed (§16): imported with the first failure, not at start."""
    from ..process import exec_errors

    return exec_errors.explain(path, error)


def _controls_terminal() -> bool:
    """Whether stdin is the controlling terminal of dinit's session (a container runtime's ``-t``),
    so a program can be made its foreground process group."""
    try:
        os.tcgetpgrp(0)
    except OSError:
        return False
    return True


class Supervisor:
    """Runs the services of one dinit process from start to exit.

    ``transparent`` is command mode without services (§17): every signal is passed on to the
    command as it is, the command reads dinit's stdin, and on a terminal it owns the terminal.
    """

    def __init__(self, config: Config, services: list[Service], mux: Multiplexer, loop: Loop,
                 propagate: bool, transparent: bool = False, hooks: HookPaths | None = None,
                 readiness: ReadinessSettings | None = None) -> None:
        self.config = config
        self.loop = loop
        self.mux = mux
        self.programs: dict[int, Program] = {}
        #: PIDs to reap without a word when they become dinit's children (see reap_quietly).
        self.quiet: set[int] = set()
        self.container = ContainerPhase.STARTING
        #: Called after every service transition (events, waiting clients).
        self.observers: list[Observer] = []
        #: Hot reload (§11) makes exec failures of services it added at run time non-fatal.
        self.on_exec_failure: ExecFailureHandler | None = None
        #: Called with the previous phase after every container transition (§10, §13, §14).
        self.container_observers: list[Callable[[ContainerPhase], None]] = []
        self._terminating = False
        self._started = False
        self._transparent = transparent
        self._propagate = propagate
        self._outcome: Outcome | None = None
        self._done = False
        self._teardown_began = 0.0
        self._teardown_word = "teardown began"
        now = loop.time()
        self.states = {service.name: ServiceState(service, os.environ, self._transitioned, now)
                       for service in services}
        self._owner: dict[int, ServiceState] = {}
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.readiness = Readiness(self, readiness or ReadinessSettings())
        #: Why the last program that could not be started failed (for the control socket, §12).
        self.exec_error: OSError | None = None
        self.reparenter = Reparenter(self, config.policy, config.kill_timeout)
        self.hooks = ContainerHooks(self, hooks or HookPaths(), config.timeout)
        mux.on_idle = self._check_done

    # -- what the reparenter and other parts may ask ---------------------------------------------

    @property
    def terminating(self) -> bool:
        """Whether teardown has begun (the container is ``stopping``)."""
        return self._terminating

    def known(self, pid: int) -> bool:
        return pid in self.programs or pid in self.quiet

    def reap_quietly(self, pid: int) -> None:
        """A process dinit killed on purpose (a leftover of a hung ``check``): when it becomes dinit's
        child it is reaped without a word, and dinit does not wait for it by name -- only as one of
        its children, so a process that is never reparented to dinit cannot hold teardown up."""
        self.quiet.add(pid)

    def add_program(self, program: Program, state: ServiceState | None = None) -> None:
        """The one way a process becomes one dinit waits for: started by dinit, or reparented."""
        self.programs[program.pid] = program
        if state is not None:
            self._owner[program.pid] = state

    def programs_with_role(self, *roles: Role) -> list[Program]:
        return [program for program in self.programs.values() if program.role in roles]

    def reap_soon(self) -> None:
        self.loop.call_later(0, self.reap)

    @property
    def devnull(self) -> int:
        return self._devnull

    def _transitioned(self, state: ServiceState, previous: Phase) -> None:
        for observer in self.observers:
            observer(state, previous)
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        """The container is ready (``running``) once every service that should run is (§10)."""
        if self.container is ContainerPhase.STARTING and not self._terminating and self._started and all(
                s.phase in (Phase.RUNNING, Phase.DOWN, Phase.DISABLED) for s in self.states.values()):
            self._container(ContainerPhase.RUNNING)

    # -- running ---------------------------------------------------------------------------------

    def run(self, started: Callable[[], None] | None = None) -> int:
        """Start everything, wait until teardown is complete, return the exit code (§5.3).

        ``started`` is called once the first programs run (the services, or the first start hook):
        what the first ``run`` need not wait for is set up there (ARCHITECTURE.md, start-up)."""
        self._install_signals()
        self.hooks.start(self._start_services, lambda: self.teardown(Outcome.error()))
        if started is not None:
            self.loop.call(started)
        self.reparenter.start()
        self.reap()
        self._check_done()
        if not self._done:
            self.loop.run()
        return self.exit_code()

    def _start_services(self) -> None:
        """Once the start hooks (§15) are done: start every service, in name order."""
        for state in self.states.values():
            if self._terminating:
                break
            if state.service.down:
                state.transition(Phase.DOWN, self.loop.time())
            else:
                self.loop.call(self.start_service, (state,))
        if self._transparent:
            os.chdir("/")  # hold no reference to the image's WORKDIR mount (§17)
        self._started = True
        self._maybe_ready()

    def exit_code(self) -> int:
        if self._outcome is None:
            return Outcome.ok().summary
        return self._outcome.status if self._propagate else self._outcome.summary

    def _container(self, phase: ContainerPhase) -> None:
        previous, self.container = self.container, phase
        logger.debug("container {phase}", phase=phase.value)
        for observer in self.container_observers:
            observer(previous)

    def _install_signals(self) -> None:
        """Teardown, forwarding and reaping signals get loop handlers; every other catchable signal
        is ignored so nothing but SIGKILL ends dinit without teardown (§8) -- or, in transparent
        command mode, passed on to the command (§17). Programs still get default dispositions:
        spawn resets every signal."""
        self.loop.add_signal_handler(signal.SIGCHLD, self.reap)
        if self._transparent:
            handled = transparent_forwarded()
            for signum in handled:
                self.loop.add_signal_handler(signum, self._pass_on, signum)
        else:
            handled = frozenset({*STOP_SIGNALS, *FORWARDED_SIGNALS})
            for signum in STOP_SIGNALS:
                self.loop.add_signal_handler(signum, self._on_stop_signal, signum)
            for signum in FORWARDED_SIGNALS:
                self.loop.add_signal_handler(signum, self._forward, signum)
        for signum in ignorable() - handled - {signal.SIGCHLD}:
            with suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_IGN)

    def _on_stop_signal(self, signum: int) -> None:
        if self._terminating:
            logger.info("got signal {signum}, already terminating services", signum=signum)
            return
        logger.info("got signal {signum}, terminating services", signum=signum)
        self._teardown_word = signal_name(signum)
        self.teardown(Outcome.ok())

    def _forward(self, signum: int) -> None:
        for state in self.states.values():
            if state.run is not None:
                self._send(state.run, signum)

    def _pass_on(self, signum: int) -> None:
        """Transparent command mode: the signal goes to the command unchanged; a stop signal also
        marks the container as stopping, without recording an outcome, so the command's own
        status decides the exit code (143 for an unhandled SIGTERM, as under tini)."""
        for state in self.states.values():
            if state.run is not None:
                self._send(state.run, signum)
        if signum in STOP_SIGNALS and not self._terminating:
            self._teardown_word = signal_name(signum)
            self._begin_teardown(stop_services=False)
            for state in self.states.values():
                if state.phase in UP:
                    state.reason = StopReason.TEARDOWN
                    state.transition(Phase.STOPPING, self.loop.time())

    def _send(self, program: Program, signum: int) -> None:
        logger.info("forwarding signal {signum} to PID {pid}", service=program.name,
                    stage=program.stage, signum=signum, pid=program.pid)
        program.signalled.add(signum)
        signal_process(program.pid, signum)

    # -- starting ----------------------------------------------------------------------------------

    def spawn_labelled(self, name: str, path: str, argv: tuple[str, ...], cwd: str, stage: str,
                       stdin: int, stdout: int | None, env: Mapping[str, str], search_path: bool = False,
                       extra_fds: dict[int, int] | None = None, stdout_stage: str | None = None) -> int:
        """Start one program with a new stderr pipe (and a new stdout pipe unless one is given), both
        read by dinit and labelled ``<name>/<stage>`` (stdout ``<name>/<stdout_stage>`` when given: a
        logger's stdout is its service's ``run``, §4.5). The one place every program's pipes are
        made: services, their helpers, checks and container hooks. Returns the PID; raises OSError."""
        out_read = None
        if stdout is None:
            out_read, stdout = make_pipe()
        err_read, err_write = make_pipe()
        try:
            pid = spawn(path, argv, cwd, env, stdin, stdout, err_write, search_path, extra_fds=extra_fds)
        except OSError:
            if out_read is not None:
                os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(err_write)
            if out_read is not None:
                os.close(stdout)
        self.mux.add(err_read, name, stage, is_stdout=False, owner=pid)
        if out_read is not None:
            self.mux.add(out_read, name, stdout_stage or stage, is_stdout=True, owner=pid)
        return pid

    def _exec_failed(self, state: ServiceState, stage: str, path: str, error: OSError) -> None:
        """An exec failure is a start-up error (exit 1); only dinit's own command propagates the
        status a shell would give (127 not found, 126 not executable). A service added at run time
        is the reloader's to handle (§11: nothing after start-up is fatal)."""
        if self.on_exec_failure is not None and self.on_exec_failure(state, stage, error):
            return
        logger.error("cannot run {path}: {reason}", service=state.name, stage=stage, path=path,
                     reason=_why_not_run(path, error))
        self.exec_error = error
        if self.container is ContainerPhase.STARTING:  # at run time (§12 start, submit) never fatal
            self.teardown(Outcome.exec_failure(error, state.service.command))

    def start_service(self, state: ServiceState) -> None:
        """Start the logger (if any), then ``run`` (§3, §4.5)."""
        service = state.service
        if service.log_run is not None:
            from ..output.logger_pipe import LoggerPipe  # services with a logger only (start-up)

            state.pipe = LoggerPipe()
            if not self._start_logger(state):
                return
        logger.info("starting", service=service.name, stage="run")
        try:
            pid = self._spawn_run(state)
        except OSError as error:
            self.readiness.failed(state)
            if state.pipe is not None:
                state.pipe.close_writer()
            self._exec_failed(state, "run", service.run, error)
            return
        state.run = Program(pid, service.name, "run", Role.RUN)
        self.add_program(state.run, state)
        starting = self.readiness.started(state, state.run)  # §13: starting until its sources pass
        state.transition(Phase.STARTING if starting else Phase.RUNNING, self.loop.time(), pid=pid)

    def _spawn_run(self, state: ServiceState) -> int:
        """Start ``run``; in transparent command mode with its stdin, and on a terminal with dinit's
        own stdout and stderr and the terminal's foreground (§17)."""
        service = state.service
        launch = self.readiness.prepare(state)
        env = dict(state.env, **launch.env) if launch.env else state.env
        if self._transparent and os.isatty(0):
            return spawn(service.run, service.argv, service.directory, env, 0, 1, 2,
                         service.command, foreground_tty=0 if _controls_terminal() else None,
                         extra_fds=launch.fds)
        stdin = 0 if self._transparent else self._devnull
        stdout = state.pipe.write_end if state.pipe is not None else None
        return self.spawn_labelled(service.name, service.run, service.argv, service.directory, "run",
                                   stdin, stdout, env, service.command, extra_fds=launch.fds)

    def _start_logger(self, state: ServiceState) -> bool:
        service = state.service
        assert service.log_run is not None and state.pipe is not None and state.pipe.read_end is not None
        try:
            state.logger = self._start_helper(state, "log", service.log_run, (service.log_run,),
                                              os.path.dirname(service.log_run), state.env,
                                              stdin=state.pipe.read_end, stdout=None, role=Role.LOG)
        except OSError as error:
            state.pipe.close()
            self._exec_failed(state, "log", service.log_run, error)
            return False
        return True

    def _start_helper(self, state: ServiceState, stage: str, path: str, argv: tuple[str, ...],
                      cwd: str, env: dict[str, str], stdin: int, stdout: int | None,
                      role: Role) -> Program:
        """Start a logger, stop hook or ``finish`` of a service; its stdout is labelled stage ``run``
        for a logger (§4.5), else its own stage. Returns the program for the caller to keep in the
        state's attribute of that role. Raises OSError."""
        logger.info("starting", service=state.name, stage=stage)
        pid = self.spawn_labelled(state.name, path, argv, cwd, stage, stdin, stdout, env,
                                  stdout_stage="run" if role is Role.LOG else None)
        program = Program(pid, state.name, stage, role)
        self.add_program(program, state)
        logger.info("running with PID {pid}", service=state.name, stage=stage, pid=pid)
        return program

    def _start_finish(self, state: ServiceState, run: Program, status: int) -> None:
        """runit's ``finish`` after ``run`` ended, with its exit code (-1 for a signal) and signal
        number (0 if it exited) as arguments and ``DINIT_PID`` (§2)."""
        finish = state.service.finish
        if finish is None:
            return
        code, signum = ((os.WEXITSTATUS(status), 0) if os.WIFEXITED(status)
                        else (-1, os.WTERMSIG(status)))
        stdout = state.pipe.write_end if state.pipe is not None else None
        try:
            state.finish = self._start_helper(
                state, "finish", finish, (finish, str(code), str(signum)), state.service.directory,
                dict(state.env, DINIT_PID=str(run.pid)), stdin=self._devnull, stdout=stdout,
                role=Role.FINISH)
        except OSError as error:
            logger.error("cannot run {path}: {reason}", service=state.name, stage="finish",
                         path=finish, reason=_why_not_run(finish, error))
            return
        if self.config.timeout is not None:
            state.finish.timers.append(self.loop.call_later(
                self.config.timeout, self._kill_session, state.finish))

    # -- stopping ----------------------------------------------------------------------------------

    def teardown(self, outcome: Outcome, cause: tuple[Program, int] | None = None) -> None:
        """Record why, then stop every service, adopted and reparented process (§5.2). ``cause``,
        a program that ended and its wait status, is the one warning that says why the container
        stops."""
        self._record(outcome)
        if self._terminating:
            return
        if cause is not None:
            program, status = cause
            (logger.info if self._transparent else logger.warning)(
                "PID {pid} {how}, stopping the container", service=program.name, stage=program.stage,
                pid=program.pid, how=explain(status))
        self._begin_teardown(stop_services=True)

    def _begin_teardown(self, stop_services: bool) -> None:
        """The container is not ready from this instant; its services are stopped now, or after
        DINIT_STOP_DELAY if it was ready (serving) until now, so load balancers notice first (§15)."""
        delay = self.config.stop_delay if stop_services and self.container is ContainerPhase.RUNNING \
            else 0.0
        self._terminating = True
        self._container(ContainerPhase.STOPPING)
        self.hooks.teardown()
        if delay:
            logger.info("not ready, stopping services in {delay:g} s (DINIT_STOP_DELAY)", delay=delay)
            self.loop.call_later(delay, self._stop_everything, stop_services)
        else:
            self._stop_everything(stop_services)

    def _stop_everything(self, stop_services: bool) -> None:
        self._teardown_began = self.loop.time()
        self.loop.call_later(_FIRST_WAIT_WARNING, self._still_waiting)
        if stop_services:
            for state in self.states.values():
                if state.phase in UP:
                    self._stop(state, StopReason.TEARDOWN)
        self.reparenter.teardown()
        self._check_done()

    def _record(self, outcome: Outcome) -> None:
        """The first recorded reason decides the exit code (§5.3)."""
        if self._outcome is None:
            self._outcome = outcome

    def add_service(self, service: Service) -> ServiceState:
        """Know a service found at run time (§11), ``pending`` until it is started; it takes the
        place of an earlier instance of the same name, which must have no process left, and goes on
        from that one's phase (an event after ``rm S/down`` says ``down -> running``, §14)."""
        old = self.states.get(service.name)
        assert old is None or not old.programs(), f"{service.name}: old instance still running"
        state = ServiceState(service, os.environ, self._transitioned, self.loop.time(),
                             Phase.PENDING if old is None else old.phase)
        self.states[service.name] = state
        return state

    def remove_service(self, name: str) -> bool:
        """Forget a service whose entry left the directory (§11), once none of its processes is
        left. False if one still is (or it is unknown)."""
        state = self.states.get(name)
        if state is None or state.programs():
            return False
        del self.states[name]
        return True

    def stop_service(self, name: str, reason: StopReason = StopReason.CONTROL) -> bool:
        """Stop one service as teardown stops it, without tearing the container down: its exit does
        not count for the exit code (§10, §11 removal, §12 ``stop``). False if it is not running."""
        state = self.states.get(name)
        if state is None or state.phase not in UP:
            return False
        self._stop(state, reason)
        return True

    def _stop(self, state: ServiceState, reason: StopReason) -> None:
        """Run the stop hook instead of SIGTERM when there is one; SIGTERM if it cannot run."""
        run = state.run
        assert run is not None
        state.reason = reason
        state.transition(Phase.STOPPING, self.loop.time())
        hook = state.service.hook
        if hook is None or not self._start_hook(state, run, hook):
            self._terminate_run(run)
        if self.config.timeout is not None:  # not cancelled when run exits: its session may live on
            self.loop.call_later(self.config.timeout, self._timeout, state, run)
        if state.pipe is not None and state.service.finish is None:
            state.pipe.close_writer()

    def _start_hook(self, state: ServiceState, run: Program, hook: str) -> bool:
        stage = state.service.hook_stage
        stdout = state.pipe.write_end if state.pipe is not None else None
        try:
            state.hook = self._start_helper(state, stage, hook, (hook,), state.service.directory,
                                            dict(state.env, DINIT_PID=str(run.pid)), stdin=self._devnull,
                                            stdout=stdout, role=Role.HOOK)
        except OSError as error:
            logger.error("cannot run {path}: {reason}, sending SIGTERM instead", service=state.name,
                         stage=stage, path=hook, reason=_why_not_run(hook, error))
            return False
        return True

    def _terminate_run(self, run: Program) -> None:
        """SIGTERM ``run``, saying once if it ignores or blocks SIGTERM, so a teardown that will
        hang until the runtime's SIGKILL is explained; under DINIT_STOP_IGNORED=kill its session is
        SIGKILLed instead (dock ``--thug``, §15). Shells block every signal for an instant while
        they wait for a child, so "blocks" is only said if the SIGTERM is still pending shortly
        after it was sent."""
        refused = refuses_signal(run.pid, signal.SIGTERM)
        if refused == "ignores":
            self._refuses_sigterm(run, refused)
            return
        self.terminate(run)
        if refused == "blocks":
            self.loop.call_later(_BLOCKED_GRACE, self._check_blocked, run)

    def _check_blocked(self, run: Program) -> None:
        if self.programs.get(run.pid) is run and blocked_pending(run.pid, signal.SIGTERM):
            self._refuses_sigterm(run, "blocks")

    def _refuses_sigterm(self, run: Program, how: str) -> None:
        logger.warning("PID {pid} {how} SIGTERM", service=run.name, stage=run.stage, pid=run.pid, how=how)
        if self.config.stop_ignored is not StopIgnored.KILL:
            if signal.SIGTERM not in run.signalled:
                self.terminate(run)
            return
        run.signalled.update((signal.SIGTERM, signal.SIGKILL))
        killed = kill_session(run.pid)
        logger.info("DINIT_STOP_IGNORED=kill: sent SIGKILL to session {session}: PIDs {pids}",
                    service=run.name, stage=run.stage, session=run.pid, pids=" ".join(map(str, killed)))

    def terminate(self, program: Program) -> None:
        """SIGTERM a program, remembering dinit caused any death by it."""
        logger.info("sending SIGTERM to PID {pid}", service=program.name, stage=program.stage,
                    pid=program.pid)
        program.signalled.add(signal.SIGTERM)
        signal_process(program.pid, signal.SIGTERM)

    def kill(self, program: Program) -> None:
        """SIGKILL a program that outlived DINIT_KILL_TIMEOUT after SIGTERM."""
        if self.programs.get(program.pid) is program:
            logger.info("sending SIGKILL to PID {pid}", service=program.name, stage=program.stage,
                        pid=program.pid)
            program.signalled.add(signal.SIGKILL)
            signal_process(program.pid, signal.SIGKILL)

    def _timeout(self, state: ServiceState, run: Program) -> None:
        """DINIT_TIMEOUT passed since the service was asked to stop: SIGKILL the whole session of
        ``run`` (its session ID is its PID) and of a stop hook still running, so the deadline holds
        for a hook that hangs too."""
        self._kill_session(run)
        if state.hook is not None:
            self._kill_session(state.hook)

    def _kill_session(self, leader: Program) -> None:
        if self.programs.get(leader.pid, leader) is not leader:
            return  # gone, and its PID reused by another program of dinit's
        leader.signalled.add(signal.SIGKILL)
        killed = kill_session(leader.pid)
        if killed:
            logger.warning("still running {timeout:g} s after being stopped, sent SIGKILL to session "
                           "{session}: PIDs {pids}", service=leader.name, stage=leader.stage,
                           timeout=self.config.timeout, session=leader.pid,
                           pids=" ".join(map(str, killed)))

    def _still_waiting(self) -> None:
        """During a long teardown, say what dinit is waiting for (§5.2)."""
        if self._done:
            return
        waiting = ", ".join(f"{p.label} (PID {p.pid})" for p in self.programs.values())
        if waiting:
            elapsed = self.loop.time() - self._teardown_began
            logger.warning("still waiting for {waiting}, {elapsed:.0f} s after {what}", waiting=waiting,
                           elapsed=elapsed, what=self._teardown_word)
        self.loop.call_later(_WAIT_WARNING_INTERVAL, self._still_waiting)

    # -- the control socket (§12) ------------------------------------------------------------------

    def start(self, state: ServiceState) -> OSError | None:
        """Start a service at run time: one that cannot be run is one error line and the error
        returned, never teardown. The caller makes sure none of its programs is left."""
        self.exec_error = None
        self.start_service(state)
        return self.exec_error

    def submit(self, service: Service) -> tuple[ServiceState, OSError | None]:
        """Add a transient service (``dinit submit``) and start it; on failure it is not kept."""
        state = ServiceState(service, os.environ, self._transitioned, self.loop.time())
        self.states[service.name] = state
        error = self.start(state)
        if error is not None:
            del self.states[service.name]
        return state, error

    def signal_service(self, state: ServiceState, signum: int) -> bool:
        """Send ``signum`` to a service's ``run``, as forwarding does; False if it is not running."""
        if state.run is None:
            return False
        self._send(state.run, signum)
        return True

    def shutdown(self, requester: int) -> None:
        """``dinit shutdown``: teardown as on SIGTERM, saying who asked; asked again while it
        runs, said and nothing else, as for a second SIGTERM."""
        if self._terminating:
            logger.info("shutdown requested by PID {pid}, already terminating services", pid=requester)
            return
        logger.info("shutdown requested by PID {pid}, terminating services", pid=requester)
        self._teardown_word = "the shutdown request"
        self.teardown(Outcome.ok())

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
            if pid in self.quiet:
                self.quiet.discard(pid)
            elif pid not in self.programs:
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
        if program.on_exit is not None:
            program.on_exit(program, status)
            return
        state = self._owner.pop(pid, None)
        if state is None:
            logger.info("PID {pid} finished with {how}", service=program.name, stage=program.stage,
                        pid=pid, how=describe(status))
            if program.role is Role.ADOPTED:
                self.teardown(Outcome.of_status(status, program.signalled), (program, status))
            return
        handler = {Role.RUN: self._run_exited, Role.LOG: self._logger_exited,
                   Role.HOOK: self._hook_exited, Role.FINISH: self._finish_exited}[program.role]
        handler(state, program, status)

    def _run_exited(self, state: ServiceState, program: Program, status: int) -> None:
        state.run = None
        state.last_exit = status
        outcome = Outcome.of_status(status, program.signalled)
        disabled = _disabled(status) and not self._terminating and not state.service.command
        # Killed while dinit was stopping it: the stop dinit asked for (§10), also when the signal
        # came from the service's own stop hook (`kill "$DINIT_PID"`), not from dinit itself.
        asked = state.phase is Phase.STOPPING and os.WIFSIGNALED(status)
        phase = Phase.DISABLED if disabled else (
            Phase.STOPPED if asked or outcome.summary == Outcome.ok().summary else Phase.CRASHED)
        state.transition(phase, self.loop.time(), pid=program.pid, how=describe(status))
        self._start_finish(state, program, status)
        self._writers_gone(state)
        if disabled:
            if all(s.phase in (Phase.DISABLED, Phase.DOWN) for s in self.states.values()):
                logger.warning("all services have disabled themselves, waiting for a signal to exit")
            return
        if state.counts:
            self.teardown(outcome, (program, status))

    def _logger_exited(self, state: ServiceState, program: Program, status: int) -> None:
        """A logger exit tears down while its service runs, except 115, which disables it. Either way
        dinit reads the service's stdout itself from now on, so nothing written later is lost."""
        state.logger = None
        logger.info("PID {pid} finished with {how}", service=state.name, stage="log",
                    pid=program.pid, how=describe(status))
        if state.pipe is not None:
            state.pipe.hand_over(self.mux, state.name)
        if _disabled(status):
            logger.info("logger disabled, reading {name}/run stdout directly", service=state.name,
                        stage="log", name=state.name)
            return
        if state.run is not None and state.counts:
            self.teardown(Outcome.of_status(status, program.signalled), (program, status))

    def _hook_exited(self, state: ServiceState, program: Program, status: int) -> None:
        state.hook = None
        logger.info("PID {pid} finished with {how}", service=state.name, stage=program.stage,
                    pid=program.pid, how=describe(status))
        self._writers_gone(state)

    def _finish_exited(self, state: ServiceState, program: Program, status: int) -> None:
        """``finish`` never changes the exit code; a failing one is worth one warning (§2)."""
        state.finish = None
        failed = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
        (logger.warning if failed else logger.info)(
            "PID {pid} finished with {how}", service=state.name, stage="finish", pid=program.pid,
            how=describe(status))
        self._writers_gone(state)

    def _writers_gone(self, state: ServiceState) -> None:
        """Once no program of the service will write to its logger any more, close dinit's copy of
        the pipe's write end, and watch the logger (§4.5)."""
        if state.run is not None or state.hook is not None or state.finish is not None:
            return
        if state.pipe is not None:
            state.pipe.close_writer()
        if state.logger is not None:
            self.loop.call_later(_LOGGER_POLL, self._check_logger, state, state.logger)

    # -- loggers that do not exit by themselves ---------------------------------------------------

    def _check_logger(self, state: ServiceState, program: Program) -> None:
        """SIGTERM a logger whose input is closed (every writer gone) and which has neither exited
        nor read anything for a grace period -- whether it ignores EOF or never reads at all;
        SIGKILL follows after DINIT_KILL_TIMEOUT. A logger still working through its input is
        left alone, and what it leaves unread, dinit reads once it is gone (§4.5)."""
        if state.logger is not program or state.pipe is None:
            return
        if state.pipe.stalled(self.loop.time(), self.mux.paused):
            logger.warning("still running after its input was closed", service=state.name, stage="log")
            self.terminate(program)
            program.timers.append(self.loop.call_later(self.config.kill_timeout, self.kill, program))
            return
        self.loop.call_later(_LOGGER_POLL, self._check_logger, state, program)

    # -- the end -----------------------------------------------------------------------------------

    def _check_done(self) -> None:
        """Exit as soon as nothing is left: no program, no open pipe, no child at all (§5.2)."""
        if self._done or not self._terminating:
            return
        if self.programs or self.mux.open_streams or self.reparenter.has_children():
            return
        if self.hooks.stop_pending(self.exit_code(), self._check_done):
            return
        self._done = True
        self._container(ContainerPhase.STOPPED)
        self.loop.stop()

