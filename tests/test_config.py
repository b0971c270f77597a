"""Configuration through environment variables, seen from outside (§1): defaults, accepted spellings,
empty = default, relative ``DINIT_DIR``, what each log level shows, prefix form on stdout, and the one
error line (exit 1, nothing started) for every invalid value.

dinit runs as PID 1 of a fresh PID namespace unless a test says ``pid1=False``.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from harness import TIME, Dinit, Services, private_etc, run, start

DEFAULT_DIR = "/etc/service"
DEBUG_DOT = rb"ignoring [^\n]*/\.hidden: dot entry"


# -- DINIT_DIR -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_default_directory(services: Services, tmp_path: Path, value: str | None) -> None:
    """§1: DINIT_DIR unset or empty means /etc/service: a service there is run, and where it does
    not exist, the error names it (both in a private /etc, whatever the host has)."""
    variables = {} if value is None else {"DINIT_DIR": value}
    dinit = run(None, wrapper=private_etc(tmp_path, None), **variables)
    assert dinit.returncode == 1
    assert dinit.own_lines() == [f"error: DINIT_DIR {DEFAULT_DIR}: no such directory".encode()]
    services.add("from-default-dir", 'echo "ran from $PWD" >&2\n')
    dinit = run(None, wrapper=private_etc(tmp_path, services.root), **variables)
    assert dinit.returncode == 0
    expected = f"ran from {DEFAULT_DIR}/from-default-dir".encode()
    assert dinit.service_lines("from-default-dir/run") == [expected]


@pytest.mark.parametrize("relative", ["service", "./service", "service/", "./service/."])
def test_relative_directory_against_cwd(services: Services, tmp_path: Path, pid1: bool,
                                        relative: str) -> None:
    """§1: a relative DINIT_DIR is resolved against dinit's working directory at start; the program
    sees its absolute path (§3)."""
    assert services.root == tmp_path / "service"
    services.add("a", 'echo "$0" >&2\n')
    dinit = run(services, pid1=pid1, cwd=str(tmp_path), DINIT_DIR=relative)
    assert dinit.returncode == 0, dinit.stderr.decode(errors="replace")
    assert dinit.service_lines("a/run") == [str(tmp_path / "service" / "a" / "run").encode()]


def test_relative_directory_not_against_other_cwd(services: Services, tmp_path: Path) -> None:
    """§1: the same relative DINIT_DIR from another working directory is another directory."""
    services.add("a", "exit 0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dinit = run(services, cwd=str(elsewhere), DINIT_DIR="service")
    assert dinit.returncode == 1
    assert dinit.own_lines() == [f"error: DINIT_DIR {elsewhere / 'service'}: no such directory".encode()]


# -- DINIT_JSON_STDOUT -----------------------------------------------------------------------------


def _output_service(services: Services) -> None:
    services.add("a", 'echo \'{"x": 1}\'\necho plain\necho to-stderr >&2\n')


@pytest.mark.parametrize("value", [None, "", "1", "true", "TRUE", "Yes", "on", "oN"])
def test_json_stdout_on(services: Services, value: str | None) -> None:
    """§1: JSON stdout is on by default, when empty, and for ``1 true yes on`` in any case: JSON lines
    go to stdout with metadata, other stdout lines become warnings on stderr (§4.3)."""
    _output_service(services)
    dinit = run(services, **({} if value is None else {"DINIT_JSON_STDOUT": value}))
    assert dinit.returncode == 0
    [line] = dinit.json_lines()
    assert line["x"] == 1 and line["service"] == "a" and line["stage"] == "run"
    assert dinit.messages("warning", cause=False) == [b"a/run: not JSON stdout: plain"]
    assert dinit.service_lines("a/run") == [b"to-stderr"]


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "NO", "off", "OfF"])
def test_json_stdout_off(services: Services, value: str, pid1: bool) -> None:
    """§1 + §4.4: ``0 false no off`` (any case) write every stdout line in prefix form on stdout, JSON
    or not, without warnings; stderr lines stay in prefix form on stderr."""
    _output_service(services)
    dinit = run(services, pid1=pid1, DINIT_JSON_STDOUT=value)
    assert dinit.returncode == 0
    assert re.fullmatch(TIME + rb' a/run: \{"x": 1\}\n' + TIME + rb" a/run: plain\n", dinit.stdout)
    assert dinit.messages("warning", cause=False) == []
    assert dinit.service_lines("a/run") == [b"to-stderr"]


# -- DINIT_LOG_LEVEL -------------------------------------------------------------------------------


def _level_scenario(services: Services) -> None:
    """A debug line (dot entry), info lines (starting ...), a warning (not JSON stdout)."""
    (services.root / ".hidden").mkdir(parents=True)
    services.add("a", "echo plain\necho to-stderr >&2\n")


def _has_level(dinit: Dinit, level: str) -> bool:
    return bool(dinit.messages(level))


@pytest.mark.parametrize("value", [None, "", "warn", "WARN", "warning", "Warning"])
def test_level_warn(services: Services, value: str | None) -> None:
    """§1: warn is the default (also when empty); ``warning`` = ``warn``; case-insensitive: warnings
    are shown, info and debug are not."""
    _level_scenario(services)
    dinit = run(services, **({} if value is None else {"DINIT_LOG_LEVEL": value}))
    assert dinit.returncode == 0
    assert dinit.own_lines(cause=False) == [b"warning: a/run: not JSON stdout: plain"]
    assert dinit.service_lines("a/run") == [b"to-stderr"]


@pytest.mark.parametrize("value", ["info", "INFO", "Info"])
def test_level_info(services: Services, value: str) -> None:
    """§1: info shows info lines and warnings, not debug lines."""
    _level_scenario(services)
    dinit = run(services, DINIT_LOG_LEVEL=value)
    assert dinit.returncode == 0
    info = dinit.messages("info")
    assert b"a/run: starting" in info
    assert info[-1] == b"dinit exiting with status 0"
    assert dinit.messages("warning", cause=False) == [b"a/run: not JSON stdout: plain"]
    assert not _has_level(dinit, "debug")


@pytest.mark.parametrize("value", ["debug", "DEBUG", "Debug"])
def test_level_debug(services: Services, value: str) -> None:
    """§1: debug shows everything, including debug lines such as an ignored dot entry (§2)."""
    _level_scenario(services)
    dinit = run(services, DINIT_LOG_LEVEL=value)
    assert dinit.returncode == 0
    assert re.search(DEBUG_DOT, b"\n".join(dinit.messages("debug")))
    assert b"a/run: starting" in dinit.messages("info")
    assert dinit.messages("warning", cause=False) == [b"a/run: not JSON stdout: plain"]


@pytest.mark.parametrize("value", ["error", "ERROR"])
def test_level_error(services: Services, value: str) -> None:
    """§1: error hides warnings (the non-JSON stdout line is still written, in prefix form, §4.3),
    info and debug."""
    _level_scenario(services)
    dinit = run(services, DINIT_LOG_LEVEL=value)
    assert dinit.returncode == 0
    assert dinit.own_lines() == []
    assert sorted(dinit.service_lines("a/run")) == [b"plain", b"to-stderr"]


def test_level_error_shows_errors(services: Services) -> None:
    """§1: at level error, errors are still shown."""
    services.add("a", None)
    dinit = run(services, DINIT_LOG_LEVEL="error")
    assert dinit.returncode == 1
    assert dinit.own_lines() == [f"error: a: {services.root / 'a' / 'run'}: missing".encode()]


@pytest.mark.parametrize("value", ["none", "NONE", "None"])
def test_level_none(services: Services, value: str) -> None:
    """§1: none prints no message of dinit's own, but never drops service output (§4.3, §4.4)."""
    _level_scenario(services)
    dinit = run(services, DINIT_LOG_LEVEL=value)
    assert dinit.returncode == 0
    assert dinit.own_lines() == []
    assert sorted(dinit.service_lines("a/run")) == [b"plain", b"to-stderr"]
    assert dinit.stdout == b""


def test_level_none_silent_on_errors_and_warnings(services: Services) -> None:
    """§1: none hides the ``no services found`` warning and a broken-directory error; exit codes stay."""
    empty = run(services, DINIT_LOG_LEVEL="none")
    assert (empty.returncode, empty.stderr, empty.stdout) == (0, b"", b"")
    services.add("a", None)
    broken = run(services, DINIT_LOG_LEVEL="none")
    assert (broken.returncode, broken.stderr, broken.stdout) == (1, b"", b"")


# -- DINIT_REPARENTING_POLICY ----------------------------------------------------------------------

#: ``run`` leaves an orphan behind (``sleep 1000``, reparented to dinit once it has really become
#: ``sleep``, so it is named ``sleep`` whenever it is found) and keeps running.
ORPHAN = "sleep 1000 & while ! grep -q ^sleep /proc/$!/cmdline; do :; done"
ORPHANING = f"sh -c '{ORPHAN}'\nexec sleep 1000\n"


@pytest.mark.parametrize("value", [None, "", "terminate"], ids=["unset", "empty", "terminate"])
def test_policy_terminate(services: Services, value: str | None) -> None:
    """§1: terminate is the default (also when empty): the orphan is reported and terminated."""
    services.add("a", ORPHANING)
    dinit = start(services, DINIT_LOG_LEVEL="info",
                  **({} if value is None else {"DINIT_REPARENTING_POLICY": value}))
    [match] = dinit.wait_for(rb"warning: sleep/(\d+): terminating reparented child process with PID "
                             rb"(\d+): sleep 1000\n")
    assert match.group(1) == match.group(2)
    dinit.wait_for(b"sleep/" + match.group(1) + rb": PID \d+ finished with signal 15")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_policy_adopt(services: Services) -> None:
    """§1: adopt is accepted and adopts the orphan."""
    services.add("a", ORPHANING)
    dinit = start(services, DINIT_REPARENTING_POLICY="adopt")
    dinit.wait_for(rb"warning: sleep/(\d+): adopting reparented child process with PID \1: sleep 1000\n")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert b"terminating reparented" not in dinit.stderr


def test_policy_ignore(services: Services) -> None:
    """§1: ignore is accepted: the orphan is found (debug line) and left running, no warning."""
    services.add("a", ORPHANING)
    dinit = start(services, DINIT_REPARENTING_POLICY="ignore", DINIT_LOG_LEVEL="debug")
    [match] = dinit.wait_for(rb"debug: sleep/(\d+): ignoring reparented child process with PID \1")
    assert dinit.messages("warning") == []
    assert b"sending SIGTERM to PID " + match.group(1) not in dinit.stderr
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


# -- DINIT_KILL_TIMEOUT ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0.5", "0", "0.25"])
def test_kill_timeout_fractional(services: Services, value: str) -> None:
    """§1 + §6.2: DINIT_KILL_TIMEOUT accepts fractions and 0: an orphan ignoring SIGTERM is SIGKILLed
    after that many seconds (the default 30 s is not waited for here; see test_config_unit)."""
    services.add("a", f"sh -c 'trap \"\" TERM; {ORPHAN}'\nexec sleep 1000\n")
    dinit = start(services, DINIT_KILL_TIMEOUT=value, DINIT_LOG_LEVEL="info")
    [match] = dinit.wait_for(rb"sleep/(\d+): sending SIGKILL to PID \1\n")
    dinit.wait_for(b"sleep/" + match.group(1) + b": PID " + match.group(1) + b" finished with signal 9")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


# -- invalid values --------------------------------------------------------------------------------

BOOLEANS = "accepted are 1, true, yes, on, 0, false, no, off"
LEVELS = "accepted are none, error, warn, info, debug"
POLICIES = "accepted are terminate, adopt, ignore"
SECONDS = "accepted is a non-negative number of seconds"

INVALID = [
    ("DINIT_JSON_STDOUT", "maybe", BOOLEANS), ("DINIT_JSON_STDOUT", "2", BOOLEANS),
    ("DINIT_JSON_STDOUT", "enabled", BOOLEANS), ("DINIT_JSON_STDOUT", "tru", BOOLEANS),
    ("DINIT_LOG_LEVEL", "verbose", LEVELS), ("DINIT_LOG_LEVEL", "trace", LEVELS),
    ("DINIT_LOG_LEVEL", "warnings", LEVELS), ("DINIT_LOG_LEVEL", "5", LEVELS),
    ("DINIT_REPARENTING_POLICY", "kill", POLICIES), ("DINIT_REPARENTING_POLICY", "adopted", POLICIES),
    ("DINIT_KILL_TIMEOUT", "-1", SECONDS), ("DINIT_KILL_TIMEOUT", "abc", SECONDS),
    ("DINIT_KILL_TIMEOUT", "nan", SECONDS), ("DINIT_KILL_TIMEOUT", "inf", SECONDS),
    ("DINIT_KILL_TIMEOUT", "1s", SECONDS), ("DINIT_KILL_TIMEOUT", "1,5", SECONDS),
    ("DINIT_KILL_TIMEOUT", "-0.5", SECONDS),
    ("DINIT_TIMEOUT", "-3", SECONDS), ("DINIT_TIMEOUT", "soon", SECONDS),
    ("DINIT_EXIT_CODE", "sometimes", "accepted are propagate, summary"),
    ("DINIT_FINISH", "hook", "accepted are runit, stop"),
]


def _marker_service(services: Services, tmp_path: Path) -> Path:
    marker = tmp_path / "started"
    services.add("a", f"touch {marker}\nexec sleep 1000\n")
    services.add("b", f"touch {marker}\nexec sleep 1000\n", log=f"touch {marker}\nexec cat\n")
    return marker


@pytest.mark.parametrize(("variable", "value", "accepted"), INVALID)
def test_invalid_value(services: Services, tmp_path: Path, variable: str, value: str,
                       accepted: str) -> None:
    """§1: an invalid value prints exactly one line, the error naming the variable, the bad value and
    what is accepted; dinit exits 1 with nothing started and nothing on stdout."""
    marker = _marker_service(services, tmp_path)
    dinit = run(services, **{variable: value})
    assert dinit.returncode == 1
    expected = f"invalid {variable} '{value}': {accepted}".encode()
    assert re.fullmatch(TIME + rb" dinit: error: " + re.escape(expected) + rb"\n", dinit.stderr), dinit.stderr
    assert dinit.stdout == b""
    assert not marker.exists()


def test_invalid_value_with_info_level(services: Services, tmp_path: Path, pid1: bool) -> None:
    """§1: even with info shown, an invalid value gives one error line and nothing starts (no
    ``starting`` line, no marker)."""
    marker = _marker_service(services, tmp_path)
    dinit = run(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_REPARENTING_POLICY="Sometimes")
    assert dinit.returncode == 1
    assert dinit.messages("error") == [f"invalid DINIT_REPARENTING_POLICY 'Sometimes': {POLICIES}".encode()]
    assert not any(b"starting" in line for line in dinit.messages())
    assert dinit.messages()[-1] == b"dinit exiting with status 1"
    assert not marker.exists()


def test_invalid_value_checked_before_directory(tmp_path: Path) -> None:
    """§1: configuration is validated first: with a bad value and a missing DINIT_DIR, the one line
    is about the value."""
    dinit = run(None, DINIT_DIR=str(tmp_path / "missing"), DINIT_JSON_STDOUT="perhaps")
    assert dinit.returncode == 1
    assert dinit.own_lines() == [f"error: invalid DINIT_JSON_STDOUT 'perhaps': {BOOLEANS}".encode()]


def test_several_invalid_values_one_line(services: Services, tmp_path: Path) -> None:
    """§1: several bad variables still give exactly one error line (naming one of them)."""
    marker = _marker_service(services, tmp_path)
    dinit = run(services, DINIT_JSON_STDOUT="x", DINIT_KILL_TIMEOUT="y", DINIT_REPARENTING_POLICY="z")
    assert dinit.returncode == 1
    [line] = dinit.own_lines()
    assert re.fullmatch(rb"error: invalid DINIT_\w+ '[xyz]': accepted .*", line)
    assert not marker.exists()
