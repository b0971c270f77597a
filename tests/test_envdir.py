"""Unit and property tests of ``dinit.envdir``: runit chpst/envdir semantics of ``S/env/`` (§9).

A file's value is its first line with trailing spaces and tabs removed and NUL turned into newline;
an empty file unsets the variable; dot files are ignored; ``=`` in a name is an error.
"""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dinit.service import envdir

BLANKS = b" \t"
names = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=12)
# values as dinit holds them: str from os.fsdecode of bytes (surrogateescape for non-UTF-8)
env_values = st.binary(max_size=20).map(os.fsdecode)


# -- parse_value -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "value"), [
    (b"", None),
    (b"\n", ""),
    (b"\n\nlater", ""),
    (b" \t \n", ""),
    (b"x", "x"),
    (b"x\n", "x"),
    (b"first\nsecond\n", "first"),
    (b"value \t\t \nmore", "value"),
    (b"  lead", "  lead"),
    (b"\tlead\t", "\tlead"),
    (b"a  b\tc ", "a  b\tc"),
    (b"a\0b", "a\nb"),
    (b"\0", "\n"),
    (b"x \0 ", "x \n"),  # trailing blanks go before NUL becomes newline: the space before NUL stays
    (b"dos\r\n", "dos\r"),  # only spaces and tabs are trailing blanks
    (b"a=b", "a=b"),
    (b"caf\xe9", os.fsdecode(b"caf\xe9")),
])
def test_parse_value_examples(content: bytes, value: str | None) -> None:
    """§9: the envdir rules on hand-picked contents."""
    assert envdir.parse_value(content) == value


@given(st.binary(min_size=1))
def test_parse_value_is_trimmed_first_line(content: bytes) -> None:
    """§9: for any non-empty file the value, with newlines turned back into NULs, is the first line
    minus only trailing spaces and tabs; it never ends with a blank and loses no byte (not even
    non-UTF-8 ones)."""
    value = envdir.parse_value(content)
    assert value is not None
    raw = os.fsencode(value)
    first_line = content.split(b"\n", 1)[0]
    assert first_line.startswith(raw.replace(b"\n", b"\0"))
    assert first_line[len(raw):].strip(BLANKS) == b""
    assert not raw.endswith((b" ", b"\t"))


@given(st.binary().filter(lambda b: b"\n" not in b), st.binary())
def test_parse_value_ignores_after_first_line(line: bytes, rest: bytes) -> None:
    """§9: only the first line counts; an empty first line sets the empty string (not unset)."""
    value = envdir.parse_value(line + b"\n" + rest)
    assert value == (envdir.parse_value(line) if line else "")


@given(st.binary().filter(lambda b: b"\n" not in b and b"\0" not in b
                          and not b.endswith((b" ", b"\t")) and b))
def test_parse_value_plain_line_unchanged(line: bytes) -> None:
    """§9: a line without NUL and trailing blanks is the value as is, leading blanks included."""
    assert envdir.parse_value(line) == os.fsdecode(line)
    assert envdir.parse_value(b" \t" + line + b" \t\n") == os.fsdecode(b" \t" + line)


# -- read ------------------------------------------------------------------------------------------


def _write(directory: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (directory / name).write_bytes(content)


@given(st.dictionaries(names, st.binary(max_size=30), max_size=8),
       st.dictionaries(names.map(lambda n: "." + n), st.binary(max_size=5), max_size=3))
def test_read_every_file(files: dict[str, bytes], dot_files: dict[str, bytes]) -> None:
    """§9: every non-dot file is one variable named like the file, valued by parse_value; dot files
    are ignored."""
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), files | dot_files)
        changes = envdir.read(tmp)
    assert changes == {name: envdir.parse_value(content) for name, content in files.items()}


def test_read_empty_directory(tmp_path: Path) -> None:
    assert envdir.read(str(tmp_path)) == {}


def test_read_empty_file_means_unset(tmp_path: Path) -> None:
    """§9: an empty file is recorded as "unset" (None), a file with a newline as the empty string."""
    _write(tmp_path, {"GONE": b"", "EMPTY": b"\n"})
    assert envdir.read(str(tmp_path)) == {"GONE": None, "EMPTY": ""}


@given(names, names)
def test_read_equals_in_name_is_error(left: str, right: str) -> None:
    """§9: a file name containing ``=`` is an error naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp), {f"{left}={right}": b"x", "OK": b"y"})
        with pytest.raises(envdir.EnvDirError) as raised:
            envdir.read(tmp)
    assert str(raised.value).startswith(os.path.join(tmp, f"{left}={right}") + ":")


def test_read_dot_file_with_equals_is_ignored(tmp_path: Path) -> None:
    """§9: dot files are ignored before their names are looked at."""
    _write(tmp_path, {".a=b": b"x", "A": b"y"})
    assert envdir.read(str(tmp_path)) == {"A": "y"}


def test_read_subdirectory_is_error(tmp_path: Path) -> None:
    """A directory where a variable file is expected is an error naming it (envdir fails too)."""
    (tmp_path / "SUB").mkdir()
    with pytest.raises(envdir.EnvDirError, match="SUB: not a regular file"):
        envdir.read(str(tmp_path))


def test_read_follows_symlinks(tmp_path: Path) -> None:
    """A symlink to a file is read like the file."""
    (tmp_path / "target").write_bytes(b"linked\n")
    env = tmp_path / "env"
    env.mkdir()
    (env / "VAR").symlink_to(tmp_path / "target")
    assert envdir.read(str(env)) == {"VAR": "linked"}


# -- apply -----------------------------------------------------------------------------------------


@given(st.dictionaries(names, env_values), st.dictionaries(names, st.none() | env_values))
def test_apply(base: dict[str, str], changes: dict[str, str | None]) -> None:
    """§9: set values replace or add variables, None removes them (also absent ones), every other
    variable of ``base`` passes unchanged, and ``base`` itself is not modified."""
    before = dict(base)
    env = envdir.apply(base, changes)
    assert base == before
    for name, value in changes.items():
        if value is None:
            assert name not in env
        else:
            assert env[name] == value
    for name, value in base.items():
        if name not in changes:
            assert env[name] == value
    assert set(env) <= set(base) | set(changes)


@given(st.dictionaries(names, env_values))
def test_apply_no_changes_is_a_copy(base: dict[str, str]) -> None:
    env = envdir.apply(base, {})
    assert env == base
    assert env is not base


def test_apply_read_round_trip(tmp_path: Path) -> None:
    """read + apply together, as dinit uses them for a service's environment."""
    _write(tmp_path, {"NEW": b"n\n", "OLD": b"", "SAME": b"s \t", ".HIDDEN": b"h"})
    env = envdir.apply({"OLD": "o", "KEEP": "k", "SAME": "x"}, envdir.read(str(tmp_path)))
    assert env == {"NEW": "n", "KEEP": "k", "SAME": "s"}
