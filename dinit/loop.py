"""The event loop: one thread, one epoll, timers, signals, and wake-ups from the writer threads.

dinit needs little of an event loop (fd readiness, timers, signals, one thread-safe wake-up), and
asyncio's import alone costs about 30 ms of start-up on a small machine — more than everything
else dinit does before its first service runs. This loop does exactly what dinit uses.

Signals: every handled signal gets a Python handler that only raises a flag (so its disposition is
"caught", which ``exec`` resets to default in programs) and ``signal.set_wakeup_fd`` makes the C-level
handler write the signal number into the wake-up pipe; the loop reads it and calls the registered
callback on the loop thread, between other callbacks (as soon as the flag is seen), never inside
one. A zero byte means "thread-safe calls queued".
"""

from __future__ import annotations

import itertools
import os
import select
import time
from _heapq import heappop, heappush

from .lean import suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections import deque
    from collections.abc import Callable
    from typing import Any

    Callback = Callable[..., object]
else:
    import _signal as signal  # signal without its enums (lean.py: start-up)
    from _collections import deque  # collections' deque, without importing collections


class Timer:
    """A scheduled call; ``cancel`` makes it a no-op."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback, args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Arrived:
    """Set by the Python-level signal handler (which runs on the loop thread between bytecodes), so
    the loop can dispatch a signal between two callbacks instead of after every ready fd of a busy
    iteration: a flood of output on many pipes must not delay SIGTERM handling (§4.6). SIGCHLD
    keeps its place in the order fds became ready, so a program's last output, read from a pipe
    that was ready before it exited, comes before the line saying it finished."""

    signal = False


def _note_signal(signum: int, _frame: object) -> None:
    """The Python-level handler; the real work is dispatched from the wake-up pipe."""
    if signum != signal.SIGCHLD:
        _Arrived.signal = True


class Loop:
    """A minimal epoll loop, used from one thread only (except :meth:`call_soon_threadsafe`)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, tuple[Callback, tuple[Any, ...]]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._signals: dict[int, tuple[Callback, tuple[Any, ...]]] = {}
        self._threadsafe: deque[tuple[Callback, tuple[Any, ...]]] = deque()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_read, select.EPOLLIN)
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        self._running = False
        self.exception_handler: Callable[[BaseException], None] | None = None

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def add_reader(self, fd: int, callback: Callback, *args: Any) -> None:
        self._readers[fd] = (callback, args)
        self._epoll.register(fd, select.EPOLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def call_later(self, delay: float, callback: Callback, *args: Any) -> Timer:
        timer = Timer(self.time() + delay, callback, args)
        heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callback, *args: Any) -> None:
        """Queue a call from another thread and wake the loop (a zero byte in the wake-up pipe)."""
        self._threadsafe.append((callback, args))
        with suppress(BlockingIOError):  # a full pipe wakes the loop anyway
            os.write(self._wake_write, b"\0")

    def add_signal_handler(self, signum: int, callback: Callback, *args: Any) -> None:
        self._signals[signum] = (callback, args)
        self.catch(signum)

    @staticmethod
    def catch(signum: int) -> None:
        """Catch ``signum`` now; it is dispatched once a handler is added and the loop runs. This
        keeps a signal that arrives during start-up from being lost (PID 1 drops signals it does
        not catch)."""
        signal.signal(signum, _note_signal)
        signal.siginterrupt(signum, False)

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        """Dispatch events until :meth:`stop` is called."""
        self._running = True
        while self._running:
            for fd, _events in self._epoll.poll(self._timeout()):
                if fd == self._wake_read or _Arrived.signal:
                    self._woken()
                if fd != self._wake_read and (reader := self._readers.get(fd)) is not None:
                    self.call(*reader)
            self._run_timers()

    def _timeout(self) -> float:
        while self._timers and self._timers[0][2].cancelled:
            heappop(self._timers)
        if not self._timers:
            return -1
        return max(0.0, self._timers[0][0] - self.time())

    def _run_timers(self) -> None:
        now = self.time()
        while self._timers and self._timers[0][0] <= now and self._running:
            timer = heappop(self._timers)[2]
            if not timer.cancelled:
                self.call(timer.callback, timer.args)

    def _woken(self) -> None:
        _Arrived.signal = False
        try:
            data = os.read(self._wake_read, 4096)
        except BlockingIOError:
            return
        while self._threadsafe:
            self.call(*self._threadsafe.popleft())
        for signum in data:
            if signum and (handler := self._signals.get(signum)) is not None:
                self.call(*handler)

    def call(self, callback: Callback, args: tuple[Any, ...] = ()) -> None:
        """Call ``callback`` now; an exception goes to :attr:`exception_handler` (which tears down)
        instead of unwinding the loop, so a bug cannot leave the container half-alive."""
        try:
            callback(*args)
        except Exception as error:
            if self.exception_handler is None:
                raise
            self.exception_handler(error)
