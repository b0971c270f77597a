"""dinit's own messages (§7): key/value events, rendered as ``<time> dinit: <level>: <message>`` on
stderr, or with ``DINIT_LOG_FORMAT=json`` as one JSON object per line, filtered by level.

Call sites log events, not finished strings::

    logger.info("running with PID {pid}", service="web", stage="run", pid=7)

The event is a ``str.format`` template over the keyword arguments (a literal brace is written ``{{``
or ``}}``); ``service`` and ``stage`` (str or int, e.g. an adopted process's PID) become the prefix
``web/run: `` (``web: `` without a stage). Without keyword arguments the event is taken literally,
so plain messages (and f-strings holding braces) stay valid. The text form of the example is
``<time> dinit: info: web/run: running with PID 7``; the JSON form is
``{"time":"<time>","level":"info","msg":"web/run: running with PID 7","service":"web","stage":"run",
"pid":7}``: ``msg`` is the text form's message, then every key/value given.

Rendering is a short structlog processor chain (message, then time and level, then the line), so
tests can capture the events themselves with ``structlog.testing.capture_logs``. The rendered line
is bytes queued on the stderr writer: messages and program output share one ordered stream and a
slow stderr never blocks the event loop. The per-line hot path (a program's non-JSON stdout) does
not go through structlog; it calls :func:`render` directly, the one place the line format is defined.
"""

from __future__ import annotations

from .clock import timestamp
from .config import LEVELS, LOG_FORMATS
from .output.writer import Writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping
    from typing import Any


# structlog calls the renderer with the name of the method used; these are the names dinit prints.
_METHOD_LEVEL = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
                 "error": "error", "critical": "error", "exception": "error", "msg": "info"}
#: Keys of a JSON line that dinit fills in; a given key of the same name is written with a ``_``.
_RESERVED = ("time", "level", "msg")

_threshold = LEVELS["warning"]
_json = False
_writer: Writer | None = None
_bound: Any = None


def render(level: str, message: bytes, **fields: object) -> bytes:
    """Format one own-message line; ``message`` is bytes so program output is never re-encoded.

    ``fields`` only appear in the JSON form (e.g. ``line=`` for the raw program line, bytes are fine):
    the text form is the message alone, so the text hot path stays one ``%`` operation."""
    if _json:
        return _json_line(timestamp().decode(), level, _text(message), fields)
    return b"%s dinit: %s: %s\n" % (timestamp(), level.encode(), message)


def enabled(level: str) -> bool:
    """Whether messages of ``level`` are shown (hot paths check before formatting)."""
    return LEVELS[level] >= _threshold


def _text(value: bytes | bytearray) -> str:
    """Bytes as JSON-safe text: invalid UTF-8 becomes ``\\xNN`` escapes instead of being lost."""
    return value.decode("utf-8", "backslashreplace")


def _safe(text: str) -> str:
    """A str as JSON-safe text: surrogate escapes (undecodable bytes of e.g. a command line) become
    ``\\xNN``, and any other lone surrogate ``\\udXXX``, since JSON needs valid UTF-8."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return _text(raw)


def _str(value: object) -> str:
    """``str(value)``, or a description of the value when its ``__str__`` fails: a message must not
    take dinit down."""
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _json_default(value: object) -> object:
    """What orjson cannot write as is: bytes as text, anything else by ``str()``."""
    return _text(value) if isinstance(value, bytes | bytearray) else _str(value)


def _json_line(time: str, level: str, message: str, fields: MutableMapping[str, Any]) -> bytes:
    """One JSON object and a newline; never raises, whatever the values hold."""
    import orjson  # only under DINIT_LOG_FORMAT=json; then a dictionary lookup

    line: dict[str, Any] = {"time": time, "level": level, "msg": message}
    for key, value in fields.items():
        line[f"{key}_" if key in _RESERVED else key] = value
    try:
        return orjson.dumps(line, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, ValueError):  # lone surrogates, huge ints, non-str keys: value by value
        return orjson.dumps({key: _jsonable(value) for key, value in line.items()},
                            default=_json_default, option=orjson.OPT_APPEND_NEWLINE)


def _jsonable(value: object) -> object:
    """A value orjson writes as it is, else its JSON-safe text."""
    import orjson

    try:
        orjson.dumps(value, default=_json_default)
    except (TypeError, ValueError):
        return _safe(value if isinstance(value, str) else _str(value))
    return value


def message(event: object, fields: MutableMapping[str, Any]) -> str:
    """The message text of an event: ``service/stage: `` prefix, then the template filled in from
    ``fields``, line breaks escaped so every message stays exactly one line for log parsers (§7).

    A template that does not fit its fields (missing key, stray brace) must not take dinit down:
    then the template is shown as it is, followed by the fields as ``key=value``."""
    template = str(event)
    text = template
    if fields:
        try:
            text = template.format(**fields)
        except Exception:  # any error of a template or of a value's __format__
            extra = " ".join(f"{key}={_str(value)}" for key, value in fields.items()
                             if key not in ("service", "stage"))
            text = f"{template} {extra}" if extra else template
    service, stage = fields.get("service"), fields.get("stage")
    if service is not None:
        text = f"{_str(service)}/{_str(stage)}: {text}" if stage is not None else f"{_str(service)}: {text}"
    return text.replace("\r", "\\r").replace("\n", "\\n")


# The processor chain: each takes (logger, method name, event dict) and returns the next event dict;
# the last returns the bytes handed to the logger.

def _add_message(_logger: object, _method_name: str, event_dict: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
    """Replace the template by the message text; the given fields stay for the JSON form (one
    named like a key dinit fills in gets a ``_`` rather than being overwritten)."""
    event = event_dict.pop("event", "")
    text = message(event, event_dict)
    fields = {f"{key}_" if key in _RESERVED else key: value for key, value in event_dict.items()}
    return {**fields, "msg": text}


def _add_time_level(_logger: object, method_name: str, event_dict: MutableMapping[str, Any]
                    ) -> MutableMapping[str, Any]:
    """The time the message was logged and dinit's name for its level."""
    event_dict["time"] = timestamp().decode()
    event_dict["level"] = _METHOD_LEVEL.get(method_name, method_name)
    return event_dict


def _render_line(_logger: object, _method_name: str, event_dict: MutableMapping[str, Any]) -> bytes:
    """The final line: §7 text, or a JSON object under ``DINIT_LOG_FORMAT=json``."""
    time, level, text = event_dict.pop("time"), event_dict.pop("level"), event_dict.pop("msg")
    if _json:
        return _json_line(time, level, _safe(text), event_dict)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        raw = text.encode("utf-8", "backslashreplace")
    return b"%s dinit: %s: %s\n" % (time.encode(), level.encode(), raw)


class _WriterLogger:
    """The structlog "logger": hands the rendered bytes to the stderr writer of :func:`setup`."""

    def msg(self, line: bytes) -> None:
        assert _writer is not None, "log.setup() must come first"
        _writer.write(line)

    debug = info = warn = warning = error = critical = exception = msg


def _structlog() -> Any:
    """The configured structlog logger, imported on first use: at the default level a normal start
    logs nothing, and importing structlog would cost a sizeable part of dinit's start-up time.

    Configured once per process: the chain reads the format and writer of :func:`setup` when it
    runs, so a later ``setup`` needs no reconfiguring (which would also undo ``capture_logs``)."""
    global _bound
    if _bound is None:
        import structlog

        structlog.configure(
            processors=[_add_message, _add_time_level, _render_line],
            # Levels are checked by _Logger before structlog is reached.
            wrapper_class=structlog.make_filtering_bound_logger(0),
            logger_factory=lambda *_args: _WriterLogger(),
            cache_logger_on_first_use=True,
        )
        _bound = structlog.get_logger()
    return _bound


def _level_method(level: str) -> Callable[..., None]:
    """A logger method that checks the level before anything else, then logs through structlog."""
    rank = LEVELS[level]

    def log(_self: Any, event: str, /, **fields: object) -> None:
        if rank >= _threshold:
            if "event" in fields:  # structlog's own name for the template
                fields["event_"] = fields.pop("event")
            getattr(_structlog(), level)(event, **fields)

    log.__name__ = level
    return log


class _Logger:
    """dinit's logger: ``logger.info(template, **fields)`` and so on (see the module docstring)."""

    debug = _level_method("debug")
    info = _level_method("info")
    warning = _level_method("warning")
    error = _level_method("error")


logger = _Logger()


def setup(level: str, writer: Writer, log_format: str = "text") -> None:
    """Route messages to ``writer``, hide those below ``level`` (``none`` hides all), and write them
    as ``log_format`` (``text`` or ``json``, as DINIT_LOG_FORMAT)."""
    global _threshold, _writer, _json
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}")
    _threshold, _writer, _json = LEVELS[level], writer, log_format == "json"
