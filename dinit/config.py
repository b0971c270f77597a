"""Configuration: every ``DINIT_*`` environment variable, parsed and validated once at start.

Everything is validated before anything is started, so a typo in an image's environment fails the
container at once with a line that names the variable, the bad value and what is accepted (§1).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from enum import Enum
    from typing import NamedTuple, TypeVar

    T = TypeVar("T")
else:
    from .lean import Enum, NamedTuple


class ConfigError(Exception):
    """An invalid variable; the message is the one error line dinit prints before exiting 1."""


class Policy(Enum):
    """What happens to a process that is reparented to dinit (§6.2)."""

    TERMINATE = "terminate"
    ADOPT = "adopt"
    IGNORE = "ignore"


class FinishMode(Enum):
    """What ``S/finish`` is (§2): runit's clean-up program run after ``run`` exits, or (``stop``, the
    meaning of tozd dinit < 0.2) the stop hook."""

    RUNIT = "runit"
    STOP = "stop"


class WatchMode(Enum):
    """Hot reload (§11): off, inotify events (watchfiles) plus periodic rescans, or rescans only."""

    OFF = "off"
    ON = "on"
    POLL = "poll"


class ExitCodeMode(Enum):
    """How dinit's own exit code is chosen (§5.3, §9)."""

    SUMMARY = "summary"
    PROPAGATE = "propagate"


class Color(Enum):
    """Whether prefix-form labels are coloured (§15): ``auto`` means on a terminal only."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class StopIgnored(Enum):
    """What teardown does with a ``run`` that ignores or blocks SIGTERM (§15)."""

    WAIT = "wait"
    KILL = "kill"


#: Log levels by rank; a message is shown when its rank is at or above the configured one.
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "none": 100}
#: How dinit's own messages are written: the §7 text line, or one JSON object per line.
LOG_FORMATS = ("text", "json")

_BOOLEANS = {word: True for word in ("1", "true", "yes", "on")} | {
    word: False for word in ("0", "false", "no", "off")}
_LEVEL_NAMES = {"none": "none", "error": "error", "warn": "warning", "warning": "warning",
                "info": "info", "debug": "debug"}


class Config(NamedTuple):
    """The validated configuration; ``None`` for a timeout means "never"."""

    directory: str = "/etc/service"
    json_stdout: bool = True
    log_level: str = "warning"
    log_format: str = "text"
    policy: Policy = Policy.TERMINATE
    kill_timeout: float = 30.0
    timeout: float | None = None
    exit_code: ExitCodeMode | None = None
    finish: FinishMode = FinishMode.RUNIT
    start_dir: str = "/etc/dinit/start.d"
    stop_dir: str = "/etc/dinit/stop.d"
    stop_delay: float = 0.0
    color: Color = Color.AUTO
    stop_ignored: StopIgnored = StopIgnored.WAIT
    watch: WatchMode = WatchMode.OFF
    watch_interval: float = 5.0
    #: The control socket (§12): "" for the default locations, None for ``off``, else a path.
    socket: str | None = ""


def _choice(table: Mapping[str, T], accepted: str) -> Callable[[str, str], T]:
    """Build a parser for a case-insensitive choice among ``table``'s keys."""

    def parse(name: str, value: str) -> T:
        try:
            return table[value.strip().lower()]
        except KeyError:
            raise ConfigError(f"invalid {name} {value!r}: accepted are {accepted}") from None

    return parse


def _is_decimal(text: str) -> bool:
    """A plain decimal number (``30``, ``0.5``, ``.25``, ``1e1``): no sign, no ``_`` digit separators
    and no non-ASCII digits, which Python's ``float`` would accept but a reader of the image would
    not. (By hand, not a regular expression: importing ``re`` costs start-up, lean.py.)"""
    if not text.isascii():
        return False
    mantissa, e, exponent = text.lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    if exponent[:1] in ("+", "-"):
        exponent = exponent[1:]
    return bool(whole or fraction) and all(part.isdigit() for part in (whole, fraction) if part) and (
        not e or exponent.isdigit())


def seconds_at_least(name: str, value: str, minimum: float = 0.0, inclusive: bool = True) -> float:
    """Parse a finite number of seconds (``0.5`` allowed) of at least ``minimum`` (more than it
    unless ``inclusive``). The error says what the variable accepts, whatever was wrong with the
    value, so one message serves a word and a number out of range alike."""
    text = value.strip()
    seconds = float(text) if _is_decimal(text) else -1.0
    above = seconds >= minimum if inclusive else seconds > minimum
    if not (above and seconds < float("inf")):  # also refuses NaN
        accepted = ("a non-negative number of seconds" if minimum == 0 and inclusive
                    else "a positive number of seconds" if minimum == 0
                    else f"a number of seconds of at least {minimum:g}")
        raise ConfigError(f"invalid {name} {value!r}: accepted is {accepted}")
    return seconds


#: Shortest ``DINIT_WATCH_INTERVAL``: rescanning more often only burns CPU (Clarifications of §11).
MIN_WATCH_INTERVAL = 0.1


def _interval(name: str, value: str) -> float:
    return seconds_at_least(name, value, MIN_WATCH_INTERVAL)


_WATCH_WORDS = {word: WatchMode.ON if on else WatchMode.OFF for word, on in _BOOLEANS.items()} | {
    "poll": WatchMode.POLL}


def _directory(_name: str, value: str) -> str:
    """Resolve a relative ``DINIT_DIR`` against the working directory at start (§1)."""
    return os.path.abspath(value)


def _socket(_name: str, value: str) -> str | None:
    """``off`` (any case) turns the control socket off; anything else is its path (§12)."""
    text = value.strip()
    return None if text.lower() == "off" else os.path.abspath(text)


_PARSERS: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "DINIT_DIR": ("directory", _directory),
    "DINIT_JSON_STDOUT": ("json_stdout", _choice(_BOOLEANS, "1, true, yes, on, 0, false, no, off")),
    "DINIT_LOG_LEVEL": ("log_level", _choice(_LEVEL_NAMES, "none, error, warn, info, debug")),
    "DINIT_LOG_FORMAT": ("log_format", _choice({name: name for name in LOG_FORMATS}, "text, json")),
    "DINIT_REPARENTING_POLICY": (
        "policy", _choice({p.value: p for p in Policy}, "terminate, adopt, ignore")),
    "DINIT_KILL_TIMEOUT": ("kill_timeout", seconds_at_least),
    "DINIT_TIMEOUT": ("timeout", seconds_at_least),
    "DINIT_EXIT_CODE": (
        "exit_code", _choice({m.value: m for m in ExitCodeMode}, "propagate, summary")),
    "DINIT_FINISH": ("finish", _choice({m.value: m for m in FinishMode}, "runit, stop")),
    "DINIT_START_DIR": ("start_dir", _directory),
    "DINIT_STOP_DIR": ("stop_dir", _directory),
    "DINIT_STOP_DELAY": ("stop_delay", seconds_at_least),
    "DINIT_COLOR": ("color", _choice({c.value: c for c in Color}, "auto, always, never")),
    "DINIT_STOP_IGNORED": (
        "stop_ignored", _choice({s.value: s for s in StopIgnored}, "wait, kill")),
    "DINIT_WATCH": ("watch", _choice(_WATCH_WORDS, "off, on, poll (or 0, false, no, 1, true, yes)")),
    "DINIT_WATCH_INTERVAL": ("watch_interval", _interval),
    "DINIT_SOCKET": ("socket", _socket),
}


def log_level_from(environ: Mapping[str, str]) -> str:
    """The log level alone, falling back to the default, so a config error can honour a valid level."""
    try:
        return load(environ, only=("DINIT_LOG_LEVEL",)).log_level
    except ConfigError:
        return Config().log_level


def log_format_from(environ: Mapping[str, str]) -> str:
    """The log format alone, falling back to the default, so a config error line is already in the
    format asked for (JSON for a log shipper) when that variable itself is valid."""
    try:
        return load(environ, only=("DINIT_LOG_FORMAT",)).log_format
    except ConfigError:
        return Config().log_format


def load(environ: Mapping[str, str], only: tuple[str, ...] | None = None) -> Config:
    """Parse the ``DINIT_*`` variables of ``environ``; an empty variable means its default (§1), and
    so does one of only blanks, as surrounding blanks are ignored in every value."""
    values: dict[str, object] = {}
    for variable, (field, parse) in _PARSERS.items():
        raw = environ.get(variable, "")
        if not raw.strip() or (only is not None and variable not in only):
            continue
        values[field] = parse(variable, raw)
    if environ.get("NO_COLOR") and values.get("color", Color.AUTO) is Color.AUTO:
        values["color"] = Color.NEVER  # no-color.org: set and not empty; ``always`` still wins (§15)
    return Config(**values)  # type: ignore[arg-type]
