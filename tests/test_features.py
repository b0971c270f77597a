"""The features beyond tozd dinit (§9): ``DINIT_TIMEOUT``, ``DINIT_EXIT_CODE=propagate``, command mode
(``dinit [--] CMD [ARG...]``) and per-service environment directories (``S/env/``).

Everything runs dinit as PID 1 of a fresh PID namespace unless a test says otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from datetime import datetime
from pathlib import Path

import pytest
from harness import TIME, Dinit, Services, private_etc, run, start, write_program

from dinit import __version__

PY = sys.executable

# -- helpers ---------------------------------------------------------------------------------------


def _timestamp(stderr: bytes, message: bytes) -> datetime:
    """When dinit logged the first own message matching ``message`` (a regex)."""
    match = re.search(rb"(" + TIME + rb") dinit: \w+: " + message, stderr)
    assert match, f"{message!r} not in:\n{stderr.decode(errors='replace')}"
    return datetime.strptime(match.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


def _kill_warning(dinit: Dinit, name: str) -> tuple[int, list[int]]:
    """The session and PIDs of the DINIT_TIMEOUT warning for ``name``."""
    [match] = dinit.wait_for(rb"warning: " + re.escape(name.encode()) +
                             rb"/run: still running [\d.]+ s after being stopped, sent SIGKILL to "
                             rb"session (\d+): PIDs ([\d ]+)\n")
    return int(match.group(1)), [int(pid) for pid in match.group(2).split()]


#: A Python ``run`` ignoring SIGTERM, with two children that ignore it too (inherited SIG_IGN): one
#: in its process group, one in a process group of its own (same session). It prints their PIDs.
STUBBORN = f"""#!{PY}
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for own_group in (False, True):
    pid = os.fork()
    if pid == 0:
        if own_group:
            os.setpgid(0, 0)
        while True:
            signal.pause()
    print(f"child {{pid}}", file=sys.stderr, flush=True)
print(f"ready {{os.getpid()}}", file=sys.stderr, flush=True)
while True:
    signal.pause()
"""


def _stubborn_pids(dinit: Dinit, name: str) -> tuple[int, list[int]]:
    """Wait until the STUBBORN service ``name`` is ready; returns its PID and its children's."""
    dinit.wait_for(rb" " + re.escape(name.encode()) + rb"/run: ready \d+")
    [ready] = dinit.service_lines(f"{name}/run")[-1:]
    children = [int(line.split()[1]) for line in dinit.service_lines(f"{name}/run")
                if line.startswith(b"child ")]
    assert len(children) == 2
    return int(ready.split()[1]), children


# -- DINIT_TIMEOUT ---------------------------------------------------------------------------------


def test_timeout_kills_whole_session_after_sigterm(services: Services, pid1: bool) -> None:
    """§9 DINIT_TIMEOUT: a run and its children (its process group and another group of its session)
    that ignore SIGTERM are all SIGKILLed once the timeout passes after the SIGTERM; the kill is
    logged with every PID, dinit's own SIGKILL is not a failure, and the exit code stays the first
    reason's (0 for SIGTERM to dinit). DINIT_KILL_TIMEOUT is left at 30 s, so dinit exiting at all
    means the reparented children were killed by DINIT_TIMEOUT."""
    services.add("stubborn", STUBBORN)
    dinit = start(services, pid1=pid1, DINIT_TIMEOUT="0.5", DINIT_LOG_LEVEL="info")
    run_pid, children = _stubborn_pids(dinit, "stubborn")
    dinit.signal(signal.SIGTERM)
    session, killed = _kill_warning(dinit, "stubborn")
    assert dinit.wait(10) == 0
    assert session == run_pid
    assert set(killed) >= {run_pid, *children}
    assert f"stubborn/run: PID {run_pid} finished with signal 9".encode() in dinit.messages("info")
    assert dinit.messages()[-1] == b"dinit exiting with status 0"
    sent = _timestamp(dinit.stderr, rb"stubborn/run: sending SIGTERM")
    warned = _timestamp(dinit.stderr, rb"stubborn/run: still running")
    assert (warned - sent).total_seconds() >= 0.5 - 0.002, "SIGKILL came before DINIT_TIMEOUT"
    if not pid1:
        for pid in (run_pid, *children):
            assert not Path(f"/proc/{pid}").exists(), f"PID {pid} survived DINIT_TIMEOUT"


def test_timeout_after_stop_hook(services: Services) -> None:
    """§9 DINIT_TIMEOUT also counts from the stop hook (which replaces SIGTERM, §5.2): a run the hook
    does not stop is SIGKILLed with its session, and the exit code is the first reason's (3: another
    service exited 4; with the SIGKILL caused by dinit not changing it)."""
    ready = services.root / "ready"
    services.add("a", f"while [ ! -e {ready} ]; do sleep 0.01; done\nexit 4\n")
    services.add("b", f"trap '' TERM\nsleep 1000 &\necho \"child $!\" >&2\ntouch {ready}\n"
                      "while :; do sleep 0.05; done\n",
                 finish='echo "hook for $DINIT_PID" >&2\n')
    dinit = start(services, DINIT_TIMEOUT="0.3", DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    session, killed = _kill_warning(dinit, "b")
    assert dinit.wait(10) == 3
    [child] = [int(line.split()[1]) for line in dinit.service_lines("b/run") if line.startswith(b"child")]
    assert dinit.service_lines("b/finish") == [f"hook for {session}".encode()]
    assert {session, child} <= set(killed)
    assert f"b/run: PID {session} finished with signal 9".encode() in dinit.messages("info")
    assert b"b/run: sending SIGTERM" not in dinit.stderr
    hooked = _timestamp(dinit.stderr, rb"b/finish: running with PID")
    warned = _timestamp(dinit.stderr, rb"b/run: still running")
    assert (warned - hooked).total_seconds() >= 0.3 - 0.002


def test_timeout_kills_a_hanging_stop_hook_too(services: Services) -> None:
    """§9: the deadline holds when the stop hook itself hangs: at the timeout the hook's session is
    SIGKILLed as well as the service's, and dinit exits with the first reason's code."""
    services.add("h", "trap '' TERM\necho ready >&2\nwhile :; do sleep 0.05; done\n",
                 finish="trap '' TERM\necho hanging >&2\nwhile :; do sleep 0.05; done\n")
    dinit = start(services, DINIT_TIMEOUT="0.3", DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    dinit.wait_for(rb"h/run: ready")
    dinit.signal(signal.SIGTERM)
    [match] = dinit.wait_for(rb"warning: h/finish: still running [\d.]+ s after being stopped, sent SIGKILL "
                             rb"to session (\d+): PIDs ([\d ]+)\n")
    _kill_warning(dinit, "h")
    assert dinit.wait(10) == 0
    hook = int(match.group(1))
    assert hook in [int(pid) for pid in match.group(2).split()]
    assert f"h/finish: PID {hook} finished with signal 9".encode() in dinit.messages("info")


#: A ``run`` ignoring SIGTERM that keeps forking children into process groups of their own (same
#: session) as fast as it can; the children ignore SIGTERM and wait forever.
FORKER = f"""#!{PY}
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", file=sys.stderr, flush=True)
while True:
    if os.fork() == 0:
        os.setpgid(0, 0)
        while True:
            signal.pause()
    signal.sigtimedwait([], 0.002)
"""


def test_timeout_kills_a_session_that_keeps_forking(services: Services) -> None:
    """§9: a session whose processes keep forking while they are being killed leaves no survivor
    (children forked between listing the session and killing it are killed in a next round). A
    survivor would be a reparented process ignoring SIGTERM, kept until DINIT_KILL_TIMEOUT (30 s),
    so dinit exiting well before that proves none was left."""
    services.add("forker", FORKER)
    dinit = start(services, DINIT_TIMEOUT="0.5", DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"forker/run: ready")
    dinit.signal(signal.SIGTERM)
    _, killed = _kill_warning(dinit, "forker")
    assert dinit.wait(15) == 0
    assert len(killed) > 50


def test_timeout_with_propagate_keeps_first_reason(services: Services) -> None:
    """§9: with DINIT_EXIT_CODE=propagate, a teardown caused by a run exiting 5 exits 5, not the
    137 of the service dinit SIGKILLed after DINIT_TIMEOUT."""
    ready = services.root / "ready"
    services.add("a", f"while [ ! -e {ready} ]; do sleep 0.01; done\nexit 5\n")
    services.add("b", f"trap '' TERM\ntouch {ready}\nwhile :; do sleep 0.05; done\n")
    dinit = run(services, DINIT_TIMEOUT="0.2", DINIT_EXIT_CODE="propagate", timeout=10)
    assert dinit.returncode == 5
    _kill_warning(dinit, "b")


def test_timeout_kills_session_left_behind_by_exited_run(services: Services) -> None:
    """§9: the timeout is about the service's whole session: a run that exits on SIGTERM but leaves a
    child ignoring SIGTERM behind gets that child SIGKILLed at the timeout (not after the 30 s
    DINIT_KILL_TIMEOUT of reparented processes)."""
    services.add("leaver", "sh -c 'trap \"\" TERM; while :; do sleep 0.05; done' &\n"
                           "echo \"child $!\" >&2\ntrap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    dinit = start(services, DINIT_TIMEOUT="0.3", DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"leaver/run: child \d+")
    child = int(dinit.service_lines("leaver/run")[0].split()[1])
    dinit.signal(signal.SIGTERM)
    _, killed = _kill_warning(dinit, "leaver")
    assert dinit.wait(10) == 0
    assert child in killed


def test_timeout_unset_never_sigkills(services: Services) -> None:
    """§9/§5.2: without DINIT_TIMEOUT a service ignoring SIGTERM is never SIGKILLed by dinit (not
    even after DINIT_KILL_TIMEOUT, which is for reparented processes and loggers): it keeps running
    until the supervisor kills the container."""
    services.add("stubborn", "trap '' TERM\nwhile :; do echo beat >&2; sleep 0.1; done\n")
    dinit = start(services, DINIT_KILL_TIMEOUT="0.1", DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"stubborn/run: beat")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"stubborn/run: sending SIGTERM")
    beats = len(dinit.service_lines("stubborn/run"))
    dinit.wait_for(rb"stubborn/run: beat", count=beats + 15)
    assert dinit.popen.poll() is None
    assert b"SIGKILL" not in dinit.stderr
    assert b"finished with" not in dinit.stderr
    dinit.kill()


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_timeout_invalid(services: Services, value: str) -> None:
    """§1/§9: an invalid DINIT_TIMEOUT is one error line naming it, exit 1, nothing started."""
    services.add("a", "echo started >&2\n")
    dinit = run(services, DINIT_TIMEOUT=value, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 1
    assert dinit.messages("error") == [
        f"invalid DINIT_TIMEOUT '{value}': accepted is a non-negative number of seconds".encode()]
    assert b"started" not in dinit.stderr


# -- DINIT_EXIT_CODE -------------------------------------------------------------------------------

#: (run body, propagated code, §5.3 summary code)
EXITS = [
    ("exit 0", 0, 0),
    ("exit 1", 1, 3),
    ("exit 7", 7, 3),
    ("exit 127", 127, 3),
    ("exit 255", 255, 3),
    ("kill -KILL $$", 128 + 9, 3),
    ("kill -SEGV $$", 128 + 11, 3),
]
EXIT_IDS = ["0", "1", "7", "127", "255", "SIGKILL", "SIGSEGV"]


@pytest.mark.parametrize("mode", ["propagate", "summary", ""])
@pytest.mark.parametrize(("body", "propagated", "summary"), EXITS, ids=EXIT_IDS)
def test_exit_code_modes(services: Services, mode: str, body: str, propagated: int,
                         summary: int) -> None:
    """§9 DINIT_EXIT_CODE=propagate: dinit exits with the status of the run that caused teardown
    (128+N when killed by signal N); ``summary`` and the default (empty) keep §5.3's 0/3."""
    services.add("a", f"ulimit -c 0\n{body}\n")
    dinit = run(services, DINIT_EXIT_CODE=mode, DINIT_LOG_LEVEL="info")
    expected = propagated if mode == "propagate" else summary
    assert dinit.returncode == expected
    assert dinit.messages()[-1] == f"dinit exiting with status {expected}".encode()


@pytest.mark.parametrize("mode", ["propagate", "PROPAGATE", "summary"])
def test_exit_code_signal_to_dinit_is_zero(services: Services, mode: str) -> None:
    """§9: a teardown that came from SIGTERM to dinit exits 0 under propagate too, whatever the
    services then exit with (here 9 from their TERM trap)."""
    services.add("a", "trap 'exit 9' TERM\necho ready >&2\nwhile :; do sleep 0.05; done\n")
    dinit = start(services, DINIT_EXIT_CODE=mode)
    dinit.wait_for(rb"a/run: ready")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_exit_code_propagate_first_reason_wins(services: Services) -> None:
    """§9/§5.3: propagation uses the program whose exit caused teardown, not later exits."""
    ready = services.root / "ready"
    services.add("a", f"while [ ! -e {ready} ]; do sleep 0.01; done\nexit 6\n")
    services.add("b", f"trap 'exit 9' TERM\ntouch {ready}\nwhile :; do sleep 0.05; done\n")
    dinit = run(services, DINIT_EXIT_CODE="propagate", DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 6
    assert b"b/run: PID" in dinit.stderr and b"finished with status 9" in dinit.stderr


def test_exit_code_propagate_logger(services: Services) -> None:
    """§9 with §4.5: a logger exiting 4 while its service runs caused the teardown: dinit exits 4."""
    services.add("a", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n", log="exit 4\n")
    dinit = run(services, DINIT_EXIT_CODE="propagate")
    assert dinit.returncode == 4


def test_exit_code_propagate_config_error_is_one(services: Services) -> None:
    """§9: under propagate a broken service directory is still exit 1, with nothing started."""
    services.add("a", "echo started >&2\n")
    (services.add("b", "exit 0\n") / "run").chmod(0o644)
    dinit = run(services, DINIT_EXIT_CODE="propagate", DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 1
    assert dinit.messages("error") == [f"b: {services.root}/b/run: not executable".encode()]
    assert b"starting" not in dinit.stderr


@pytest.mark.parametrize("mode", ["propagate", "summary"])
def test_exit_code_exec_failure_of_directory_service_is_one(services: Services, mode: str) -> None:
    """§3/§5.3/§9: a directory service whose ``run`` cannot be executed (bad interpreter line) is a
    start error, exit 1 under propagate too; only the command of command mode gets a shell's
    127/126."""
    services.add("a", "#!/nonexistent/interpreter\n")
    dinit = run(services, DINIT_EXIT_CODE=mode)
    assert dinit.messages("error") == [
        f"a/run: cannot run {services.root}/a/run: interpreter /nonexistent/interpreter not found".encode()]
    assert dinit.returncode == 1


def test_exit_code_invalid(services: Services) -> None:
    """§1/§9: an unknown DINIT_EXIT_CODE is one error line naming it and what is accepted, exit 1."""
    services.add("a", "echo started >&2\n")
    dinit = run(services, DINIT_EXIT_CODE="tini")
    assert dinit.returncode == 1
    assert dinit.messages("error") == [b"invalid DINIT_EXIT_CODE 'tini': accepted are propagate, summary"]
    assert b"started" not in dinit.stderr


# -- command mode ----------------------------------------------------------------------------------


def _nowhere(tmp_path: Path) -> str:
    return str(tmp_path / "no-such-dir")


@pytest.mark.parametrize("args", [["--", "sh", "-c", "exit 7"], ["sh", "-c", "exit 7"]],
                         ids=["dashdash", "bare"])
def test_command_propagates_without_service_dir(tmp_path: Path, args: list[str]) -> None:
    """§9: ``dinit [--] CMD`` with a missing DINIT_DIR runs CMD as ``main`` and, like tini, exits with
    its status."""
    dinit = run(None, *args, DINIT_DIR=_nowhere(tmp_path), DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 7
    assert b"main/run: starting" in dinit.messages("info")
    assert dinit.messages("error") == []


def test_command_with_default_dir_missing(tmp_path: Path) -> None:
    """§9: with no DINIT_DIR at all, the default /etc/service being absent is fine with a command."""
    dinit = run(None, "sh", "-c", "exit 3", wrapper=private_etc(tmp_path, None))
    assert dinit.returncode == 3
    assert dinit.messages("error") == []


@pytest.mark.parametrize(("body", "code"), [("exit 0", 0), ("exit 1", 1), ("exit 7", 7), ("exit 115", 115),
                                            ("exit 127", 127), ("exit 255", 255),
                                            ("kill -KILL $$", 137), ("ulimit -c 0; kill -SEGV $$", 139)])
def test_command_propagation_table(tmp_path: Path, body: str, code: int) -> None:
    """§9: propagation is the default in command mode without a service directory. 115 is no
    "disabled itself" for the command: like tini, any exit of it ends dinit with its status."""
    assert run(None, "sh", "-c", body, DINIT_DIR=_nowhere(tmp_path)).returncode == code


def test_command_exit_115_tears_down_alongside_services(services: Services) -> None:
    """§5.1's 115 is for directory services; the command's 115 tears down (summary code 3)."""
    services.add("a", "exec sleep 60\n")
    dinit = run(services, "sh", "-c", "exit 115", DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 3
    assert b"disabled itself" not in dinit.stderr
    assert b"main/run: PID" in dinit.stderr and b"finished with status 115" in dinit.stderr


def test_command_summary_mode_overrides(tmp_path: Path) -> None:
    """§9: DINIT_EXIT_CODE=summary turns the command-mode default propagation off (7 → 3)."""
    dinit = run(None, "sh", "-c", "exit 7", DINIT_DIR=_nowhere(tmp_path), DINIT_EXIT_CODE="summary")
    assert dinit.returncode == 3


def test_command_with_empty_service_dir_propagates(services: Services) -> None:
    """§9: a service directory with no services is like none: CMD's status is propagated."""
    dinit = run(services, "sh", "-c", "exit 7")
    assert dinit.returncode == 7
    assert b"no services found" not in dinit.stderr


def test_command_output_labelled_main(tmp_path: Path) -> None:
    """§9 with §4: the command's output is labelled ``main/run``: a non-JSON stdout line is a warning
    in JSON mode, a prefix-form stdout line with DINIT_JSON_STDOUT off, and JSON is decorated."""
    nowhere = _nowhere(tmp_path)
    dinit = run(None, "echo", "hello", DINIT_DIR=nowhere)
    assert dinit.returncode == 0
    assert dinit.messages("warning") == [b"main/run: not JSON stdout: hello"]
    assert dinit.stdout == b""

    dinit = run(None, "echo", "hello", DINIT_DIR=nowhere, DINIT_JSON_STDOUT="0")
    assert re.fullmatch(TIME + rb" main/run: hello\n", dinit.stdout)

    dinit = run(None, "echo", '{"a":1}', DINIT_DIR=nowhere)
    [line] = dinit.json_lines()
    assert line["a"] == 1 and line["service"] == "main" and line["stage"] == "run"


def test_command_argv_cwd_path_and_env(tmp_path: Path) -> None:
    """§9: CMD is looked up in PATH, gets its arguments exactly as given (also ones that look like
    dinit options, empty ones and globs), runs in dinit's working directory and gets dinit's
    environment."""
    bin_dir = tmp_path / "bin"
    write_program(bin_dir / "show", f"""#!{PY}
import json, os, sys
print(json.dumps({{"argv": sys.argv, "cwd": os.getcwd(), "foo": os.environ.get("FOO")}}))
""")
    work = tmp_path / "work"
    work.mkdir()
    args = ["--help", "-V", "a b", "", "*", "--", "$HOME"]
    dinit = run(None, "show", *args, cwd=str(work), DINIT_DIR=_nowhere(tmp_path),
                PATH=f"{bin_dir}:{os.environ['PATH']}", FOO="bar")
    assert dinit.returncode == 0, dinit.stderr
    [line] = dinit.json_lines()
    assert line["argv"][1:] == args
    assert line["argv"][0] in ("show", str(bin_dir / "show"))
    assert line["cwd"] == str(work)
    assert line["foo"] == "bar"


def test_command_after_dashdash_may_look_like_option(tmp_path: Path) -> None:
    """§9: after ``--`` everything is the command, even a name starting with ``-``."""
    bin_dir = tmp_path / "bin"
    write_program(bin_dir / "--weird-cmd-name", 'echo "weird $*" >&2\nexit 5\n')
    dinit = run(None, "--", "--weird-cmd-name", "x", DINIT_DIR=_nowhere(tmp_path),
                PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert dinit.returncode == 5
    assert dinit.service_lines("main/run") == [b"weird x"]


def test_command_alongside_service_dir(services: Services) -> None:
    """§9: with a service directory the command is one more service: all start in name order
    (``main`` between ``a`` and ``z``) and the exit code is §5.3's summary (7 → 3)."""
    ready = services.root / "ready"
    for name in ("a", "z"):
        services.add(name, f"echo {name} >&2\ntrap 'exit 0' TERM\ntouch {ready}.{name}\n"
                           "while :; do sleep 0.05; done\n")
    dinit = run(services, "sh", "-c", f"while [ ! -e {ready}.a ] || [ ! -e {ready}.z ]; do sleep 0.01; "
                "done; echo main >&2; exit 7", DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 3
    assert dinit.service_lines("a/run") == [b"a"] and dinit.service_lines("z/run") == [b"z"]
    starting = [m for m in dinit.messages("info") if m.endswith(b"/run: starting")]
    assert starting == [b"a/run: starting", b"main/run: starting", b"z/run: starting"]
    assert dinit.service_lines("main/run") == [b"main"]


def test_command_alongside_service_dir_propagate(services: Services) -> None:
    """§9: DINIT_EXIT_CODE=propagate with a service directory and a command: CMD's 7 is propagated."""
    services.add("a", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    dinit = run(services, "sh", "-c", "exit 7", DINIT_EXIT_CODE="propagate")
    assert dinit.returncode == 7


def test_command_conflicts_with_main_service(services: Services) -> None:
    """§9: a directory service named ``main`` and a command cannot both be ``main``: exit 1, nothing
    started, the error names the service."""
    services.add("a", "echo started >&2\n")
    services.add("main", "echo started >&2\n")
    dinit = run(services, "sh", "-c", "echo cmd >&2", DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 1
    [error] = dinit.messages("error")
    assert error.startswith(f"main: {services.root}/main".encode())
    assert b"starting" not in dinit.stderr and b"started" not in dinit.stderr


def test_command_signal_to_dinit_gives_the_commands_status(tmp_path: Path) -> None:
    """§9, §17: in command mode without services, a teardown caused by SIGTERM to dinit exits with
    the command's own status (here 9), as under tini."""
    dinit = start(None, "sh", "-c", "trap 'exit 9' TERM; echo ready >&2; while :; do sleep 0.05; done",
                  DINIT_DIR=_nowhere(tmp_path), DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"main/run: ready")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 9
    assert b"finished with status 9" in dinit.stderr


def test_command_not_found(tmp_path: Path) -> None:
    """§9: a command that cannot be found is an error line; propagated as 127 like a shell."""
    dinit = run(None, "no-such-command-xyz", DINIT_DIR=_nowhere(tmp_path))
    assert dinit.returncode == 127
    [error] = dinit.messages("error")
    assert error.startswith(b"main/run: cannot run no-such-command-xyz: ")


def test_command_not_executable(tmp_path: Path) -> None:
    """§9: a command file that is not executable is propagated as 126 like a shell."""
    program = tmp_path / "prog"
    program.write_text("#!/bin/sh\nexit 0\n")
    dinit = run(None, str(program), DINIT_DIR=_nowhere(tmp_path))
    assert dinit.returncode == 126
    [error] = dinit.messages("error")
    assert error.startswith(f"main/run: cannot run {program}: ".encode())


def test_command_not_found_with_services_is_one(services: Services) -> None:
    """§9/§5.3: with a service directory (summary mode) an unrunnable command is exit 1."""
    services.add("a", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    dinit = run(services, "no-such-command-xyz")
    assert dinit.returncode == 1
    assert dinit.messages("error")[0].startswith(b"main/run: cannot run no-such-command-xyz")


@pytest.mark.parametrize("option", ["--help", "-h"])
def test_help(tmp_path: Path, option: str) -> None:
    """§9: ``dinit --help``/``-h`` print the usage on stdout and exit 0 without starting anything."""
    dinit = run(None, option, "echo", "x", DINIT_DIR=_nowhere(tmp_path), DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 0
    assert dinit.stdout.startswith(b"usage: dinit")
    assert b"--version" in dinit.stdout and b"--" in dinit.stdout
    assert b"starting" not in dinit.stderr


@pytest.mark.parametrize("option", ["--version", "-V"])
def test_version(tmp_path: Path, option: str) -> None:
    """§9: ``dinit --version``/``-V`` print the version on stdout and exit 0."""
    dinit = run(None, option, DINIT_DIR=_nowhere(tmp_path))
    assert dinit.returncode == 0
    assert dinit.stdout == f"dinit {__version__}\n".encode()


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_despite_bad_configuration(tmp_path: Path, option: str) -> None:
    """§9: ``--help``/``--version`` answer even when a ``DINIT_*`` variable is invalid (that error
    is for running services, not for asking how to)."""
    dinit = run(None, option, DINIT_DIR=_nowhere(tmp_path), DINIT_TIMEOUT="abc")
    assert dinit.returncode == 0
    assert dinit.stdout.startswith(b"usage: dinit" if option == "--help" else b"dinit ")
    assert dinit.stderr == b""


@pytest.mark.parametrize("args", [["--frobnicate"], ["--frobnicate", "--", "echo", "x"], ["-x", "echo"]])
def test_unknown_option(services: Services, args: list[str]) -> None:
    """§9: an unknown option before the command is one error line naming it, exit 1, nothing run."""
    services.add("a", "echo started >&2\n")
    dinit = run(services, *args, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 1
    [error] = dinit.messages("error")
    assert error.startswith(f"unknown option '{args[0]}'".encode())
    assert b"starting" not in dinit.stderr and b"started" not in dinit.stderr


def test_no_command_and_missing_dir(tmp_path: Path) -> None:
    """§2/§9: without a command a missing DINIT_DIR stays an error (exit 1)."""
    nowhere = _nowhere(tmp_path)
    for args in ([], ["--"]):
        dinit = run(None, *args, DINIT_DIR=nowhere)
        assert dinit.returncode == 1
        assert dinit.messages("error") == [f"DINIT_DIR {nowhere}: no such directory".encode()]


# -- S/env/ ----------------------------------------------------------------------------------------

#: A ``run`` printing the named variables (as hex bytes, or null) as one JSON line, then exiting.
SHOW_ENV = f"""#!{PY}
import json, os, sys
names = sys.argv[1:] or os.environ["SHOW"].split(",")
print(json.dumps({{n: (os.environb[n.encode()].hex() if n.encode() in os.environb else None)
                  for n in names}}), flush=True)
"""


def _shown(dinit: Dinit, service: str = "s") -> dict[str, bytes | None]:
    [line] = [line for line in dinit.json_lines() if line["service"] == service]
    return {key: (bytes.fromhex(value) if isinstance(value, str) else value)
            for key, value in line.items() if key not in ("service", "stage", "logged")}


ENV_CASES: dict[str, tuple[bytes, bytes | None]] = {
    # variable: (file content, value the service sees; None = unset)
    "FIRST": (b"first\nsecond line\n", b"first"),
    "NONEWLINE": (b"plain", b"plain"),
    "TRAIL": (b"value \t \t\nmore", b"value"),
    "LEAD": (b" \t lead", b" \t lead"),
    "INNER": (b"a  b\tc", b"a  b\tc"),
    "NUL": (b"a\0b\0\n", b"a\nb\n"),
    "NULTRAIL": (b"x \0 \n", b"x \n"),
    "CR": (b"dos\r\n", b"dos\r"),
    "NEWLINEONLY": (b"\n", b""),
    "BLANKS": (b" \t \n", b""),
    "EQUALS": (b"a=b=c", b"a=b=c"),
    "BINARY": (b"caf\xe9\xff", b"caf\xe9\xff"),
    "OVERRIDE": (b"new", b"new"),
    "UNSETME": (b"", None),
    "UNSETMISSING": (b"", None),
}


def test_env_dir_semantics(services: Services) -> None:
    """§9 S/env/ with envdir semantics: first line only, trailing spaces/tabs removed (leading and
    inner kept, CR kept), NUL → newline, a lone newline sets "", an empty file unsets a variable
    dinit has, other variables of dinit's environment pass unchanged, dot files are ignored."""
    directory = services.add("s", SHOW_ENV, env={name: content for name, (content, _) in ENV_CASES.items()})
    (directory / "env" / ".HIDDEN").write_bytes(b"hidden")
    names = [*ENV_CASES, "HIDDEN", ".HIDDEN", "KEEP"]
    dinit = run(services, SHOW=",".join(names), OVERRIDE="old", UNSETME="x", KEEP="kept")
    assert dinit.returncode == 0, dinit.stderr
    expected = {name: value for name, (_, value) in ENV_CASES.items()}
    assert _shown(dinit) == expected | {"HIDDEN": None, ".HIDDEN": None, "KEEP": b"kept"}


def test_env_dir_applies_to_logger_and_stop_hook_only_of_its_service(services: Services) -> None:
    """§9: run, log/run and the stop hook of S all see S/env/'s changes (the hook also gets
    DINIT_PID); another service does not."""
    report = 'echo "$0 ${GREETING-unset} ${DROPPED-unset}" >&2\n'
    services.add("s", report + "echo ready >&2\nwhile :; do sleep 0.05; done\n",
                 log=report + "exec cat >/dev/null\n",
                 finish=report + 'echo "pid $DINIT_PID" >&2\nkill "$DINIT_PID"\n',
                 env={"GREETING": b"hello there \n", "DROPPED": b""})
    services.add("t", report + "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    dinit = start(services, DROPPED="dinit's", DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    dinit.wait_for(rb"s/run: ready")
    dinit.wait_for(rb"t/run: ")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    root = services.root
    assert dinit.service_lines("s/run")[0] == f"{root}/s/run hello there unset".encode()
    assert dinit.service_lines("s/log") == [f"{root}/s/log/run hello there unset".encode()]
    finish = dinit.service_lines("s/finish")
    assert finish[0] == f"{root}/s/finish hello there unset".encode()
    assert re.fullmatch(rb"pid \d+", finish[1])
    assert dinit.service_lines("t/run") == [f"{root}/t/run unset dinit's".encode()]


def test_env_dir_for_terminate_hook(services: Services) -> None:
    """§9: the stop hook named ``terminate`` (stage ``term``) sees S/env/ too."""
    services.add("s", "echo ready >&2\nwhile :; do sleep 0.05; done\n",
                 terminate='echo "term $MODE" >&2\nkill "$DINIT_PID"\n', env={"MODE": b"graceful"})
    dinit = start(services)
    dinit.wait_for(rb"s/run: ready")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert dinit.service_lines("s/term") == [b"term graceful"]


def test_env_dir_dinit_variables_do_not_configure_dinit(services: Services) -> None:
    """§9: S/env/ changes only the service's environment, not dinit's configuration: DINIT_* files
    reach the program as plain variables."""
    services.add("s", SHOW_ENV, env={"DINIT_LOG_LEVEL": b"debug"})
    dinit = run(services, SHOW="DINIT_LOG_LEVEL", DINIT_LOG_LEVEL="error")
    assert dinit.returncode == 0
    assert _shown(dinit) == {"DINIT_LOG_LEVEL": b"debug"}
    assert b"dinit: info" not in dinit.stderr and b"dinit: debug" not in dinit.stderr


def test_env_dir_equals_in_name_is_startup_error(services: Services) -> None:
    """§9: a file name with ``=`` is a start-up error naming the service and the file: exit 1 and
    nothing started (not even services before it in name order)."""
    services.add("a", "echo started >&2\n")
    services.add("s", "echo started >&2\n", env={"A=B": b"x", "GOOD": b"y"})
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 1
    [error] = dinit.messages("error")
    assert error.startswith(f"s: {services.root}/s/env/A=B".encode())
    assert b"starting" not in dinit.stderr and b"started" not in dinit.stderr


def test_env_dir_subdirectory_is_startup_error(services: Services) -> None:
    """§9 (envdir fails on what it cannot read as a file): a directory inside S/env/ is a start-up
    error naming it, exit 1, nothing started."""
    directory = services.add("s", "echo started >&2\n", env={"GOOD": b"y"})
    (directory / "env" / "SUB").mkdir()
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 1
    [error] = dinit.messages("error")
    assert error.startswith(f"s: {services.root}/s/env/SUB".encode())
    assert b"starting" not in dinit.stderr


def test_env_dir_empty_and_absent(services: Services) -> None:
    """§9: an empty S/env/ (or only dot files) changes nothing; dinit's environment passes unchanged."""
    directory = services.add("s", SHOW_ENV)
    (directory / "env").mkdir()
    (directory / "env" / ".keep").write_bytes(b"")
    dinit = run(services, SHOW="FOO,.keep", FOO="x")
    assert dinit.returncode == 0
    assert _shown(dinit) == {"FOO": b"x", ".keep": None}


def test_env_dir_with_command_mode(services: Services) -> None:
    """§9: S/env/ is per service: the command's ``main`` gets dinit's environment untouched."""
    services.add("s", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n", env={"FOO": b"service"})
    dinit = run(services, PY, "-c", SHOW_ENV.split("\n", 1)[1], "FOO", FOO="dinit")
    assert dinit.returncode == 0
    assert _shown(dinit, "main") == {"FOO": b"dinit"}

