"""Exposing readiness (§13): DINIT_READY_FILE, DINIT_HTTP_ADDR (/readyz, /livez) with a real HTTP
client, and READY=1 / STOPPING=1 to dinit's own NOTIFY_SOCKET."""

from __future__ import annotations

import http.client
import secrets
import signal
import socket
from pathlib import Path

import pytest
from harness import Services, poll, run, start

WAIT_GATE = "while [ ! -e {gate} ]; do sleep 0.02; done\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gated(services: Services, gate: Path, on_term: str = "exit 0") -> Path:
    """A service that is ready (notification-fd 3) once ``gate`` exists."""
    web = services.add("web", f"trap '{on_term}' TERM\n" + WAIT_GATE.format(gate=gate)
                       + "echo >&3\nwhile :; do sleep 0.05; done\n")
    (web / "notification-fd").write_text("3")
    return web


def _get(port: int, path: str, method: str = "GET") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        return connection.getresponse().status
    finally:
        connection.close()


def _ready(port: int) -> bool:
    try:
        return _get(port, "/readyz") == 200
    except ConnectionRefusedError:  # dinit is not listening yet
        return False


def test_ready_file_exists_exactly_while_ready(services: Services, tmp_path: Path, pid1: bool) -> None:
    gate, ready, record = tmp_path / "gate", tmp_path / "ready", tmp_path / "at-term"
    ready.write_text("stale\n")  # from an earlier life of the container
    _gated(services, gate,
           on_term=f"if [ -e {ready} ]; then echo present; else echo absent; fi > {record}; exit 0")
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_READY_FILE=str(ready))
    dinit.wait_for(rb"web/run: running with PID")
    assert not ready.exists()
    gate.touch()
    poll(ready.exists, message="the ready file")
    assert ready.read_text() == "ready\n"
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert record.read_text() == "absent\n"  # gone before the first service had exited
    assert not ready.exists()


def test_http_readyz_and_livez(services: Services, tmp_path: Path, pid1: bool) -> None:
    gate = tmp_path / "gate"
    port = _free_port()
    _gated(services, gate)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_HTTP_ADDR=f"127.0.0.1:{port}",
                  DINIT_STOP_DELAY="30")
    dinit.wait_for(rb"web/run: running with PID")
    assert _get(port, "/readyz") == 503
    assert _get(port, "/livez") == 200
    assert _get(port, "/") == 404
    assert _get(port, "/metrics") == 404
    assert _get(port, "/readyz", "POST") == 404
    gate.touch()
    poll(lambda: _get(port, "/readyz") == 200, message="/readyz 200")
    assert _get(port, "/readyz?verbose", "HEAD") == 200
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"not ready, stopping services in 30 s")
    assert _get(port, "/readyz") == 503
    assert _get(port, "/livez") == 503
    dinit.signal(signal.SIGTERM)  # still in the delay: the second signal is only noted
    dinit.kill()


def test_idle_http_clients_do_not_delay_sigterm(services: Services, tmp_path: Path) -> None:
    """100 connections that never send a byte stay open (their idle timeout is 10 s) while dinit
    handles SIGTERM and exits: it is never blocked on one of them."""
    gate = tmp_path / "gate"
    gate.touch()
    port = _free_port()
    _gated(services, gate)
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_HTTP_ADDR=f"127.0.0.1:{port}")
    poll(lambda: _ready(port), message="/readyz 200")
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    try:
        assert _get(port, "/livez") == 200  # served while 100 connections wait
        dinit.signal(signal.SIGTERM)
        assert dinit.wait(timeout=8) == 0  # below the 10 s idle timeout that would free the loop
    finally:
        for client in clients:
            client.close()


def test_http_address_in_use_is_a_start_up_error(services: Services) -> None:
    services.add("web", "exit 0\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dinit = run(services, DINIT_HTTP_ADDR=f"127.0.0.1:{port}")
    assert dinit.returncode == 1
    # The reason alone, as README says: not socket.create_server's "(while attempting to bind ...)".
    assert dinit.messages("error") == [
        f"cannot listen on DINIT_HTTP_ADDR 127.0.0.1:{port}: Address already in use".encode()]
    assert b"web/run" not in dinit.stderr


@pytest.mark.parametrize("value", ["8080", "host:", "[::1]", "a:b", ":70000"])
def test_invalid_http_address(services: Services, value: str) -> None:
    services.add("web", "exit 0\n")
    dinit = run(services, DINIT_HTTP_ADDR=value)
    assert dinit.returncode == 1
    assert f"invalid DINIT_HTTP_ADDR {value!r}: accepted is [host]:port".encode() in dinit.stderr


def test_dinit_notifies_its_own_supervisor(services: Services, tmp_path: Path, pid1: bool) -> None:
    gate = tmp_path / "gate"
    name = f"dinit-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(20)
        _gated(services, gate)
        dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info", NOTIFY_SOCKET="@" + name)
        dinit.wait_for(rb"web/run: running with PID")
        gate.touch()
        assert receiver.recv(4096) == b"READY=1"
        dinit.signal(signal.SIGTERM)
        assert receiver.recv(4096) == b"STOPPING=1"
        assert dinit.wait() == 0
