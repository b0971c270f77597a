"""Events and the web hook (§14) against a real HTTP receiver on 127.0.0.1 (http.server in a thread
of the test): a whole life in order, retries with the same seq, and a hanging receiver that delays
nothing. TLS is verified: a self-signed receiver is refused unless SSL_CERT_FILE trusts it, and a
refused certificate is not retried."""

from __future__ import annotations

import signal
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import Services, Subscriber, launch, poll, run, start

from dinit.readiness.webhook import safe_url


class Receiver:
    """Records every request; answers with the scripted statuses, then 200 (or hangs)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if tls is not None else "http"
        self.requests: list[dict[str, Any]] = []
        #: TCP connections accepted (with TLS, each is a handshake, refused or not).
        self.connections = 0
        self.statuses: list[int] = []
        self.hang = threading.Event()
        self.release = threading.Event()
        #: Once an event this is true of arrives, the receiver goes away (connections refused).
        self.close_after: Callable[[dict[str, Any]], bool] = lambda event: False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event = orjson.loads(body)
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "event": event})
                if receiver.close_after(event):
                    receiver.close()  # before answering: the next connection is refused, surely
                if receiver.hang.is_set():
                    receiver.release.wait(30)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST = _handle

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def get_request(self) -> tuple[Any, Any]:
                receiver.connections += 1  # before the handshake, which accept() does with TLS
                return super().get_request()

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:  # a refused handshake is an OSError in accept, which socketserver skips
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[dict[str, Any]]:
        return [request["event"] for request in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def make_certificate(directory: Path, name: str = "127.0.0.1") -> Path:
    """A self-signed certificate for ``name`` (an IP address or a DNS name): ``c.pem``, its key
    ``k.pem``, in ``directory``."""
    san = f"IP:{name}" if name[0].isdigit() else f"DNS:{name}"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={san}", "-days", "1", "-keyout", "k.pem",
                    "-out", "c.pem"], cwd=directory, check=True, capture_output=True)
    return directory / "c.pem"


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (c.pem, its key k.pem) in tmp_path."""
    return make_certificate(tmp_path)


def tls_server(certificate: Path) -> Receiver:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, certificate.parent / "k.pem")
    return Receiver(context)


@pytest.fixture
def tls_receiver(certificate: Path) -> Iterator[Receiver]:
    server = tls_server(certificate)
    yield server
    server.close()


@pytest.mark.parametrize("trusted", [False, True], ids=["self-signed", "another-host"])
def test_a_refused_certificate_is_one_handshake_per_event(services: Services, tmp_path: Path,
                                                          trusted: bool) -> None:
    """A certificate that fails verification (self-signed; or trusted but for another host, the same
    ``SSLCertVerificationError``) fails every retry too: each event is one handshake, not four, the
    receiver gets no request, and the streak is one warning saying the certificate was refused. The
    number of events is the last one's ``seq``, seen by a ``dinit events`` subscriber."""
    certificate = make_certificate(tmp_path, "127.0.0.1" if not trusted else "dinit-receiver.invalid")
    trust = {"SSL_CERT_FILE": str(certificate)} if trusted else {}
    receiver = tls_server(certificate)
    gate = tmp_path / "gate"
    services.add("web", f"while [ ! -e {gate} ]; do sleep 0.02; done\nexit 0\n")
    try:
        dinit, ctl = launch(services, tmp_path, DINIT_WEBHOOK=receiver.url, **trust)
        events = Subscriber(dinit, ctl, inside=False)
        events.wait_for(kind="container", replay=True)
        reason = rb"IP address mismatch" if trusted else rb"self.signed certificate"
        dinit.wait_for(rb"web hook https://127.0.0.1:\d+/hook: event 1 not delivered: certificate refused: "
                       + reason)
        gate.touch()
        assert dinit.wait() == 0
        last = events.wait_for(kind="container", state="stopped")
        assert events.process.wait(timeout=30) == 0
        assert receiver.requests == []
        assert receiver.connections == last["seq"]
        assert dinit.stderr.count(b"not delivered") == 1
        assert dinit.stderr.count(b"certificate refused") == 1
    finally:
        receiver.close()


def test_ssl_cert_file_trusts_a_private_ca(services: Services, tls_receiver: Receiver,
                                           certificate: Path) -> None:
    services.add("web", "exit 0\n")
    dinit = run(services, DINIT_WEBHOOK=tls_receiver.url, SSL_CERT_FILE=str(certificate))
    assert dinit.returncode == 0
    assert b"not delivered" not in dinit.stderr
    events = tls_receiver.events()
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "container" and events[-1]["state"] == "stopped"


def test_events_of_a_whole_life_in_order(services: Services, receiver: Receiver, tmp_path: Path,
                                         pid1: bool) -> None:
    gate = tmp_path / "gate"
    web = services.add("web", f"echo >&3\nwhile [ ! -e {gate} ]; do sleep 0.02; done\nexit 3\n")
    (web / "notification-fd").write_text("3")
    services.add("idle", None, down=True)
    (services.root / "idle" / "run").write_text("#!/bin/sh\n")
    (services.root / "idle" / "run").chmod(0o755)
    dinit = start(services, pid1=pid1, DINIT_WEBHOOK=receiver.url, DINIT_WEBHOOK_TOKEN="s3cret")
    poll(lambda: any(e["kind"] == "container" for e in receiver.events()), message="container running")
    gate.touch()
    assert dinit.wait() == 3
    events = receiver.events()
    assert [request["method"] for request in receiver.requests] == ["PUT"] * len(events)
    assert all(request["headers"]["Authorization"] == "Bearer s3cret" for request in receiver.requests)
    assert all(request["path"] == "/hook" for request in receiver.requests)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert len({event["boot"] for event in events}) == 1
    summary = [(e["kind"], e["service"], e["previous"], e["state"]) for e in events]
    assert summary == [
        ("service", "idle", "pending", "down"),
        ("service", "web", "pending", "starting"),
        ("service", "web", "starting", "running"),
        ("container", None, "starting", "running"),
        ("service", "web", "running", "crashed"),
        ("container", None, "running", "stopping"),
        ("container", None, "stopping", "stopped"),
    ]
    crashed = events[4]
    assert crashed["exit"] == {"code": 3, "signal": None} and crashed["reason"] == "exit"
    assert crashed["ps"] == {"status": "crashed"} and crashed["ready"] is False
    assert crashed["pid"] == events[1]["pid"] and isinstance(crashed["pid"], int)
    assert events[2]["ready"] is True and events[2]["ps"] == {"status": "running"}
    assert events[-1]["exit_code"] == 3
    assert all(e["v"] == 1 and e["dropped"] == 0 and e["time"].endswith("Z") for e in events)
    assert b"s3cret" not in dinit.stderr


def test_retries_deliver_the_same_seq(services: Services, receiver: Receiver) -> None:
    receiver.statuses = [500, 500]
    services.add("web", "exit 0\n")
    dinit = run(services, DINIT_WEBHOOK=receiver.url, DINIT_WEBHOOK_METHOD="post")
    assert dinit.returncode == 0
    seqs = [event["seq"] for event in receiver.events()]
    assert seqs[:3] == [1, 1, 1]  # 500, 500, then 200 on the third try
    assert seqs[3:] == list(range(2, len(seqs) - 1))
    assert {request["method"] for request in receiver.requests} == {"POST"}
    assert b"not delivered" not in dinit.stderr


def test_failure_streak_is_one_warning_without_credentials(services: Services, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    services.add("web", f"while [ ! -e {gate} ]; do sleep 0.02; done\nexit 0\n")
    dinit = start(services, DINIT_WEBHOOK="http://user:pa55@127.0.0.1:9/hook?key=k3y")
    dinit.wait_for(rb"web hook http://127.0.0.1:9/hook: event 1 not delivered")
    gate.touch()
    assert dinit.wait() == 0
    assert dinit.stderr.count(b"not delivered") == 1
    assert b"pa55" not in dinit.stderr and b"k3y" not in dinit.stderr and b"user" not in dinit.stderr


def test_a_warning_of_the_final_flush_is_printed(services: Services, receiver: Receiver) -> None:
    """The receiver goes away once it has the container's ``stopping`` event, so the ``stopped``
    event fails during the final flush, after the loop has stopped: its warning is still printed
    (by dinit's main thread), and before the flush's 2 s are over rather than lost with them."""
    receiver.close_after = lambda event: event["kind"] == "container" and event["state"] == "stopping"
    services.add("web", "exit 0\n")
    dinit = run(services, DINIT_WEBHOOK=receiver.url)
    assert dinit.returncode == 0
    assert receiver.events()[-1]["state"] == "stopping"
    stopped = receiver.events()[-1]["seq"] + 1
    assert dinit.messages("warning", cause=False) == [
        f"web hook {receiver.url}: event {stopped} not delivered: [Errno 111] Connection refused".encode()]


def test_a_hanging_receiver_delays_nothing(services: Services, receiver: Receiver) -> None:
    receiver.hang.set()
    services.add("web", "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_WEBHOOK=receiver.url,
                  DINIT_WEBHOOK_TIMEOUT="60")
    poll(lambda: receiver.requests, message="the first event")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait(timeout=10) == 0  # the hook's 60 s timeout is not waited for
    assert b"web/run: sending SIGTERM" in dinit.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("DINIT_WEBHOOK", "ftp://example.com/"), ("DINIT_WEBHOOK", "not a url"),
    ("DINIT_WEBHOOK_METHOD", "GET"), ("DINIT_WEBHOOK_TIMEOUT", "0")])
def test_invalid_webhook_variables(services: Services, variable: str, value: str) -> None:
    services.add("web", "exit 0\n")
    dinit = run(services, **{variable: value})
    assert dinit.returncode == 1
    assert f"invalid {variable}".encode() in dinit.stderr
    assert b"web/run" not in dinit.stderr


def test_safe_url() -> None:
    assert safe_url("https://u:p@example.com:8443/a/b?token=x") == "https://example.com:8443/a/b"
    assert safe_url("http://[::1]/x") == "http://[::1]/x"


def test_full_queue_drops_the_oldest_and_counts_them(receiver: Receiver) -> None:
    """1030 events queued before the sender runs: the 6 oldest are dropped, and the first event sent
    says ``dropped: 6``."""
    from dinit.loop import Loop
    from dinit.readiness.settings import Settings
    from dinit.readiness.webhook import QUEUE, Webhook

    hook = Webhook(Settings(webhook=receiver.url), Loop())
    for seq in range(1, QUEUE + 7):
        hook.put({"seq": seq})
    assert hook.dropped == 6
    hook.start()
    poll(lambda: len(receiver.requests) == QUEUE, timeout=60, message="every queued event")
    events = receiver.events()
    assert [event["seq"] for event in events] == list(range(7, QUEUE + 7))
    assert events[0]["dropped"] == 6
    hook.close(0.5)
