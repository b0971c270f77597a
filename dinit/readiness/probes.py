"""Exposing the container's readiness (§13): ``DINIT_READY_FILE``, ``DINIT_HTTP_ADDR`` (``/readyz``,
``/livez``) and ``READY=1``/``STOPPING=1`` to dinit's own ``NOTIFY_SOCKET``.

All three follow the container's phase (§10) through the supervisor's container observers. The HTTP
endpoint is served on the event loop with non-blocking sockets: a request is one read and one
write, so no client (nor a hundred that never send anything) can block the loop or delay a signal.
"""

from __future__ import annotations

import os

from ..lean import suppress
from ..lifecycle.state import ContainerPhase
from ..log import logger
from ..loop import Loop, Timer
from .settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from ..lifecycle.supervisor import Supervisor


#: A request larger than this is answered 431 and closed; an idle connection is closed after
#: ``_IDLE`` seconds; beyond ``_MAX_CLIENTS`` open connections new ones are closed at once.
_MAX_REQUEST = 8192
_IDLE = 10.0
_MAX_CLIENTS = 512
_REASONS = {200: "OK", 404: "Not Found", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


class ProbeError(Exception):
    """An exposure that cannot be set up (e.g. the HTTP address is in use): a start-up error."""


class ReadyFile:
    """A file that exists exactly while the container is ready, written atomically (a probe never
    sees it half-written) and removed at the first instant of teardown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.remove()  # a file left by an earlier life of the container says nothing about this one

    def write(self) -> None:
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w") as file:
                file.write("ready\n")
            os.replace(temporary, self.path)
        except OSError as error:
            logger.warning("cannot write DINIT_READY_FILE {path}: {reason}", path=self.path,
                           reason=error.strerror)

    def remove(self) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.path)


class _Client:
    __slots__ = ("buffer", "sock", "timer")

    def __init__(self, sock: socket.socket, timer: Timer) -> None:
        self.sock = sock
        self.buffer = b""
        self.timer = timer


class HttpProbe:
    """``GET /readyz`` and ``GET /livez`` (200 or 503), 404 for everything else."""

    def __init__(self, loop: Loop, address: tuple[str, int], supervisor: Supervisor) -> None:
        self._loop = loop
        self._supervisor = supervisor
        self._clients: dict[int, _Client] = {}
        self.sock = _listen(address)
        loop.add_reader(self.sock.fileno(), self._accept)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. EMFILE: say so, keep serving the others
                logger.debug("HTTP accept failed: {error}", error=error)
                return
            if len(self._clients) >= _MAX_CLIENTS:
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock, self._loop.call_later(_IDLE, self._close, sock.fileno()))
            self._clients[sock.fileno()] = client
            self._loop.add_reader(sock.fileno(), self._read, sock.fileno())

    def _read(self, fd: int) -> None:
        client = self._clients[fd]
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            return
        client.buffer += data
        end = client.buffer.find(b"\n")
        if end >= 0 and (b"\r\n\r\n" in client.buffer or b"\n\n" in client.buffer):
            self._answer(client, self._status(client.buffer[:end]))
            self._close(fd)
        elif len(client.buffer) > _MAX_REQUEST:
            self._answer(client, 431)
            self._close(fd)

    def _status(self, request_line: bytes) -> int:
        parts = request_line.split()
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return 404
        path = parts[1].split(b"?", 1)[0]
        phase = self._supervisor.container
        if path == b"/readyz":
            return 200 if phase is ContainerPhase.RUNNING else 503
        if path == b"/livez":
            return 200 if phase in (ContainerPhase.STARTING, ContainerPhase.RUNNING) else 503
        return 404

    @staticmethod
    def _answer(client: _Client, status: int) -> None:
        reason = _REASONS[status]
        body = f"{reason.lower()}\n".encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        with suppress(OSError):  # a tiny answer fits the socket buffer; a gone client is fine
            client.sock.send(head + (b"" if client.buffer.startswith(b"HEAD") else body))

    def _close(self, fd: int) -> None:
        client = self._clients.pop(fd, None)
        if client is None:
            return
        client.timer.cancel()
        self._loop.remove_reader(fd)
        client.sock.close()

    def close(self) -> None:
        for fd in list(self._clients):
            self._close(fd)
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _listen(address: tuple[str, int]) -> socket.socket:
    """A non-blocking listening socket; an empty host means every address (IPv6 and IPv4 when the
    system has both)."""
    import socket  # only with DINIT_HTTP_ADDR

    host, port = address
    try:
        if not host and socket.has_dualstack_ipv6():
            sock = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                        backlog=128)
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as error:
        shown = f"[{host}]" if ":" in host else host
        # The errno's own text: create_server appends "(while attempting to bind ...)" to strerror.
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ProbeError(f"cannot listen on DINIT_HTTP_ADDR {shown}:{port}: {reason}") from None
    sock.setblocking(False)
    os.set_inheritable(sock.fileno(), False)
    return sock


class SystemdNotify:
    """dinit's own ``sd_notify``: ``READY=1`` when the container is ready, ``STOPPING=1`` at
    teardown, to the ``NOTIFY_SOCKET`` dinit was given (one warning if it cannot be reached)."""

    def __init__(self, address: str) -> None:
        import socket  # only when dinit has NOTIFY_SOCKET

        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._warned = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC |
                                  socket.SOCK_NONBLOCK)

    def send(self, message: bytes) -> None:
        try:
            self.sock.sendto(message, self._target)
        except OSError as error:
            if not self._warned:
                self._warned = True
                logger.warning("cannot notify NOTIFY_SOCKET {address}: {reason}", address=self._target
                               .replace("\0", "@"), reason=error.strerror)


class Exposure:
    """Every configured way of showing the container's readiness, following its phase."""

    def __init__(self, supervisor: Supervisor, settings: Settings) -> None:
        self._supervisor = supervisor
        self.ready_file = ReadyFile(settings.ready_file) if settings.ready_file else None
        self.http = HttpProbe(supervisor.loop, settings.http_addr, supervisor) if settings.http_addr else None
        self.notify = SystemdNotify(settings.notify_socket) if settings.notify_socket else None
        supervisor.container_observers.append(self._changed)

    def _changed(self, previous: ContainerPhase) -> None:
        phase = self._supervisor.container
        if phase is ContainerPhase.RUNNING:
            if self.ready_file is not None:
                self.ready_file.write()
            if self.notify is not None:
                self.notify.send(b"READY=1")
        elif previous is not ContainerPhase.STOPPING and phase is ContainerPhase.STOPPING:
            if self.ready_file is not None:
                self.ready_file.remove()
            if self.notify is not None:
                self.notify.send(b"STOPPING=1")

    def close(self) -> None:
        if self.ready_file is not None:
            self.ready_file.remove()
        if self.http is not None:
            self.http.close()
