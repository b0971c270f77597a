"""Reaping (§6.1): every zombie that ends up as dinit's child is reaped, as PID 1 and as a subreaper,
and no exit status of a program dinit started is lost or misattributed while orphans die around it.

The zombie count is taken from inside: the service that made the orphans looks at ``/proc`` in its
own PID namespace for zombies whose parent is dinit (PID 1, or its own parent as a subreaper) until
none is left or a deadline passes, and prints the count.
"""

from __future__ import annotations

import re
import sys

import pytest
from harness import TIME, Dinit, Services, start

PY = sys.executable
ORPHANS = 1000

#: Counts zombies whose parent is ``dinit`` (a PID), polling until none is left or 10 s have passed.
COUNT_ZOMBIES = """
def zombies(dinit):
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                data = file.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] == b"Z" and int(fields[1]) == dinit:
            count += 1
    return count

def settle(dinit):
    deadline = time.monotonic() + 10
    while (count := zombies(dinit)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return count
"""

#: A run that makes ORPHANS orphans which exit at once (a child forks a grandchild and exits
#: immediately; the grandchild exits immediately too, so it becomes dinit's zombie), then reports.
ORPHAN_MAKER = f"""#!{PY}
import os, sys, time
{COUNT_ZOMBIES}
dinit = os.getppid()
for _ in range({ORPHANS}):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
print(f"orphans {ORPHANS}", file=sys.stderr, flush=True)
print(f"zombies {{settle(dinit)}}", file=sys.stderr, flush=True)
"""


def assert_exited(dinit: Dinit, code: int) -> None:
    """dinit exited with ``code`` and its last stderr line is the info line saying so (§5.3)."""
    assert dinit.returncode == code, dinit.stderr.decode(errors="replace")
    last = dinit.stderr.splitlines()[-1]
    assert re.fullmatch(TIME + rb" dinit: info: dinit exiting with status " + str(code).encode(), last), last


def handled_orphans(dinit: Dinit) -> set[int]:
    """PIDs dinit says it reaped, terminated or saw finish as processes it did not start (§6.2)."""
    reported = re.findall(rb"(?:info: \S+: reaping process|warning: \S+: terminating reparented child "
                          rb"process) with PID (\d+)", dinit.stderr)
    finished = re.findall(rb"info: [^/\s]+/(\d+): PID \1 finished with", dinit.stderr)
    return {int(pid) for pid in reported + finished}


@pytest.mark.parametrize(("pid1", "policy"), [(True, "terminate"), (False, "terminate"), (True, "ignore")],
                         ids=["pid1", "subreaper", "pid1-ignore"])
def test_thousand_orphans_are_reaped(services: Services, pid1: bool, policy: str) -> None:
    """§6.1: 1000 short-lived orphans all become dinit's children and are all reaped: seen from
    inside the namespace, no zombie with dinit as parent remains (as PID 1, the parent is PID 1; as
    a subreaper, it is dinit's PID), whatever the reparenting policy. The run's own exit 0 then
    tears down normally."""
    services.add("orphans", ORPHAN_MAKER)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_REPARENTING_POLICY=policy)
    dinit.wait(60)
    assert dinit.service_lines("orphans/run") == [f"orphans {ORPHANS}".encode(), b"zombies 0"]
    assert_exited(dinit, 0)
    assert len(handled_orphans(dinit)) >= ORPHANS
    assert re.search(rb"info: orphans/run: PID \d+ finished with status 0\n", dinit.stderr)


def test_thousand_orphans_shell(services: Services, pid1: bool) -> None:
    """§6.1: the same with a shell making the orphans (``(sleep 0 &)``, each an exec'd program that
    is orphaned while it runs), then counting zombies parented by dinit."""
    services.add("orphans", f"""#!{PY}
import os, subprocess, sys, time
{COUNT_ZOMBIES}
dinit = os.getppid()
subprocess.run(["sh", "-c", "for i in $(seq {ORPHANS}); do (sleep 0 &); done"], check=True)
print(f"zombies {{settle(dinit)}}", file=sys.stderr, flush=True)
""")
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    dinit.wait(60)
    assert dinit.service_lines("orphans/run") == [b"zombies 0"]
    assert_exited(dinit, 0)
    assert len(handled_orphans(dinit)) >= ORPHANS


#: A run that makes ORPHANS_PER_SERVICE long-lived orphans blocked reading a pipe it holds, ignores
#: SIGTERM (so teardown by another service cannot change its status), waits for the flag, then
#: closes the pipe and exits with its code: its exit and all its orphans' exits happen together.
EXITER = f"""#!{PY}
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
read_end, write_end = os.pipe()
for _ in range({{orphans}}):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
os.close(read_end)
print(f"ready {{{{os.getpid()}}}}", file=sys.stderr, flush=True)
while not os.path.exists("{{flag}}"):
    time.sleep(0.005)
os.close(write_end)
os._exit({{code}})
"""


def test_exit_status_survives_mass_orphan_death(services: Services, pid1: bool) -> None:
    """§6.1: exit statuses are never lost or misattributed: three services exit with their own
    codes (41, 42, 43) at the moment hundreds of their orphans die; each is logged as ``finished
    with status <its code>`` under its own PID, and the first of them decides the exit code (3)."""
    flag = services.root.parent / "go"
    codes = {"a": 41, "b": 42, "c": 43}
    for name, code in codes.items():
        services.add(name, EXITER.format(orphans=200, flag=flag, code=code))
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    pids = {}
    for name in codes:
        [match] = dinit.wait_for(TIME + rb" " + name.encode() + rb"/run: ready (\d+)\n", timeout=30)
        pids[name] = int(match.group(1))
        assert f"{name}/run: running with PID {pids[name]}".encode() in dinit.messages("info")
    flag.touch()
    dinit.wait(30)
    assert_exited(dinit, 3)
    info = dinit.messages("info")
    for name, code in codes.items():
        finished = [m for m in info if m.startswith(f"{name}/run: PID ".encode()) and b"finished" in m]
        assert finished == [f"{name}/run: PID {pids[name]} finished with status {code}".encode()]
    # Every orphan was dinit's, and every one of them is gone (dinit only exits with no child left).
    statuses = re.findall(rb"info: [^/\s]+/(\d+): PID (\d+) finished with (status|signal) (\d+)",
                          dinit.stderr)
    assert all(stage == pid for stage, pid, _, _ in statuses)
    assert not [s for s in statuses if (s[2], s[3]) != (b"status", b"0")], statuses


def test_single_service_exit_code_with_orphans(services: Services) -> None:
    """§6.1: a lone service exiting 42 as its 500 orphans die is ``finished with status 42``;
    nothing else (no orphan's status 0) is taken for it."""
    flag = services.root.parent / "go"
    services.add("x", EXITER.format(orphans=500, flag=flag, code=42))
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_REPARENTING_POLICY="ignore")
    [match] = dinit.wait_for(TIME + rb" x/run: ready (\d+)\n", timeout=30)
    flag.touch()
    dinit.wait(30)
    assert_exited(dinit, 3)
    assert f"x/run: PID {int(match.group(1))} finished with status 42".encode() in dinit.messages("info")
    assert len(re.findall(rb"x/run: PID \d+ finished", dinit.stderr)) == 1
