"""``dinit check`` (§13) and ``dinit events`` (§14) with the real client against the real dinit (as PID 1,
and as a subreaper where it matters), run inside its namespace (``nsenter``, or from a service) or
outside it (events is read-only)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from harness import Ctl, Dinit, Services, Subscriber, environment, launch, poll

PY = sys.executable
GATE = "while [ ! -e {gate} ]; do sleep 0.02; done\n"
FOREVER = "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n"


def gated_db(services: Services, gate: Path) -> None:
    """A ``db`` that says it is ready on its notification fd once ``gate`` exists."""
    db = services.add("db", GATE.format(gate=gate) + "printf 'x\\n' >&3\n" + FOREVER)
    (db / "notification-fd").write_text("3\n")


# -- check ---------------------------------------------------------------------------------------------


def test_check_before_and_after_ready(services: Services, tmp_path: Path, pid1: bool) -> None:
    gate = tmp_path / "gate"
    gated_db(services, gate)
    api = services.add("api", FOREVER)
    (api / "check").write_text(f"#!/bin/sh\ntest -e {gate}\n")
    (api / "check").chmod(0o755)
    dinit, ctl = launch(services, tmp_path, pid1)
    poll(lambda: "check: exit 1" in ctl("check").stdout, message="api's check failing")
    result = ctl("check")
    assert result.returncode == 1
    assert re.fullmatch(r"not ready: api \(starting \d+s, check: exit 1\), "
                        r"db \(starting \d+s, notification-fd\)\n", result.stdout), result
    named = ctl("check", "db")
    assert named.returncode == 1 and named.stdout.startswith("not ready: db (starting "), named
    gate.touch()
    poll(lambda: ctl("check").returncode == 0, message="the container ready")
    result = ctl("check")
    assert result.stdout == "ok: 2 services ready\n", result
    assert ctl("check", "db").stdout == "ok: 1 service ready\n"
    assert ctl.json("check")["ready"] is True
    unknown = ctl("check", "nosuch")
    assert unknown.returncode == 1 and unknown.stderr == "dinit check: nosuch: no such service\n", unknown
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_check_wait_is_the_dependency_pattern(services: Services, tmp_path: Path, pid1: bool) -> None:
    db = services.add("db", "sleep 1\nprintf 'x\\n' >&3\n" + FOREVER)
    (db / "notification-fd").write_text("3\n")
    client = f"{PY} -m dinit"
    services.add("app", f"{client} check --wait 60 db || exit 1\n{client} status db >&2\n" + FOREVER)
    dinit, ctl = launch(services, tmp_path, pid1)
    line = dinit.wait_for(rb"app/run: (run: db: .*)\n")[0].group(1)
    assert b"starting" not in line, line
    assert ctl("check").stdout == "ok: 2 services ready\n"
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_check_wait_gives_up_at_its_deadline(services: Services, tmp_path: Path) -> None:
    gated_db(services, tmp_path / "gate")
    dinit, ctl = launch(services, tmp_path)
    result = ctl("check", "--wait", "0.3", "db")
    assert result.returncode == 1 and result.stdout.startswith("not ready: db (starting "), result
    assert result.stdout.endswith("s, notification-fd)\n")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_alive_until_teardown(services: Services, tmp_path: Path, pid1: bool) -> None:
    gate = tmp_path / "gate"
    services.add("stubborn", "trap '' TERM\n" + GATE.format(gate=gate))
    dinit, ctl = launch(services, tmp_path, pid1, DINIT_TIMEOUT="60")
    alive = ctl("check", "--alive")
    assert (alive.returncode, alive.stdout) == (0, "ok: alive\n"), alive
    dinit.signal(signal.SIGTERM)
    poll(lambda: ctl("check", "--alive").returncode == 1, message="not alive in teardown")
    assert ctl("check", "--alive").stdout == "not alive: the container is stopping\n"
    assert ctl("check").returncode == 1
    gate.touch()
    dinit.wait()


def test_check_without_dinit_is_one_line_and_1(tmp_path: Path) -> None:
    result = subprocess.run([PY, "-m", "dinit", "check"], capture_output=True, text=True, timeout=30,
                            env=environment(None, DINIT_SOCKET=str(tmp_path / "none.sock")))
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.startswith("dinit check: cannot reach dinit: ") and result.stderr.count("\n") == 1


# -- events --------------------------------------------------------------------------------------------


def test_events_replay_then_live_in_order(services: Services, tmp_path: Path, pid1: bool) -> None:
    gate = tmp_path / "gate"
    gated_db(services, gate)
    services.add("web", FOREVER)
    dinit, ctl = launch(services, tmp_path, pid1)
    poll(lambda: "web (" not in ctl("check").stdout, message="web running")
    events = Subscriber(dinit, ctl)
    events.wait_for(kind="container", replay=True)
    replay = events.events[:3]
    assert [(e["service"], e["state"], e["replay"]) for e in replay] == [
        ("db", "starting", True), ("web", "running", True), (None, "starting", True)]
    gate.touch()
    events.wait_for(kind="container", state="running", replay=False)
    dinit.signal(signal.SIGTERM)
    events.wait_for(kind="container", state="stopped")
    assert dinit.wait() == 0
    assert events.process.wait(timeout=30) == 0
    live = events.events[3:]
    assert live[0]["service"] == "db" and live[0]["state"] == "running" and live[0]["previous"] == "starting"
    assert live[1]["kind"] == "container" and live[1]["state"] == "running"
    assert live[-1]["state"] == "stopped" and live[-1]["exit_code"] == 0
    seqs = [e["seq"] for e in events.events]
    assert all(seq == seqs[0] for seq in seqs[:3])
    assert seqs[3:] == list(range(seqs[0] + 1, seqs[0] + 1 + len(live)))
    assert {e["boot"] for e in events.events} == {replay[0]["boot"]}
    assert events.lines[0] == json.dumps(replay[0], separators=(",", ":"), ensure_ascii=False) + "\n"


def test_events_no_replay_from_outside_the_namespace(services: Services, tmp_path: Path) -> None:
    services.add("web", FOREVER)
    dinit, ctl = launch(services, tmp_path)
    poll(lambda: ctl("check").returncode == 0, message="the container ready")
    events = Subscriber(dinit, ctl, "--no-replay", inside=False)
    # The subscription may take effect in the middle of a restart: restart until a whole one was seen.
    poll(lambda: ctl("restart", "web").returncode == 0
         and any(event.get("state") == "stopping" for event in events.events), message="a live event")
    assert all(event["service"] == "web" and event["replay"] is False
               for event in events.events if "service" in event), events.events
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert events.process.wait(timeout=30) == 0
    assert not any(event["replay"] for event in events.events)


def restarter(services: Services, names: list[str], go: Path, done: Path) -> None:
    """A service that, once ``go`` exists, restarts ``names`` through the control socket (each
    request answered once they run again) until ``done`` exists; then it waits for SIGTERM."""
    request = json.dumps({"v": 1, "id": 1, "cmd": "restart", "args": {"names": names}}) + "\n"
    services.add("restarter", f"""#!{PY}
import os, signal, socket, time
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while not os.path.exists({str(go)!r}):
    time.sleep(0.02)
client = socket.socket(socket.AF_UNIX)
client.connect(os.environ["DINIT_SOCKET"])
answers = client.makefile("rb")
while not os.path.exists({str(done)!r}):
    client.sendall({request.encode()!r})
    answers.readline()
while True:
    time.sleep(1)
""")


def cut_off(services: Services, tmp_path: Path, pid1: bool) -> tuple[Dinit, Ctl, Subscriber, list[str]]:
    """A dinit whose ``restarter`` floods events until a subscriber that never reads is cut off;
    beside it a ``--no-replay`` subscriber that reads. Returns once the deaf one got its hang-up."""
    go, done = tmp_path / "go", tmp_path / "done"
    names = [f"s{number}-{'x' * 150}" for number in range(20)]
    for name in names:
        services.add(name, "exec sleep 1000\n")
    restarter(services, names, go, done)
    dinit, ctl = launch(services, tmp_path, pid1)
    poll(lambda: ctl("check").returncode == 0, message="the container ready")
    deaf = socket.socket(socket.AF_UNIX)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deaf.connect(str(ctl.sock))
    deaf.sendall(b'{"v":1,"id":1,"cmd":"events","args":{}}\n')
    reader = Subscriber(dinit, ctl, "--no-replay", inside=False)
    go.touch()
    dinit.wait_for(rb"control: client PID \d+ does not read its answers, disconnecting it", timeout=120)
    done.touch()
    deaf.settimeout(30)
    unread = bytearray()
    while chunk := deaf.recv(1 << 20):  # what the kernel held, then the hang-up
        unread += chunk
    deaf.close()
    assert json.loads(unread.split(b"\n")[0])["replay"] is True
    return dinit, ctl, reader, names


def test_an_events_subscriber_that_never_reads_is_cut_off(services: Services, tmp_path: Path,
                                                          pid1: bool) -> None:
    """Once 1 MiB of events waits unread (beyond what the kernel holds), dinit drops that subscriber
    with one info line (§12 limits); dinit runs on, answers other requests, and the subscriber that
    reads goes on getting events until dinit exits."""
    dinit, ctl, reader, names = cut_off(services, tmp_path, pid1)
    assert dinit.stderr.count(b"does not read its answers") == 1
    assert dinit.popen.poll() is None
    seen = len(reader.events)
    assert ctl("restart", names[0]).returncode == 0
    poll(lambda: any(e.get("service") == names[0] and e["state"] == "running" for e in reader.events[seen:]),
         message="an event after the cut-off")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert reader.process.wait(timeout=30) == 0
    assert reader.events[-1]["kind"] == "container" and reader.events[-1]["state"] == "stopped"


def test_a_cut_off_costs_other_subscribers_no_event(services: Services, tmp_path: Path) -> None:
    dinit, _ctl, reader, _names = cut_off(services, tmp_path, pid1=True)
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert reader.process.wait(timeout=30) == 0
    seqs = [event["seq"] for event in reader.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_an_ended_service_is_named_with_the_pid_of_its_run(services: Services, tmp_path: Path,
                                                           pid1: bool) -> None:
    """§14: the event of a service that ended, live and in a later replay, names the PID its
    ``run`` had, also for a run started before the event stream was set up (it is made once the
    first programs run)."""
    gate = tmp_path / "gate"
    services.add("one", f"while [ ! -e {gate} ]; do sleep 0.02; done\nexit 115\n")
    services.add("web", FOREVER)
    dinit, ctl = launch(services, tmp_path, pid1)
    events = Subscriber(dinit, ctl)
    running = events.wait_for(service="one", replay=True)
    assert running["state"] == "running" and isinstance(running["pid"], int)
    gate.touch()
    ended = events.wait_for(service="one", state="disabled")
    later = Subscriber(dinit, ctl).wait_for(service="one", replay=True)
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert ended["pid"] == later["pid"] == running["pid"]


def test_a_run_killed_by_its_stop_hook_is_stopped_not_crashed(services: Services, tmp_path: Path,
                                                              pid1: bool) -> None:
    """§10: ``stopped`` is a death "of a stop dinit asked for", also when the signal comes from the
    service's own ``terminate`` hook (``kill $DINIT_PID``), as it does on every ``docker stop``."""
    services.add("h", "exec sleep 1000\n", terminate='kill "$DINIT_PID"\n')
    services.add("web", FOREVER)
    dinit, ctl = launch(services, tmp_path, pid1)
    events = Subscriber(dinit, ctl)
    events.wait_for(kind="container", state="running")
    dinit.signal(signal.SIGTERM)
    ended = events.wait_for(service="h", previous="stopping")
    assert (ended["state"], ended["exit"]) == ("stopped", {"code": None, "signal": 15})
    assert events.wait_for(service="web", previous="stopping")["state"] == "stopped"
    assert dinit.wait() == 0


def test_a_restarted_instance_goes_on_from_its_predecessors_state(services: Services, tmp_path: Path,
                                                                   pid1: bool) -> None:
    """§10/§14: every transition is one event, so ``rm S/down`` gives ``down -> running``, not a
    ``pending`` the service never showed (hot reload makes a new instance there)."""
    directory = services.add("c", FOREVER)
    dinit, ctl = launch(services, tmp_path, pid1, DINIT_WATCH="on")
    events = Subscriber(dinit, ctl)
    events.wait_for(kind="container", state="running")
    (directory / "down").touch()
    events.wait_for(service="c", state="down")
    (directory / "down").unlink()
    again = events.wait_for(service="c", state="running", replay=False, previous="down")
    chain = [(e["previous"], e["state"]) for e in events.events if e["service"] == "c" and not e["replay"]]
    assert chain == [("running", "stopping"), ("stopping", "stopped"), ("stopped", "down"),
                     ("down", "running")], chain
    assert again["pid"] != events.events[0]["pid"]
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_down_says_why_a_control_stop_or_a_down_file(services: Services, tmp_path: Path, pid1: bool) -> None:
    """§14 ``reason`` of a ``down`` event: ``control`` when ``dinit stop`` holds it down, ``down-file``
    when its down file does (and the replay says the same)."""
    services.add("web", FOREVER)
    services.add("db", FOREVER, down=True)
    dinit, ctl = launch(services, tmp_path, pid1)
    events = Subscriber(dinit, ctl)
    events.wait_for(kind="container", state="running")
    assert ctl("stop", "web").returncode == 0
    assert events.wait_for(service="web", state="down", replay=False)["reason"] == "control"
    assert events.wait_for(service="db", state="down", replay=True)["reason"] == "down-file"
    replay = Subscriber(dinit, ctl)
    assert replay.wait_for(service="web", replay=True)["reason"] == "control"
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
