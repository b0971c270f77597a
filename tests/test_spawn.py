"""How dinit starts programs (§3): argv, working directory, environment, fds, signal dispositions and
mask, session and process group, exec failures, and the ``starting`` / ``running with PID`` lines.

Every program here is a *probe*: a ``/bin/sh`` file that records what only the shell itself can still
see (its ignored signals: Python ignores SIGPIPE and SIGXFSZ on start-up, so a Python program cannot
tell whether it inherited them ignored; and its environment exactly as ``execve`` got it, from
``/proc/$$/environ``) and then ``exec``s Python, which keeps pid, fds, mask, cwd, session and group
and prints everything as one JSON line. dinit runs as PID 1 of a fresh PID namespace unless a test
says ``pid1=False``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Dinit, Services, environment, poll, run, start

PY = sys.executable
ZEROS = "0" * 16
#: Signals 32 and 33 are glibc's internal ones (SIGCANCEL, SIGSETXID): not in ``valid_signals()``;
#: checked on their own by test_glibc_internal_signals_default, so one defect does not hide others.
GLIBC_INTERNAL = 1 << 31 | 1 << 32

PROBE = r'''
import base64, json, os, signal, sys

label, zero, count, sig_ign, environ, mode = sys.argv[1:7]
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        fds[name] = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        pass  # the fd listdir used for the directory itself, closed again by now
status = {}
with open("/proc/self/status") as file:
    for line in file:
        key, _, value = line.partition(":")
        status[key] = value.strip()
ignored = sorted(signal.Signals(signum).name for signum in signal.valid_signals()
                 if signum not in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGKILL, signal.SIGSTOP)
                 and signal.getsignal(signum) == signal.SIG_IGN)
variables = base64.b64decode(environ).decode("utf-8", "replace").split("\0")
print(json.dumps({
    "probe": label, "pid": os.getpid(), "ppid": os.getppid(), "argv0": zero, "argc": int(count),
    "cwd": os.getcwd(), "environ": dict(v.split("=", 1) for v in variables if v),
    "fds": fds, "SigBlk": status["SigBlk"], "SigIgn": sig_ign.split(":")[-1].strip(),
    "py_ignored": ignored, "sid": os.getsid(0), "pgid": os.getpgid(0),
}), flush=True)
if mode == "exit":
    sys.exit(0)
if mode == "relay":  # a logger: pass the service's stdout through
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
    sys.exit(0)
if mode == "stop":  # a stop hook: stop the service it was run for
    os.kill(int(os.environ["DINIT_PID"]), signal.SIGTERM)
    sys.exit(0)
while True:  # "wait": until a signal ends it
    signal.pause()
'''


@pytest.fixture
def probe(tmp_path: Path) -> Callable[[str, str], str]:
    """Make the body of a probe program labelled ``label`` that afterwards does ``mode``
    (``exit``, ``wait``, ``relay`` for a logger, ``stop`` for a stop hook)."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)

    def body(label: str, mode: str) -> str:
        return (f'#!/bin/sh\nexec {PY} {script} {label} "$0" "$#" '
                f'"$(grep ^SigIgn: /proc/$$/status)" "$(base64 -w0 < /proc/$$/environ)" {mode}\n')

    return body


def _probes(dinit: Dinit) -> dict[str, dict[str, Any]]:
    """Every probe's record, by label."""
    return {line["probe"]: line for line in dinit.json_lines() if "probe" in line}


def _running_pid(dinit: Dinit, label: str, starting: bool = True) -> int:
    """The PID of ``running with PID`` for ``label``; its ``starting`` line came first (checked unless
    ``starting`` is False: test_stop_hook_info_lines checks that on its own for stop hooks)."""
    info = dinit.messages("info")
    pattern = re.compile(re.escape(label.encode()) + rb": running with PID (\d+)$")
    found = [(index, int(match.group(1))) for index, line in enumerate(info)
             if (match := pattern.match(line))]
    assert len(found) == 1, f"expected one 'running with PID' for {label}: {info}"
    if starting:
        assert f"{label}: starting".encode() in info[:found[0][0]], f"no 'starting' before {label}"
    return found[0][1]


def _check_program(record: dict[str, Any], path: Path, env: dict[str, str], stdin: str,
                   pid: int, parent: int) -> None:
    """Everything §3 says about a program dinit started."""
    assert record["argv0"] == str(path), "argv[0] must be the file's absolute path"
    assert record["argc"] == 0, "argv must hold only the path"
    assert record["cwd"] == os.path.realpath(path.parent)
    assert record["environ"] == env
    assert set(record["fds"]) == {"0", "1", "2"}, f"only fds 0-2 may be open: {record['fds']}"
    assert record["fds"]["0"] == stdin
    assert record["fds"]["1"].startswith("pipe:")
    assert record["fds"]["2"].startswith("pipe:")
    assert record["fds"]["1"] != record["fds"]["2"]
    assert record["SigBlk"] == ZEROS, "no signal may be blocked"
    assert int(record["SigIgn"], 16) & ~GLIBC_INTERNAL == 0, "no signal may be ignored (SIGPIPE too)"
    assert record["py_ignored"] == []
    assert record["pid"] == pid, "running with PID must name the program's real PID"
    assert record["sid"] == record["pid"], "a session of its own"
    assert record["pgid"] == record["pid"], "a process group of its own"
    assert record["ppid"] == parent


def _probe_services(services: Services, probe: Callable[[str, str], str]) -> None:
    """``svc``: run, logger and stop hook ``finish`` (dinit runs with ``DINIT_FINISH=stop``); ``solo``:
    run and a stop hook named ``terminate``."""
    services.add("svc", probe("run", "wait"), log=probe("log", "relay"), finish=probe("finish", "stop"))
    services.add("solo", probe("solo", "wait"), terminate=probe("term", "stop"))


#: What dinit runs the probe services with: info lines, and ``finish`` as a stop hook.
PROBE_VARIABLES = {"DINIT_LOG_LEVEL": "info", "DINIT_FINISH": "stop"}


def _check_all_probes(dinit: Dinit, services: Services, env: dict[str, str], parent: int) -> None:
    """Wait for the programs, tear down with SIGTERM (stop hooks run), check every program."""
    poll(lambda: {"run", "log", "solo"} <= set(_probes(dinit)), message="run, log and solo probes")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    probes = _probes(dinit)
    assert set(probes) == {"run", "log", "finish", "solo", "term"}
    svc, solo = services.root / "svc", services.root / "solo"
    run_pid = _running_pid(dinit, "svc/run")
    solo_pid = _running_pid(dinit, "solo/run")
    logger_pipe = probes["run"]["fds"]["1"]

    _check_program(probes["run"], svc / "run", env, "/dev/null", run_pid, parent)
    _check_program(probes["log"], svc / "log" / "run", env, logger_pipe,
                   _running_pid(dinit, "svc/log"), parent)
    _check_program(probes["finish"], svc / "finish", dict(env, DINIT_PID=str(run_pid)), "/dev/null",
                   _running_pid(dinit, "svc/finish", starting=False), parent)
    _check_program(probes["solo"], solo / "run", env, "/dev/null", solo_pid, parent)
    _check_program(probes["term"], solo / "terminate", dict(env, DINIT_PID=str(solo_pid)), "/dev/null",
                   _running_pid(dinit, "solo/term", starting=False), parent)
    # a stop hook writes into the logger's input, like its service (§4.5)
    assert probes["finish"]["fds"]["1"] == logger_pipe
    # the logger's stdout is the service's stage "run"; a hook without logger has its own stage
    assert (probes["run"]["stage"], probes["log"]["stage"], probes["finish"]["stage"]) == ("run",) * 3
    assert {probes[label]["service"] for label in ("run", "log", "finish")} == {"svc"}
    assert (probes["solo"]["stage"], probes["term"]["stage"]) == ("run", "term")


def test_programs_start_clean(services: Services, probe: Callable[[str, str], str], pid1: bool) -> None:
    """§3 for run, log/run, finish and terminate: argv is [absolute path], cwd is the file's directory,
    the environment is dinit's own (the stop hook's plus DINIT_PID = PID of run), stdin /dev/null (the
    logger's: its service's stdout pipe), stdout/stderr pipes, only fds 0-2, nothing blocked or ignored,
    own session and process group, and info lines ``starting`` then ``running with PID <real pid>``."""
    _probe_services(services, probe)
    variables = dict(PROBE_VARIABLES, PROBE_VARIABLE="some value with spaces = and ==")
    dinit = start(services, pid1=pid1, **variables)
    _check_all_probes(dinit, services, environment(services, **variables),
                      1 if pid1 else dinit.popen.pid)


def test_stop_hook_info_lines(services: Services) -> None:
    """§3's info lines apply to the stop hook too: ``<name>/finish: starting`` (a ``finish`` under
    ``DINIT_FINISH=stop``; ``term`` for a hook named ``terminate``) before ``running with PID <pid>``,
    with the hook's real PID."""
    hook = 'echo "hook $$" >&2\nkill "$DINIT_PID"\n'
    services.add("a", "exec sleep 1000\n", finish=hook)
    services.add("b", "exec sleep 1000\n", terminate=hook)
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    dinit.wait_for(rb"b/run: running with PID")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    for label in ("a/finish", "b/term"):
        assert dinit.service_lines(label) == [f"hook {_running_pid(dinit, label)}".encode()]


def _start_through(monkeypatch: pytest.MonkeyPatch, wrapper: Path, services: Services, pid1: bool,
                   **variables: str) -> Dinit:
    """Start dinit with ``wrapper`` in place of the Python interpreter: the harness then runs
    ``wrapper -m dinit``, and the wrapper changes what dinit inherits and execs the real Python."""
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(wrapper))
        return start(services, pid1=pid1, **variables)


def test_inherited_fds_do_not_leak(services: Services, probe: Callable[[str, str], str],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid1: bool) -> None:
    """§3: fds dinit itself inherited (not close-on-exec) are not passed on: every program still has
    only fds 0, 1, 2."""
    wrapper = tmp_path / "with-fds"
    wrapper.write_text(f'#!/bin/sh\nexec 5<&0 7</dev/null 8>>{tmp_path}/inherited 9<{wrapper}\n'
                       f'exec {PY} "$@"\n')
    wrapper.chmod(0o755)
    _probe_services(services, probe)
    dinit = _start_through(monkeypatch, wrapper, services, pid1, **PROBE_VARIABLES)
    dinit.wait_for(rb"svc/run: running with PID")
    own_fds = {int(fd) for fd in os.listdir(f"/proc/{dinit.pid}/fd")}
    assert {5, 7, 8, 9} <= own_fds, "the wrapper must really have given dinit the extra fds"
    _check_all_probes(dinit, services, environment(services, **PROBE_VARIABLES),
                      1 if pid1 else dinit.popen.pid)


def test_inherited_signal_state_not_passed_on(services: Services, probe: Callable[[str, str], str],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              pid1: bool) -> None:
    """§3: dinit started with SIGTERM, SIGINT, SIGPIPE, SIGUSR1, SIGHUP ignored and SIGUSR2, SIGALRM
    blocked still starts every program with default dispositions and an empty mask; and (§5.1) a
    SIGTERM still tears it down although it arrived with SIGTERM ignored."""
    record = tmp_path / "wrapper-status"
    wrapper = tmp_path / "with-signals"
    wrapper.write_text(f"""#!{PY}
import os, signal, sys
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGUSR1, signal.SIGHUP):
    signal.signal(signum, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGALRM])
with open("/proc/self/status") as status, open({str(record)!r}, "w") as out:
    out.writelines(line for line in status if line.startswith(("SigBlk", "SigIgn")))
os.execv({PY!r}, [{PY!r}, *sys.argv[1:]])
""")
    wrapper.chmod(0o755)
    _probe_services(services, probe)
    dinit = _start_through(monkeypatch, wrapper, services, pid1, **PROBE_VARIABLES)
    dinit.wait_for(rb"svc/run: running with PID")
    inherited = dict(line.split(":") for line in record.read_text().splitlines())
    blocked, ignored = int(inherited["SigBlk"], 16), int(inherited["SigIgn"], 16)
    for signum in (signal.SIGUSR2, signal.SIGALRM):
        assert blocked & 1 << (signum - 1), "the wrapper must really block it"
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGUSR1, signal.SIGHUP):
        assert ignored & 1 << (signum - 1), "the wrapper must really ignore it"
    _check_all_probes(dinit, services, environment(services, **PROBE_VARIABLES),
                      1 if pid1 else dinit.popen.pid)


def test_glibc_internal_signals_default(services: Services, probe: Callable[[str, str], str],
                                        pid1: bool) -> None:
    """§3 "every signal has its default disposition": that includes signals 32 and 33 (which glibc
    reserves for itself but which other C libraries and runtimes use), so SigIgn is all zeros."""
    services.add("a", probe("a", "exit"), log=probe("log", "relay"))
    dinit = run(services, pid1=pid1)
    assert dinit.returncode == 0
    probes = _probes(dinit)
    assert (probes["a"]["SigIgn"], probes["log"]["SigIgn"]) == (ZEROS, ZEROS)


def test_environment_unchanged_without_locale(services: Services, probe: Callable[[str, str], str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """§3: the environment is dinit's own, unchanged, also in an image that sets no locale (where
    Python's start-up would coerce the C locale and set LC_CTYPE in its own environment)."""
    for variable in list(os.environ):
        if variable in ("LANG", "LANGUAGE", "PYTHONCOERCECLOCALE") or variable.startswith("LC_"):
            monkeypatch.delenv(variable)
    services.add("a", probe("a", "exit"))
    dinit = run(services)
    assert dinit.returncode == 0
    [record] = _probes(dinit).values()
    given = environment(services)
    assert "LC_CTYPE" not in given
    assert record["environ"] == given


def test_relative_dinit_dir_gives_absolute_paths(services: Services, probe: Callable[[str, str], str],
                                                 tmp_path: Path) -> None:
    """§1 + §3: with a relative DINIT_DIR, a program's argv[0] is still the absolute path of its file
    (resolved against dinit's working directory) and its cwd is its service directory."""
    services.add("a", probe("a", "exit"))
    dinit = run(services, cwd=str(tmp_path), DINIT_DIR=os.path.relpath(services.root, tmp_path))
    assert dinit.returncode == 0
    [record] = _probes(dinit).values()
    assert record["argv0"] == str(services.root / "a" / "run")
    assert record["cwd"] == str(services.root / "a")


# -- exec failures ---------------------------------------------------------------------------------


def _exec_failure(services: Services, tmp_path: Path, pid1: bool, label: str, path: Path,
                  reason: str) -> None:
    """The broken program (of service ``b``) is reported once, ``a`` (started before) gets SIGTERM,
    ``c`` (after) is never started, and dinit exits 1."""
    marker = tmp_path / "c-ran"
    services.add("a", "exec sleep 1000\n")
    services.add("c", f"touch {marker}\nexec sleep 1000\n")
    dinit = run(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 1, dinit.stderr.decode(errors="replace")
    assert dinit.messages("error") == [f"{label}: cannot run {path}: {reason}".encode()]
    assert dinit.stderr.count(b" dinit: error: ") == 1
    a_pid = _running_pid(dinit, "a/run")
    info = dinit.messages("info")
    assert f"a/run: sending SIGTERM to PID {a_pid}".encode() in info
    assert f"a/run: PID {a_pid} finished with signal {int(signal.SIGTERM)}".encode() in info
    assert b"c/run: starting" not in info
    assert not marker.exists()
    assert info[-1] == b"dinit exiting with status 1"
    assert dinit.stdout == b""


def test_bad_interpreter(services: Services, tmp_path: Path, pid1: bool) -> None:
    """§3, §16: ``run`` with a ``#!`` line naming a missing interpreter passes §2's checks but cannot be
    executed: one error line naming service, file and the missing interpreter (not just ENOENT, which
    reads as if the file itself were missing), teardown, exit 1."""
    path = services.add("b", "#!/bin/bashx -e\necho never\n") / "run"
    _exec_failure(services, tmp_path, pid1, "b/run", path, "interpreter /bin/bashx not found")


def test_crlf_line_endings(services: Services, tmp_path: Path, pid1: bool) -> None:
    """§16: a script saved with Windows line endings has the interpreter ``/bin/sh\\r``: the error says
    so (with the carriage return shown as ``\\r``, not written raw into the log line)."""
    directory = services.add("b", None)
    path = directory / "run"
    path.write_bytes(b"#!/bin/sh\r\necho never\r\nexec sleep 1000\r\n")
    path.chmod(0o755)
    _exec_failure(services, tmp_path, pid1, "b/run", path, CRLF)


def _write_binary(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o755)
    return path


def _foreign_elf() -> bytes:
    """A real ELF binary (``/bin/true``) marked as built for another machine (``e_machine``, 2 bytes
    at offset 18): the kernel refuses it with ENOEXEC."""
    content = bytearray(Path("/bin/true").read_bytes())
    other = 183 if os.uname().machine == "x86_64" else 62  # AArch64, else x86-64
    content[18:20] = other.to_bytes(2, sys.byteorder)
    return bytes(content)


NEITHER = "the file is neither a binary nor has a #! line"
FOREIGN = "Exec format error: an ELF binary this machine cannot run (built for another architecture?)"
CRLF = "interpreter /bin/sh\\r not found: the file has Windows (CRLF) line endings"

NOT_EXECUTABLE_FORMATS = {
    # glibc's posix_spawn does not fall back to /bin/sh (as execvp would): a shell script without
    # ``#!`` is ENOEXEC, not run
    "shell-without-shebang": (b"echo never\nexec sleep 1000\n", NEITHER),
    "garbage": (b"\x7fnot really ELF \x00\x01\x02 garbage (((\n", NEITHER),
    "empty": (b"", "the file is empty: neither a binary nor has a #! line"),
    "empty-shebang": (b"#!  \necho never\n", "its #! line names no interpreter"),
    "foreign-elf": (_foreign_elf(), FOREIGN),
}


@pytest.mark.parametrize("kind", NOT_EXECUTABLE_FORMATS)
def test_not_an_executable_format(services: Services, tmp_path: Path, pid1: bool, kind: str) -> None:
    """§3, §16: an executable file the kernel refuses with ENOEXEC is reported with what is wrong with
    it (no ``#!`` line and not a binary; empty; a ``#!`` naming nothing; a binary for another
    machine): one error line, teardown, exit 1."""
    content, reason = NOT_EXECUTABLE_FORMATS[kind]
    path = _write_binary(services.root / "b" / "run", content)
    _exec_failure(services, tmp_path, pid1, "b/run", path, reason)


def test_logger_bad_interpreter(services: Services, tmp_path: Path) -> None:
    """§3 applies to ``log/run`` too: a logger that cannot be executed is reported (stage log) with
    the reason of §16, the service's run is not started, teardown, exit 1."""
    marker = tmp_path / "b-ran"
    services.add("b", f"touch {marker}\nexec sleep 1000\n")
    path = _write_binary(services.root / "b" / "log" / "run", b"#!/bin/sh\r\nexec cat\r\n")
    _exec_failure(services, tmp_path, True, "b/log", path, CRLF)
    assert not marker.exists()


@pytest.mark.parametrize(("file", "stage", "variables"), [
    ("terminate", "term", {}), ("finish", "finish", {"DINIT_FINISH": "stop"})])
def test_stop_hook_bad_interpreter(services: Services, file: str, stage: str,
                                   variables: dict[str, str]) -> None:
    """§3 + §5.2 + §16: a stop hook that cannot be executed is reported as an error naming service,
    stage, file and the missing interpreter, and SIGTERM is sent to the run instead."""
    path = services.add("a", "exec sleep 1000\n", **{file: "#!/nonexistent/interp\n"}) / file
    dinit = start(services, DINIT_LOG_LEVEL="info", **variables)
    pid = dinit.wait_for(rb"a/run: running with PID (\d+)")[0].group(1).decode()
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    reason = "interpreter /nonexistent/interp not found"
    assert dinit.messages("error") == [
        f"a/{stage}: cannot run {path}: {reason}, sending SIGTERM instead".encode()]
    info = dinit.messages("info")
    assert f"a/run: sending SIGTERM to PID {pid}".encode() in info
    assert f"a/run: PID {pid} finished with signal {int(signal.SIGTERM)}".encode() in info
