"""The pipe from a service to its logger (§4.5), owned by one object.

``S/run``, its stop hook and its ``finish`` write into the pipe; ``S/log/run`` reads it as its stdin.
dinit keeps both ends: the write end so a stop hook or ``finish`` started later can get it, and the
read end so it can see when every writer is gone (the logger should exit then) and read what the
logger left behind once it is gone, so nothing written to the pipe is ever lost.
"""

from __future__ import annotations

import fcntl
import os
import select

from .multiplexer import Multiplexer, make_pipe

#: How long a logger may neither exit nor read after its input was closed before it is stopped.
GRACE = 1.0


class LoggerPipe:
    """Both of dinit's ends of one service's logger pipe, and the logger's stall watch."""

    def __init__(self) -> None:
        read_end, write_end = make_pipe()
        os.set_blocking(read_end, True)  # it is the logger's stdin: a logger expects blocking reads
        self.read_end: int | None = read_end
        self.write_end: int | None = write_end
        self._closed_since: float | None = None
        self._unread: int | None = None

    def close_writer(self) -> None:
        """No program of the service will be started to write into the pipe any more."""
        if self.write_end is not None:
            os.close(self.write_end)
            self.write_end = None

    def hand_over(self, mux: Multiplexer, name: str) -> None:
        """The logger is gone: dinit reads the service's stdout from the pipe itself from now on."""
        if self.read_end is not None:
            os.set_blocking(self.read_end, False)
            mux.add(self.read_end, name, "run", is_stdout=True)
            self.read_end = None

    def close(self) -> None:
        """The logger could not be started: nothing will use the pipe."""
        self.close_writer()
        if self.read_end is not None:
            os.close(self.read_end)
            self.read_end = None

    def stalled(self, now: float, output_paused: bool) -> bool:
        """Whether the logger's input has been closed, with bytes left unread and unchanged, for
        :data:`GRACE` seconds: it neither reads nor exits. While dinit's own output is congested, a
        logger blocked on its writes by dinit is not stalled."""
        if self.read_end is None:
            return False
        unread = _unread_after_close(self.read_end)
        if unread is None or unread != self._unread or output_paused:
            self._closed_since = None if unread is None else now
            self._unread = unread
            return False
        return self._closed_since is not None and now - self._closed_since >= GRACE


def _unread_after_close(fd: int) -> int | None:
    """How many bytes are left in a pipe whose writers are all gone (the read end reports EPOLLHUP
    then, data or not), or None while a writer is left."""
    with select.epoll() as poller:
        poller.register(fd, select.EPOLLIN)
        if not any(events & select.EPOLLHUP for _, events in poller.poll(0)):
            return None
    import termios  # only for a logger gone quiet: kept off the start path

    pending = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, pending)
    return int.from_bytes(pending, "little")
