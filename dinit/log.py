"""dinit's own messages: ``<time> dinit: <level>: <message>`` on stderr, filtered by level (§7).

They go through structlog so the rest of the code logs with ordinary calls, but the rendered line is
bytes queued on the stderr writer: messages and program output share one ordered stream and a slow
stderr never blocks the event loop. The per-line hot path (a program's non-JSON stdout) does not go
through structlog; it calls :func:`render` directly, which is the one place the format is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .clock import timestamp
from .config import LEVELS
from .output.writer import Writer

# structlog calls the renderer with the name of the method used; these are the names dinit prints.
_METHOD_LEVEL = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
                 "error": "error", "critical": "error", "exception": "error", "msg": "info"}

_threshold = LEVELS["warning"]
_writer: Writer | None = None
_bound: Any = None


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
    """Render an event as one line: line breaks inside it (e.g. a process's command line) are
    escaped, so every message stays exactly one line for log parsers (§7)."""
    level = _METHOD_LEVEL.get(method_name, method_name)
    message = str(event_dict["event"]).replace("\r", "\\r").replace("\n", "\\n")
    return render(level, message.encode("utf-8", "surrogateescape"))


def _structlog() -> Any:
    """The configured structlog logger, imported on first use: at the default level a normal start
    logs nothing, and importing structlog would cost a sizeable part of dinit's start-up time."""
    global _bound
    if _bound is None:
        import structlog

        assert _writer is not None, "log.setup() must come first"
        writer = _writer
        structlog.configure(
            processors=[_render_event],
            wrapper_class=structlog.make_filtering_bound_logger(_threshold),
            logger_factory=lambda *_args: _WriterLogger(writer),
            cache_logger_on_first_use=True,
        )
        _bound = structlog.get_logger()
    return _bound


def _level_method(level: str) -> Callable[[Any, str], None]:
    """A logger method that checks the level before anything else, then logs through structlog."""
    rank = LEVELS[level]

    def log(_self: Any, event: str, **fields: Any) -> None:
        if rank >= _threshold:
            if fields:
                prefix = fields.get("service")
                stage = fields.get("stage")
                event = event.format(**fields)
                if prefix is not None:
                    event = f"{prefix}/{stage}: {event}" if stage is not None else f"{prefix}: {event}"
            getattr(_structlog(), level)(event)

    log.__name__ = level
    return log


class _Logger:
    """dinit's logger: ``logger.info(message)`` and so on."""

    debug = _level_method("debug")
    info = _level_method("info")
    warning = _level_method("warning")
    error = _level_method("error")


logger = _Logger()


def setup(level: str, writer: Writer) -> None:
    """Route messages to ``writer`` and hide those below ``level`` (``none`` hides all)."""
    global _threshold, _writer, _bound
    _threshold, _writer, _bound = LEVELS[level], writer, None
