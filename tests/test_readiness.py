"""Readiness sources (§13) as PID 1 and as a subreaper, with real programs: ``notification-fd``,
``check``, ``ready-port`` and ``notify-socket``; a service with sources is ``starting`` until all
pass, and the container is ``running`` once every service is."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from harness import Services, poll, run, start
from hypothesis import given
from hypothesis import strategies as st

from dinit.readiness.files import Port, parse_notification_fd, parse_port_line

PY = sys.executable
WAIT_GATE = "while [ ! -e {gate} ]; do sleep 0.02; done\n"
def say(word: str) -> str:
    """A shell line printing one JSON line (stdout is JSON by default, §4.3)."""
    return "echo '{\"m\":\"" + word + "\"}'\n"


FOREVER = "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n"


def _free_port(kind: int = socket.SOCK_STREAM, family: int = socket.AF_INET) -> int:
    with socket.socket(family, kind) as sock:
        sock.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        return int(sock.getsockname()[1])


def _not_within(condition: object, window: float = 1.0) -> None:
    """An observation window for a negative claim: several port polls (0.25 s) or check runs."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        assert not condition(), "became ready"  # type: ignore[operator]
        time.sleep(0.02)


# -- notification-fd ---------------------------------------------------------------------------------


def test_notification_fd_ready_at_first_newline(services: Services, tmp_path: Path, pid1: bool) -> None:
    gate = tmp_path / "gate"
    web = services.add("web", say("waiting") + WAIT_GATE.format(gate=gate) + "printf 'x\\n' >&3\n" + FOREVER)
    (web / "notification-fd").write_text("3\n")
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="debug")
    dinit.wait_for(rb'"waiting"', stream="stdout")
    assert b"web/run: ready" not in dinit.stderr
    assert b"container running" not in dinit.stderr
    gate.touch()
    dinit.wait_for(rb"web/run: ready")
    dinit.wait_for(rb"container running")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_notification_fd_closed_without_newline_is_never_ready(services: Services) -> None:
    web = services.add("web", "printf 'no newline' >&3\nexec 3>&-\n" + FOREVER)
    (web / "notification-fd").write_text("3")
    dinit = start(services, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"web/run: closed notification-fd 3 before saying it is ready")
    assert b"web/run: ready" not in dinit.stderr
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_only_the_notification_fd_is_added(services: Services, tmp_path: Path) -> None:
    """fd 5 is open in ``run`` (the pipe), nothing else beyond 0-2 (§3)."""
    web = services.add("web", "exec sleep 1000\n")
    (web / "notification-fd").write_text("5")
    dinit = start(services, pid1=False, DINIT_LOG_LEVEL="info")
    pid = int(dinit.wait_for(rb"web/run: running with PID (\d+)")[0][1])
    poll(lambda: os.readlink(f"/proc/{pid}/exe").endswith("sleep"))
    assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2", "5"]
    assert b"web/run: ready" not in dinit.stderr
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


@pytest.mark.parametrize(("file", "content", "reason"), [
    ("notification-fd", "2", b"expected one integer from 3 to 1023"),
    ("notification-fd", "three", b"expected one integer"),
    ("ready-port", "tcp:http", b"the port must be a number"),
    ("ready-port", "sctp:80", b"unknown protocol"),
    ("ready-port", "unix:relative.sock", b"absolute path"),
    ("ready-port", "\n# nothing\n", b"no port given"),
])
def test_malformed_readiness_file_is_a_broken_service(services: Services, file: str, content: str,
                                                      reason: bytes) -> None:
    web = services.add("web", "exit 0\n")
    (web / file).write_text(content)
    dinit = run(services)
    assert dinit.returncode == 1
    assert f"web: {web / file}: ".encode() in dinit.stderr and reason in dinit.stderr
    assert b"starting" not in dinit.stderr


def test_check_not_executable_is_a_broken_service(services: Services) -> None:
    web = services.add("web", "exit 0\n")
    (web / "check").write_text("exit 0\n")
    dinit = run(services)
    assert dinit.returncode == 1
    assert f"web: {web / 'check'}: not executable".encode() in dinit.stderr


@given(st.integers(min_value=1, max_value=65535), st.sampled_from(["", "tcp:", "udp:"]))
def test_port_lines(port: int, prefix: str) -> None:
    assert parse_port_line(f"{prefix}{port}") == Port(prefix.rstrip(":") or "tcp", port)


@given(st.integers())
def test_notification_fd_numbers(number: int) -> None:
    if 3 <= number <= 1023:
        assert parse_notification_fd(f" {number}\n") == number
    else:
        with pytest.raises(ValueError):
            parse_notification_fd(str(number))


# -- check -------------------------------------------------------------------------------------------


def test_check_fails_twice_then_passes(services: Services, tmp_path: Path, pid1: bool) -> None:
    count, seen = tmp_path / "count", tmp_path / "pid"
    web = services.add("web", "echo $$ > pid\n" + FOREVER)
    (web / "check").write_text(f"#!/bin/sh\nn=$(( $(cat {count} 2>/dev/null || echo 0) + 1 ))\n"
                               f"echo $n > {count}\necho \"$DINIT_PID\" > {seen}\n"
                               "echo \"{\\\"attempt\\\":$n}\"\n"
                               "[ $n -ge 3 ]\n")
    (web / "check").chmod(0o755)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="debug", DINIT_CHECK_INTERVAL="0.1")
    dinit.wait_for(rb"web/run: ready")
    assert count.read_text().strip() == "3"
    assert seen.read_text().strip() == (web / "pid").read_text().strip()
    dinit.wait_for(rb"container running")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    lines = [line for line in dinit.json_lines() if line.get("stage") == "check"]
    assert [line["attempt"] for line in lines] == [1, 2, 3]


def test_check_that_hangs_is_killed_at_the_timeout(services: Services, tmp_path: Path, pid1: bool) -> None:
    count = tmp_path / "count"
    web = services.add("web", FOREVER)
    (web / "check").write_text(f"#!/bin/sh\nn=$(( $(cat {count} 2>/dev/null || echo 0) + 1 ))\n"
                               f"echo $n > {count}\n[ $n -ge 2 ] && exit 0\nsleep 1000 &\nsleep 1001\n")
    (web / "check").chmod(0o755)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_CHECK_INTERVAL="0.1",
                  DINIT_CHECK_TIMEOUT="0.5")
    dinit.wait_for(rb"web/check: PID \d+ still running after 0.5 s, killing it")
    dinit.wait_for(rb"web/run: ready")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert not [line for line in dinit.messages("warning") if b"reparented" in line]


def test_stopping_while_starting_kills_the_check(services: Services) -> None:
    web = services.add("web", FOREVER)
    (web / "check").write_text("#!/bin/sh\n" + say("checking") + "exec sleep 1000\n")
    (web / "check").chmod(0o755)
    dinit = start(services, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb'"checking"', stream="stdout")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert b"web/run: ready" not in dinit.stderr


# -- ready-port --------------------------------------------------------------------------------------


LISTEN = """#!{py}
import os, socket, sys, time
family, kind, address = {family}, {kind}, {address!r}
sock = socket.socket(family, kind)
while not os.path.exists({gate!r}):
    time.sleep(0.02)
sock.bind(address)
if kind == socket.SOCK_STREAM:
    sock.listen()
print('{{"m":"listening"}}', flush=True)
time.sleep(1000)
"""


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "unix"])
def test_ready_port_with_a_real_listener(services: Services, tmp_path: Path, kind: str, pid1: bool) -> None:
    gate = tmp_path / "gate"
    if kind == "unix":
        path = str(tmp_path / "app.sock")
        family, address, line = "socket.AF_UNIX", path, f"unix:{path}"
    elif kind == "tcp6":
        if not socket.has_ipv6:
            pytest.skip("no IPv6")
        port = _free_port(family=socket.AF_INET6)
        family, address, line = "socket.AF_INET6", ("::1", port), f"tcp:{port}"
    else:
        port = _free_port()
        family, address, line = "socket.AF_INET", ("127.0.0.1", port), str(port)
    web = services.add("web", LISTEN.format(py=PY, family=family, kind="socket.SOCK_STREAM",
                                            address=address, gate=str(gate)))
    (web / "ready-port").write_text(f"# the API\n{line}\n")
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="debug")
    dinit.wait_for(rb"web/run: running with PID")
    _not_within(lambda: b"web/run: ready" in dinit.stderr, 0.5)
    gate.touch()
    dinit.wait_for(rb'"listening"', stream="stdout")
    dinit.wait_for(rb"web/run: ready")
    dinit.wait_for(rb"container running")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() in (0, 3)


def test_ready_port_not_ready_for_udp_outgoing_or_foreign_listeners(services: Services,
                                                                    tmp_path: Path) -> None:
    """``a`` wants tcp:P; it holds a UDP socket on P and an outgoing connection to P, and ``b``
    (another service) listens on P: ``a`` stays starting while ``b`` (ready-port P too) is ready."""
    port = _free_port()
    gate = tmp_path / "gate"
    services.add("b", LISTEN.format(py=PY, family="socket.AF_INET", kind="socket.SOCK_STREAM",
                                    address=("127.0.0.1", port), gate=str(gate)))
    (services.root / "b" / "ready-port").write_text(f"tcp:{port}\n")
    services.add("a", f"""#!{PY}
import socket, time
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", {port}))
while True:
    try:
        out = socket.create_connection(("127.0.0.1", {port}))
        break
    except OSError:
        time.sleep(0.02)
print('{{"m":"connected"}}', flush=True)
time.sleep(1000)
""")
    (services.root / "a" / "ready-port").write_text(f"{port}\n")
    gate.touch()
    dinit = start(services, DINIT_LOG_LEVEL="debug")
    dinit.wait_for(rb"b/run: ready")
    dinit.wait_for(rb'"connected"', stream="stdout")
    _not_within(lambda: b"a/run: ready" in dinit.stderr or b"container running" in dinit.stderr)
    dinit.signal(signal.SIGTERM)
    dinit.wait()


# -- notify-socket -----------------------------------------------------------------------------------


NOTIFY = """#!{py}
import os, socket, time
address = os.environ["NOTIFY_SOCKET"]
open({record!r}, "w").write(address)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
target = "\\0" + address[1:] if address.startswith("@") else address
def wait(path):
    while not os.path.exists(path):
        time.sleep(0.02)
wait({gate1!r})
sock.sendto(b"STATUS=almost", target)
wait({gate2!r})
sock.sendto(b"READY=1\\nSTATUS=serving", target)
time.sleep(1000)
"""


def test_notify_socket_ready_only_from_its_session(services: Services, tmp_path: Path, pid1: bool) -> None:
    record, gate1, gate2 = tmp_path / "address", tmp_path / "gate1", tmp_path / "gate2"
    web = services.add("web", NOTIFY.format(py=PY, record=str(record), gate1=str(gate1), gate2=str(gate2)))
    (web / "notify-socket").touch()
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="debug", NOTIFY_SOCKET="")
    address = poll(lambda: record.exists() and record.read_text())
    assert address.startswith("@dinit-notify-")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as foreign:
        foreign.sendto(b"READY=1", "\0" + address[1:])
    gate1.touch()
    dinit.wait_for(rb"web/run: status: almost")
    assert b"web/run: ready" not in dinit.stderr  # the foreign READY=1 came first and was ignored
    gate2.touch()
    dinit.wait_for(rb"web/run: ready")
    dinit.wait_for(rb"web/run: status: serving")
    dinit.signal(signal.SIGTERM)
    dinit.wait()


def test_all_sources_must_pass(services: Services, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    web = services.add("web", "echo >&3\n" + FOREVER)
    (web / "notification-fd").write_text("3")
    (web / "check").write_text("#!/bin/sh\n" + say("checked") + f"[ -e {gate} ]\n")
    (web / "check").chmod(0o755)
    dinit = start(services, DINIT_LOG_LEVEL="debug", DINIT_CHECK_INTERVAL="0.1")
    dinit.wait_for(rb"readiness source notification-fd passed")
    dinit.wait_for(rb'"checked"', stream="stdout", count=2)
    assert b"web/run: ready" not in dinit.stderr
    gate.touch()
    dinit.wait_for(rb"web/run: ready")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0


def test_dinit_notify_socket_is_not_passed_on(services: Services, tmp_path: Path) -> None:
    record = tmp_path / "env"
    services.add("web", f"env > {record}\n" + FOREVER)
    dinit = start(services, DINIT_LOG_LEVEL="info", NOTIFY_SOCKET="@nobody-listens",
                  DINIT_WEBHOOK_TOKEN="secret")
    poll(lambda: record.exists() and record.read_text())
    text = record.read_text()
    assert "NOTIFY_SOCKET" not in text and "secret" not in text
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert os.path.exists(record)


@pytest.mark.parametrize("reader", ["sockdiag", "procfs"])
def test_listening_socket_readers_agree(reader: str, tmp_path: Path) -> None:
    """sock_diag and its /proc/net fallback: a TCP listener (v4 and v6) and a unix listener are found;
    a UDP socket on the port is not a TCP listener, and a connection to the port is not one either."""
    from dinit.process import procfs
    from dinit.readiness import sockdiag

    module = sockdiag if reader == "sockdiag" else procfs
    with socket.socket() as listener, socket.socket(socket.AF_INET6) as listener6, \
            socket.socket(socket.AF_UNIX) as unix, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        listener6.bind(("::1", 0))
        listener6.listen()
        udp.bind(("127.0.0.1", 0))
        unix.bind(str(tmp_path / "s.sock"))
        unix.listen()
        with socket.create_connection(("127.0.0.1", port)) as outgoing:
            found = module.listening_inet("tcp", port)
            assert found == {os.fstat(listener.fileno()).st_ino}
            assert os.fstat(outgoing.fileno()).st_ino not in found
        inode6 = os.fstat(listener6.fileno()).st_ino
        assert module.listening_inet("tcp", listener6.getsockname()[1]) == {inode6}
        assert module.listening_inet("tcp", udp.getsockname()[1]) == set()
        assert module.listening_inet("udp", udp.getsockname()[1]) == {os.fstat(udp.fileno()).st_ino}
        assert module.listening_unix(str(tmp_path / "s.sock")) == {os.fstat(unix.fileno()).st_ino}
