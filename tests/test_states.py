"""Service states and the lifecycle around them, as PID 1 (§2 ``finish``, §5.2, §10).

- runit ``finish``: run after ``run`` exits, with its exit code and signal, waited for, never
  changing the exit code;
- why the container stops is one warning at the default level, and a long teardown says what it
  waits for;
- one service stopped at run time does not tear the container down and does not count.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from harness import TIME, Services, poll, run, start

DRIVERS = Path(__file__).parent / "drivers"
FOREVER = "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n"


# -- runit finish ----------------------------------------------------------------------------------


def test_finish_runs_after_run_with_its_status(services: Services, tmp_path: Path) -> None:
    """``finish`` gets ``<exit code> <signal>`` and DINIT_PID, is waited for, and its own failure
    is one warning that leaves the exit code (3, from ``run``) alone."""
    record = tmp_path / "finish.txt"
    services.add("job", "echo $$ > pid; exit 4\n",
                 finish=f"echo \"$1 $2 $DINIT_PID\" > {record}; sleep 0.2; echo cleaned; exit 9\n")
    dinit = run(services)
    assert dinit.returncode == 3
    pid = (services.root / "job" / "pid").read_text().strip()
    assert record.read_text().split() == ["4", "0", pid]
    assert b"cleaned" in dinit.stdout + dinit.stderr  # its output is read before dinit exits
    warnings = dinit.messages("warning")
    assert any(re.fullmatch(rb"job/finish: PID \d+ finished with status 9", line) for line in warnings)


def test_finish_after_sigterm_does_not_hang_teardown(services: Services, tmp_path: Path) -> None:
    """The rsyslog case: ``run`` execs a daemon, ``finish`` cleans up. SIGTERM stops the daemon
    (finish is no stop hook), then finish runs with ``-1 15``, and dinit exits 0."""
    record = tmp_path / "finish.txt"
    services.add("daemon", "exec sleep 1000\n", finish=f"echo \"$1 $2\" > {record}\n")
    dinit = start(services, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"daemon/run: running with PID")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert record.read_text().split() == ["-1", "15"]
    assert b"daemon/run: sending SIGTERM" in dinit.stderr
    assert dinit.messages("warning") == []


def test_finish_output_goes_to_the_logger(services: Services, tmp_path: Path) -> None:
    """finish's stdout goes where the stop hook's would: the logger's input (§2 clarification)."""
    logged = tmp_path / "logged.txt"
    services.add("svc", "echo from-run; exit 0\n", finish="echo from-finish\necho err-finish >&2\n",
                 log=f"exec cat > {logged}\n")
    dinit = run(services)
    assert dinit.returncode == 0
    assert logged.read_text().split() == ["from-run", "from-finish"]
    assert dinit.service_lines("svc/finish") == [b"err-finish"]


def test_hanging_finish_is_killed_after_dinit_timeout(services: Services, pid1: bool) -> None:
    """DINIT_TIMEOUT bounds finish too: its session is SIGKILLed, and the exit code stays 0."""
    services.add("svc", "exit 0\n", finish="sleep 1000 & exec sleep 1000\n")
    dinit = run(services, pid1=pid1, DINIT_TIMEOUT="0.5")
    assert dinit.returncode == 0
    assert any(b"svc/finish: still running 0.5 s after being stopped, sent SIGKILL" in line
               for line in dinit.messages("warning"))


# -- why the container stops ---------------------------------------------------------------------


def test_cause_of_teardown_is_one_warning(services: Services) -> None:
    """A service killed by a signal nobody asked for: one warning names it (§5.2), exit code 3."""
    services.add("redis", "kill -9 $$\n")
    services.add("other", FOREVER)
    dinit = run(services)
    assert dinit.returncode == 3
    assert dinit.messages("warning") == [
        re.search(rb"redis/run: PID \d+ died of signal 9 \(SIGKILL\), stopping the container",
                  dinit.stderr).group(0)]  # type: ignore[union-attr]


def test_cause_names_an_exit_status_too(services: Services) -> None:
    services.add("web", "exit 0\n")
    dinit = run(services)
    assert dinit.returncode == 0
    assert re.search(TIME + rb" dinit: warning: web/run: PID \d+ exited with status 0, stopping the "
                     rb"container\n", dinit.stderr)


def test_stop_signal_is_no_cause_warning(services: Services) -> None:
    services.add("web", FOREVER)
    dinit = start(services, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"web/run: running with PID")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert dinit.messages("warning") == []


def test_long_teardown_says_what_it_waits_for(services: Services) -> None:
    """5 s after SIGTERM, one warning lists what is still running (§5.2)."""
    services.add("postgres", "trap 'sleep 7; exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    dinit = start(services, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"postgres/run: running with PID")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"warning: still waiting for postgres/run \(PID \d+\), 5 s after SIGTERM")
    assert dinit.wait() == 0
    assert len(re.findall(rb"still waiting for", dinit.stderr)) == 1


# -- one service stopped at run time -----------------------------------------------------------------


def test_stopping_one_service_keeps_the_container(services: Services, pid1: bool) -> None:
    """``Supervisor.stop_service`` stops one service as teardown would (SIGTERM, its logger
    drained), the others keep running, and its non-zero exit neither tears down nor counts."""
    services.add("a", "trap 'echo bye; exit 5' TERM\nwhile :; do sleep 0.05; done\n",
                 log="exec cat\n")
    services.add("b", FOREVER)
    dinit = start(services, str(DRIVERS / "stop_one.py"), "a", pid1=pid1, entry=(),
                  DINIT_LOG_LEVEL="info", DINIT_JSON_STDOUT="0")
    dinit.wait_for(rb"test driver: a is crashed")
    dinit.wait_for(rb"a/log: PID \d+ finished with status 0")  # the logger got EOF and exited
    assert b"a/run: stopping" in dinit.stderr
    assert b"bye" in dinit.stdout
    assert b"b/run: stopping" not in dinit.stderr and dinit.popen.poll() is None
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert dinit.messages("warning") == []
    poll(lambda: b"test driver: b is stopped" in dinit.stderr)
