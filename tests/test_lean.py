"""dinit/lean.py's stand-ins behave like the standard library's for everything dinit uses, and the
start path really goes without the modules they replace."""

from __future__ import annotations

import contextlib
import enum
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from harness import Services, launch, poll
from hypothesis import given
from hypothesis import strategies as st

from dinit import lean
from dinit.config import _is_decimal
from dinit.control.handlers import valid_name


class LeanPoint(lean.NamedTuple):
    x: int
    y: int = 2
    label: str = "p"

    def moved(self) -> int:
        return self.x + self.y


class RealPoint(typing.NamedTuple):
    x: int
    y: int = 2
    label: str = "p"

    def moved(self) -> int:
        return self.x + self.y


calls = st.tuples(st.lists(st.integers(), max_size=4),
                  st.dictionaries(st.sampled_from(["x", "y", "label", "z"]), st.integers(), max_size=3))


def _outcome(make: typing.Callable[[], object]) -> object:
    """What a call gives: its repr, or the kind of error it raises."""
    try:
        return repr(make()).replace("Real", "").replace("Lean", "")
    except TypeError:
        return TypeError


@given(calls)
def test_named_tuple_constructs_like_typing(call: tuple[list[int], dict[str, int]]) -> None:
    args, kwargs = call
    assert _outcome(lambda: LeanPoint(*args, **kwargs)) == _outcome(lambda: RealPoint(*args, **kwargs))


def test_named_tuple_is_a_tuple_with_fields() -> None:
    lean_point, real_point = LeanPoint(1, label="q"), RealPoint(1, label="q")
    assert lean_point == real_point == (1, 2, "q")
    assert hash(lean_point) == hash(real_point)
    assert LeanPoint._fields == RealPoint._fields
    assert LeanPoint._field_defaults == RealPoint._field_defaults
    assert lean_point._replace(y=5) == real_point._replace(y=5)
    assert type(lean_point._replace(y=5)) is LeanPoint
    assert lean_point._asdict() == real_point._asdict()
    assert lean_point.moved() == 3
    x, y, label = lean_point
    assert (x, y, label) == (1, 2, "q")
    with pytest.raises(AttributeError):
        lean_point.x = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        lean_point._replace(z=1)
    assert not hasattr(lean_point, "__dict__")


def test_named_tuple_refuses_what_typing_refuses() -> None:
    with pytest.raises(TypeError):
        class Bad(lean.NamedTuple):
            a: int = 1
            b: int


class LeanColor(lean.Enum):
    RED = "red"
    GREEN = "green"
    CRIMSON = "red"  # an alias, as in enum

    def loud(self) -> str:
        return self.value.upper()


class RealColor(enum.Enum):
    RED = "red"
    GREEN = "green"
    CRIMSON = "red"

    def loud(self) -> str:
        return self.value.upper()


def test_enum_members_behave_like_enums() -> None:
    for lean_member, real_member in zip(LeanColor, RealColor, strict=True):
        assert (lean_member.name, lean_member.value) == (real_member.name, real_member.value)
        assert str(lean_member).replace("Lean", "") == str(real_member).replace("Real", "")
        assert repr(lean_member).replace("Lean", "") == repr(real_member).replace("Real", "")
        assert format(lean_member).replace("Lean", "") == format(real_member).replace("Real", "")
    assert len(LeanColor) == len(RealColor) == 2
    assert LeanColor("green") is LeanColor.GREEN
    assert LeanColor.CRIMSON is LeanColor.RED
    assert LeanColor.RED.loud() == "RED"
    assert isinstance(LeanColor.RED, LeanColor)
    assert {LeanColor.RED: 1}[LeanColor("red")] == 1
    assert LeanColor.RED != "red"
    with pytest.raises(ValueError, match="'blue' is not a valid LeanColor"):
        LeanColor("blue")
    with pytest.raises(ValueError):
        LeanColor(["unhashable"])
    with pytest.raises(AttributeError):
        LeanColor.RED = LeanColor.GREEN  # type: ignore[misc]


@given(st.sampled_from([OSError, ValueError, KeyError, None]))
def test_suppress_is_contextlib_suppress(raised: type[Exception] | None) -> None:
    def outcome(suppressing: typing.Callable[..., typing.ContextManager[None]]) -> str:
        try:
            with suppressing(OSError, KeyError):
                if raised is not None:
                    raise raised()
        except Exception as error:
            return type(error).__name__
        return "nothing"

    assert outcome(lean.suppress) == outcome(contextlib.suppress)


_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@given(st.text(alphabet="0123456789.eE+-_ \t²٣x", max_size=10))
def test_decimal_check_is_the_plain_number_grammar(text: str) -> None:
    """config's hand-written check accepts exactly this regular expression's numbers (§1)."""
    assert _is_decimal(text) == bool(_DECIMAL.fullmatch(text))


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@given(st.text(alphabet="aZ09._@-/ \nü", max_size=70) | st.text(max_size=3))
def test_submitted_name_check_is_the_name_grammar(name: str) -> None:
    """The control socket's hand-written name check accepts exactly this expression's names (§12)."""
    assert valid_name(name) == bool(_NAME.fullmatch(name))


def test_start_path_imports_none_of_the_heavy_modules() -> None:
    """Importing the init (everything up to the first spawn) loads none of the modules lean.py
    stands in for, nor re, threading or signal's enums: each costs start-up (bench/startup.py)."""
    heavy = ["typing", "enum", "contextlib", "re", "collections", "functools", "threading", "signal",
             "dataclasses", "ctypes", "struct", "types", "structlog", "orjson", "msgspec", "asyncio"]
    code = ("import sys; import dinit.cli; "
            f"print(' '.join(name for name in {heavy!r} if name in sys.modules))")
    command = [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"]
    loaded = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def _loaded(pid: int) -> str:
    """The files mapped into a process (its shared libraries among them)."""
    return Path(f"/proc/{pid}/maps").read_text()


def test_an_idle_dinit_has_one_thread_and_no_json_or_crypto_library(services: Services, tmp_path: Path,
                                                                     pid1: bool) -> None:
    """What an idle dinit leaves out (ARCHITECTURE.md, start-up): with services that print nothing,
    and after its control server and hot reload are set up (a client got an answer), it has one
    thread and neither msgspec, orjson nor OpenSSL (hashlib) is loaded; the first JSON line brings
    msgspec (the block check) and the stdout writer thread, and the line arrives labelled (§4.3)."""
    trigger = tmp_path / "print-now"
    services.add("quiet", "exec sleep 1000\n")
    services.add("later", f"while [ ! -e {trigger} ]; do sleep 0.02; done\n"
                          "echo '{\"n\":1}'\nexec sleep 1000\n")
    dinit, ctl = launch(services, tmp_path, pid1=pid1, DINIT_LOG_LEVEL="warning")
    try:
        # Twice: the second answer comes from a later turn of the loop than the reconciler's first
        # scan (a timer due at once when the control server was set up), which fingerprints.
        assert ctl("status").returncode == 0
        assert ctl("status").returncode == 0
        pid = dinit.pid
        assert len(os.listdir(f"/proc/{pid}/task")) == 1
        assert not [name for name in ("msgspec", "orjson", "libcrypto") if name in _loaded(pid)]
        trigger.touch()
        line = poll(lambda: [value for value in dinit.json_lines() if value.get("n") == 1],
                    message="the JSON line")[0]
        assert (line["service"], line["stage"]) == ("later", "run")
        assert "msgspec" in _loaded(pid)
        assert len(os.listdir(f"/proc/{pid}/task")) == 2
    finally:
        dinit.signal()
        assert dinit.wait() == 0
