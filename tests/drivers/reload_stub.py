"""Test driver: the real dinit with a stand-in for hot reload's "rescan now" (§11), so ``dinit reload``
is tested through the real control socket and client: each rescan answers that ``web`` was added,
and logs ``test driver: rescan``.
"""

from __future__ import annotations

from collections.abc import Callable

from dinit.control import handlers
from dinit.entry import main
from dinit.lifecycle.supervisor import Supervisor
from dinit.log import logger

_init = handlers.Handlers.__init__


def _rescan() -> list[tuple[str, str]]:
    logger.info("test driver: rescan")
    return [("web", "added, starting")]


def _with_rescan(self: handlers.Handlers, supervisor: Supervisor,
                 rescan: Callable[[], list[tuple[str, str]]] | None = None) -> None:
    _init(self, supervisor, rescan or _rescan)


handlers.Handlers.__init__ = _with_rescan  # type: ignore[method-assign]
main()
