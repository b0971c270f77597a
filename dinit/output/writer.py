"""Writing to dinit's own stdout and stderr without ever blocking the event loop.

fd 1 and fd 2 stay blocking (their open file descriptions are shared with whoever started dinit, so
setting O_NONBLOCK on them would change their behaviour too). Instead each has a writer thread: the
event loop only appends bytes to a queue, and the thread does the blocking ``write``. When a queue
holds more than ``high_water`` bytes the loop stops reading programs' pipes (they then block on
their own writes), which keeps memory bounded while a slow consumer catches up; signals, reaping and
timers keep running because the loop itself never waits on fd 1 or fd 2.
"""

from __future__ import annotations

import _thread
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: Above this many queued bytes the loop pauses reading programs' output.
HIGH_WATER = 4 * 1024 * 1024
#: Once a paused writer's queue drains below this, reading resumes.
LOW_WATER = 1024 * 1024


class Writer:
    """A queue of bytes for one fd, drained by a daemon thread with blocking writes.

    The thread is made with ``_thread`` and its locks, not ``threading`` (whose import costs several
    ms of start-up, lean.py), and only when the first bytes are queued: a dinit whose programs print
    nothing has no writer threads at all."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.pending = 0
        self.fallback: Writer | None = None
        self.on_drain: Callable[[], None] | None = None
        self.on_closed: Callable[[Writer, OSError], None] | None = None
        self._queue: list[bytes] = []
        #: Guards the queue, ``pending`` and ``_closing``.
        self._lock = _thread.allocate_lock()
        #: Held while the thread has nothing to do; released (once) to wake it.
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._woken = False
        #: Held until the thread has written everything and ended.
        self._ended = _thread.allocate_lock()
        self._ended.acquire()
        self._started = False
        self._closing = False
        #: The thread has written everything and ended: later bytes are written at once.
        self._done = False
        self._broken = False

    @property
    def congested(self) -> bool:
        """True when the loop should stop reading more program output for now."""
        return self.pending > HIGH_WATER

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the thread, so the loop never waits on the fd; written at once only
        when no thread can be made or after :meth:`close` (nothing is lost either way). Once the
        fd is broken, data goes to the fallback writer."""
        if self._broken:
            if self.fallback is not None and not self.fallback._broken:
                self.fallback.write(data)
            return
        with self._lock:  # also the other writer's thread writes here, when its fd broke
            if not self._started:
                self._started = self._start_thread()
            if self._started and not self._done:
                self._queue.append(data)
                self.pending += len(data)
                self._wake_thread()
                return
        self._write_all(data)

    def _start_thread(self) -> bool:
        """Start the thread; False when none can be made (e.g. the container's ``pids.max`` is used
        up by its services): then :meth:`write` writes at once, blocking, rather than lose output,
        and the next write tries again."""
        try:
            _thread.start_new_thread(self._run, ())
        except RuntimeError:
            return False
        return True

    def close(self) -> None:
        """Write out everything queued, then stop the thread (used once, at exit); bytes written
        after that go out at once. Without a thread there is nothing to wait for."""
        if not self._started:
            return
        with self._lock:
            self._closing = True
            self._wake_thread()
        self._ended.acquire()

    def _wake_thread(self) -> None:
        """Release the wake lock unless a release is already pending (called with ``_lock`` held):
        ``_woken`` says whether one is, so the lock is never released twice."""
        if not self._woken:
            self._woken = True
            self._wake.release()

    def _take(self) -> bytes | None:
        """Wait for queued data and take all of it at once, so many lines go out in one ``write``;
        None once closing with nothing left."""
        while True:
            with self._lock:
                if self._queue:
                    chunks, self._queue = self._queue, []
                    break
                if self._closing:
                    self._done = True  # e.g. the other writer falling back after its own close
                    return None
            self._wake.acquire()
            with self._lock:
                self._woken = False
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _run(self) -> None:
        try:
            while (data := self._take()) is not None:
                self._write_all(data)
                with self._lock:
                    self.pending -= len(data)
                    drained = self.pending < LOW_WATER
                waiter = self.on_drain
                if drained and waiter is not None:
                    self.on_drain = None
                    waiter()
        finally:
            self._ended.release()

    def _write_all(self, data: bytes) -> None:
        """Write all of ``data``; after a write error (EPIPE: the reader is gone) the rest goes to
        the fallback, from the start of the line the failed write was in: its first part may
        have reached the pipe before the reader went, but no reader will ever see it."""
        written = 0
        while written < len(data) and not self._broken:
            try:
                written += os.write(self.fd, memoryview(data)[written:])
            except InterruptedError:
                continue
            except OSError as error:
                self._broken = True
                if self.on_closed is not None:
                    self.on_closed(self, error)
        if written < len(data) and self.fallback is not None and not self.fallback._broken:
            self.fallback.write(data[data.rfind(b"\n", 0, written) + 1:])
