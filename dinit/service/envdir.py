"""``S/env/``: per-service environment changes with runit chpst/envdir semantics (§9).

Each file of the directory names a variable; its value is the file's first line with trailing spaces
and tabs removed and NUL bytes turned into newlines. An empty file removes the variable. Dot files are
ignored. A file name with ``=`` cannot be a variable name, so it is a start-up error.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


class EnvDirError(Exception):
    """A malformed ``env/`` directory; the message names the file and the reason."""


def parse_value(content: bytes) -> str | None:
    """The value a file's bytes set, or ``None`` when the file is empty (the variable is removed)."""
    if not content:
        return None
    first_line = content.split(b"\n", 1)[0].rstrip(b" \t").replace(b"\0", b"\n")
    return os.fsdecode(first_line)


def read(directory: str) -> dict[str, str | None]:
    """Read every variable file of ``directory``; ``None`` values mean "unset"."""
    changes: dict[str, str | None] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise EnvDirError(f"{directory}: {error.strerror}") from None
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(directory, name)
        if "=" in name:
            raise EnvDirError(f"{path}: '=' is not allowed in an environment variable name")
        if not os.path.isfile(path):
            reason = "dangling symlink" if not os.path.exists(path) else "not a regular file"
            raise EnvDirError(f"{path}: {reason}")
        try:
            with open(path, "rb") as file:
                changes[name] = parse_value(file.read())
        except OSError as error:
            raise EnvDirError(f"{path}: {error.strerror}") from None
    return changes


def apply(base: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """``base`` with ``changes`` applied: set the values given, remove the ``None`` ones."""
    env = dict(base)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
