"""The lifecycle (§5): what tears the container down, how teardown goes (stop hooks, waiting for
every program), and the exit code (§5.3: the first recorded reason wins).

dinit runs as PID 1 of a fresh PID namespace unless a test says otherwise; where being PID 1 or a
subreaper could matter, both are tested. Services that must be ready before teardown starts (their
``trap`` installed) say so on stderr, and the service that triggers teardown waits for a flag file
the test creates only then, so no test depends on scheduling luck.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from harness import TIME, Dinit, Services, run, start

PY = sys.executable


# -- helpers ---------------------------------------------------------------------------------------


def waiter(name: str, on_term: str = "exit 0", then: str = "") -> str:
    """A sh ``run`` that traps SIGTERM (says ``<name> got TERM`` on stderr, then runs ``on_term``),
    prints ``ready <pid>`` once the trap is installed, runs ``then``, and waits forever.

    It waits with short foreground sleeps, not ``sleep & wait``: sh runs a trap after the current
    command, so a SIGTERM arriving at any moment is acted on within 50 ms (a signal landing just
    before ``wait`` starts can be missed by dash), and no child is left behind as an orphan."""
    return (f"trap 'echo \"{name} got TERM\" >&2; {on_term}' TERM\n"
            f'echo "ready $$" >&2\n{then}\n'
            "while :; do sleep 0.05; done\n")


def gated(flag: Path, action: str) -> str:
    """A sh ``run`` that does ``action`` once ``flag`` exists."""
    return f"while [ ! -e '{flag}' ]; do sleep 0.01; done\n{action}\n"


def ready_pid(dinit: Dinit, name: str) -> int:
    """Wait until the waiter service ``name`` has its trap installed; returns its PID."""
    [match] = dinit.wait_for(TIME + rb" " + re.escape(name.encode()) + rb"/run: ready (\d+)\n")
    return int(match.group(1))


def started_pid(dinit: Dinit, label: str) -> int:
    """The PID of ``label`` (``name/stage``) from dinit's ``running with PID`` info line."""
    [match] = dinit.wait_for(re.escape(label.encode()) + rb": running with PID (\d+)\n")
    return int(match.group(1))


def assert_exited(dinit: Dinit, code: int) -> None:
    """dinit exited with ``code`` and its last stderr line is the info line saying so (§5.3)."""
    assert dinit.returncode == code, dinit.stderr.decode(errors="replace")
    last = dinit.stderr.splitlines()[-1]
    assert re.fullmatch(TIME + rb" dinit: info: dinit exiting with status " + str(code).encode(), last), last


def when(dinit: Dinit, message: bytes) -> datetime:
    """The timestamp of dinit's first own message matching ``message`` (a regex)."""
    match = re.search(rb"(" + TIME + rb") dinit: \w+: " + message, dinit.stderr)
    assert match, f"{message!r} not in:\n{dinit.stderr.decode(errors='replace')}"
    return datetime.strptime(match.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


def position(dinit: Dinit, pattern: bytes) -> int:
    """Offset in stderr of the first match of ``pattern``."""
    match = re.search(pattern, dinit.stderr)
    assert match, f"{pattern!r} not in:\n{dinit.stderr.decode(errors='replace')}"
    return match.start()


# -- §5.1 a run exiting tears down -----------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (1, 3), (7, 3)])
def test_run_exit_tears_down(services: Services, pid1: bool, code: int, expected: int) -> None:
    """§5.1/§5.2/§5.3: a run exiting (any status but 115) tears down: every other running run gets
    SIGTERM (its trap runs), and dinit exits 0 for status 0 and 3 for a non-zero status."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, f"exit {code}"))
    services.add("b", waiter("b"))
    services.add("c", waiter("c"))
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    b, c = ready_pid(dinit, "b"), ready_pid(dinit, "c")
    a = started_pid(dinit, "a/run")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, expected)
    info = dinit.messages("info")
    assert f"a/run: PID {a} finished with status {code}".encode() in info
    for name, pid in (("b", b), ("c", c)):
        assert f"{name}/run: sending SIGTERM to PID {pid}".encode() in info
        assert dinit.service_lines(f"{name}/run")[-1] == f"{name} got TERM".encode()
        assert f"{name}/run: PID {pid} finished with status 0".encode() in info
    assert b"a/run: sending SIGTERM" not in dinit.stderr


@pytest.mark.parametrize("name", ["SEGV", "KILL"])
def test_run_killed_by_foreign_signal_is_failure(services: Services, pid1: bool, name: str) -> None:
    """§5.1/§5.3: a run killed by a signal dinit did not send (here it kills itself) tears down
    with exit code 3; the other service still gets SIGTERM."""
    flag = services.root.parent / "go"
    services.add("a", "ulimit -c 0\n" + gated(flag, f"kill -{name} $$"))
    services.add("b", waiter("b"))
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    b = ready_pid(dinit, "b")
    a = started_pid(dinit, "a/run")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 3)
    signum = signal.Signals[f"SIG{name}"].value
    assert f"a/run: PID {a} finished with signal {signum}".encode() in dinit.messages("info")
    assert f"b/run: sending SIGTERM to PID {b}".encode() in dinit.messages("info")
    assert dinit.service_lines("b/run")[-1] == b"b got TERM"


# -- §5.1 exit code 115: the service disabled itself ----------------------------------------------


def test_disabled_itself_does_not_tear_down(services: Services, pid1: bool) -> None:
    """§5.1: a run exiting 115 is logged as ``finished and disabled itself`` and tears nothing down:
    the other service keeps running (it still acts on a flag created afterwards) until dinit is
    signalled; then a normal teardown exits 0."""
    flag = services.root.parent / "go"
    services.add("a", "exit 115\n")
    services.add("b", waiter("b", then=gated(flag, 'echo "b still running" >&2')))
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    b = ready_pid(dinit, "b")
    [disabled] = dinit.wait_for(rb"info: a/run: PID (\d+) finished and disabled itself\n")
    assert int(disabled.group(1)) == started_pid(dinit, "a/run")
    flag.touch()
    dinit.wait_for(rb"b/run: b still running\n")
    assert dinit.popen.poll() is None
    for unwanted in (b"terminating services", b"sending SIGTERM", b"stopping", b"finished with status 115",
                     b"all services have disabled themselves"):
        assert unwanted not in dinit.stderr, unwanted
    dinit.signal(signal.SIGTERM)
    dinit.wait(10)
    assert_exited(dinit, 0)
    assert f"b/run: sending SIGTERM to PID {b}".encode() in dinit.messages("info")
    assert dinit.service_lines("b/run")[-1] == b"b got TERM"
    assert position(dinit, rb"b/run: b still running") < position(dinit, rb"got signal 15, terminating")


def test_all_disabled_waits_for_signal(services: Services, pid1: bool) -> None:
    """§5.1: when every service has disabled itself dinit warns once and stays up (it does not exit
    by itself), until SIGTERM ends it with exit code 0."""
    services.add("a", "exit 115\n")
    services.add("b", "exit 115\n")
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"warning: all services have disabled themselves, waiting for a signal to exit\n")
    # A negative observation needs a window: dinit would exit right after the warning if it meant to.
    with pytest.raises(subprocess.TimeoutExpired):
        dinit.popen.wait(0.5)
    for name in ("a", "b"):
        assert re.search(name.encode() + rb"/run: PID \d+ finished and disabled itself", dinit.stderr)
    dinit.signal(signal.SIGTERM)
    dinit.wait(10)
    assert_exited(dinit, 0)
    assert dinit.messages("warning") == [
        b"all services have disabled themselves, waiting for a signal to exit"]
    assert b"got signal 15, terminating services" in dinit.messages("info")


def test_115_during_teardown_is_no_disable(services: Services) -> None:
    """§5.1/§5.3: 115 only means "disabled" while dinit runs normally: a service answering SIGTERM
    with 115 during teardown is just finished, and the first reason (a run exiting 0) decides."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, "exit 0"))
    services.add("b", waiter("b", on_term="exit 115"))
    dinit = start(services, DINIT_LOG_LEVEL="info")
    ready_pid(dinit, "b")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 0)
    assert b"all services have disabled themselves" not in dinit.stderr


# -- §5.2 stop hooks -------------------------------------------------------------------------------

HOOK = """echo "hook for $DINIT_PID" >&2
echo '{"hook":"stopping","pid":'"$DINIT_PID"'}'
kill "$DINIT_PID"
"""


@pytest.mark.parametrize(("file", "stage"), [("finish", "finish"), ("terminate", "term")])
def test_stop_hook_runs_instead_of_sigterm(services: Services, pid1: bool, file: str, stage: str) -> None:
    """§5.2/§3/§4.2: at teardown a service with a stop hook gets the hook, run with
    ``DINIT_PID=<pid of its run>``, instead of SIGTERM; the hook stops the run itself. The hook's
    stdout is JSON labelled with stage ``finish`` (``term`` for a file named ``terminate``), its
    stderr is prefixed ``<name>/<stage>:``."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, "exit 0"))
    services.add("b", waiter("b"), **{file: HOOK})
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    b = ready_pid(dinit, "b")
    assert started_pid(dinit, "b/run") == b
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 0)
    info = dinit.messages("info")
    assert b"b/run: stopping" in info
    hook = started_pid(dinit, f"b/{stage}")
    assert f"b/{stage}: PID {hook} finished with status 0".encode() in info
    assert dinit.service_lines(f"b/{stage}") == [f"hook for {b}".encode()]
    [line] = dinit.json_lines()
    assert line["hook"] == "stopping" and line["pid"] == b
    assert (line["service"], line["stage"]) == ("b", stage)
    assert b"b/run: sending SIGTERM" not in dinit.stderr
    assert dinit.service_lines("b/run")[-1] == b"b got TERM"
    assert f"b/run: PID {b} finished with status 0".encode() in info
    # a has no hook: it simply exited; no run was signalled by dinit.
    assert not re.search(rb"/run: sending SIGTERM", dinit.stderr)


def test_stop_hook_start_is_logged(services: Services) -> None:
    """§3: the stop hook is started like every other program, with both info lines, in order:
    ``<name>/finish: starting`` then ``<name>/finish: running with PID <pid>``."""
    services.add("a", "exit 0\n")
    services.add("b", "exec sleep 1000\n", finish='kill "$DINIT_PID"\n')
    dinit = run(services, DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    assert_exited(dinit, 0)
    hook = [m for m in dinit.messages("info") if m.startswith(b"b/finish: ")]
    assert [re.sub(rb"PID \d+", b"PID N", m) for m in hook] == [
        b"b/finish: starting", b"b/finish: running with PID N", b"b/finish: PID N finished with status 0"]


def test_stop_hook_that_cannot_run_sends_sigterm(services: Services) -> None:
    """§5.2: a stop hook that cannot be executed (an executable file of garbage without ``#!``,
    under DINIT_FINISH=stop) gives an error line and SIGTERM is sent to the run instead."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, "exit 0"))
    directory = services.add("b", waiter("b"))
    hook = directory / "finish"
    hook.write_bytes(b"\x01\x02 this is not a program \xff\n")
    hook.chmod(0o755)
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    b = ready_pid(dinit, "b")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 0)
    assert dinit.messages("error") == [
        f"b/finish: cannot run {hook}: the file is neither a binary nor has a #! line, "
        "sending SIGTERM instead".encode()]
    assert f"b/run: sending SIGTERM to PID {b}".encode() in dinit.messages("info")
    assert dinit.service_lines("b/run")[-1] == b"b got TERM"
    assert position(dinit, rb"error: b/finish: cannot run") < position(dinit, rb"b/run: sending SIGTERM")


# -- §4.5/§5.1 a logger exiting while its service runs ----------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (1, 3)])
def test_logger_exit_tears_down(services: Services, pid1: bool, code: int, expected: int) -> None:
    """§4.5/§5.1/§5.3: a logger exiting while its service's run still runs tears down; the exit
    code follows the logger's status. The line it read before exiting is not lost."""
    run_body = waiter("b", then="""echo '{"n":1}'""")
    flag = services.root.parent / "go"
    services.add("b", run_body, log='read line\necho "$line"\n' + gated(flag, f"exit {code}"))
    services.add("c", waiter("c"))
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    b, c = ready_pid(dinit, "b"), ready_pid(dinit, "c")
    logger = started_pid(dinit, "b/log")
    dinit.wait_for(rb'"n":1', stream="stdout")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, expected)
    info = dinit.messages("info")
    assert f"b/log: PID {logger} finished with status {code}".encode() in info
    assert f"b/run: sending SIGTERM to PID {b}".encode() in info
    assert f"c/run: sending SIGTERM to PID {c}".encode() in info
    assert position(dinit, rb"b/log: PID \d+ finished") < position(dinit, rb"b/run: sending SIGTERM")
    assert [(line["n"], line["service"], line["stage"]) for line in dinit.json_lines()] == [(1, "b", "run")]


# -- §5.3 the first recorded reason wins -----------------------------------------------------------


@pytest.mark.parametrize(("first", "later", "expected"), [(0, 1, 0), (1, 0, 3), (2, 0, 3)])
def test_first_reason_wins(services: Services, first: int, later: int, expected: int) -> None:
    """§5.3: the run whose exit caused teardown decides the code; a service answering the SIGTERM
    with another status does not change it."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, f"exit {first}"))
    services.add("b", waiter("b", on_term=f"exit {later}"))
    dinit = start(services, DINIT_LOG_LEVEL="info")
    b = ready_pid(dinit, "b")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, expected)
    assert f"b/run: PID {b} finished with status {later}".encode() in dinit.messages("info")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name)
def test_signal_first_then_failing_services(services: Services, pid1: bool, signum: int) -> None:
    """§5.3: SIGTERM/SIGINT/SIGQUIT to dinit is the first reason (0), even when every service then
    exits non-zero or dies of the SIGTERM dinit sent it."""
    services.add("a", waiter("a", on_term="exit 1"))
    services.add("b", waiter("b", on_term="exit 5"))
    services.add("c", "exec sleep 1000\n")
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    a, b = ready_pid(dinit, "a"), ready_pid(dinit, "b")
    c = started_pid(dinit, "c/run")
    dinit.signal(signum)
    dinit.wait(10)
    assert_exited(dinit, 0)
    info = dinit.messages("info")
    assert f"got signal {signum}, terminating services".encode() in info
    assert f"a/run: PID {a} finished with status 1".encode() in info
    assert f"b/run: PID {b} finished with status 5".encode() in info
    assert f"c/run: PID {c} finished with signal 15".encode() in info


# -- §5.2 dinit waits for every program, and not longer --------------------------------------------


def test_waits_for_slow_service_then_exits(services: Services, pid1: bool) -> None:
    """§5.2/§4.6: teardown waits for a service that takes a while to stop (its late output is
    there, and its exit comes before dinit's last line), and dinit exits as soon as the last process
    is gone: not after DINIT_KILL_TIMEOUT (30 s by default) or any other fixed wait."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, "exit 0"))
    services.add("slow", waiter("slow", on_term='sleep 0.3; echo "slow late" >&2; exit 0'))
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    slow = ready_pid(dinit, "slow")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 0)
    assert dinit.service_lines("slow/run")[-2:] == [b"slow got TERM", b"slow late"]
    finished = rb"slow/run: PID " + str(slow).encode() + rb" finished with status 0"
    assert position(dinit, rb"slow/run: slow late") < position(dinit, finished)
    assert position(dinit, finished) < position(dinit, rb"dinit exiting with status 0")
    gap = (when(dinit, rb"dinit exiting") - when(dinit, finished)).total_seconds()
    assert gap < 5, f"dinit exited {gap}s after its last program"


def test_waits_for_every_program(services: Services) -> None:
    """§5.2: with several services of different stopping speed, each one's exit (and its logger's)
    is logged before dinit's last line, which says the exit status."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, "exit 1"))
    for index, delay in enumerate(("0", "0.1", "0.2")):
        services.add(f"s{index}", waiter(f"s{index}", on_term=f"sleep {delay}; exit 0"),
                     log='while read -r line; do echo "$line"; done\n')
    dinit = start(services, DINIT_LOG_LEVEL="info")
    for index in range(3):
        ready_pid(dinit, f"s{index}")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 3)
    end = position(dinit, rb"dinit exiting")
    for index in range(3):
        for stage in ("run", "log"):
            assert position(dinit, f"s{index}/{stage}: PID \\d+ finished with status 0".encode()) < end


# -- §5.3 the exit code table ----------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ("exit 0", 0),
    ("exit 1", 3),
    ("exit 255", 3),
    ("ulimit -c 0; kill -SEGV $$", 3),
    ("kill -KILL $$", 3),
    ("kill -TERM $$", 3),
], ids=["exit0", "exit1", "exit255", "own-SIGSEGV", "own-SIGKILL", "own-SIGTERM"])
def test_exit_code_table_for_run(services: Services, body: str, expected: int) -> None:
    """§5.3: 0 for a run exiting 0; 3 for a non-zero status or a death by a signal dinit did not
    send — even SIGTERM, when it did not come from dinit."""
    services.add("a", body + "\n")
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert_exited(dinit, expected)


def test_sigterm_from_dinit_is_not_failure(services: Services, pid1: bool) -> None:
    """§5.3: a program killed by the SIGTERM dinit sent it during teardown is not a failure: a run
    exiting 0 started the teardown, the others die of SIGTERM (signal 15), and dinit exits 0."""
    flag = services.root.parent / "go"
    services.add("a", gated(flag, "exit 0"))
    services.add("b", "exec sleep 1000\n")
    services.add("c", f"#!{PY}\nimport signal\nprint('ready', flush=True, file=__import__('sys').stderr)\n"
                      "signal.pause()\n")
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    b = started_pid(dinit, "b/run")
    c = started_pid(dinit, "c/run")
    dinit.wait_for(rb"c/run: ready\n")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 0)
    info = dinit.messages("info")
    assert f"b/run: PID {b} finished with signal 15".encode() in info
    assert f"c/run: PID {c} finished with signal 15".encode() in info


def test_exit_code_no_services(services: Services) -> None:
    """§5.3/§2: no services → warning and exit 0, still ending with the exit line."""
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert_exited(dinit, 0)
    assert dinit.messages("warning") == [b"no services found, exiting"]


def test_exit_code_broken_service_directory(services: Services) -> None:
    """§5.3/§2: a broken service directory → exit 1, nothing started."""
    services.add("a", "echo started >&2\n")
    (services.root / "a" / "run").chmod(0o644)
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert_exited(dinit, 1)
    assert b"started" not in dinit.stderr


def test_exit_code_exec_failure(services: Services) -> None:
    """§5.3/§3: a run whose interpreter does not exist fails to exec at start: error line,
    teardown of the others, exit 1."""
    services.add("a", "#!/nonexistent/interpreter\n")
    services.add("b", waiter("b"))
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert_exited(dinit, 1)
    assert [m for m in dinit.messages("error") if m.startswith(b"a/run: cannot run ")]


@pytest.mark.parametrize(("code", "expected"), [(1, 3), (0, 0)])
def test_exit_code_logger_status_decides(services: Services, code: int, expected: int) -> None:
    """§5.3: a logger is one of the programs whose status counts when it is the first reason."""
    services.add("b", waiter("b"), log=f"exit {code}\n")
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert_exited(dinit, expected)
