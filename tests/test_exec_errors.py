"""Unit tests of the exec-failure reasons of §16: the ``#!`` line parser (against the kernel's rules,
with hypothesis) and ``explain`` on real files with the errno the kernel gave for them.
The behaviour as PID 1 (the error line, teardown, exit 1) is tested in test_spawn.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dinit.process.exec_errors import explain, interpreter

#: Bytes that may appear in an interpreter name: anything but the line end, NUL and blanks.
NAME_BYTES = st.binary(min_size=1, max_size=40).filter(
    lambda name: not any(byte in name for byte in b"\n\0 \t"))
BLANKS = st.text(alphabet=" \t", max_size=5).map(str.encode)
REST = st.binary(max_size=60)


@given(BLANKS, NAME_BYTES, BLANKS.filter(bool), REST.map(lambda args: args.split(b"\n")[0]), REST)
def test_interpreter_is_first_word_of_shebang_line(lead: bytes, name: bytes, gap: bytes, args: bytes,
                                                   rest: bytes) -> None:
    """The name is the first blank-separated word after ``#!``, leading blanks skipped, whatever
    follows it on the line (arguments) or after the line."""
    assert interpreter(b"#!" + lead + name + gap + args + b"\n" + rest) == name
    assert interpreter(b"#!" + lead + name) == name  # no line end in the first bytes


@given(NAME_BYTES)
def test_carriage_return_stays_in_the_name(name: bytes) -> None:
    """A CRLF line keeps its ``\\r`` in the name (the kernel does not treat it as a blank)."""
    assert interpreter(b"#!" + name + b"\r\nexit 0\r\n") == name + b"\r"


@given(BLANKS, REST)
def test_line_naming_nothing(blanks: bytes, rest: bytes) -> None:
    """``#!`` followed only by blanks (or by a NUL) names no interpreter: ``b""``, not ``None``."""
    assert interpreter(b"#!" + blanks + b"\n" + rest) == b""
    assert interpreter(b"#!" + blanks + b"\0/bin/sh\n") == b""


@given(st.binary(max_size=80).filter(lambda head: not head.startswith(b"#!")))
def test_no_shebang(head: bytes) -> None:
    assert interpreter(head) is None


def _file(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "run"
    path.write_bytes(content)
    path.chmod(0o755)
    return str(path)


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


@pytest.mark.parametrize(("content", "code", "reason"), [
    (b"#!/bin/bashx\necho\n", errno.ENOENT, "interpreter /bin/bashx not found"),
    (b"#! /bin/bashx -e\n", errno.ENOENT, "interpreter /bin/bashx not found"),
    (b"#!/bin/sh\r\n", errno.ENOENT,
     "interpreter /bin/sh\\r not found: the file has Windows (CRLF) line endings"),
    (b"#!./helper\n", errno.ENOENT, "interpreter ./helper not found"),
    (b"#!/nowhere/\xff\n", errno.ENOENT, "interpreter /nowhere/\\udcff not found"),
    (b"#!\n", errno.ENOEXEC, "its #! line names no interpreter"),
    (b"echo hi\n", errno.ENOEXEC, "the file is neither a binary nor has a #! line"),
    (b"", errno.ENOEXEC, "the file is empty: neither a binary nor has a #! line"),
    (b"\x7fELF\x02\x01\x01", errno.ENOEXEC,
     "Exec format error: an ELF binary this machine cannot run (built for another architecture?)"),
    # an interpreter that exists: the errno is about something else, and is all there is to say
    (b"#!/bin/sh\n", errno.ENOENT, "No such file or directory"),
    (b"#!/bin/sh\n", errno.EACCES, "Permission denied"),
    (b"echo hi\n", errno.EACCES, "Permission denied"),
    (b"echo hi\n", errno.E2BIG, "Argument list too long"),
])
def test_explain(tmp_path: Path, content: bytes, code: int, reason: str) -> None:
    path = _file(tmp_path, content)
    assert explain(path, _error(code, path)) == reason


def test_relative_interpreter_found_next_to_file(tmp_path: Path) -> None:
    """A relative interpreter is looked up from the program's directory (its working directory), so
    when it is there the errno stands."""
    (tmp_path / "helper").write_text("")
    path = _file(tmp_path, b"#!./helper\n")
    assert explain(path, _error(errno.ENOENT, path)) == "No such file or directory"


def test_unreadable_or_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read (gone since the scan) leaves only the errno."""
    missing = str(tmp_path / "gone")
    assert explain(missing, _error(errno.ENOENT, missing)) == "No such file or directory"


def test_command_looked_up_in_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command name without ``/`` was looked up in PATH: a file of that name in the working
    directory is not the one that failed and must not be read."""
    monkeypatch.chdir(tmp_path)
    _file(tmp_path, b"#!/bin/bashx\n")
    assert explain("run", _error(errno.ENOENT, "run")) == "No such file or directory"
