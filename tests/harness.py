"""Running the real dinit for behaviour tests: as PID 1 of a fresh PID namespace (``unshare``) or as
a plain subreaper process, with real service directories, collecting its real stdout and stderr.

``Ctl``, ``launch`` and ``Subscriber`` drive a dinit with its control socket on (§12, §14).

Waiting is always "poll until a condition holds or a deadline passes": no fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

TIME = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
DEFAULT_TIMEOUT = 20.0
#: The warning naming the program whose exit stopped the container (§5.2).
CAUSE = re.compile(rb".*: PID \d+ (?:exited with status \d+|died of signal \d+ \(\w+\)), "
                   rb"stopping the container")


def poll(condition: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT, message: str = "condition",
         interval: float = 0.01) -> Any:
    """Return condition()'s first truthy value, or fail once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def write_program(path: Path, body: str) -> Path:
    """An executable script; ``body`` without a ``#!`` line is run by /bin/sh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


class Services:
    """A service directory (``DINIT_DIR``) being built for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, run: str | None, *, finish: str | None = None,
            terminate: str | None = None, log: str | None = None,
            env: dict[str, bytes] | None = None, down: bool = False) -> Path:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        if run is not None:
            write_program(directory / "run", run)
        if finish is not None:
            write_program(directory / "finish", finish)
        if terminate is not None:
            write_program(directory / "terminate", terminate)
        if log is not None:
            write_program(directory / "log" / "run", log)
        for variable, content in (env or {}).items():
            (directory / "env").mkdir(exist_ok=True)
            (directory / "env" / variable).write_bytes(content)
        if down:
            (directory / "down").touch()
        return directory


def dinit_command(args: Sequence[str] = (), pid1: bool = True, wrapper: tuple[str, ...] = (),
                  entry: tuple[str, ...] = ("-m", "dinit")) -> list[str]:
    """The command line that starts the real dinit: as PID 1 of a fresh PID namespace (``unshare``,
    which also gives it a mount namespace of its own), or as a plain process (a subreaper)."""
    command = [*wrapper, sys.executable, *entry, *args]
    if pid1:
        command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *command]
    return command


class Dinit:
    """A running dinit with its output collected in the background."""

    def __init__(self, args: list[str], env: dict[str, str], pid1: bool, cwd: str | None,
                 wrapper: tuple[str, ...] = (), stdin: int = subprocess.DEVNULL,
                 entry: tuple[str, ...] = ("-m", "dinit")) -> None:
        self.pid1 = pid1
        command = dinit_command(args, pid1, wrapper, entry)
        self.popen = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, cwd=cwd,
                                      start_new_session=True)
        self._out = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._collect, args=(self.popen.stdout, self._out),
                                          daemon=True),
                         threading.Thread(target=self._collect, args=(self.popen.stderr, self._err),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()
        self.returncode: int | None = None

    def _collect(self, pipe: Any, buffer: bytearray) -> None:
        while chunk := os.read(pipe.fileno(), 1 << 20):
            with self._lock:
                buffer.extend(chunk)

    @property
    def stdout(self) -> bytes:
        with self._lock:
            return bytes(self._out)

    @property
    def stderr(self) -> bytes:
        with self._lock:
            return bytes(self._err)

    @property
    def pid(self) -> int:
        """The PID (in the test's namespace) of the dinit process itself."""
        if not self.pid1:
            return self.popen.pid
        return poll(self._namespace_init, message="dinit to start in its namespace")

    def _namespace_init(self) -> int | None:
        """unshare's child, the namespace's PID 1 (None while unshare has not forked it yet)."""
        path = f"/proc/{self.popen.pid}/task/{self.popen.pid}/children"
        try:
            pids = Path(path).read_text().split()
        except FileNotFoundError:
            return None
        return int(pids[0]) if pids else None

    def signal(self, signum: int = signal.SIGTERM) -> None:
        os.kill(self.pid, signum)

    def wait_for(self, pattern: bytes, stream: str = "stderr", timeout: float = DEFAULT_TIMEOUT,
                 count: int = 1) -> list[re.Match[bytes]]:
        """Wait until ``pattern`` (a regex) matches ``count`` times in a stream."""
        regex = re.compile(pattern)

        def found() -> list[re.Match[bytes]] | None:
            matches = list(regex.finditer(getattr(self, stream)))
            if len(matches) >= count:
                return matches
            if self.popen.poll() is not None:
                self._finish()
                matches = list(regex.finditer(getattr(self, stream)))
                if len(matches) >= count:
                    return matches
                raise AssertionError(f"dinit exited ({self.popen.returncode}) before {pattern!r} "
                                     f"appeared on {stream}:\n{self.stderr.decode(errors='replace')}")
            return None

        return poll(found, timeout, message=f"{pattern!r} on {stream}")

    def _finish(self) -> None:
        for reader in self._readers:
            reader.join(DEFAULT_TIMEOUT)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for dinit to exit and for all of its output; returns its exit code."""
        try:
            self.returncode = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"dinit did not exit within {timeout}s; stderr:\n"
                                 f"{self.stderr.decode(errors='replace')}") from None
        self._finish()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL dinit and everything below it, so a failed test leaves no process behind: as PID 1,
        killing the namespace's init makes the kernel kill the whole namespace (killing only
        ``unshare`` would leave dinit running, reparented); as a subreaper, each descendant."""
        if self.popen.poll() is None:
            below = [self._namespace_init()] if self.pid1 else _descendants(self.popen.pid)
            for pid in [*(pid for pid in below if pid), self.popen.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.popen.wait()

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (failing the test if one is not)."""
        return [orjson.loads(line) for line in self.stdout.splitlines()]

    def messages(self, level: str | None = None, cause: bool = True) -> list[bytes]:
        """dinit's own messages (the text after ``dinit: <level>: ``); ``cause=False`` leaves out
        the warning that names the program whose exit stopped the container (§5.2), for tests
        about everything else a run says."""
        levels = level.encode() if level else rb"\w+"
        found = re.findall(TIME + rb" dinit: " + levels + rb": (.*)", self.stderr)
        return found if cause else [line for line in found if not CAUSE.fullmatch(line)]

    def own_lines(self, cause: bool = True) -> list[bytes]:
        """Every line dinit itself wrote on stderr as ``<level>: <message>`` (not service output)."""
        found = re.findall(TIME + rb" dinit: (\w+: .*)", self.stderr)
        return found if cause else [line for line in found
                                    if not CAUSE.fullmatch(line.removeprefix(b"warning: "))]

    def service_lines(self, label: str) -> list[bytes]:
        """Prefix-form stderr lines of ``<name>/<stage>`` (the text after the label)."""
        return re.findall(TIME + rb" " + re.escape(label.encode()) + rb": (.*)", self.stderr)


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid``, from the kernel's per-thread children lists."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(child) for child in (task / "children").read_text().split()]
                found.extend(children)
                pending.extend(children)
    return found


def private_etc(tmp_path: Path, service_dir: Path | None) -> tuple[str, ...]:
    """A ``wrapper`` giving dinit a private, empty ``/etc`` (a tmpfs in a mount namespace of its
    own), so the host's ``/etc/service`` is never seen: with ``service_dir`` bound on
    ``/etc/service``, else with no ``/etc/service`` at all. Tests of the default ``DINIT_DIR`` use
    it so they behave the same on every machine."""
    script = tmp_path / "private-etc"
    lines = ["#!/bin/sh", "set -e", "mount -t tmpfs dinit-test-etc /etc"]
    if service_dir is not None:
        lines += ["mkdir /etc/service", f"mount --bind '{service_dir}' /etc/service"]
    script.write_text("\n".join([*lines, 'exec "$@"', ""]))
    script.chmod(0o755)
    return ("unshare", "--mount", "--propagation", "private", str(script))


#: Where tests point the container hook directories (§15) unless they give their own: a path that
#: never exists, so no test runs the host's /etc/dinit/start.d or stop.d.
NO_HOOKS = "/nonexistent/dinit-tests/hooks"


def environment(services: Services | None, **variables: str) -> dict[str, str]:
    """The test's environment without any DINIT_* variable (nor NO_COLOR), plus the ones given; the
    hook directories point nowhere and the control socket is off unless given."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("DINIT_") and key != "NO_COLOR"}
    # No control socket unless a test asks for one (at a path of its own): dinits of parallel tests
    # must not meet at the host's /run/dinit (§12).
    env["DINIT_SOCKET"] = "off"
    if services is not None:
        env["DINIT_DIR"] = str(services.root)
    env["DINIT_START_DIR"] = env["DINIT_STOP_DIR"] = NO_HOOKS
    env.update(variables)
    return env


def start(services: Services | None, *args: str, pid1: bool = True, cwd: str | None = None,
          wrapper: tuple[str, ...] = (), stdin: int = subprocess.DEVNULL,
          entry: tuple[str, ...] = ("-m", "dinit"), **variables: str) -> Dinit:
    """Start dinit on ``services`` with DINIT_* ``variables`` (e.g. DINIT_LOG_LEVEL="info");
    ``wrapper`` is a command that execs dinit (inside the namespace), e.g. ``setpriv ...``;
    ``stdin`` is dinit's stdin (an fd); ``entry`` what the interpreter runs instead of
    ``-m dinit`` (e.g. a driver script using dinit's classes)."""
    return Dinit(list(args), environment(services, **variables), pid1, cwd, wrapper, stdin, entry)


def run(services: Services | None, *args: str, timeout: float = DEFAULT_TIMEOUT, pid1: bool = True,
        cwd: str | None = None, wrapper: tuple[str, ...] = (), stdin: int = subprocess.DEVNULL,
        **variables: str) -> Dinit:
    """Run dinit until it exits by itself; returns the finished run (``returncode`` set)."""
    dinit = start(services, *args, pid1=pid1, cwd=cwd, wrapper=wrapper, stdin=stdin, **variables)
    dinit.wait(timeout)
    return dinit


class Collector:
    """Stands in for the stderr writer: keeps what was written."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.lines.append(data)

    def take(self) -> bytes:
        data, self.lines = b"".join(self.lines), []
        return data


# -- the control socket's client (§12) ------------------------------------------------------------


class Ctl:
    """The ``dinit`` client for one running dinit: inside its namespace (the default) or outside."""

    def __init__(self, dinit: Dinit, sock: Path) -> None:
        self.dinit = dinit
        self.sock = sock

    def __call__(self, *args: str, inside: bool = True, wrapper: tuple[str, ...] = (),
                 timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
        command = [*wrapper, sys.executable, "-m", "dinit", *args]
        if inside and self.dinit.pid1:
            command = ["nsenter", "-t", str(self.dinit.pid), "-p", "-m", "--", *command]
        variables = environment(None, DINIT_SOCKET=str(self.sock), **env)
        return subprocess.run(command, capture_output=True, text=True, env=variables, timeout=timeout,
                              cwd="/")

    def json(self, *args: str, **kwargs: Any) -> Any:
        result = self(*args, "--json", **kwargs)
        return json.loads(result.stdout)


def launch(services: Services, tmp_path: Path, pid1: bool = True, sock: Path | None = None,
           **variables: str) -> tuple[Dinit, Ctl]:
    sock = sock or tmp_path / "control.sock"
    variables.setdefault("DINIT_LOG_LEVEL", "info")
    dinit = start(services, pid1=pid1, DINIT_SOCKET=str(sock), **variables)
    poll(sock.exists, message="the control socket")
    return dinit, Ctl(dinit, sock)


class Subscriber:
    """``dinit events`` running, its JSON lines collected by a thread (so nothing waits blindly)."""

    def __init__(self, dinit: Dinit, ctl: Ctl, *args: str, inside: bool = True) -> None:
        command = [sys.executable, "-m", "dinit", "events", *args]
        if inside and dinit.pid1:  # a subreaper's namespace is the test's own
            command = ["nsenter", "-t", str(dinit.pid), "-p", "-m", "--", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd="/",
                                        env=environment(None, DINIT_SOCKET=str(ctl.sock)))
        self.events: list[dict[str, Any]] = []
        #: The lines as printed (compact JSON, the same text a web hook receives).
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self.events.append(json.loads(line))

    def wait_for(self, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if fields.items() <= e.items()), None)

        poll(found, message=f"an event with {fields}")
        event = found()
        assert event is not None
        return event
