"""The commands the control socket serves (§12), acting on the supervisor from the loop thread.

Nothing here blocks, and nothing acts from inside a state transition: a transition only schedules
:meth:`Handlers.settle`, which runs on the loop soon after and moves held services to ``down``,
starts what waits for its old instance to be gone (restart, start of a stopping service), and answers
waiting clients. While anything waits, settle also runs every 50 ms (a logger's exit or a deadline
changes no state). A subscription command (§14 events) fits the same shape: a call that stays open
and writes lines through an observer.
"""

from __future__ import annotations

import os
import time

from .. import __version__
from ..lifecycle.signals import NUMBERS
from ..lifecycle.state import ENDED, UP, ContainerPhase, Phase, ServiceState, StopReason
from ..loop import Timer
from ..service.discovery import Service
from . import protocol
from .server import Call

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from typing import Any, TypeGuard

    from ..lifecycle.supervisor import Supervisor
    from ..readiness.events import Event, Events
else:
    import _signal as signal  # signal without its enums (lean.py: start-up)


_POLL = 0.05
#: Longest wait a client may ask for (a day): a bound, not a policy.
_MAX_WAIT = 86400.0
#: Names of submitted jobs: a label for output, never a path (§12 "validated name"): 1 to 64 of these,
#: the first a letter or digit.
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = _NAME_FIRST | frozenset("._@-")


def valid_name(name: object) -> TypeGuard[str]:
    """Whether ``name`` may name a submitted job (checked by hand: ``re`` costs start-up, lean.py)."""
    return isinstance(name, str) and 0 < len(name) <= 64 and name[0] in _NAME_FIRST and (
        _NAME_CHARS.issuperset(name))
_CLK_TCK = os.sysconf("SC_CLK_TCK")


#: Wall-clock time minus loop time, taken once, so a service's ``since`` reads the same in every answer.
_WALL_OFFSET = time.time() - time.monotonic()


def _wall(monotonic: float) -> str:
    """A loop time (``time.monotonic``) in the ``logged`` timestamp format (§4.3)."""
    ms = int((monotonic + _WALL_OFFSET) * 1000)
    second, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{millis:03d}Z"


def _age(pid: int) -> float | None:
    """Seconds since a process started, from /proc (dinit does not record when a logger started)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            started = int(file.read().rsplit(b")", 1)[1].split()[19]) / _CLK_TCK
        with open("/proc/uptime", "rb") as file:
            return round(max(0.0, float(file.read().split()[0]) - started), 2)
    except (OSError, ValueError, IndexError):
        return None


def _exit(status: int | None) -> dict[str, int] | None:
    if status is None:
        return None
    if os.WIFEXITED(status):
        return {"code": os.WEXITSTATUS(status)}
    return {"signal": os.WTERMSIG(status)}


def status_of(status: int) -> int:
    """A wait status as a shell gives it: the exit code, 128+N for signal N."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _seconds_since(then: float | None, now: float) -> float | None:
    return None if then is None else round(now - then, 3)


def describe(state: ServiceState, now: float) -> dict[str, Any]:
    """A service object (§12): name, origin, state, pid, since, ready, logger, hook, last_exit, and
    what the human formats need besides: seconds in the state, seconds since ``run`` started (what
    runit's ``sv status`` and supervisorctl's uptime count, which readiness does not reset) and since
    it became ready (for a run that was ``starting`` first), why it stops, held down."""
    service = state.service
    logger_pid = state.logger.pid if state.logger is not None else None
    hook = state.hook or state.finish
    return {
        "name": state.name,
        "origin": service.origin,
        "state": state.phase.value,
        "pid": state.run.pid if state.run is not None else None,
        "since": _wall(state.since),
        "seconds": round(now - state.since, 3),
        "run_seconds": _seconds_since(state.run_since if state.run is not None else None, now),
        "ready_seconds": _seconds_since(state.ready_since if state.phase is Phase.RUNNING else None, now),
        "ready": _wall(state.since) if state.phase is Phase.RUNNING else None,
        "reason": state.reason.value if state.reason is not None else None,
        "held": state.held,
        "normally": "down" if service.down else "up",
        "logger": None if logger_pid is None else {"pid": logger_pid, "seconds": _age(logger_pid)},
        "hook": None if hook is None else {"pid": hook.pid, "stage": hook.stage},
        "last_exit": _exit(state.last_exit),
    }


def parse_signal(value: object) -> int:
    """``HUP``, ``SIGHUP``, ``hup`` or a number (§12)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, str):
        name = value.strip().upper()
        try:
            number = NUMBERS[name if name.startswith("SIG") else "SIG" + name]
        except KeyError:
            raise protocol.ProtocolError(protocol.BAD_REQUEST, f"unknown signal {value!r}") from None
    else:
        raise protocol.ProtocolError(protocol.BAD_REQUEST, "signal must be a name or a number")
    if not 0 < number < signal.NSIG:
        raise protocol.ProtocolError(protocol.BAD_REQUEST, f"signal {number} out of range")
    return number


class _Waiter:
    """A call answered once ``done`` holds for every one of its services, or ``timeout`` when the
    deadline passes first."""

    def __init__(self, call: Call, states: list[ServiceState], done: Callable[[ServiceState], bool],
                 deadline: float | None, answer: Callable[[], None], starting: bool = False) -> None:
        self.call = call
        #: Waits for a start, which teardown makes impossible (answered ``tearing-down``).
        self.starting = starting
        self.states = states
        self.done = done
        self.deadline = deadline
        self.answer = answer


class Handlers:
    """Serves every command of §12 on one supervisor."""

    def __init__(self, supervisor: Supervisor,
                 rescan: Callable[[], list[tuple[str, str]]] | None = None,
                 events: Events | None = None) -> None:
        """``rescan`` is hot reload's "rescan now" (§11), giving (name, what was done) pairs; without
        it, ``reload`` is an unknown command. ``events`` (§14) serves ``events``, unknown without it."""
        self.supervisor = supervisor
        self.events = events
        self._rescan = rescan
        self.loop = supervisor.loop
        self._waiters: list[_Waiter] = []
        #: Services to start once every program of their old instance is gone (restart, start).
        self._start_when_gone: dict[str, ServiceState] = {}
        self._timer: Timer | None = None
        self._submitted = 0
        #: command -> (handler, whether it changes anything: needs the §12 permission)
        self.commands: dict[str, tuple[Callable[[Call], None], bool]] = {
            "status": (self._status, False), "list": (self._list, False),
            "pid": (self._pid, False), "version": (self._version, False),
            "start": (self._start, True), "stop": (self._stop, True), "restart": (self._restart, True),
            "signal": (self._signal, True), "submit": (self._submit, True),
            "shutdown": (self._shutdown, True), "check": (self._check, False),
        }
        if events is not None:
            self.commands["events"] = (self._events, False)
        if rescan is not None:
            self.commands["reload"] = (self._reload, True)
        supervisor.observers.append(self._changed)

    # -- dispatch ------------------------------------------------------------------------------------

    def dispatch(self, call: Call) -> None:
        entry = self.commands.get(call.request.cmd)
        if entry is None:
            call.fail(protocol.UNKNOWN_COMMAND, f"{call.request.cmd}: unknown command")
            return
        handler, changes = entry
        if changes and not call.peer.may_change():
            where = "outside dinit's PID namespace" if call.peer.pid == 0 else f"uid {call.peer.uid}"
            call.fail(protocol.PERMISSION_DENIED, f"{call.request.cmd}: not allowed from {where}")
            return
        try:
            handler(call)
        except protocol.ProtocolError as error:
            call.fail(error.code, error.message, **error.extra)

    def _names(self, call: Call, allow_all: bool = False, required: bool = False) -> list[ServiceState]:
        """The services named by ``args.names`` (all of them for none, or for ``all``). Commands that
        change services (``required``) must name them: a request without ``names`` is refused rather
        than acting on every service."""
        names = call.args.get("names", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise protocol.ProtocolError(protocol.BAD_REQUEST, "names must be a list of strings")
        if required and not names:
            raise protocol.ProtocolError(protocol.BAD_REQUEST, f"{call.request.cmd} needs names")
        states = self.supervisor.states
        if not names or (allow_all and names == ["all"]):
            return [states[name] for name in sorted(states, key=os.fsencode)]
        unknown = [name for name in names if name not in states]
        if unknown:
            raise protocol.ProtocolError(protocol.UNKNOWN_SERVICE,
                                         "; ".join(f"{name}: no such service" for name in unknown))
        return [states[name] for name in dict.fromkeys(names)]

    def _wait_seconds(self, call: Call, default: float) -> float:
        wait = call.args.get("wait", default)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= _MAX_WAIT:
            raise protocol.ProtocolError(protocol.BAD_REQUEST, f"wait must be 0 to {_MAX_WAIT:g} seconds")
        return float(wait)

    def _services(self, states: list[ServiceState]) -> list[dict[str, Any]]:
        now = self.loop.time()
        return [describe(state, now) for state in states]

    def _not_tearing_down(self, call: Call) -> None:
        if self.supervisor.terminating:
            raise protocol.ProtocolError(protocol.TEARING_DOWN,
                                         f"{call.request.cmd}: the container is stopping")

    # -- read-only -------------------------------------------------------------------------------------

    def _status(self, call: Call) -> None:
        call.ok({"container": self.supervisor.container.value,
                 "services": self._services(self._names(call))})

    _list = _status

    def _pid(self, call: Call) -> None:
        if len(call.args.get("names", [])) != 1:
            raise protocol.ProtocolError(protocol.BAD_REQUEST, "pid takes exactly one name")
        [state] = self._names(call)
        call.ok({"name": state.name, "pid": state.run.pid if state.run is not None else None})

    def _version(self, call: Call) -> None:
        call.ok({"version": __version__, "pid": os.getpid()})

    # -- check and events (§13, §14) -----------------------------------------------------------------

    def _check(self, call: Call) -> None:
        """Ready: the container ``running`` (no names) or every named service ``running``; ``alive``:
        dinit answers and is not tearing down. ``wait`` answers once ready, at the deadline or at
        teardown (which makes ready impossible), never with an error: not ready is a result."""
        supervisor = self.supervisor
        if call.args.get("alive"):
            call.ok({"alive": not supervisor.terminating, "container": supervisor.container.value})
            return
        names = bool(call.args.get("names"))
        states = self._names(call)
        wait = self._wait_seconds(call, 0.0)
        deadline = self.loop.time() + wait

        def ready() -> bool:
            if names:
                return all(state.phase is Phase.RUNNING for state in states)
            return supervisor.container is ContainerPhase.RUNNING

        def answer() -> None:
            call.ok(self._readiness(states, ready(), all_services=not names))

        if wait == 0 or ready():
            answer()
            return
        over = lambda _state: ready() or supervisor.terminating or self.loop.time() >= deadline  # noqa: E731
        self._add_waiter(_Waiter(call, states, over, None, answer))

    def _readiness(self, states: list[ServiceState], ready: bool, all_services: bool) -> dict[str, Any]:
        """The check result: what is ready, and for each service that is not, how long it has been in
        which state and what its readiness sources still wait for (``check: exit 1``)."""
        now = self.loop.time()
        fine = (Phase.RUNNING, Phase.DOWN, Phase.DISABLED) if all_services else (Phase.RUNNING,)
        watches = self.supervisor.readiness.watches
        waiting = []
        for state in states:
            if state.phase in fine:
                continue
            watch = watches.get(state.name)
            detail = watch.detail if watch is not None and state.phase is Phase.STARTING else ""
            if not detail and state.phase in ENDED and state.last_exit is not None:
                exit_ = _exit(state.last_exit) or {}
                detail = f"exit {exit_['code']}" if "code" in exit_ else f"signal {exit_.get('signal')}"
            waiting.append({"name": state.name, "state": state.phase.value,
                            "seconds": round(now - state.since, 3), "detail": detail or None})
        return {"ready": ready, "container": self.supervisor.container.value,
                "ready_services": sum(state.phase is Phase.RUNNING for state in states),
                "not_ready": waiting}

    def _events(self, call: Call) -> None:
        """A subscription: the replay (unless ``no_replay``), then every event, one line each, until
        the connection closes; a client that leaves 1 MiB unread is disconnected (§12)."""
        events = self.events
        assert events is not None

        def send(event: Event) -> None:
            call.stream(protocol.encode_event({**event, "replay": False}))

        if not call.args.get("no_replay"):
            for event in events.replay():
                call.stream(protocol.encode_event(event))
        if call.cancelled:
            return
        events.subscribers.append(send)
        call.on_cancel = lambda: events.subscribers.remove(send)

    # -- start, stop, restart ------------------------------------------------------------------------

    def _stop(self, call: Call) -> None:
        """§11 removal semantics (stop hook or SIGTERM, DINIT_TIMEOUT, logger drained), then held
        ``down`` until ``start``; done once no program of the service is left."""
        states = self._names(call, required=True)
        wait = self._wait_seconds(call, 7.0)
        for state in states:
            state.held = True
            self._start_when_gone.pop(state.name, None)
            if not self.supervisor.stop_service(state.name, StopReason.CONTROL) and state.phase in ENDED:
                state.transition(Phase.DOWN, self.loop.time())
        self._wait(call, states, lambda s: not s.live and not s.programs(), wait)

    def _start(self, call: Call) -> None:
        self._not_tearing_down(call)
        states = self._names(call, required=True)
        wait = self._wait_seconds(call, 7.0)
        for state in states:
            state.held = False
            if state.phase not in UP:
                self._start_when_gone[state.name] = state
        self._begin_starts(call)
        self._wait(call, states, self._started, wait)

    def _restart(self, call: Call) -> None:
        self._not_tearing_down(call)
        states = self._names(call, required=True)
        wait = self._wait_seconds(call, 7.0)
        for state in states:
            state.held = False
            self.supervisor.stop_service(state.name, StopReason.CONTROL)
            self._start_when_gone[state.name] = state
        self._begin_starts(call)
        self._wait(call, states, self._started, wait)

    def _started(self, state: ServiceState) -> bool:
        """Started and ready, or ended again on its own after its start (done, but failed)."""
        return state.name not in self._start_when_gone and (
            state.phase is Phase.RUNNING or state.phase in ENDED or state.phase is Phase.DOWN)

    def _begin_starts(self, call: Call) -> None:
        """Start now what has no program left; the rest starts from :meth:`settle`. A program that
        cannot be run fails the call with ``exec-failed``."""
        for name, state in list(self._start_when_gone.items()):
            if state.programs() or state.live:
                self._schedule(_POLL)  # its programs may go without a change of phase (finish)
                continue
            del self._start_when_gone[name]
            error = self.supervisor.start(state)
            if error is not None:
                call.fail(protocol.EXEC_FAILED, _cannot_run(name, state.service.run, error))

    def _wait(self, call: Call, states: list[ServiceState], done: Callable[[ServiceState], bool],
              wait: float) -> None:
        if call.answered:
            return

        def answer() -> None:
            call.ok({"services": self._services(states)})

        waiter = _Waiter(call, states, done, self.loop.time() + wait, answer, starting=done == self._started)
        if wait == 0 or all(done(state) for state in states):
            answer()
            return
        self._add_waiter(waiter)

    def _add_waiter(self, waiter: _Waiter) -> None:
        self._waiters.append(waiter)
        waiter.call.on_cancel = lambda: self._waiters.remove(waiter) if waiter in self._waiters else None
        self._schedule(_POLL)

    # -- signal, submit, shutdown --------------------------------------------------------------------

    def _signal(self, call: Call) -> None:
        signum = parse_signal(call.args.get("signal"))
        states = self._names(call, allow_all=True, required=True)
        every = call.args.get("names") == ["all"]
        sent = [{"name": s.name, "pid": s.run.pid} for s in states
                if s.run is not None and self.supervisor.signal_service(s, signum)]
        missed = [] if every else [s.name for s in states if s.name not in {x["name"] for x in sent}]
        if missed:
            call.fail(protocol.UNKNOWN_SERVICE, "; ".join(f"{name}: not running" for name in missed),
                      signalled=sent)
            return
        call.ok({"signal": signum, "signalled": sent})

    def _submit(self, call: Call) -> None:
        """A transient service: ``args`` = argv (list), name, critical, wait, cwd. Its program is
        looked up in PATH of dinit's environment (which the job gets), relative paths against cwd."""
        self._not_tearing_down(call)
        args = call.args
        argv = args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and "\0" not in a
                                                             for a in argv):
            raise protocol.ProtocolError(protocol.BAD_REQUEST, "argv must be a non-empty list of strings")
        name = self._job_name(args.get("name"))
        cwd = args.get("cwd") or "/"
        if not isinstance(cwd, str) or not os.path.isdir(cwd):
            cwd = "/"
        program = argv[0]
        if "/" not in program:
            import shutil  # submit only: kept off dinit's start-up

            found = shutil.which(program, path=os.environ.get("PATH", os.defpath))
            if found is None:
                raise protocol.ProtocolError(protocol.EXEC_FAILED, f"{program}: command not found")
            program = found
        elif not os.path.isabs(program):
            program = os.path.join(cwd, program)
        service = Service(name=name, directory=cwd, run=program, argv=tuple(argv), origin="submit",
                          tears_down=bool(args.get("critical")))
        state, error = self.supervisor.submit(service)
        if error is not None:
            raise protocol.ProtocolError(protocol.EXEC_FAILED, _cannot_run(name, program, error))
        if not args.get("wait"):
            call.ok({"service": describe(state, self.loop.time())})
            return

        def answer() -> None:
            status = state.last_exit
            call.ok({"service": describe(state, self.loop.time()),
                     "status": status_of(status) if status is not None else None})

        self._add_waiter(_Waiter(call, [state], lambda s: s.run is None and s.phase in ENDED, None,
                                 answer))

    def _job_name(self, name: object) -> str:
        states = self.supervisor.states
        if name is None:
            while True:
                self._submitted += 1
                name = f"submit-{self._submitted}"
                if name not in states:
                    return name
        if not valid_name(name):
            raise protocol.ProtocolError(protocol.BAD_REQUEST, f"invalid name {name!r}: 1 to 64 of "
                                         "A-Z a-z 0-9 . _ @ -, starting with a letter or digit")
        old = states.get(name)
        if old is not None and (old.service.origin != "submit" or old.live or old.programs()):
            raise protocol.ProtocolError(protocol.NAME_IN_USE, f"{name}: a service of that name exists")
        return name

    def _reload(self, call: Call) -> None:
        self._not_tearing_down(call)
        assert self._rescan is not None
        call.ok({"changes": [{"name": name, "action": action} for name, action in self._rescan()]})

    def _shutdown(self, call: Call) -> None:
        """Answered ``ok`` also while the container is already stopping (§12: exits 0 or 4), and
        read by the client before dinit exits, even when nothing is left to stop."""
        call.ok({"pid": call.peer.pid}, lingers=True)
        self.supervisor.shutdown(call.peer.pid)

    # -- settling -------------------------------------------------------------------------------------

    def _changed(self, state: ServiceState, _previous: Phase) -> None:
        """Settle soon when something may wait for this change: a client's wait, a start waiting for
        an old instance to go, a held service that ended. Nothing else is scheduled: teardown makes
        two changes per service, and each settle would cost SIGTERM-to-exit time (§8)."""
        if self._awaited() or (state.held and state.phase in ENDED):
            self._schedule(0)

    def _awaited(self) -> bool:
        """Whether a client waits for something :meth:`settle` decides (a wait, a deferred start)."""
        return bool(self._waiters or self._start_when_gone)

    def _schedule(self, delay: float) -> None:
        """One pending settle at a time, at the earliest time asked for."""
        when = self.loop.time() + delay
        if self._timer is not None and self._timer.when <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._settle_later)

    def _settle_later(self) -> None:
        self._timer = None
        self.settle()

    def settle(self) -> None:
        """Held services that ended go ``down``; pending starts begin once their old instance is
        gone (cancelled by teardown); waiting calls are answered."""
        supervisor = self.supervisor
        now = self.loop.time()
        for state in list(supervisor.states.values()):
            if state.held and state.phase in ENDED:
                state.transition(Phase.DOWN, now)
        if supervisor.terminating:
            self._start_when_gone.clear()
        for name, state in list(self._start_when_gone.items()):
            if not state.programs() and not state.live:
                del self._start_when_gone[name]
                supervisor.start(state)
        for waiter in list(self._waiters):
            if waiter.call.cancelled:
                self._waiters.remove(waiter)
            elif all(waiter.done(state) for state in waiter.states):
                self._waiters.remove(waiter)
                waiter.answer()
            elif waiter.deadline is not None and now >= waiter.deadline:
                self._waiters.remove(waiter)
                names = ", ".join(state.name for state in waiter.states if not waiter.done(state))
                waiter.call.fail(protocol.TIMEOUT, f"{names}: not done within the time asked",
                                 services=self._services(waiter.states))
            elif supervisor.terminating and waiter.starting:
                self._waiters.remove(waiter)
                waiter.call.fail(protocol.TEARING_DOWN, "the container is stopping",
                                 services=self._services(waiter.states))
        if self._awaited():
            self._schedule(_POLL)


def _cannot_run(name: str, path: str, error: OSError) -> str:
    """The answer's message for a program that cannot be run: what is wrong, as the log line says
    it (§16: a missing interpreter, CRLF, no ``#!``), not the errno alone."""
    from ..process import exec_errors  # the first failure only

    return f"{name}: cannot run {path}: {exec_errors.explain(path, error)}"
