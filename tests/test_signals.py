"""Signals sent to dinit (§8): teardown signals, forwarded signals, job-control signals that must not
stop dinit, and every other catchable signal, which must not end it.

Each test runs dinit as PID 1 of a fresh PID namespace and as a plain subreaper (``pid1=False``). The
difference matters: the kernel drops signals without a handler that reach a namespace's init from
outside, but a subreaper gets the default action (stop, terminate, core) unless dinit handles or
ignores the signal itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from harness import TIME, Dinit, Services, environment, poll, start

PY = sys.executable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
FORWARDED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM)
JOB_CONTROL = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
#: Every catchable signal §8 does not name (SIGCHLD is dinit's own reaping signal).
OTHERS = sorted(set(signal.valid_signals()) - {*STOP_SIGNALS, *FORWARDED, *JOB_CONTROL, signal.SIGCHLD,
                                                 signal.SIGKILL, signal.SIGSTOP})


def signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


#: A Python ``run`` that prints the name of every forwarded signal it gets (and of SIGTERM, on which
#: it exits 0), after saying ``ready <pid>`` once its handlers are installed.
TRAPPER = f"""#!{PY}
import os, signal, sys, time

def handler(signum, frame):
    print(f"got {{signal.Signals(signum).name}}", file=sys.stderr, flush=True)
    if signum == signal.SIGTERM:
        sys.exit(0)

for signum in (signal.SIGTERM, {", ".join(f"signal.{s.name}" for s in FORWARDED)}):
    signal.signal(signum, handler)
print(f"ready {{os.getpid()}}", file=sys.stderr, flush=True)
while True:
    time.sleep(0.05)  # not signal.pause(): a signal landing just before it would wait for the next
"""


# -- helpers ---------------------------------------------------------------------------------------


def ready_pid(dinit: Dinit, name: str) -> int:
    """Wait until the TRAPPER service ``name`` has its handlers installed; returns its PID."""
    [match] = dinit.wait_for(TIME + rb" " + re.escape(name.encode()) + rb"/run: ready (\d+)\n")
    return int(match.group(1))


def assert_exited(dinit: Dinit, code: int) -> None:
    """dinit exited with ``code`` and its last stderr line is the info line saying so (§5.3)."""
    assert dinit.returncode == code, dinit.stderr.decode(errors="replace")
    last = dinit.stderr.splitlines()[-1]
    assert re.fullmatch(TIME + rb" dinit: info: dinit exiting with status " + str(code).encode(), last), last


def pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` is pending for the process ``pid`` or any of its threads."""
    bit = 1 << (signum - 1)
    masks = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue
        masks += re.findall(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$", status, re.MULTILINE)
    return any(int(mask, 16) & bit for mask in masks)


def state(pid: int) -> str:
    """The process state letter of ``pid`` (``T`` stopped, ``Z`` zombie...)."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rindex(b")") + 2:].split()[0].decode()


def assert_alive(dinit: Dinit, pid: int, after: str) -> None:
    assert dinit.popen.poll() is None, f"dinit ended after {after}:\n{dinit.stderr.decode(errors='replace')}"
    assert state(pid) not in ("T", "t", "Z", "X"), f"dinit is in state {state(pid)} after {after}"


def probe(dinit: Dinit, after: str) -> None:
    """Prove dinit still handles signals: a SIGHUP sent now must come out as a new forwarding line
    (and reach the TRAPPER service ``s``). A dinit stopped or killed by an earlier signal never
    handles it. Callers first wait until the earlier signal is no longer pending, so it was acted
    on before the probe is sent."""
    count = len(re.findall(rb"forwarding signal 1 to PID", dinit.stderr)) + 1
    dinit.signal(signal.SIGHUP)
    try:
        dinit.wait_for(rb"info: s/run: forwarding signal 1 to PID \d+\n", count=count, timeout=5)
        # and the service got it, so the next probe's SIGHUP cannot merge with this one
        dinit.wait_for(TIME + rb" s/run: got SIGHUP\n", count=count, timeout=5)
    except AssertionError as error:
        raise AssertionError(f"dinit stopped reacting after {after}: {error}") from None


# -- teardown signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_stop_signal_tears_down(services: Services, pid1: bool, signum: int) -> None:
    """§8/§5.1: SIGTERM, SIGINT and SIGQUIT each tear down: info ``got signal <n>, terminating
    services``, every run gets SIGTERM (its handler runs), exit code 0."""
    services.add("a", TRAPPER)
    services.add("b", TRAPPER)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    pids = {name: ready_pid(dinit, name) for name in ("a", "b")}
    dinit.signal(signum)
    dinit.wait(10)
    assert_exited(dinit, 0)
    info = dinit.messages("info")
    assert f"got signal {signum}, terminating services".encode() in info
    for name, pid in pids.items():
        assert f"{name}/run: sending SIGTERM to PID {pid}".encode() in info
        assert dinit.service_lines(f"{name}/run")[-1] == b"got SIGTERM"
        assert f"{name}/run: PID {pid} finished with status 0".encode() in info
    assert b"already terminating" not in dinit.stderr


def test_second_stop_signal_while_stopping(services: Services, pid1: bool) -> None:
    """§5.1/§8: a second SIGTERM while a service is still stopping logs ``already terminating
    services`` and changes nothing: the service is not signalled again, and it finishes normally."""
    flag = services.root.parent / "go"
    services.add("slow", "trap 'echo \"slow got TERM\" >&2; "
                         f"while [ ! -e {flag} ]; do sleep 0.01; done; exit 0' TERM\n"
                         'echo "ready $$" >&2\nwhile :; do sleep 0.05; done\n')
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    slow = ready_pid(dinit, "slow")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"slow/run: slow got TERM\n")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"info: got signal 15, already terminating services\n")
    dinit.signal(signal.SIGINT)
    dinit.wait_for(rb"info: got signal 2, already terminating services\n")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 0)
    info = dinit.messages("info")
    assert info.count(b"got signal 15, terminating services") == 1
    assert info.count(f"slow/run: sending SIGTERM to PID {slow}".encode()) == 1
    assert f"slow/run: PID {slow} finished with status 0".encode() in info


def test_stop_signal_during_teardown_by_exit(services: Services) -> None:
    """§5.1/§5.3: SIGTERM arriving while a teardown caused by a run exiting 1 is under way is a
    "second" one too (``already terminating services``), and the exit code stays the first reason's
    (3), not the signal's 0."""
    flag = services.root.parent / "go"
    services.add("a", f"while [ ! -e {flag}.a ]; do sleep 0.01; done\nexit 1\n")
    services.add("slow", "trap 'echo \"slow got TERM\" >&2; "
                         f"while [ ! -e {flag} ]; do sleep 0.01; done; exit 0' TERM\n"
                         'echo "ready $$" >&2\nwhile :; do sleep 0.05; done\n')
    dinit = start(services, DINIT_LOG_LEVEL="info")
    ready_pid(dinit, "slow")
    Path(f"{flag}.a").touch()
    dinit.wait_for(rb"slow/run: slow got TERM\n")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"info: got signal 15, already terminating services\n")
    flag.touch()
    dinit.wait(10)
    assert_exited(dinit, 3)
    assert b"got signal 15, terminating services" not in dinit.stderr


# -- forwarded signals -----------------------------------------------------------------------------


def test_forwarded_signals(services: Services, pid1: bool) -> None:
    """§8: SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH and SIGALRM go to every running run (info
    ``<name>/run: forwarding signal <n> to PID <pid>``; the services' handlers print them), and do
    not tear down; a later SIGTERM does, with exit code 0."""
    services.add("a", TRAPPER)
    services.add("b", TRAPPER)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    pids = {name: ready_pid(dinit, name) for name in ("a", "b")}
    for signum in FORWARDED:
        dinit.signal(signum)
        for name, pid in pids.items():
            dinit.wait_for(re.escape(f"{name}/run: got {signum.name}\n".encode()), timeout=5)
            assert f"{name}/run: forwarding signal {signum.value} to PID {pid}".encode() in dinit.messages()
    assert dinit.popen.poll() is None
    assert b"terminating services" not in dinit.stderr
    assert b"sending SIGTERM" not in dinit.stderr
    dinit.signal(signal.SIGTERM)
    dinit.wait(10)
    assert_exited(dinit, 0)
    for name in pids:
        assert dinit.service_lines(f"{name}/run") == [
            f"ready {pids[name]}".encode(), *(f"got {s.name}".encode() for s in FORWARDED), b"got SIGTERM"]


def test_forwarded_only_to_running_runs(services: Services) -> None:
    """§8: forwarding goes to running runs only: not to a service that disabled itself (115), not
    to loggers."""
    services.add("gone", "exit 115\n")
    services.add("s", TRAPPER, log='while read -r line; do echo "$line"; done\n')
    dinit = start(services, DINIT_LOG_LEVEL="info")
    pid = ready_pid(dinit, "s")
    dinit.wait_for(rb"gone/run: PID \d+ finished and disabled itself")
    dinit.signal(signal.SIGUSR1)
    dinit.wait_for(rb"s/run: got SIGUSR1\n")
    forwarding = [m for m in dinit.messages("info") if b"forwarding" in m]
    assert forwarding == [f"s/run: forwarding signal {signal.SIGUSR1.value} to PID {pid}".encode()]
    dinit.signal(signal.SIGTERM)
    dinit.wait(10)
    assert_exited(dinit, 0)


# -- job control: dinit never stops ----------------------------------------------------------------


#: Starts dinit as a job of its own process group whose parent (this wrapper) is in the same session:
#: unlike a session leader's group (what the harness makes), that group is not orphaned, so the kernel
#: does apply the default "stop" action of SIGTSTP/SIGTTIN/SIGTTOU to it — like dinit started from an
#: interactive shell and hit by Ctrl-Z. The wrapper exits with dinit's status.
JOB_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.execv(sys.executable, [sys.executable, "-m", "dinit"])
os.setpgid(pid, pid)
_, status = os.waitpid(pid, 0)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


class JobDinit(Dinit):
    """A dinit (subreaper) started by JOB_WRAPPER; ``pid`` is dinit's, not the wrapper's."""

    def __init__(self, services: Services, **variables: str) -> None:
        self.pid1 = False
        self.popen = subprocess.Popen([sys.executable, "-c", JOB_WRAPPER], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=environment(services, **variables), start_new_session=True)
        self._out = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._collect, args=(pipe, buffer), daemon=True)
                         for pipe, buffer in ((self.popen.stdout, self._out),
                                              (self.popen.stderr, self._err))]
        for reader in self._readers:
            reader.start()
        self.returncode = None

    @property
    def pid(self) -> int:
        path = f"/proc/{self.popen.pid}/task/{self.popen.pid}/children"
        return poll(lambda: int(pids[0]) if (pids := open(path).read().split()) else None,
                    message="dinit to start under the wrapper")

    def kill(self) -> None:
        if self.popen.poll() is None:
            for group in {os.getpgid(self.popen.pid), self.pid}:
                os.killpg(group, signal.SIGKILL)
            self.popen.wait()


def test_job_control_signals_do_not_stop_dinit_in_a_job(services: Services) -> None:
    """§8: even where the kernel would stop it (dinit in a non-orphaned process group, as when
    started from an interactive shell), SIGTSTP, SIGTTIN and SIGTTOU do not stop dinit: it still
    handles signals afterwards and tears down normally on SIGTERM."""
    services.add("s", TRAPPER)
    dinit = JobDinit(services, DINIT_LOG_LEVEL="info")
    try:
        ready_pid(dinit, "s")
        pid = dinit.pid
        assert os.getpgid(pid) == pid and os.getsid(pid) == os.getsid(dinit.popen.pid)
        for signum in JOB_CONTROL:
            dinit.signal(signum)
            poll(lambda signum=signum: not pending(pid, signum), timeout=5, message=f"{signum.name} handled")
            probe(dinit, signum.name)
            assert_alive(dinit, pid, signum.name)
        dinit.signal(signal.SIGTERM)
        dinit.wait(10)
        assert_exited(dinit, 0)
    finally:
        dinit.kill()


def test_no_catchable_signal_left_at_default(services: Services, pid1: bool) -> None:
    """§8 "nothing but SIGKILL from outside ends dinit": every catchable signal is caught or ignored
    by dinit (/proc's SigCgt/SigIgn), none left at a default action that could stop or end it."""
    services.add("s", TRAPPER)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    ready_pid(dinit, "s")
    status = Path(f"/proc/{dinit.pid}/status").read_text()
    handled = 0
    for field in ("SigCgt", "SigIgn"):
        match = re.search(rf"^{field}:\s*([0-9a-f]+)$", status, re.MULTILINE)
        assert match, status
        handled |= int(match.group(1), 16)
    default = [signame(s) for s in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
               if not handled & (1 << (s - 1))]
    assert default == []
    dinit.signal(signal.SIGTERM)
    dinit.wait(10)
    assert_exited(dinit, 0)


# -- every other catchable signal ------------------------------------------------------------------


def test_other_signals_do_not_end_dinit(services: Services, pid1: bool) -> None:
    """§8: every other catchable signal (SIGPIPE, SIGURG, SIGPWR, SIGVTALRM, SIGXCPU, SIGABRT,
    real-time signals, ...) is ignored: dinit neither ends (as a subreaper the default action would
    kill it) nor tears down, and keeps handling signals; SIGTERM afterwards exits 0."""
    services.add("s", TRAPPER)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    ready_pid(dinit, "s")
    pid = dinit.pid
    for signum in OTHERS:
        name = signame(signum)
        dinit.signal(signum)
        poll(lambda signum=signum: not pending(pid, signum), timeout=5, message=f"{name} handled")
        probe(dinit, name)
        assert_alive(dinit, pid, name)
    assert b"terminating services" not in dinit.stderr
    assert dinit.service_lines("s/run")[1:] == [b"got SIGHUP"] * len(OTHERS)
    dinit.signal(signal.SIGTERM)
    dinit.wait(10)
    assert_exited(dinit, 0)
    assert dinit.service_lines("s/run")[-1] == b"got SIGTERM"
