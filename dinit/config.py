"""Configuration: every ``DINIT_*`` environment variable, parsed and validated once at start.

Everything is validated before anything is started, so a typo in an image's environment fails the
container at once with a line that names the variable, the bad value and what is accepted (§1).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from enum import Enum
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """An invalid variable; the message is the one error line dinit prints before exiting 1."""


class Policy(Enum):
    """What happens to a process that is reparented to dinit (§6.2)."""

    TERMINATE = "terminate"
    ADOPT = "adopt"
    IGNORE = "ignore"


class ExitCodeMode(Enum):
    """How dinit's own exit code is chosen (§5.3, §9)."""

    SUMMARY = "summary"
    PROPAGATE = "propagate"


#: Log levels by rank; a message is shown when its rank is at or above the configured one.
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "none": 100}

_BOOLEANS = {word: True for word in ("1", "true", "yes", "on")} | {
    word: False for word in ("0", "false", "no", "off")}
_LEVEL_NAMES = {"none": "none", "error": "error", "warn": "warning", "warning": "warning",
                "info": "info", "debug": "debug"}


class Config(NamedTuple):
    """The validated configuration; ``None`` for a timeout means "never"."""

    directory: str = "/etc/service"
    json_stdout: bool = True
    log_level: str = "warning"
    policy: Policy = Policy.TERMINATE
    kill_timeout: float = 30.0
    timeout: float | None = None
    exit_code: ExitCodeMode | None = None
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


#: A plain decimal number (``30``, ``0.5``, ``.25``, ``1e1``): no sign, no ``_`` digit separators and
#: no non-ASCII digits, which Python's ``float`` would accept but a reader of the image would not.
_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _seconds(name: str, value: str) -> float:
    """Parse a non-negative, finite number of seconds (``0.5`` allowed)."""
    text = value.strip()
    seconds = float(text) if _DECIMAL.fullmatch(text) else -1.0
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ConfigError(f"invalid {name} {value!r}: accepted is a non-negative number of seconds")
    return seconds


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
    "DINIT_REPARENTING_POLICY": (
        "policy", _choice({p.value: p for p in Policy}, "terminate, adopt, ignore")),
    "DINIT_KILL_TIMEOUT": ("kill_timeout", _seconds),
    "DINIT_TIMEOUT": ("timeout", _seconds),
    "DINIT_EXIT_CODE": (
        "exit_code", _choice({m.value: m for m in ExitCodeMode}, "propagate, summary")),
    "DINIT_SOCKET": ("socket", _socket),
}


def log_level_from(environ: Mapping[str, str]) -> str:
    """The log level alone, falling back to the default, so a config error can honour a valid level."""
    try:
        return load(environ, only=("DINIT_LOG_LEVEL",)).log_level
    except ConfigError:
        return Config().log_level


def load(environ: Mapping[str, str], only: tuple[str, ...] | None = None) -> Config:
    """Parse the ``DINIT_*`` variables of ``environ``; an empty variable means its default (§1), and
    so does one of only blanks, as surrounding blanks are ignored in every value."""
    values: dict[str, object] = {}
    for variable, (field, parse) in _PARSERS.items():
        raw = environ.get(variable, "")
        if not raw.strip() or (only is not None and variable not in only):
            continue
        values[field] = parse(variable, raw)
    return Config(**values)  # type: ignore[arg-type]
