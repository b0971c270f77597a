"""Service states (§10): one :class:`ServiceState` per service, whose phase changes in one place.

Every phase change goes through :meth:`ServiceState.transition`, which checks it against a small
table (like s6-supervise's state/action table), writes the one info line of §7 that says what
happened, and calls the one observer hook that events (§14) and waiting clients build on. An
impossible change is a bug and raises, which the loop turns into an internal error.
"""

from __future__ import annotations

from ..log import logger
from ..process.programs import Program
from ..service import envdir
from ..service.discovery import Service

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from enum import Enum
    from typing import Any

    from ..output.logger_pipe import LoggerPipe
else:
    from ..lean import Enum


class Phase(Enum):
    """The states of a service (§10)."""

    PENDING = "pending"
    DOWN = "down"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    DISABLED = "disabled"
    STOPPED = "stopped"
    CRASHED = "crashed"


class StopReason(Enum):
    """Why dinit asked a service to stop (§10 ``stopping``)."""

    TEARDOWN = "teardown"
    REMOVED = "removed"
    REPLACED = "replaced"
    DOWN_FILE = "down-file"
    CONTROL = "control"


class ContainerPhase(Enum):
    """The container's own states (§10)."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: Phases in which ``run`` has ended by itself or been stopped (§10).
ENDED = frozenset({Phase.DISABLED, Phase.STOPPED, Phase.CRASHED})
#: Phases in which ``run`` is running (starting, running or being stopped).
LIVE = frozenset({Phase.STARTING, Phase.RUNNING, Phase.STOPPING})
#: Phases in which ``run`` is running and not asked to stop.
UP = frozenset({Phase.STARTING, Phase.RUNNING})
#: Which phase may follow which. A service that ended, or is down, may be started again (hot
#: reload, the control socket); one that is starting may become ready or end.
_NEXT: Mapping[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.DOWN, Phase.STARTING, Phase.RUNNING, Phase.PENDING}),
    Phase.DOWN: frozenset({Phase.PENDING, Phase.STARTING, Phase.RUNNING}),
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.STOPPING}) | ENDED,
    Phase.RUNNING: frozenset({Phase.STOPPING}) | ENDED,
    Phase.STOPPING: ENDED,
    Phase.DISABLED: frozenset({Phase.PENDING, Phase.DOWN, Phase.STARTING, Phase.RUNNING}),
    Phase.STOPPED: frozenset({Phase.PENDING, Phase.DOWN, Phase.STARTING, Phase.RUNNING}),
    Phase.CRASHED: frozenset({Phase.PENDING, Phase.DOWN, Phase.STARTING, Phase.RUNNING}),
}
#: The §7 line of each change: (stage or None for ``<name>: ``, template over the fields given).
_LINES: Mapping[Phase, tuple[str | None, str]] = {
    Phase.PENDING: (None, "not started yet: {why}"),
    Phase.DOWN: (None, "down file present, not starting"),
    Phase.STARTING: ("run", "running with PID {pid}"),
    Phase.RUNNING: ("run", "running with PID {pid}"),
    Phase.STOPPING: ("run", "stopping"),
    Phase.DISABLED: ("run", "PID {pid} finished and disabled itself"),
    Phase.STOPPED: ("run", "PID {pid} finished with {how}"),
    Phase.CRASHED: ("run", "PID {pid} finished with {how}"),
}
_READY_LINE = ("run", "ready")
_HELD_LINE = (None, "stopped through the control socket, held down until started")

if TYPE_CHECKING:
    Observer = Callable[["ServiceState", Phase], None]


class InvalidTransition(RuntimeError):
    """A phase change the table does not allow: a bug in dinit."""


class ServiceState:
    """A service, its phase, and the programs it has running."""

    def __init__(self, service: Service, base_env: Mapping[str, str], observer: Observer,
                 since: float, phase: Phase = Phase.PENDING) -> None:
        self.service = service
        self.env = envdir.apply(base_env, service.env)
        #: ``pending`` before a service's first start; a new instance of a known name continues
        #: from its predecessor's phase (``down``, ``stopped``, …), so its events chain on.
        self.phase = phase
        self.since = since
        #: When the current ``run`` started (its entry into ``starting`` or ``running``): runit's
        #: ``sv status`` counts a run's seconds from there, not from its readiness (§12).
        self.run_since: float | None = None
        #: When the current ``run`` passed its readiness sources (§13); None while it is starting,
        #: and for a run without sources, which is ready the moment it starts.
        self.ready_since: float | None = None
        self.reason: StopReason | None = None
        self.run: Program | None = None
        self.logger: Program | None = None
        self.hook: Program | None = None
        self.finish: Program | None = None
        #: The pipe from ``run`` (and its stop hook and ``finish``) to the logger, if it has one.
        self.pipe: LoggerPipe | None = None
        #: The wait status of the last ``run`` that ended (for ``finish``'s arguments and status).
        self.last_exit: int | None = None
        #: Stopped through the control socket: stays ``down`` until started through it (§12).
        self.held = False
        self._observer = observer

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def live(self) -> bool:
        """Whether ``run`` is running (starting, running or being stopped)."""
        return self.phase in LIVE

    @property
    def counts(self) -> bool:
        """Whether this service's exits tear the container down and count for the exit code:
        not once dinit stopped it at run time (§10), nor a job submitted without ``--critical``."""
        return self.service.tears_down and self.reason in (None, StopReason.TEARDOWN)

    def programs(self) -> list[Program]:
        """Every process of this service dinit still waits for."""
        return [p for p in (self.run, self.logger, self.hook, self.finish) if p is not None]

    def transition(self, phase: Phase, now: float, **fields: Any) -> None:
        """Move to ``phase``: check it, write its one line, tell the observer."""
        previous = self.phase
        if phase not in _NEXT[previous]:
            raise InvalidTransition(f"{self.name}: {previous.value} -> {phase.value}")
        stage, template = _READY_LINE if (previous, phase) == (Phase.STARTING, Phase.RUNNING) \
            else _HELD_LINE if phase is Phase.DOWN and self.held else _LINES[phase]
        if phase is not Phase.STOPPING and phase not in ENDED:
            self.reason = None
        self.phase = phase
        self.since = now
        if phase in UP and previous not in LIVE:
            self.run_since, self.ready_since = now, None
        elif previous is Phase.STARTING and phase is Phase.RUNNING:
            self.ready_since = now
        if stage is None:
            logger.info(template, service=self.name, **fields)
        else:
            logger.info(template, service=self.name, stage=stage, **fields)
        self._observer(self, previous)
