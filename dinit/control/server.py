"""The control socket's server side (§12): its connections on dinit's event loop (binding it is
``listener``).

Everything is non-blocking and bounded, so no client can delay signals, reaping or output: a
connection reads at most one buffer per wake-up, keeps at most one request line (64 KiB) and 1 MiB of
unread answers, pauses reading while its answers are not read, and is closed when it lets a request
line take longer than 10 s. Answers leave in request order, also when one of them waits (``stop -w``,
``submit --wait``). Sockets waiting to become writable sit in an epoll set of the server's own, whose
fd is one reader of the main loop, so the loop needs no write-readiness support of its own.

Sockets are the C module's (``_socket``): ``socket.py`` converts its constants to enums on import,
which would add about 3 ms to every start of dinit.
"""

from __future__ import annotations

import _socket
import os
import select
import sys
import time

from ..lean import suppress
from ..log import logger
from ..loop import Loop, Timer
from . import protocol
from .protocol import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Callable
    from typing import Any, NamedTuple, Protocol

    from .listener import Listener
else:
    from _collections import deque  # collections' deque, without importing collections

    from ..lean import NamedTuple


#: How much one wake-up reads from a connection.
_READ_SIZE = 65536
#: Connections accepted per wake-up of the listening socket.
_ACCEPT_BATCH = 16
#: How long accepting pauses after it failed (e.g. out of fds).
_ACCEPT_PAUSE = 0.5
#: At exit, how long answers still queued may take to leave (a waiting client gets its answer, §12).
_FINAL_FLUSH = 1.0


class Peer(NamedTuple):
    """The client's credentials from ``SO_PEERCRED`` (taken by the kernel at connect time). A PID of
    0 is a process outside dinit's PID namespace."""

    pid: int
    uid: int
    gid: int

    def may_change(self) -> bool:
        """Commands that change anything need uid 0 or dinit's own uid, and a peer inside dinit's
        PID namespace (§12)."""
        return self.pid != 0 and self.uid in (0, os.geteuid())


if TYPE_CHECKING:
    class Handler(Protocol):
        """What serves requests: the commands of ``handlers``."""

        def dispatch(self, call: Call) -> None: ...

        def settle(self) -> None: ...


class Call:
    """One request being answered. The answer (or, for a subscription, each event) goes out once
    every earlier request of the connection is answered."""

    __slots__ = ("_connection", "answered", "on_cancel", "peer", "request")

    def __init__(self, connection: Connection, request: protocol.Request) -> None:
        self._connection = connection
        self.request = request
        self.peer = connection.peer
        self.answered = False
        #: Called if the connection closes before the answer (a waiter stops waiting).
        self.on_cancel: Callable[[], None] | None = None

    @property
    def args(self) -> dict[str, Any]:
        return self.request.args

    @property
    def cancelled(self) -> bool:
        return self._connection.closed

    def ok(self, result: Any, lingers: bool = False) -> None:
        """``lingers``: an answer dinit may exit right after (``shutdown``); at exit the client gets
        the moment a waited answer gets to read it and hang up (:meth:`Connection.final_flush`)."""
        self._finish(protocol.encode_result(self.request.id, result), lingers)

    def fail(self, code: str, message: str, **extra: Any) -> None:
        self._finish(protocol.encode_error(ProtocolError(code, message, self.request.id, extra)))

    def stream(self, line: bytes) -> None:
        """One line of a subscription (``events``, §14): the call stays open, is never answered, and
        ends when the connection closes (``on_cancel``). Past 1 MiB unread the client is dropped."""
        if not self.answered:
            self._connection.stream(self, line)

    def _finish(self, line: bytes, lingers: bool = False) -> None:
        if self.answered:
            return
        self.answered = True
        self._connection.answered(self, line, lingers)


class Connection:
    """One client: reads request lines, queues answers in order, writes without blocking."""

    def __init__(self, server: Server, sock: _socket.socket, peer: Peer) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.closed = False
        self._lines = protocol.LineBuffer()
        self._calls: deque[Call] = deque()
        self._ready: dict[Call, bytes] = {}
        #: Lines of a subscription sent while an earlier request still waits for its answer.
        self._early: dict[Call, bytes] = {}
        self._out = bytearray()
        self._reading = False
        self._eof = False
        self._close_when_flushed = False
        self._deadline: Timer | None = None
        #: When the last answer that had to wait (``submit --wait``, ``stop -w``) was given: at exit
        #: dinit gives such a client a moment to read it and hang up. Other clients get no wait, so
        #: one that never reads cannot delay dinit's exit.
        self.waited_answer_at = 0.0
        self._dispatching = False
        self._resume_reading()
        self._arm_deadline()

    # -- reading -------------------------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self._reading and not self._eof:
            self.server.loop.add_reader(self.fd, self._readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self.server.loop.remove_reader(self.fd)
            self._reading = False

    def _readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self._eof = True
            self._pause_reading()
            self._maybe_close()
            return
        if self._lines.overflowed:
            return  # discarded until the client hangs up (closing now could reset the connection
            # before the client has read the error)
        for line in self._lines.feed(data):
            self._request(line)
            if self.closed:
                return
        if self._lines.overflowed:
            self._reject(ProtocolError(protocol.BAD_REQUEST,
                                       f"request line longer than {protocol.MAX_LINE} bytes "
                                       "with its newline"))
            self._close_when_flushed = True
            self._maybe_close()

    def _request(self, line: bytes) -> None:
        try:
            request = protocol.decode_request(line)
        except ProtocolError as error:
            self._reject(error)
            return
        call = Call(self, request)
        self._calls.append(call)
        self._disarm_deadline()
        self._dispatching = True
        try:
            self.server.handler.dispatch(call)
        finally:
            self._dispatching = False

    def _reject(self, error: ProtocolError) -> None:
        """An answer to a request that never became a call, still in its place in the order."""
        call = Call(self, protocol.Request(error.request_id, "", {}))
        self._calls.append(call)
        call.answered = True
        self.answered(call, protocol.encode_error(error))

    # -- answering -----------------------------------------------------------------------------------

    def answered(self, call: Call, line: bytes, lingers: bool = False) -> None:
        """Queue ``call``'s answer. One that came after waiting (not while its request was
        dispatched), or that ``lingers``, gives the client its moment at exit (:meth:`final_flush`)."""
        if self.closed:
            return
        self._ready[call] = line
        if lingers or not self._dispatching:
            self.waited_answer_at = time.monotonic()
        while self._calls and self._calls[0] in self._ready:
            self._write(self._ready.pop(self._calls.popleft()))
            if self.closed:
                return
        if self._calls and self._calls[0] in self._early:
            self._write(self._early.pop(self._calls[0]))
            if self.closed:
                return
        if not self._calls:
            self._arm_deadline()
        self._maybe_close()

    def stream(self, call: Call, line: bytes) -> None:
        """A subscription's line: written at once when every earlier request is answered, else kept
        with the call until then."""
        if self.closed:
            return
        self.waited_answer_at = time.monotonic()  # at exit, the last events get their moment too
        if self._calls and self._calls[0] is call:
            self._write(line)
        else:
            self._early[call] = self._early.get(call, b"") + line
            if sum(map(len, self._early.values())) > protocol.MAX_QUEUED:
                self.close()

    def _write(self, data: bytes) -> None:
        self._out += data
        self.flush()
        if len(self._out) > protocol.MAX_QUEUED:
            logger.info("control: client PID {pid} does not read its answers, disconnecting it",
                        pid=self.peer.pid)
            self.close()
        elif len(self._out) > protocol.MAX_LINE:
            self._pause_reading()  # answer what was asked before reading more questions

    def flush(self) -> None:
        """Send what the socket takes now; wait for writability for the rest."""
        while self._out and not self.closed:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self._out[:sent]
        if self.closed:
            return
        self.server.want_write(self, bool(self._out))
        if len(self._out) <= protocol.MAX_LINE:
            self._resume_reading()
        self._maybe_close()

    def _maybe_close(self) -> None:
        """Close once a client that hung up has its answers; after a request line that was too
        long, say so, then shut the sending side and close at the client's hang-up (or deadline)."""
        if self._out:
            return
        if self._eof and (self._close_when_flushed or not self._calls):
            self.close()
        elif self._close_when_flushed:
            with suppress(OSError):
                self.sock.shutdown(_socket.SHUT_WR)

    # -- the 10 s request deadline -----------------------------------------------------------------

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.server.loop.call_later(protocol.REQUEST_TIMEOUT, self._too_slow)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self._calls:
            self.close()

    # -- the end ---------------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pause_reading()
        self._disarm_deadline()
        self.server.forget(self)
        for call in self._calls:
            if not call.answered and call.on_cancel is not None:
                call.on_cancel()
        self._calls.clear()
        self._ready.clear()
        self._early.clear()
        self.sock.close()

    def final_flush(self, deadline: float) -> None:
        """At exit: queued answers get a last chance to leave, and a client answered a moment ago
        (``submit --wait``, ``stop -w``) a moment to read and hang up before dinit, as PID 1, exits
        and the kernel kills every process of its namespace (§12). Blocking, but bounded."""
        if self.closed or deadline - self.waited_answer_at > 2 * _FINAL_FLUSH:
            return
        with suppress(OSError):
            self.sock.settimeout(max(0.0, deadline - time.monotonic()))
            self.sock.sendall(self._out)
            self._out.clear()
            self.sock.shutdown(_socket.SHUT_WR)  # the end of the answers: a subscriber stops reading
            while self.sock.recv(_READ_SIZE):
                pass
            if os.getpid() == 1 and self.peer.pid > 0:
                _wait_exit(self.peer.pid, deadline)


def _wait_exit(pid: int, deadline: float) -> None:
    """Until process ``pid`` has exited, at most until ``deadline``: a client closes its socket
    while it is still finishing (printing, the interpreter's exit), and as PID 1 dinit's exit would
    SIGKILL it there, so ``dinit shutdown`` would end 137 instead of 0. Raises OSError if ``pid``
    is already gone."""
    pidfd = os.pidfd_open(pid)
    try:
        waiter = select.poll()
        waiter.register(pidfd, select.POLLIN)
        waiter.poll(max(0, int((deadline - time.monotonic()) * 1000)))
    finally:
        os.close(pidfd)


class Server:
    """Accepts connections on the listener and serves them with ``handler``."""

    def __init__(self, loop: Loop, listener: Listener, handler: Handler) -> None:
        self.loop = loop
        self.listener = listener
        self.handler = handler
        self._connections: dict[int, Connection] = {}
        self._writable_set = select.epoll()
        self._waiting_write: set[int] = set()
        loop.add_reader(listener.sock.fileno(), self._accept)
        loop.add_reader(self._writable_set.fileno(), self._writable)

    @property
    def path(self) -> str:
        return self.listener.path

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                fd, _address = self.listener.sock._accept()  # type: ignore[attr-defined]  # accept4, CLOEXEC
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and friends: one line, and a pause (the listening
                # socket stays readable, so accepting again at once would spin)
                logger.warning("control: cannot accept a connection: {why}", why=error.strerror)
                fd = self.listener.sock.fileno()
                self.loop.remove_reader(fd)
                self.loop.call_later(_ACCEPT_PAUSE, self.loop.add_reader, fd, self._accept)
                return
            sock = _socket.socket(fileno=fd)
            sock.setblocking(False)
            creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred
            pid, uid, gid = (int.from_bytes(creds[i:i + 4], sys.byteorder, signed=True) for i in (0, 4, 8))
            if len(self._connections) >= protocol.MAX_CONNECTIONS:
                self._refuse(sock)
                continue
            connection = Connection(self, sock, Peer(pid, uid, gid))
            if not connection.closed:
                self._connections[connection.fd] = connection

    @staticmethod
    def _refuse(sock: _socket.socket) -> None:
        """One connection too many: ``busy``, sent without waiting, and closed."""
        with suppress(OSError):
            sock.send(protocol.encode_error(ProtocolError(
                protocol.BUSY, f"too many connections (at most {protocol.MAX_CONNECTIONS})")))
        sock.close()

    def want_write(self, connection: Connection, wanted: bool) -> None:
        fd = connection.fd
        if wanted and fd not in self._waiting_write:
            self._writable_set.register(fd, select.EPOLLOUT)
            self._waiting_write.add(fd)
        elif not wanted and fd in self._waiting_write:
            self._writable_set.unregister(fd)
            self._waiting_write.discard(fd)

    def _writable(self) -> None:
        for fd, _events in self._writable_set.poll(0):
            connection = self._connections.get(fd)
            if connection is not None:
                connection.flush()

    def forget(self, connection: Connection) -> None:
        self.want_write(connection, False)
        self._connections.pop(connection.fd, None)

    def close(self) -> None:
        """At exit: settle what waits (a waiting client gets its answer before dinit exits), send
        what is queued within a bound, then close everything and remove the socket (§12)."""
        self.handler.settle()
        deadline = time.monotonic() + _FINAL_FLUSH
        for connection in list(self._connections.values()):
            connection.final_flush(deadline)
            connection.close()
        self.loop.remove_reader(self.listener.sock.fileno())
        self.loop.remove_reader(self._writable_set.fileno())
        self._writable_set.close()
        self.listener.close()
