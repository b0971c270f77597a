"""Readiness sources of a running service (§13): s6's ``notification-fd``, systemd's ``sd_notify``
socket, runit's ``check`` and ``ready-port``. A service with sources is ``starting`` until every one
has passed, then ``running``.

Everything happens on the event loop: the notification pipe and the notify socket are loop readers,
``check`` is spawned and reaped by the supervisor like every other program (one owner for processes),
and ports are polled with a timer only while the service is starting, so a ready container costs
nothing.
"""

from __future__ import annotations

import os
import sys

from ..lean import suppress
from ..lifecycle.state import LIVE, Phase, ServiceState
from ..log import logger
from ..output.multiplexer import make_pipe
from ..process import procfs
from ..process.programs import Program, Role, kill_session
from .files import Port
from .settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Mapping
    from typing import Protocol

    from ..loop import Loop

    class ReadinessHost(Protocol):
        """What readiness needs of the supervisor, and nothing more (no import cycle with it)."""

        loop: Loop
        observers: list[Callable[[ServiceState, Phase], None]]

        @property
        def devnull(self) -> int: ...
        def known(self, pid: int) -> bool: ...
        def reap_quietly(self, pid: int) -> None: ...
        def add_program(self, program: Program) -> None: ...
        def spawn_labelled(self, name: str, path: str, argv: tuple[str, ...], cwd: str, stage: str,
                           stdin: int, stdout: int | None, env: Mapping[str, str]) -> int: ...


#: How often ``ready-port`` looks at /proc/net while the service is starting.
PORT_POLL = 0.25
#: ``struct ucred`` (pid, uid, gid: three 32-bit integers), read without ``struct`` (start-up).
_UCRED_SIZE = 12


class Launch:
    """What ``run`` gets for its readiness sources: extra fds and environment variables."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}
        self.env: dict[str, str] = {}
        self.pipe_read: int | None = None
        self.sock: socket.socket | None = None

    def close_child_ends(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def close(self) -> None:
        self.close_child_ends()
        if self.pipe_read is not None:
            os.close(self.pipe_read)
            self.pipe_read = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Watch:
    """The sources of one ``run`` that have not passed yet."""

    def __init__(self, state: ServiceState, run: Program, launch: Launch) -> None:
        self.state = state
        self.run = run
        self.pending: set[str] = set()
        self.pipe_read = launch.pipe_read
        self.sock = launch.sock
        self.ports: set[Port] = set(state.service.readiness.ports)
        self.check: Program | None = None
        self.timers: list[object] = []
        #: Why it is not ready yet, for ``dinit check`` (§13), e.g. ``check: exit 1``.
        self.detail = ""


class Readiness:
    """The readiness sources of every service, on the supervisor's loop."""

    def __init__(self, host: ReadinessHost, settings: Settings) -> None:
        self._host = host
        self._settings = settings
        self._launches: dict[str, Launch] = {}
        self.watches: dict[str, Watch] = {}
        host.observers.append(self._transitioned)

    # -- before and after run is spawned -------------------------------------------------------

    def prepare(self, state: ServiceState) -> Launch:
        """Create the notification pipe and notify socket ``run`` gets. Raises OSError."""
        readiness = state.service.readiness
        launch = Launch()
        try:
            if readiness.notification_fd is not None:
                read_end, write_end = make_pipe()
                launch.pipe_read = read_end
                launch.fds[write_end] = readiness.notification_fd
            if readiness.notify_socket:
                launch.sock, address = _notify_socket(state.name)
                launch.env["NOTIFY_SOCKET"] = address
        except OSError:
            launch.close()
            raise
        self._launches[state.name] = launch
        return launch

    def failed(self, state: ServiceState) -> None:
        """``run`` could not be spawned."""
        launch = self._launches.pop(state.name, None)
        if launch is not None:
            launch.close()

    def started(self, state: ServiceState, run: Program) -> bool:
        """``run`` is running: watch its sources. True if it has any (it is ``starting``)."""
        launch = self._launches.pop(state.name, Launch())
        launch.close_child_ends()
        readiness = state.service.readiness
        if not readiness.any:
            return False
        watch = Watch(state, run, launch)
        self.watches[state.name] = watch
        loop = self._host.loop
        if watch.pipe_read is not None:
            watch.pending.add("notification-fd")
            loop.add_reader(watch.pipe_read, self._on_notification, watch)
        if watch.sock is not None:
            watch.pending.add("notify-socket")
            loop.add_reader(watch.sock.fileno(), self._on_notify, watch)
        if readiness.check is not None:
            watch.pending.add("check")
            watch.timers.append(loop.call_later(0, self._run_check, watch))
        if watch.ports:
            watch.pending.add("ready-port")
            watch.timers.append(loop.call_later(0, self._poll_ports, watch))
        watch.detail = ", ".join(sorted(watch.pending))
        return True

    def _passed(self, watch: Watch, source: str) -> None:
        if source not in watch.pending or self.watches.get(watch.state.name) is not watch:
            return
        watch.pending.discard(source)
        logger.debug("readiness source {source} passed", service=watch.state.name, stage="run",
                     source=source)
        watch.detail = ", ".join(sorted(watch.pending))
        if not watch.pending and watch.state.phase is Phase.STARTING:
            watch.state.transition(Phase.RUNNING, self._host.loop.time(), pid=watch.run.pid)

    def _transitioned(self, state: ServiceState, previous: Phase) -> None:
        """Leaving ``starting`` ends the polling and any check; the notify socket stays while
        ``run`` runs (``STATUS=``, ``STOPPING=1``)."""
        watch = self.watches.get(state.name)
        if watch is None or (previous is not Phase.STARTING and state.phase in LIVE):
            return
        self._stop_polling(watch)
        if state.phase not in LIVE:
            self._close_socket(watch)
            del self.watches[state.name]

    def _stop_polling(self, watch: Watch) -> None:
        for timer in watch.timers:
            timer.cancel()  # type: ignore[attr-defined]
        watch.timers.clear()
        self._close_pipe(watch)
        if watch.check is not None:
            self._kill_check(watch, watch.check)

    # -- notification-fd ------------------------------------------------------------------------

    def _on_notification(self, watch: Watch) -> None:
        assert watch.pipe_read is not None
        try:
            data = os.read(watch.pipe_read, 4096)
        except BlockingIOError:
            return
        if b"\n" in data:
            self._close_pipe(watch)
            self._passed(watch, "notification-fd")
        elif not data:
            self._close_pipe(watch)
            watch.detail = "notification-fd closed before a newline"
            logger.warning("closed notification-fd {fd} before saying it is ready", service=watch.state.name,
                           stage="run", fd=watch.state.service.readiness.notification_fd)

    def _close_pipe(self, watch: Watch) -> None:
        if watch.pipe_read is not None:
            self._host.loop.remove_reader(watch.pipe_read)
            os.close(watch.pipe_read)
            watch.pipe_read = None

    # -- notify-socket --------------------------------------------------------------------------

    def _on_notify(self, watch: Watch) -> None:
        import socket

        assert watch.sock is not None
        try:
            data, ancillary, _flags, _address = watch.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED_SIZE))
        except (BlockingIOError, InterruptedError):
            return
        sender = _sender(ancillary)
        if sender is None or not _in_session(sender, watch.run.pid):
            logger.debug("ignoring a notify message from PID {pid}, not of its session",
                         service=watch.state.name, stage="run", pid=sender)
            return
        for line in data.decode(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key == "READY" and value == "1":
                self._passed(watch, "notify-socket")
            elif key == "STATUS":
                logger.info("status: {status}", service=watch.state.name, stage="run", status=value)
            elif key == "STOPPING" and value == "1":
                logger.info("says it is stopping", service=watch.state.name, stage="run")

    def _close_socket(self, watch: Watch) -> None:
        if watch.sock is not None:
            self._host.loop.remove_reader(watch.sock.fileno())
            watch.sock.close()
            watch.sock = None

    # -- check ----------------------------------------------------------------------------------

    def _run_check(self, watch: Watch) -> None:
        """Start ``check`` once; never two at once (the next one is scheduled when it exits)."""
        state = watch.state
        path = state.service.readiness.check
        assert path is not None
        if watch.check is not None or state.phase is not Phase.STARTING:
            return
        env = dict(state.env, DINIT_PID=str(watch.run.pid))
        try:
            pid = self._host.spawn_labelled(state.name, path, (path,), state.service.directory, "check",
                                            self._host.devnull, None, env)
        except OSError as error:
            logger.warning("cannot run {path}: {reason}", service=state.name, stage="check", path=path,
                           reason=error.strerror)
            watch.detail = f"check: {error.strerror}"
            watch.timers.append(self._host.loop.call_later(self._settings.check_interval,
                                                           self._run_check, watch))
            return
        program = Program(pid, state.name, "check", Role.HOOK)
        program.on_exit = lambda done, status: self._check_exited(watch, done, status)
        program.timers.append(self._host.loop.call_later(
            self._settings.check_timeout, self._check_timed_out, watch, program))
        watch.check = program
        self._host.add_program(program)

    def _check_exited(self, watch: Watch, program: Program, status: int) -> None:
        if watch.check is program:
            watch.check = None
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self._passed(watch, "check")
            return
        how = f"exit {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"
        watch.detail = f"check: {how}"
        logger.debug("check PID {pid} failed: {how}", service=watch.state.name, stage="check",
                     pid=program.pid, how=how)
        if watch.state.phase is Phase.STARTING and self.watches.get(watch.state.name) is watch:
            watch.timers.append(self._host.loop.call_later(self._settings.check_interval,
                                                           self._run_check, watch))

    def _check_timed_out(self, watch: Watch, program: Program) -> None:
        logger.warning("PID {pid} still running after {timeout:g} s, killing it", service=watch.state.name,
                       stage="check", pid=program.pid, timeout=self._settings.check_timeout)
        self._kill_check(watch, program)

    def _kill_check(self, watch: Watch, program: Program) -> None:
        """SIGKILL the check's whole session; its other processes, reparented to dinit, are reaped
        quietly instead of being reported as strays (§6.2)."""
        program.signalled.add(9)
        for pid in kill_session(program.pid):
            if pid != program.pid and not self._host.known(pid):
                self._host.reap_quietly(pid)

    # -- ready-port -----------------------------------------------------------------------------

    def _poll_ports(self, watch: Watch) -> None:
        """The sockets listening on each port first (cheap), and only if there are any, whether a
        process of the service's session holds one of them."""
        if watch.state.phase is not Phase.STARTING:
            return
        held: set[int] | None = None
        for port in list(watch.ports):
            wanted = _listening(port)
            if not wanted:
                continue
            if held is None:
                held = set()
                for pid in procfs.session_members(watch.run.pid):
                    held |= procfs.socket_inodes(pid)
            if wanted & held:
                watch.ports.discard(port)
        if not watch.ports:
            self._passed(watch, "ready-port")
            return
        watch.timers = [t for t in watch.timers if not t.cancelled]  # type: ignore[attr-defined]
        watch.timers.append(self._host.loop.call_later(PORT_POLL, self._poll_ports, watch))


def _listening(port: Port) -> set[int]:
    """Inodes of the sockets listening on ``port``: from sock_diag, or /proc/net without it."""
    from . import sockdiag  # only services with ready-port need it

    try:
        if port.protocol == "unix":
            return sockdiag.listening_unix(port.path)
        return sockdiag.listening_inet(port.protocol, port.port)
    except OSError:
        if port.protocol == "unix":
            return procfs.listening_unix(port.path)
        return procfs.listening_inet(port.protocol, port.port)


def _notify_socket(name: str) -> tuple[socket.socket, str]:
    """A datagram socket in the abstract namespace (nothing to clean up on disk) that passes the
    sender's credentials, so dinit can check the sender is of the service's session."""
    import socket  # only services with notify-socket need it

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        address = f"dinit-notify-{os.getpid()}-{os.urandom(6).hex()}-{name}"
        sock.bind("\0" + address)
    except OSError:
        sock.close()
        raise
    return sock, "@" + address


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    import socket

    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED_SIZE:
            return int.from_bytes(data[:4], sys.byteorder, signed=True)
    return None


def _in_session(pid: int, session: int) -> bool:
    with suppress(OSError):
        return os.getsid(pid) == session
    return False
