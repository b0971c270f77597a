"""The seeds' other options (§15): ``DINIT_STOP_DELAY`` (miekg ``prestoptimer``), ``DINIT_COLOR`` and
``NO_COLOR`` (dock ``--stdout-prefix :color``), ``DINIT_STOP_IGNORED`` (dock ``--thug``).

Colours are tested on a real pseudo-terminal, since ``auto`` means "when the stream is a terminal".
"""

from __future__ import annotations

import binascii
import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
from harness import TIME, Services, environment, run, start

from dinit.config import Color, ConfigError, StopIgnored, load
from dinit.output.color import PALETTE

PY = sys.executable
ESC = b"\x1b"


def waiter(name: str) -> str:
    """A sh ``run`` that says ``ready`` once its SIGTERM trap is installed, then exits on SIGTERM."""
    return (f"trap 'echo \"{name} got TERM\" >&2; exit 0' TERM\n"
            'echo "ready" >&2\nwhile :; do sleep 0.05; done\n')


def stamp(dinit_stderr: bytes, message: bytes) -> datetime:
    """The time of dinit's first own message ending in ``message``."""
    match = re.search(rb"(" + TIME + rb") dinit: \w+: " + re.escape(message) + rb"\n", dinit_stderr)
    assert match, (message, dinit_stderr)
    return datetime.fromisoformat(match.group(1).decode().replace("Z", "+00:00"))


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value", "accepted"), [
    ("DINIT_STOP_DELAY", "-1", "a non-negative number of seconds"),
    ("DINIT_STOP_DELAY", "soon", "a non-negative number of seconds"),
    ("DINIT_COLOR", "yes", "auto, always, never"),
    ("DINIT_STOP_IGNORED", "ignore", "wait, kill"),
])
def test_invalid_values_are_one_error_line_and_exit_1(services: Services, variable: str, value: str,
                                                      accepted: str) -> None:
    services.add("web", f"touch {services.root / 'ran'}")
    dinit = run(services, **{variable: value})
    assert dinit.returncode == 1
    [error] = dinit.messages("error")
    assert error.startswith(f"invalid {variable} {value!r}: accepted ".encode())
    assert error.endswith(accepted.encode())
    assert not (services.root / "ran").exists()


@pytest.mark.parametrize(("color", "no_color", "expected"), [
    ("", "", Color.AUTO), ("", "1", Color.NEVER), ("auto", "1", Color.NEVER),
    ("always", "1", Color.ALWAYS), ("never", "", Color.NEVER), ("ALWAYS", "", Color.ALWAYS)])
def test_no_color_turns_auto_into_never_and_always_wins(color: str, no_color: str,
                                                        expected: Color) -> None:
    assert load({"DINIT_COLOR": color, "NO_COLOR": no_color}).color is expected


def test_defaults() -> None:
    config = load({})
    assert (config.start_dir, config.stop_dir, config.stop_delay, config.color, config.stop_ignored) == (
        "/etc/dinit/start.d", "/etc/dinit/stop.d", 0.0, Color.AUTO, StopIgnored.WAIT)
    with pytest.raises(ConfigError):
        load({"DINIT_STOP_IGNORED": "thug"})


# -- DINIT_STOP_DELAY ------------------------------------------------------------------------------


def test_stop_delay_not_ready_at_once_then_sigterm_later(services: Services, pid1: bool) -> None:
    services.add("web", waiter("web"))
    dinit = start(services, pid1=pid1, DINIT_STOP_DELAY="1.5", DINIT_LOG_LEVEL="debug")
    dinit.wait_for(rb"web/run: ready")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"not ready, stopping services in 1.5 s \(DINIT_STOP_DELAY\)")
    # A second SIGTERM during the delay does not skip it.
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"already terminating services")
    assert b"web got TERM" not in dinit.stderr
    assert dinit.wait() == 0
    messages = dinit.messages()
    sigterm = next(m for m in messages if re.fullmatch(rb"web/run: sending SIGTERM to PID \d+", m))
    assert messages.index(b"got signal 15, already terminating services") < messages.index(sigterm)
    assert messages.index(b"container stopping") < messages.index(sigterm)
    waited = stamp(dinit.stderr, sigterm) - stamp(dinit.stderr, b"got signal 15, terminating services")
    assert waited.total_seconds() >= 1.5 - 0.002  # dinit's own clock, to the millisecond it prints
    assert dinit.service_lines("web/run")[-1] == b"web got TERM"


def test_sigkill_from_outside_is_the_only_way_around_the_delay(services: Services) -> None:
    services.add("web", waiter("web"))
    dinit = start(services, DINIT_STOP_DELAY="1000", DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"web/run: ready")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"not ready, stopping services in 1000 s")
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        dinit.signal(signum)
    dinit.wait_for(rb"got signal 3, already terminating services")
    assert dinit.popen.poll() is None
    dinit.signal(signal.SIGKILL)
    dinit.wait()
    assert b"web got TERM" not in dinit.stderr


def test_no_delay_when_every_service_is_already_gone(services: Services) -> None:
    """The delay keeps serving containers up; one whose services all exited has nothing to serve."""
    services.add("web", "exit 0")
    dinit = run(services, DINIT_STOP_DELAY="1000")
    assert dinit.returncode == 0


# -- DINIT_COLOR / NO_COLOR ------------------------------------------------------------------------


def color_of(name: str) -> bytes:
    """The escape code the README promises for ``name``: its CRC-32 picks from the palette."""
    return b"\x1b[%dm" % PALETTE[binascii.crc32(name.encode()) % len(PALETTE)]


def run_on_pty(services: Services, **variables: str) -> tuple[int, bytes, bytes]:
    """Run dinit as PID 1 with its stderr on a pseudo-terminal and its stdout on a pipe; returns
    (exit code, stdout, what the terminal received)."""
    master, slave = pty.openpty()
    # Raw mode: the terminal passes bytes through unchanged (no \n -> \r\n).
    import tty

    tty.setraw(slave)
    command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", PY, "-m", "dinit"]
    popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                             env=environment(services, **variables), start_new_session=True)
    os.close(slave)
    received = bytearray()

    def collect() -> None:
        with contextlib.suppress(OSError):  # EIO once every writer of the terminal is gone
            while chunk := os.read(master, 65536):
                received.extend(chunk)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        stdout, _ = popen.communicate(timeout=20)
    finally:
        popen.kill()
    reader.join(20)
    os.close(master)
    return popen.returncode, stdout, bytes(received)


def test_auto_colours_prefix_labels_on_a_terminal_only(services: Services) -> None:
    services.add("web", "echo to-stdout; echo to-stderr >&2")
    services.add("db", "echo db-stderr >&2; exec 3>&1", log="cat >&2")
    code, stdout, terminal = run_on_pty(services, DINIT_JSON_STDOUT="off")
    assert code == 0, terminal
    # stdout is a pipe: plain; stderr is the terminal: coloured labels, plain dinit messages.
    assert ESC not in stdout
    assert re.search(TIME + rb" web/run: to-stdout\n", stdout)
    assert re.search(TIME + rb" " + re.escape(color_of("web") + b"web/run\x1b[0m") + rb": to-stderr\n",
                     terminal), terminal
    assert re.search(TIME + rb" " + re.escape(color_of("db") + b"db/run\x1b[0m") + rb": db-stderr\n",
                     terminal), terminal
    for line in terminal.splitlines():
        if b" dinit: " in line:
            assert ESC not in line


def test_no_color_and_never_keep_a_terminal_plain(services: Services) -> None:
    services.add("web", "echo to-stderr >&2")
    for variables in ({"NO_COLOR": "1"}, {"DINIT_COLOR": "never"}):
        code, _, terminal = run_on_pty(services, **variables)
        assert code == 0
        assert b"web/run: to-stderr" in terminal and ESC not in terminal


def test_auto_in_pipes_has_no_escape_byte(services: Services) -> None:
    services.add("web", 'echo \'{"a":1}\'; echo plain; echo err >&2', log="cat")
    for json in ("on", "off"):
        dinit = run(services, DINIT_JSON_STDOUT=json, DINIT_LOG_LEVEL="debug")
        assert dinit.returncode == 0
        assert ESC not in dinit.stdout and ESC not in dinit.stderr
        assert b"err" in dinit.stderr


def test_always_colours_pipes_too_but_never_json(services: Services) -> None:
    """DINIT_COLOR=always wins over NO_COLOR; JSON stays JSON, without an escape byte."""
    services.add("web", 'echo \'{"a":1}\'; echo plain; echo err >&2')
    dinit = run(services, DINIT_COLOR="always", NO_COLOR="1")
    assert dinit.returncode == 0
    assert ESC not in dinit.stdout
    [line] = dinit.json_lines()
    assert (line["a"], line["service"], line["stage"]) == (1, "web", "run")
    assert re.search(TIME + rb" " + re.escape(color_of("web") + b"web/run\x1b[0m: err\n"), dinit.stderr)
    # a non-JSON stdout line is dinit's warning, which is not coloured
    assert b"dinit: warning: web/run: not JSON stdout: plain" in dinit.stderr
    prefix = run(services, DINIT_COLOR="always", DINIT_JSON_STDOUT="off")
    assert re.search(TIME + rb" " + re.escape(color_of("web") + b"web/run\x1b[0m: plain\n"), prefix.stdout)


def test_a_colour_is_fixed_per_service_name_for_every_stage(services: Services) -> None:
    names = ["alpha", "beta", "gamma", "delta", "api", "db"]
    for name in names:
        services.add(name, f"echo {name} >&2", log="cat; echo logger >&2")
    dinit = run(services, DINIT_COLOR="always")
    assert dinit.returncode == 0
    for name in names:
        for stage in ("run", "log"):
            label = re.escape(f"{name}/{stage}".encode())
            found = re.findall(TIME + rb" (\x1b\[\d+m)" + label + rb"\x1b\[0m: ", dinit.stderr)
            assert found and set(found) == {color_of(name)}, (name, stage)
    assert len({color_of(name) for name in names}) > 1


# -- DINIT_STOP_IGNORED ----------------------------------------------------------------------------

IGNORES = "trap '' TERM\necho ready >&2\nwhile :; do sleep 0.05; done\n"
BLOCKS = (f"exec {PY} -c 'import signal, sys, time\n"
          "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
          "print(\"ready\", file=sys.stderr, flush=True)\n"
          "time.sleep(1000)'\n")


@pytest.mark.parametrize(("body", "how"), [(IGNORES, "ignores"), (BLOCKS, "blocks")],
                         ids=["ignores", "blocks"])
def test_wait_warns_once_that_run_ignores_or_blocks_sigterm(services: Services, pid1: bool,
                                                            body: str, how: str) -> None:
    services.add("stubborn", body)
    services.add("web", waiter("web"))
    dinit = start(services, pid1=pid1, DINIT_TIMEOUT="1")
    dinit.wait_for(rb"stubborn/run: ready")
    dinit.wait_for(rb"web/run: ready")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0  # the first reason, SIGTERM; DINIT_TIMEOUT ended it
    warnings = [m for m in dinit.messages("warning") if b"SIGTERM" in m]
    assert len(warnings) == 1 and re.fullmatch(rf"stubborn/run: PID \d+ {how} SIGTERM".encode(), warnings[0])
    assert any(b"stubborn/run: still running 1 s after being stopped" in m for m in dinit.messages("warning"))


@pytest.mark.parametrize("reason", ["signal", "crash"])
def test_kill_sigkills_the_session_at_once_and_keeps_the_first_reason(
        services: Services, tmp_path: Path, pid1: bool, reason: str) -> None:
    flag = tmp_path / "flag"
    services.add("stubborn", f"(trap '' TERM; sleep 1000) &\necho $! > {tmp_path / 'child'}\n" + IGNORES)
    services.add("web", waiter("web") if reason == "signal"
                 else f"while [ ! -e {flag} ]; do sleep 0.01; done; exit 4")
    dinit = start(services, pid1=pid1, DINIT_STOP_IGNORED="kill", DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"stubborn/run: ready")
    if reason == "signal":
        dinit.wait_for(rb"web/run: ready")
        dinit.signal(signal.SIGTERM)
    else:
        flag.touch()
    assert dinit.wait() == (0 if reason == "signal" else 3)
    messages = dinit.messages()
    [warning] = [m for m in dinit.messages("warning") if b"SIGTERM" in m]
    pid = re.fullmatch(rb"stubborn/run: PID (\d+) ignores SIGTERM", warning).group(1)
    child = (tmp_path / "child").read_text().strip().encode()
    [killed] = [m for m in messages if b"DINIT_STOP_IGNORED=kill" in m]
    match = re.fullmatch(rb"stubborn/run: DINIT_STOP_IGNORED=kill: sent SIGKILL to session (\d+): PIDs (.*)",
                         killed)
    assert match and match.group(1) == pid
    assert {pid, child} <= set(match.group(2).split())  # and the loop's current sleep
    assert re.search(rb"stubborn/run: PID \d+ finished with signal 9", b"\n".join(messages))
    assert not [m for m in messages if b"stubborn/run" in m and b"stopping the container" in m]


def test_a_shell_waiting_for_its_child_is_not_said_to_block_sigterm(services: Services) -> None:
    """dash blocks every signal for an instant while it waits for a foreground child; that SIGTERM
    is taken at once, so it is no "blocks SIGTERM" (without the pending check this warned about
    about half of such services)."""
    for index in range(8):
        services.add(f"s{index}", "trap 'exit 0' TERM\necho ready >&2\nwhile :; do sleep 0.001; done\n")
    dinit = start(services, DINIT_STOP_IGNORED="kill")
    dinit.wait_for(rb"s\d/run: ready", count=8)
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert [m for m in dinit.messages("warning") if b"SIGTERM" in m] == []
    assert b"DINIT_STOP_IGNORED=kill" not in dinit.stderr
