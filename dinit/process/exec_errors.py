"""Exec failures that say what is wrong with the file, not just errno (§16).

``posix_spawn`` reports only the errno of the failed ``execve``. For a script whose ``#!`` interpreter
does not exist that is ENOENT, "No such file or directory", although the file is right there; for a
script saved with Windows line endings the missing interpreter is ``/bin/sh\\r``, which no one can see
in an editor; and glibc does not fall back to ``/bin/sh`` for a file without ``#!`` (ENOEXEC). Reading
the file's first line once it failed turns these into a reason a user can act on.
"""

from __future__ import annotations

import errno
import os

#: How much of a file the kernel looks at for a ``#!`` line (``BINPRM_BUF_SIZE``).
HEAD_SIZE = 256
_BLANKS = b" \t"
_ELF_MAGIC = b"\x7fELF"


def interpreter(head: bytes) -> bytes | None:
    """The interpreter a ``#!`` line names, parsed as Linux does (fs/binfmt_script.c): ``None`` when
    ``head`` has no ``#!`` line, ``b""`` when the line names none. The line ends at a newline or NUL;
    blanks (space, tab) around the name are skipped and the name ends at the next blank, so a
    carriage return of a CRLF line stays part of the name, as it does for the kernel."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].split(b"\0", 1)[0].lstrip(_BLANKS)
    for index, byte in enumerate(line):
        if byte in _BLANKS:
            return line[:index]
    return line


def _head(path: str) -> bytes | None:
    """The start of the file, or ``None`` when it cannot be read (then only errno can be told)."""
    try:
        with open(path, "rb") as file:
            return file.read(HEAD_SIZE)
    except OSError:
        return None


def _show(name: bytes) -> str:
    """A path for a one-line message: undecodable bytes as escapes, control characters visible."""
    return os.fsdecode(name).encode("unicode_escape", "backslashreplace").decode("ascii")


def _script_reason(path: str, name: bytes, error: OSError) -> str | None:
    """Why a file with a ``#!`` line could not be run, when its interpreter line explains it."""
    if not name:
        return "its #! line names no interpreter"
    if error.errno != errno.ENOENT:
        return None
    if name.endswith(b"\r"):
        return f"interpreter {_show(name)} not found: the file has Windows (CRLF) line endings"
    # A relative interpreter is looked up from the program's working directory, its file's directory.
    found = os.path.join(os.path.dirname(os.fsencode(path)), name)
    return None if os.path.exists(found) else f"interpreter {_show(name)} not found"


def _format_reason(head: bytes) -> str:
    """Why ENOEXEC for a file without ``#!``: not a script and not a binary this machine runs."""
    if head.startswith(_ELF_MAGIC):
        return "Exec format error: an ELF binary this machine cannot run (built for another architecture?)"
    if not head:
        return "the file is empty: neither a binary nor has a #! line"
    return "the file is neither a binary nor has a #! line"


def explain(path: str, error: OSError) -> str:
    """The reason ``path`` could not be executed, for ``cannot run <path>: <reason>`` (§16)."""
    fallback = error.strerror or str(error)
    if error.errno not in (errno.ENOENT, errno.ENOEXEC, errno.EACCES) or "/" not in path:
        return fallback  # without a "/" the program was looked up in PATH and not found
    head = _head(path)
    if head is None:
        return fallback
    name = interpreter(head)
    if name is not None:
        return _script_reason(path, name, error) or fallback
    if error.errno == errno.ENOEXEC:
        return _format_reason(head)
    return fallback
