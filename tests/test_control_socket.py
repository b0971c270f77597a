"""Where the control socket lives and how it is set up and taken down (§12): mode 0600, removed at
exit, a stale file replaced, a second dinit refused control, an explicit path that cannot be used a
configuration error, and the default locations (``/run/dinit``, then ``/dev/shm/dinit``), tested in
a private mount namespace with tmpfs on /run and /dev/shm so the host's are never touched."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

from harness import Services, poll, run, start

PY = sys.executable
WAIT = 'echo "ready $$" >&2\nwhile :; do sleep 0.05; done\n'


def private_run(tmp_path: Path, prepare: str = "") -> tuple[str, ...]:
    """A wrapper giving dinit a private, empty /run and /dev/shm; ``prepare`` is shell run there
    first (e.g. to leave a hostile /run/dinit)."""
    script = tmp_path / "private-run"
    script.write_text("#!/bin/sh\nset -e\nmount -t tmpfs dinit-test-run /run\n"
                      f"mount -t tmpfs dinit-test-shm /dev/shm\n{prepare}\nexec \"$@\"\n")
    script.chmod(0o755)
    return ("unshare", "--mount", "--propagation", "private", str(script))


def test_socket_is_0600_and_removed_at_exit(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    sock = tmp_path / "control.sock"
    dinit = start(services, DINIT_SOCKET=str(sock))
    poll(sock.exists, message="the socket")
    assert sock.stat().st_mode & 0o7777 == 0o600
    assert sock.is_socket()
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert not sock.exists()


def test_a_stale_socket_is_replaced(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    sock = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays; nobody listens: what a killed dinit leaves
    dinit = start(services, DINIT_SOCKET=str(sock))
    dinit.wait_for(rb"web/run: ready")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    poll(lambda: client.connect_ex(str(sock)) == 0, message="dinit listening on the replaced socket")
    client.close()
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert not sock.exists()


def test_a_second_dinit_gets_no_control(services: Services, tmp_path: Path) -> None:
    services.add("web", WAIT)
    sock = tmp_path / "control.sock"
    first = start(services, DINIT_SOCKET=str(sock))
    poll(sock.exists, message="the first socket")
    inode = sock.stat().st_ino
    second = start(services, DINIT_SOCKET=str(sock))
    second.wait_for(rb"web/run: ready")
    assert second.messages("warning") == [
        f"control socket {sock} answers: another dinit owns it, running without control".encode()]
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert sock.stat().st_ino == inode  # the second one removes nothing of the first's
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert not sock.exists()


def test_an_explicit_socket_that_cannot_be_used_is_a_configuration_error(services: Services,
                                                                          tmp_path: Path) -> None:
    services.add("web", "echo must not start >&2\n")
    missing = tmp_path / "no" / "such" / "control.sock"
    dinit = run(services, DINIT_SOCKET=str(missing))
    assert dinit.returncode == 1
    assert dinit.messages() == [f"invalid DINIT_SOCKET '{missing}': cannot listen on {missing}: "
                                "No such file or directory".encode()]
    taken = tmp_path / "a-file"
    taken.write_text("not a socket")
    dinit = run(services, DINIT_SOCKET=str(taken))
    assert dinit.returncode == 1
    expected = f"invalid DINIT_SOCKET '{taken}': {taken} exists and is not a socket"
    assert dinit.messages() == [expected.encode()]
    assert taken.read_text() == "not a socket"
    assert b"must not start" not in dinit.stderr


def test_off_means_no_socket(services: Services, tmp_path: Path) -> None:
    services.add("web", 'echo "socket=${DINIT_SOCKET}" >&2\n')
    dinit = run(services, wrapper=private_run(tmp_path), DINIT_SOCKET="off")
    assert dinit.returncode == 0
    assert b"web/run: socket=off\n" in dinit.stderr


def test_default_location_is_run_dinit(services: Services, tmp_path: Path) -> None:
    """Without DINIT_SOCKET: /run/dinit (0700) holds the socket, programs get its path, and a
    client without DINIT_SOCKET finds it at the default location."""
    services.add("ask", "ls -ld /run/dinit >&2\necho \"socket=$DINIT_SOCKET\" >&2\n"
                        f"env -u DINIT_SOCKET {PY} -m dinit status ask >&2\n")
    dinit = run(services, wrapper=private_run(tmp_path), DINIT_SOCKET="")
    assert dinit.returncode == 0, dinit.stderr
    assert re.search(rb"ask/run: drwx------ \d+ root root .* /run/dinit\n", dinit.stderr)
    assert b"ask/run: socket=/run/dinit/control.sock\n" in dinit.stderr
    assert re.search(rb"ask/run: run: ask: \(pid \d+\) \d+s\n", dinit.stderr)


def test_an_unsafe_run_dinit_falls_back_to_dev_shm(services: Services, tmp_path: Path) -> None:
    services.add("ask", "echo \"socket=$DINIT_SOCKET\" >&2\n"
                        f"env -u DINIT_SOCKET {PY} -m dinit status ask >&2\n")
    dinit = run(services, wrapper=private_run(tmp_path, "mkdir -m 1777 /run/dinit"), DINIT_SOCKET="",
                DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 0, dinit.stderr
    assert b"control socket: /run/dinit is group- or world-writable (mode 1777)" in dinit.stderr
    assert b"ask/run: socket=/dev/shm/dinit/control.sock\n" in dinit.stderr
    assert re.search(rb"ask/run: run: ask: \(pid \d+\) \d+s\n", dinit.stderr)


def test_no_usable_default_is_an_info_line_and_no_control(services: Services, tmp_path: Path) -> None:
    services.add("ask", "echo \"socket=$DINIT_SOCKET\" >&2\n")
    prepare = "mkdir /run/dinit\nchown 65534 /run/dinit\ntouch /dev/shm/dinit"
    dinit = run(services, wrapper=private_run(tmp_path, prepare), DINIT_SOCKET="", DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 0, dinit.stderr
    info = dinit.messages("info")
    assert b"control socket: /run/dinit is owned by uid 65534, not dinit's uid 0" in info
    assert b"control socket: /dev/shm/dinit is not a directory" in info
    assert b"no usable control socket location, running without control" in info
    assert dinit.messages("warning", cause=False) == []
    assert b"ask/run: socket=\n" in dinit.stderr


def test_a_failed_set_up_after_the_start_still_removes_the_socket(services: Services,
                                                                  tmp_path: Path) -> None:
    """The control server is set up once the first programs run; when that fails (a bug), dinit
    tears down with an internal error (exit 1, §5.3) and still removes the socket it bound."""
    services.add("web", WAIT)
    sock = tmp_path / "control.sock"
    driver = Path(__file__).parent / "drivers" / "failing_set_up.py"
    dinit = start(services, str(driver), entry=(), DINIT_SOCKET=str(sock))
    assert dinit.wait() == 1
    assert any(b"internal error: RuntimeError('set-up after the start failed')" in line
               for line in dinit.messages("error"))
    assert not sock.exists()
