"""Events (§14): every §10 transition of a service or of the container as one JSON-able object,
built on the loop from the supervisor's observer hooks, after the state is recorded, in order.

Subscribers (the web hook, ``dinit events``) get each event as a dict; they must not block the loop.
"""

from __future__ import annotations

import os

from ..clock import timestamp
from ..lifecycle.state import ENDED, ContainerPhase, Phase, ServiceState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..lifecycle.supervisor import Supervisor

    Event = dict[str, Any]
    Subscriber = Callable[[Event], None]

#: dock's ``ps.status`` vocabulary (§14): ``starting`` until ready, ``running`` while ``run`` runs,
#: ``crashed`` for every state in which it no longer runs (dock has no other word for that).
_PS_STATUS = {Phase.PENDING: "starting", Phase.STARTING: "starting", Phase.RUNNING: "running",
              Phase.STOPPING: "running", Phase.DOWN: "crashed", Phase.DISABLED: "crashed",
              Phase.STOPPED: "crashed", Phase.CRASHED: "crashed"}
_CONTAINER_PS = {ContainerPhase.STARTING: "starting", ContainerPhase.RUNNING: "running",
                 ContainerPhase.STOPPING: "running", ContainerPhase.STOPPED: "crashed"}


class Events:
    """Numbers events within one start of dinit (``boot``) and hands them to the subscribers."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.boot = os.urandom(8).hex()
        self.seq = 0
        self.subscribers: list[Subscriber] = []
        #: The PID of each service's last ``run``, which ended events still name; made once the
        #: first programs run (ARCHITECTURE.md, start-up), so it begins with the runs started then.
        self._pids: dict[str, int] = {name: state.run.pid for name, state in supervisor.states.items()
                                      if state.run is not None}
        supervisor.observers.append(self._service)
        supervisor.container_observers.append(self._container)

    def _counted(self) -> bool:
        """Number one more event; whether anyone takes it. With no subscriber the event is not
        built at all: teardown makes two per service, and SIGTERM-to-exit time counts (§8)."""
        self.seq += 1
        return bool(self.subscribers)

    def _emit(self, fields: Event) -> None:
        event: Event = {"v": 1, "boot": self.boot, "seq": self.seq, "time": timestamp().decode()}
        event.update(fields)
        event["dropped"] = 0
        for subscriber in list(self.subscribers):  # one may be cut off (and removed) meanwhile
            subscriber(event)

    def _service(self, state: ServiceState, previous: Phase) -> None:
        if state.run is not None:
            self._pids[state.name] = state.run.pid
        if self._counted():
            self._emit(self.service_fields(state, previous.value))

    def replay(self) -> list[Event]:
        """The current state of every service and of the container as events (``dinit events``,
        §14): numbered with the last ``seq`` sent, so every live event that follows has a higher one."""
        head: Event = {"v": 1, "boot": self.boot, "seq": self.seq, "time": timestamp().decode()}
        states = self._supervisor.states
        fields = [self.service_fields(states[name], None) for name in sorted(states, key=os.fsencode)]
        fields.append(self.container_fields(None))
        return [{**head, **field, "dropped": 0, "replay": True} for field in fields]

    def service_fields(self, state: ServiceState, previous: str | None) -> Event:
        phase = state.phase
        exit_ = None
        if phase in ENDED and state.last_exit is not None:
            status = state.last_exit
            exit_ = ({"code": os.WEXITSTATUS(status), "signal": None} if os.WIFEXITED(status)
                     else {"code": None, "signal": os.WTERMSIG(status)})
        reason = state.reason.value if state.reason is not None else (
            "exit" if phase in ENDED else None if phase is not Phase.DOWN
            else "control" if state.held else "down-file")  # held down by §12 stop, or a down file
        pid = state.run.pid if state.run is not None else self._pids.get(state.name)
        return {"kind": "service", "service": state.name, "stage": "run", "state": phase.value,
                "previous": previous, "pid": pid, "ready": phase is Phase.RUNNING, "exit": exit_,
                "reason": reason, "ps": {"status": _PS_STATUS[phase]}}

    def _container(self, previous: ContainerPhase) -> None:
        if self._counted():
            self._emit(self.container_fields(previous.value))

    def container_fields(self, previous: str | None) -> Event:
        phase = self._supervisor.container
        fields: Event = {"kind": "container", "service": None, "stage": None, "state": phase.value,
                         "previous": previous, "pid": os.getpid(),
                         "ready": phase is ContainerPhase.RUNNING, "exit": None, "reason": None,
                         "ps": {"status": _CONTAINER_PS[phase]}}
        if phase is ContainerPhase.STOPPED:
            fields["exit_code"] = self._supervisor.exit_code()
        return fields
