"""Test driver: the real dinit (``dinit.cli.main``), plus one service stopped at run time through the
supervisor's own entry point, ``Supervisor.stop_service`` (§10) -- what hot reload and the control
socket build on. ``python stop_one.py NAME [dinit arguments]``: NAME is stopped once it is running;
every transition of every service is logged as ``test driver: <name> is <state>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from dinit import cli
from dinit.lifecycle.state import Phase, ServiceState
from dinit.lifecycle.supervisor import Supervisor
from dinit.log import logger

TARGET = sys.argv.pop(1)
_run = Supervisor.run


def _run_and_stop(self: Supervisor, started: Callable[[], None] | None = None) -> int:
    def observe(state: ServiceState, _previous: Phase) -> None:
        logger.info("test driver: {name} is {phase}", name=state.name, phase=state.phase.value)
        if state.name == TARGET and state.phase is Phase.RUNNING:
            self.loop.call_later(0, self.stop_service, TARGET)

    self.observers.append(observe)
    return _run(self, started)


Supervisor.run = _run_and_stop  # type: ignore[method-assign]
cli.main()
