"""The control socket and its CLI (§12), driven with the real ``dinit`` client against the real dinit.

The client runs where a user runs it: inside dinit's PID namespace (``nsenter`` into it, as
``docker exec`` does, or from a service, which inherits ``DINIT_SOCKET``), and from outside it for the
permission rules (a peer outside the namespace has peer PID 0). The socket lives in the test's temp
dir (``DINIT_SOCKET``), so no test touches the host's /run/dinit; the default locations are tested in
test_control_socket.py with a private /run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from harness import TIME, Dinit, Services, environment, launch, poll, start, write_program

PY = sys.executable
#: A run that says it is ready on stderr and then waits, stopping on SIGTERM within 50 ms.
WAIT = 'echo "ready $$" >&2\nwhile :; do sleep 0.05; done\n'


def ready(dinit: Dinit, name: str, count: int = 1) -> int:
    matches = dinit.wait_for(re.escape(name.encode()) + rb"/run: ready (\d+)\n", count=count)
    return int(matches[-1].group(1))


def stop_dinit(dinit: Dinit) -> int:
    dinit.signal(signal.SIGTERM)
    return dinit.wait()


# -- status, list, pid, version --------------------------------------------------------------------


def test_status_is_sv_status(services: Services, tmp_path: Path, pid1: bool) -> None:
    services.add("web", WAIT, log="exec cat >/dev/null")
    services.add("cron", WAIT)
    dinit, ctl = launch(services, tmp_path, pid1)
    web, cron = ready(dinit, "web"), ready(dinit, "cron")
    result = ctl("status")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"run: cron: \(pid {cron}\) \d+s", lines[0]), lines
    assert re.fullmatch(rf"run: web: \(pid {web}\) \d+s; run: log: \(pid \d+\) \d+s", lines[1]), lines
    assert ctl("status", "web").stdout.startswith("run: web: ")
    assert ctl("stop", "cron").returncode == 0
    result = ctl("status", "cron")
    assert result.returncode == 3
    assert re.fullmatch(r"down: cron: \d+s, normally up, held down\n", result.stdout), result.stdout
    assert ctl("status").returncode == 3  # not every service is running
    unknown = ctl("status", "nope")
    assert (unknown.returncode, unknown.stderr) == (4, "dinit status: nope: no such service\n")
    assert stop_dinit(dinit) == 0


def test_status_json_carries_the_service_objects(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT, log="exec cat >/dev/null")
    dinit, ctl = launch(services, tmp_path)
    pid = ready(dinit, "web")
    [web] = ctl.json("status")
    assert {"name", "origin", "state", "pid", "since", "ready", "logger", "hook", "last_exit"} <= web.keys()
    assert (web["name"], web["origin"], web["state"], web["pid"]) == ("web", "dir", "running", pid)
    assert re.fullmatch(TIME.decode(), web["since"]) and web["ready"] == web["since"]
    assert web["logger"]["pid"] > 0 and web["hook"] is None and web["last_exit"] is None
    [listed] = ctl.json("list")
    moving = {"seconds", "run_seconds", "logger"}
    assert {k: v for k, v in listed.items() if k not in moving} == {
        k: v for k, v in web.items() if k not in moving}
    assert stop_dinit(dinit) == 0


def test_list_is_a_supervisorctl_table(services: Services, tmp_path: Path) -> None:
    services.add("a-long-service-name", WAIT)
    services.add("b", WAIT)
    dinit, ctl = launch(services, tmp_path)
    pid = ready(dinit, "a-long-service-name")
    assert ctl("stop", "b").returncode == 0
    result = ctl("list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"a-long-service-name   RUNNING    pid {pid}, uptime 0:00:\d\d", lines[0]), lines
    assert re.fullmatch(r"b {21}DOWN       held down", lines[1]), lines
    assert stop_dinit(dinit) == 0


def test_a_runs_seconds_count_from_its_start_not_from_its_readiness(services: Services, tmp_path: Path,
                                                                      pid1: bool) -> None:
    """runit's ``sv status`` seconds and supervisorctl's uptime are the run's age (§12): becoming ready
    (here through S/notification-fd, once a gate exists) resets neither and adds ``, ready Ns``; a
    service without readiness sources keeps runit's plain line."""
    gate = tmp_path / "gate"
    nfd = services.add("nfd", f"while [ ! -e {gate} ]; do sleep 0.02; done\nprintf 'x\\n' >&3\n" + WAIT)
    (nfd / "notification-fd").write_text("3\n")
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path, pid1)

    def starting_for_two_seconds() -> int | None:
        line = re.fullmatch(r"run: nfd: \(pid \d+\) (\d+)s, starting\n", ctl("status", "nfd").stdout)
        return int(line.group(1)) if line is not None and int(line.group(1)) >= 2 else None

    started = poll(starting_for_two_seconds, message="nfd starting for 2 s", interval=0.1)
    gate.touch()
    poll(lambda: ctl("check", "nfd").returncode == 0, message="nfd ready", interval=0.1)
    status = ctl("status", "nfd")
    line = re.fullmatch(r"run: nfd: \(pid (\d+)\) (\d+)s, ready (\d+)s\n", status.stdout)
    assert line is not None, status
    pid, run, since_ready = (int(group) for group in line.groups())
    assert run >= started and run > since_ready, line.group(0)  # ready came 2 s or more into the run
    listed = re.search(rf"^nfd +RUNNING +pid {pid}, uptime (\d+):(\d\d):(\d\d)$", ctl("list").stdout, re.M)
    assert listed is not None
    hours, minutes, seconds = (int(group) for group in listed.groups())
    assert hours * 3600 + minutes * 60 + seconds >= run  # the run's age, which only grows
    status = ctl("status")
    assert status.returncode == 0, status
    assert re.fullmatch(r"run: web: \(pid \d+\) \d+s", status.stdout.splitlines()[1]), status.stdout
    services_json = {service["name"]: service for service in ctl.json("status")}
    nfd_json, web_json = services_json["nfd"], services_json["web"]
    assert nfd_json["ready"] == nfd_json["since"] and web_json["ready"] == web_json["since"]
    # ready (at least) the 2 s seen above into the run (less the rounding to milliseconds)
    assert nfd_json["run_seconds"] - nfd_json["ready_seconds"] > 1.99, nfd_json
    assert nfd_json["ready_seconds"] == nfd_json["seconds"]  # since: when the current state began
    assert web_json["ready_seconds"] is None and web_json["run_seconds"] == web_json["seconds"]
    assert stop_dinit(dinit) == 0


def test_pid_and_version(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    pid = ready(dinit, "web")
    assert ctl("pid", "web").stdout == f"{pid}\n"
    assert ctl("pid", "nope").returncode == 4
    ctl("stop", "web")
    assert (ctl("pid", "web").returncode, ctl("pid", "web").stdout) == (3, "")
    from dinit import __version__

    assert ctl("version").stdout == f"dinit {__version__}\n"
    assert ctl.json("version")["version"] == __version__
    assert stop_dinit(dinit) == 0


def test_a_service_reaches_dinit_through_its_environment(services: Services, tmp_path: Path) -> None:
    """Programs get DINIT_SOCKET (§12), so ``dinit status`` works from inside a service."""
    services.add("web", WAIT)
    services.add("ask", f'echo "socket $DINIT_SOCKET"\nexec {PY} -m dinit status web\n')
    dinit, _ctl = launch(services, tmp_path)
    assert dinit.wait() == 0  # its exit (status 0: web runs) tore the container down
    assert b"ask/run: not JSON stdout: socket " + str(tmp_path / "control.sock").encode() in dinit.stderr
    assert re.search(rb"ask/run: not JSON stdout: run: web: \(pid \d+\) \d+s\n", dinit.stderr)


def test_the_client_without_dinit_is_unreachable(tmp_path: Path) -> None:
    env = environment(None, DINIT_SOCKET=str(tmp_path / "none.sock"))
    result = subprocess.run([PY, "-m", "dinit", "status"], capture_output=True, text=True, env=env)
    assert result.returncode == 4
    assert result.stderr == (f"dinit status: cannot reach dinit: {tmp_path / 'none.sock'}: "
                             "No such file or directory\n")
    off = subprocess.run([PY, "-m", "dinit", "list"], capture_output=True, text=True,
                         env=environment(None, DINIT_SOCKET="off"))
    assert (off.returncode, off.stderr) == (4, "dinit list: the control socket is off (DINIT_SOCKET=off)\n")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    env = environment(None, DINIT_SOCKET=str(tmp_path / "none.sock"))
    for args in (["stop"], ["start", "web", "-w", "soon"], ["list", "web"], ["submit"], ["pid"],
                 ["status", "--frobnicate"]):
        result = subprocess.run([PY, "-m", "dinit", *args], capture_output=True, text=True, env=env)
        assert result.returncode == 2, (args, result)
        assert result.stderr.startswith(f"dinit {args[0]}: "), result.stderr


@pytest.mark.parametrize("args", [["start", "web", "-w", "soon"], ["start", "web", "--wait", "soon"],
                                  ["stop", "web", "-wsoon"], ["check", "--wait", "soon"]])
def test_a_bad_wait_names_the_option_as_given(tmp_path: Path, args: list[str]) -> None:
    env = environment(None, DINIT_SOCKET=str(tmp_path / "none.sock"))
    result = subprocess.run([PY, "-m", "dinit", *args], capture_output=True, text=True, env=env)
    option = "-w" if args[2].startswith("-w") else "--wait"
    usage = 1 if args[0] == "check" else 2  # check exits only 0 or 1 (a probe's two answers)
    assert (result.returncode, result.stderr.splitlines()[0]) == (
        usage, f"dinit {args[0]}: {option}: 'soon' is not a number of seconds (0 to 86400)")


def test_dashdash_runs_a_program_named_like_a_subcommand(services: Services, tmp_path: Path) -> None:
    """``dinit -- status`` is command mode with a program named ``status`` (§12)."""
    bin_dir = tmp_path / "bin"
    write_program(bin_dir / "status", "echo the status program\nexit 7\n")
    sock = tmp_path / "control.sock"
    dinit = start(None, "--", "status", PATH=f"{bin_dir}:{os.environ['PATH']}", DINIT_SOCKET=str(sock))
    assert dinit.wait() == 7
    assert b"main/run: not JSON stdout: the status program" in dinit.stderr
    assert not sock.exists()


# -- start, stop, restart ------------------------------------------------------------------------


def test_stop_holds_down_without_teardown_until_start(services: Services, tmp_path: Path, pid1: bool) -> None:
    services.add("web", WAIT, log="exec cat")
    services.add("other", WAIT)
    dinit, ctl = launch(services, tmp_path, pid1)
    first = ready(dinit, "web")
    ready(dinit, "other")
    result = ctl("stop", "web")
    assert result.returncode == 0, result
    assert re.fullmatch(r"ok: down: web: \d+s, normally up, held down\n", result.stdout), result.stdout
    assert b"web: stopped through the control socket, held down until started" in dinit.stderr
    assert dinit.popen.poll() is None  # no teardown
    result = ctl("start", "web")
    assert result.returncode == 0, result
    second = ready(dinit, "web", count=2)
    assert second != first
    assert re.fullmatch(rf"ok: run: web: \(pid {second}\) \d+s; run: log: \(pid \d+\) \d+s\n", result.stdout)
    result = ctl("restart", "web")
    assert result.returncode == 0, result
    assert ready(dinit, "web", count=3) not in (first, second)
    assert stop_dinit(dinit) == 0


def test_a_stopped_service_never_counts_for_the_exit_code(services: Services, tmp_path: Path) -> None:
    """Stopped through the socket, a service that exits 3 on SIGTERM neither tears down nor makes
    the exit code 3 (§10)."""
    services.add("web", "trap 'exit 3' TERM\n" + WAIT)
    services.add("other", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    ready(dinit, "other")
    assert ctl("stop", "web").returncode == 0
    assert dinit.popen.poll() is None
    assert stop_dinit(dinit) == 0


def test_stop_w_says_timeout_with_the_state(services: Services, tmp_path: Path) -> None:
    services.add("stubborn", "trap '' TERM\n" + WAIT)
    dinit, ctl = launch(services, tmp_path, DINIT_KILL_TIMEOUT="60")
    pid = ready(dinit, "stubborn")
    result = ctl("stop", "-w", "0.3", "stubborn")
    assert result.returncode == 1
    assert re.fullmatch(rf"timeout: run: stubborn: \(pid {pid}\) \d+s, stopping \(control\)\n", result.stdout)
    error = ctl.json("stop", "-w", "0.1", "stubborn")
    assert error["code"] == "timeout" and error["services"][0]["state"] == "stopping"
    os.kill(pid, signal.SIGKILL) if not dinit.pid1 else ctl("signal", "KILL", "stubborn")
    dinit.wait_for(rb"stubborn: stopped through the control socket, held down")
    assert dinit.popen.poll() is None
    assert stop_dinit(dinit) == 0


def test_start_of_a_stopping_service_waits_for_the_old_one(services: Services, tmp_path: Path) -> None:
    """At most one instance per name: a start while it stops begins once every program is gone."""
    services.add("slow", "trap 'sleep 0.3; exit 0' TERM\n" + WAIT)
    dinit, ctl = launch(services, tmp_path)
    first = ready(dinit, "slow")
    assert ctl("stop", "-w", "0", "slow").returncode == 0
    result = ctl("start", "slow")
    assert result.returncode == 0, result
    second = ready(dinit, "slow", count=2)
    log = dinit.stderr
    assert log.index(f"PID {first} finished".encode()) < log.index(f"running with PID {second}".encode())
    assert stop_dinit(dinit) == 0


def test_start_without_waiting_while_finish_runs_starts_once_it_is_done(services: Services,
                                                                       tmp_path: Path) -> None:
    """``start -w 0`` while the service's ``finish`` still runs (§2) is answered at once, and the
    service starts once ``finish`` is gone, though nothing else changes meanwhile."""
    services.add("job", WAIT, finish="sleep 0.3\n")
    dinit, ctl = launch(services, tmp_path)
    first = ready(dinit, "job")
    assert ctl("stop", "-w", "0", "job").returncode == 0
    dinit.wait_for(rb"job/finish: running with PID")
    assert ctl("start", "-w", "0", "job").returncode == 0
    second = ready(dinit, "job", count=2)
    assert second != first
    assert stop_dinit(dinit) == 0


def test_start_that_cannot_run_is_exec_failed_not_teardown(services: Services, tmp_path: Path) -> None:
    directory = services.add("web", WAIT)
    services.add("other", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    ready(dinit, "other")
    assert ctl("stop", "web").returncode == 0
    (directory / "run").chmod(0o644)
    result = ctl("start", "web")
    assert result.returncode == 1
    assert result.stderr == f"dinit start: web: cannot run {directory / 'run'}: Permission denied\n"
    # §16: the answer says what is wrong, as the log line does, not the errno alone.
    write_program(directory / "run", "#!/nonexistent/interpreter\n")
    missing = ctl("start", "web")
    assert (missing.returncode, missing.stderr) == (1, f"dinit start: web: cannot run {directory / 'run'}: "
                                                    "interpreter /nonexistent/interpreter not found\n")
    assert dinit.popen.poll() is None
    assert stop_dinit(dinit) == 0


def test_unknown_service_is_an_error_and_changes_nothing(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    result = ctl("stop", "web", "nope")
    assert (result.returncode, result.stderr) == (1, "dinit stop: nope: no such service\n")
    assert ctl("status", "web").returncode == 0
    assert stop_dinit(dinit) == 0


# -- signal, shutdown, reload --------------------------------------------------------------------


def test_signal_reaches_run(services: Services, tmp_path: Path) -> None:
    services.add("web", "trap 'echo got HUP >&2' HUP\ntrap 'echo got USR1 >&2' USR1\n" + WAIT)
    services.add("other", "trap 'echo other HUP >&2' HUP\ntrap '' USR1\n" + WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    ready(dinit, "other")
    for count, name in enumerate(("HUP", "sighup", "1"), 1):
        assert ctl("signal", name, "web").returncode == 0
        dinit.wait_for(rb"web/run: got HUP", count=count)
    assert ctl("signal", "USR1", "all").returncode == 0
    dinit.wait_for(rb"web/run: got USR1")
    assert ctl("signal", "HUP", "all").returncode == 0
    dinit.wait_for(rb"other/run: other HUP")
    bad = ctl("signal", "NOPE", "web")
    assert (bad.returncode, bad.stderr) == (2, "dinit signal: unknown signal 'NOPE'\n")
    assert stop_dinit(dinit) == 0


def test_shutdown_is_teardown_naming_the_requester(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    gate = tmp_path / "gate"
    services.add("slow", f"trap 'while [ ! -e {gate} ]; do sleep 0.05; done; exit 0' TERM\n"
                 "while :; do sleep 0.05; done\n")
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    result = ctl("shutdown")
    assert result.returncode == 0, result
    dinit.wait_for(rb"web/run: PID \d+ finished")  # teardown is under way; slow waits for the gate
    again = ctl("shutdown")  # §12: asked again during teardown, still 0
    assert again.returncode == 0, again
    gate.touch()
    assert dinit.wait() == 0
    assert re.search(rb"dinit: info: shutdown requested by PID \d+, terminating services", dinit.stderr)
    assert re.search(rb"shutdown requested by PID \d+, already terminating services", dinit.stderr)


def test_shutdown_with_nothing_left_to_stop_still_answers(services: Services, tmp_path: Path) -> None:
    """With every service held down, teardown is instant and dinit, as PID 1, exits at once, which
    kills every process of its namespace: the client must still get and read its answer. This one
    reads slowly (after 0.3 s), as a loaded machine's ``docker exec`` may; dinit waits for it (up to
    1 s, the final flush), so it exits 0 instead of being SIGKILLed with dinit's namespace."""
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    assert ctl("stop", "web").returncode == 0
    script = ("import json, socket, sys, time\nclient = socket.socket(socket.AF_UNIX)\n"
              "client.connect(sys.argv[1])\nclient.sendall(b'{\"v\":1,\"id\":1,\"cmd\":\"shutdown\"}\\n')\n"
              "time.sleep(0.3)\nanswer = json.loads(client.makefile('rb').readline())\n"
              "sys.exit(0 if answer['ok'] else 1)\n")
    result = subprocess.run(["nsenter", "-t", str(dinit.pid), "-p", "-m", "--", PY, "-c", script,
                             str(ctl.sock)], capture_output=True, text=True, timeout=30)
    assert dinit.wait() == 0
    assert result.returncode == 0, (result, dinit.stderr)


def test_reload_rescans_and_prints_what_changed(services: Services, tmp_path: Path) -> None:
    """``reload`` runs hot reload's rescan once whatever DINIT_WATCH says (§11, §12) and prints each
    change; it changes things, so it needs the §12 permission."""
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    assert (ctl("reload").returncode, ctl("reload").stdout) == (0, "no changes\n")
    services.add("api", WAIT)
    assert ctl("reload", inside=False).returncode == 1  # permission-denied from outside
    result = ctl("reload")
    assert (result.returncode, result.stdout) == (0, "api: added, starting\n"), result
    dinit.wait_for(rb"api/run: running with PID")
    assert ctl.json("reload") == {"changes": []}
    assert stop_dinit(dinit) == 0


# -- submit --------------------------------------------------------------------------------------


def test_submit_wait_returns_the_jobs_status(services: Services, tmp_path: Path, pid1: bool) -> None:
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path, pid1)
    ready(dinit, "web")
    result = ctl("submit", "--wait", "--name", "migrate", "--", "sh", "-c", 'echo \'{"step":1}\'; exit 7')
    assert result.returncode == 7, result
    dinit.wait_for(rb'\{"step":1', stream="stdout")  # dinit's stdout reaches the test by a thread
    assert {"step": 1, "service": "migrate", "stage": "run"}.items() <= dinit.json_lines()[0].items()
    killed = ctl("submit", "--wait", "--", "sh", "-c", "kill -KILL $$")
    assert killed.returncode == 128 + 9
    assert ctl("status", "migrate").stdout.startswith("down: migrate: ")
    assert "crashed (exit 7)" in ctl("status", "migrate").stdout
    assert dinit.popen.poll() is None  # a job's exit does not tear down without --critical
    assert stop_dinit(dinit) == 0


def test_submit_names_and_path_lookup(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    result = ctl("submit", "sleep", "30")
    assert re.fullmatch(r"submit-1: started with PID \d+\n", result.stdout), result
    assert ctl.json("status", "submit-1")[0]["origin"] == "submit"
    taken = ctl("submit", "--name", "web", "true")
    assert (taken.returncode, taken.stderr) == (1, "dinit submit: web: a service of that name exists\n")
    bad = ctl("submit", "--name", "../x", "true")
    assert bad.returncode == 2 and "invalid name '../x'" in bad.stderr
    missing = ctl("submit", "no-such-program-anywhere")
    assert (missing.returncode, missing.stderr) == (
        1, "dinit submit: no-such-program-anywhere: command not found\n")
    assert ctl("submit", "--name", "job", "--wait", "true").returncode == 0
    assert ctl("submit", "--name", "job", "--wait", "false").returncode == 1  # an ended job's name is free
    assert stop_dinit(dinit) == 0
    assert re.search(rb"submit-1/run: sending SIGTERM to PID \d+", dinit.stderr)  # stopped by teardown


def test_submit_critical_tears_down_and_still_answers(services: Services, tmp_path: Path) -> None:
    """``--critical``: the job's exit tears the container down; the waiting client gets its status
    before dinit exits (§12 clarification), also as PID 1, whose exit kills its namespace."""
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    result = ctl("submit", "--critical", "--wait", "--", "sh", "-c", "exit 5")
    assert result.returncode == 5, result
    assert dinit.wait() == 3
    assert re.search(rb"submit-1/run: PID \d+ exited with status 5, stopping the container", dinit.stderr)


# -- who may do what -----------------------------------------------------------------------------


def test_outside_the_pid_namespace_only_reads(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    assert ctl("status", inside=False).returncode == 0
    for args in (["stop", "web"], ["signal", "HUP", "web"], ["submit", "true"], ["shutdown"]):
        result = ctl(*args, inside=False)
        assert result.returncode == 1, result
        word = args[0]
        assert result.stderr == f"dinit {word}: {word}: not allowed from outside dinit's PID namespace\n"
    assert ctl("status", "web").returncode == 0  # still running
    assert stop_dinit(dinit) == 0


def test_another_uid_only_reads(services: Services, tmp_path: Path) -> None:
    """The socket is 0600: another uid cannot even connect; let in anyway (a wider mode), it may
    still only read (§12: uid 0 or dinit's own uid)."""
    services.add("web", WAIT)
    public = Path(tempfile.mkdtemp(prefix="dinit-test-", dir="/tmp"))  # a path uid 65534 can reach
    public.chmod(0o755)
    dinit, ctl = launch(services, tmp_path, pid1=False, sock=public / "control.sock")
    ready(dinit, "web")
    assert (ctl.sock.stat().st_mode & 0o777) == 0o600
    nobody = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")
    refused = ctl("status", wrapper=nobody)
    assert refused.returncode == 4 and "Permission denied" in refused.stderr
    ctl.sock.chmod(0o666)
    assert ctl("status", wrapper=nobody).returncode == 0
    result = ctl("stop", "web", wrapper=nobody)
    assert (result.returncode, result.stderr) == (1, "dinit stop: stop: not allowed from uid 65534\n")
    assert ctl("status", "web").returncode == 0
    assert stop_dinit(dinit) == 0
    assert not ctl.sock.exists()
    public.rmdir()


def test_changing_commands_need_names_even_from_a_raw_client(services: Services, tmp_path: Path) -> None:
    """A request that names no service is refused, not carried out on every service: the CLI
    always sends names, a hand-written or buggy client might not (run from inside, where changes
    are allowed)."""
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    requests = b"".join(b'{"v":1,"id":%d,"cmd":"%s"%s}\n' % (index, cmd.encode(), args)
                        for index, (cmd, args) in enumerate([
                            ("stop", b""), ("start", b',"args":{}'), ("restart", b',"args":{"names":[]}'),
                            ("signal", b',"args":{"signal":"HUP"}')]))
    script = ("import socket, sys\nclient = socket.socket(socket.AF_UNIX)\nclient.connect(sys.argv[1])\n"
              "client.sendall(sys.argv[2].encode())\ndata = b''\nwhile data.count(b'\\n') < 4:\n"
              "    data += client.recv(65536)\nsys.stdout.write(data.decode())\n")
    result = subprocess.run(["nsenter", "-t", str(dinit.pid), "-p", "-m", "--", PY, "-c", script,
                             str(ctl.sock), requests.decode()], capture_output=True, text=True, timeout=30)
    errors = [json.loads(line)["error"] for line in result.stdout.splitlines()]
    assert errors == [{"code": "bad-request", "message": f"{cmd} needs names"}
                      for cmd in ("stop", "start", "restart", "signal")], result
    assert ctl("status", "web").stdout.startswith("run: web: ")  # untouched
    assert b"sending SIGTERM" not in dinit.stderr and b"forwarding signal" not in dinit.stderr
    assert stop_dinit(dinit) == 0


# -- hostile and broken clients ------------------------------------------------------------------


def raw(sock: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(20)
    client.connect(str(sock))
    return client


def answers(client: socket.socket, count: int) -> list[dict[str, Any]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_bad_requests_get_their_errors_in_order(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    client = raw(ctl.sock)
    client.sendall(b'{nope\n{"v":1,"id":1,"cmd":"frobnicate"}\n{"v":1,"id":2,"cmd":"status","args":{}}\n'
                   b'{"v":1,"id":3,"cmd":"stop","args":{"names":["web"]}}\n')
    bad, unknown, status, stop = answers(client, 4)
    assert bad == {"v": 1, "id": None, "ok": False,
                   "error": {"code": "bad-request", "message": "request is not valid JSON"}}
    assert unknown["error"] == {"code": "unknown-command", "message": "frobnicate: unknown command"}
    assert status["id"] == 2 and status["ok"] and status["result"]["services"][0]["name"] == "web"
    assert stop["error"]["code"] == "permission-denied"  # the test is outside the namespace
    client.sendall(b"x" * (70 * 1024))
    [too_long] = answers(client, 1)
    assert too_long["error"] == {"code": "bad-request",
                                 "message": "request line longer than 65536 bytes with its newline"}
    assert client.recv(100) == b""  # and disconnected
    assert stop_dinit(dinit) == 0


def test_busy_idle_and_deaf_clients_delay_nothing(services: Services, tmp_path: Path) -> None:
    """40 idle connections: 32 are served, the others are told ``busy``; a client that never reads
    its answers is cut off; idle ones are closed after 10 s; output and SIGTERM go on meanwhile."""
    services.add("web", "i=0\nwhile :; do i=$((i+1)); echo \"{\\\"n\\\":$i}\"; sleep 0.01; done\n")
    dinit, ctl = launch(services, tmp_path)
    clients = [raw(ctl.sock) for _ in range(40)]
    refused = []
    for client in clients[32:]:
        [answer] = answers(client, 1)
        refused.append(answer["error"])
    assert refused == [{"code": "busy", "message": "too many connections (at most 32)"}] * 8
    deaf = clients[0]
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = b'{"v":1,"id":1,"cmd":"status","args":{}}\n'
    with pytest.raises(OSError):
        deaf.settimeout(30)
        for _ in range(200_000):
            deaf.sendall(request)  # never reading: dinit stops reading, then hangs up
    before = len(dinit.stdout)
    poll(lambda: len(dinit.stdout) > before + 100, message="output going on")
    poll(lambda: all(client.recv(1) == b"" for client in clients[1:32]), timeout=30,
         message="idle clients closed after 10 s")
    assert ctl("status", "web").returncode == 0  # served again
    assert stop_dinit(dinit) == 0


def test_a_waiting_client_is_answered_when_teardown_stops_its_job(services: Services, tmp_path: Path) -> None:
    """SIGTERM while ``submit --wait`` waits: teardown stops the job, and the client still gets its
    status (128+15) before dinit, PID 1 of the namespace the client runs in, exits."""
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    command = ["nsenter", "-t", str(dinit.pid), "-p", "-m", "--", PY, "-m", "dinit", "submit", "--wait",
               "--name", "job", "--", "sleep", "60"]
    client = subprocess.Popen(command, env=environment(None, DINIT_SOCKET=str(ctl.sock)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dinit.wait_for(rb"job/run: running with PID")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert client.wait(20) == 128 + signal.SIGTERM, client.stderr.read() if client.stderr else ""


def test_the_client_imports_nothing_of_the_init() -> None:
    """``dinit status`` must not pay for the supervisor, the output path (orjson) or structlog."""
    code = ("import sys, dinit.entry, dinit.control.commands\n"
            "print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = [name for name in loaded if name.startswith(("dinit.lifecycle", "dinit.output", "dinit.process",
                                                         "dinit.service", "dinit.log", "dinit.cli",
                                                         "dinit.control.server", "structlog", "orjson",
                                                         "msgspec", "asyncio"))]
    assert heavy == []


def test_answers_keep_request_order_while_one_waits(services: Services, tmp_path: Path) -> None:
    """A ``stop`` that waits for a slow stop holds back the answer to a later ``status`` on the same
    connection (answered in order, §12). The test is in dinit's namespace (dinit as subreaper), so it
    may stop."""
    services.add("slow", "trap 'sleep 0.5; exit 0' TERM\n" + WAIT)
    dinit, ctl = launch(services, tmp_path, pid1=False)
    ready(dinit, "slow")
    client = raw(ctl.sock)
    client.sendall(b'{"v":1,"id":1,"cmd":"stop","args":{"names":["slow"],"wait":10}}\n'
                   b'{"v":1,"id":2,"cmd":"status","args":{"names":["slow"]}}\n')
    stop, status = answers(client, 2)
    assert (stop["id"], stop["ok"], status["id"]) == (1, True, 2), (stop, status)
    assert stop["result"]["services"][0]["state"] == "down"
    # Each request acts when it arrives; only its answer waits its turn: status saw it stopping.
    assert status["result"]["services"][0]["state"] == "stopping"
    assert stop_dinit(dinit) == 0


def test_w0_does_not_wait(services: Services, tmp_path: Path) -> None:
    services.add("slow", "trap 'sleep 0.5; exit 0' TERM\n" + WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "slow")
    result = ctl("stop", "-w", "0", "slow")
    assert (result.returncode, result.stdout) == (0, "")
    assert ctl.json("status", "slow")[0]["state"] == "stopping"
    dinit.wait_for(rb"slow: stopped through the control socket, held down")
    assert stop_dinit(dinit) == 0


def test_a_running_jobs_name_is_in_use(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    dinit, ctl = launch(services, tmp_path)
    ready(dinit, "web")
    assert ctl("submit", "--name", "job", "--", "sleep", "30").returncode == 0
    again = ctl("submit", "--name", "job", "--", "true")
    assert (again.returncode, again.stderr) == (1, "dinit submit: job: a service of that name exists\n")
    assert ctl("stop", "job").returncode == 0  # a job is a service: stop acts on it too
    assert dinit.popen.poll() is None
    assert stop_dinit(dinit) == 0
