"""dinit's own messages: ``<time> dinit: <level>: <message>`` on stderr, filtered by level (§7).

They go through structlog so the rest of the code logs with ordinary calls, but the rendered line is
bytes queued on the stderr writer: messages and program output share one ordered stream and a slow
stderr never blocks the event loop. The per-line hot path (a program's non-JSON stdout) does not go
through structlog; it calls :func:`render` directly, which is the one place the format is defined.
"""

from __future__ import annotations

from typing import Any

import structlog

from .clock import timestamp
from .config import LEVELS
from .writer import Writer

# structlog calls the renderer with the name of the method used; these are the names dinit prints.
_METHOD_LEVEL = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
                 "error": "error", "critical": "error", "exception": "error", "msg": "info"}

_threshold = LEVELS["warning"]

logger: Any = structlog.get_logger()


def render(level: str, message: bytes) -> bytes:
    """Format one own-message line; ``message`` is bytes so program output is never re-encoded."""
    return b"%s dinit: %s: %s\n" % (timestamp(), level.encode(), message)


def enabled(level: str) -> bool:
    """Whether messages of ``level`` are shown (hot paths check before formatting)."""
    return LEVELS[level] >= _threshold


class _WriterLogger:
    """The structlog "logger": hands the rendered bytes to the stderr writer."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def msg(self, message: bytes) -> None:
        self._writer.write(message)

    debug = info = warn = warning = error = critical = exception = msg


def _render_event(_logger: object, method_name: str, event_dict: dict[str, Any]) -> bytes:
    level = _METHOD_LEVEL.get(method_name, method_name)
    return render(level, str(event_dict["event"]).encode("utf-8", "surrogateescape"))


def setup(level: str, writer: Writer) -> None:
    """Route structlog to ``writer`` and hide messages below ``level`` (``none`` hides all)."""
    global _threshold
    _threshold = LEVELS[level]
    structlog.configure(
        processors=[_render_event],
        wrapper_class=structlog.make_filtering_bound_logger(_threshold),
        logger_factory=lambda *_args: _WriterLogger(writer),
        cache_logger_on_first_use=False,
    )
