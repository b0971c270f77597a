"""Output multiplexing: read every program's pipes on the event loop and write labelled lines (§4).

Each pipe read end is a :class:`Stream` with its own splitter and labeller. A readable pipe is read in
one large chunk, stamped with one timestamp, labelled as a block and queued on a writer as a single
``bytes``. When a writer falls behind, all reading pauses until it drains, so memory stays bounded and
programs block on their own writes instead (§4.6).
"""

from __future__ import annotations

import fcntl
import os

from .. import log
from ..clock import timestamp
from ..lean import suppress
from ..log import logger
from ..loop import Loop
from .lines import MAX_LINE, JsonLabeller, LineSplitter, PrefixLabeller, label_bytes
from .writer import Writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


#: Bytes read (and labelled as one block) per readiness event. 128 KiB measured fastest here: the
#: chunk and the copies made to check and label it stay in the CPU caches, unlike with 1 MiB. It
#: also bounds the work between two looks at pending signals (§4.6) and the bytes queued per read.
#: At most MAX_LINE, so only held partial lines can exceed the limit.
READ_SIZE = 128 * 1024
#: The most labelled output one read may turn into: every line 1 byte long, each with the longest
#: label (a "not JSON stdout" warning). Reads are made shorter for long names so this holds, which
#: bounds the memory one read takes before the writers' backpressure can act.
MAX_READ_OUTPUT = 8 * 1024 * 1024
#: Pipe capacity asked for (F_SETPIPE_SZ): fewer wake-ups at high rates. Best effort.
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031


def make_pipe() -> tuple[int, int]:
    """A close-on-exec pipe with a large buffer; the read end is non-blocking for the loop."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with suppress(OSError):
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
    os.set_blocking(read_end, False)
    return read_end, write_end


class Stream:
    """One pipe read end carrying a program's stdout or stderr."""

    __slots__ = ("fd", "is_stdout", "labeller", "name", "owner", "read_size", "reading", "splitter",
                 "stage")

    def __init__(self, fd: int, name: str, stage: str, is_stdout: bool, json: bool,
                 owner: int | None, color: bool = False) -> None:
        self.fd = fd
        self.name = name
        self.stage = stage
        self.is_stdout = is_stdout
        self.splitter = LineSplitter()
        self.labeller: JsonLabeller | PrefixLabeller = (
            JsonLabeller(name, stage) if json and is_stdout else PrefixLabeller(name, stage, color))
        #: The PID of the program that writes it (None: several, or gone), for :meth:`drain`.
        self.owner = owner
        self.reading = False
        self.read_size = _read_size(name, stage)


def _read_size(name: str, stage: str) -> int:
    """READ_SIZE, or less for a long label: a line of 1 byte and its newline become at most
    ``96 + 2 * label`` bytes (time stamp, fixed words, the label, and JSON escaping of it)."""
    label = len(name.encode("utf-8", "surrogateescape")) + len(stage)
    return max(4096, min(READ_SIZE, MAX_READ_OUTPUT * 2 // (96 + 2 * label + 2)))


class Multiplexer:
    """Owns every stream and the two writers; runs entirely on the event loop thread."""

    def __init__(self, loop: Loop, stdout: Writer, stderr: Writer,
                 json_stdout: bool, colors: tuple[bool, bool] = (False, False)) -> None:
        self._loop = loop
        self._stdout = stdout
        self._stderr = stderr
        self._json = json_stdout
        #: Whether prefix-form labels are coloured on stdout and on stderr (§15).
        self._colors = colors
        self._streams: dict[int, Stream] = {}
        self._paused = False
        self.on_idle: Callable[[], None] | None = None

    @property
    def open_streams(self) -> int:
        """How many pipes have not reached EOF yet (dinit exits only at zero, §4.6)."""
        return len(self._streams)

    @property
    def paused(self) -> bool:
        """Whether reading is paused because a writer is congested (programs block on output)."""
        return self._paused

    def add(self, fd: int, name: str, stage: str, is_stdout: bool, owner: int | None = None) -> None:
        """Start reading ``fd`` (which dinit now owns and will close at EOF), written by ``owner``."""
        os.set_blocking(fd, False)
        stream = Stream(fd, name, stage, is_stdout, self._json, owner,
                        self._colors[0] if is_stdout else self._colors[1])
        self._streams[fd] = stream
        if not self._paused:
            self._watch(stream)

    def _watch(self, stream: Stream) -> None:
        self._loop.add_reader(stream.fd, self._read, stream)
        stream.reading = True

    def _unwatch(self, stream: Stream) -> None:
        if stream.reading:
            self._loop.remove_reader(stream.fd)
            stream.reading = False

    def _read(self, stream: Stream) -> int:
        """Read and emit one chunk (the reader callback, and :meth:`drain`'s step); returns its size
        (0 at EOF, where the stream is closed, or when nothing is there)."""
        try:
            chunk = os.read(stream.fd, stream.read_size)
        except BlockingIOError:
            return 0
        except OSError as error:
            logger.warning("error reading output: {reason}", service=stream.name, stage=stream.stage,
                           reason=error.strerror)
            chunk = b""
        if not chunk:
            self._close(stream)
            return 0
        block, cut = stream.splitter.feed(chunk)
        self._emit(stream, block, cut)
        if self._stdout.congested or self._stderr.congested:
            self._pause()
        return len(chunk)

    def drain(self, owner: int) -> None:
        """Read what a program that just exited left in its pipes, so its last lines come before
        the line saying it finished. Bounded: at most one pipe's worth per stream, and nothing
        while the writers are congested (then the rest is read later, as usual: nothing is lost)."""
        for stream in [stream for stream in self._streams.values() if stream.owner == owner]:
            budget = PIPE_SIZE
            while budget > 0 and not self._paused and stream.fd in self._streams:
                got = self._read(stream)
                if got < stream.read_size:
                    break
                budget -= got

    def _emit(self, stream: Stream, block: bytes, cut: int) -> None:
        """Label a block of whole lines and queue it on the right writer."""
        if cut:
            logger.warning("line longer than {limit} bytes, emitted in pieces", service=stream.name,
                           stage=stream.stage, limit=MAX_LINE)
        if not block:
            return
        time = timestamp()
        labeller = stream.labeller
        if isinstance(labeller, PrefixLabeller):
            (self._stdout if stream.is_stdout else self._stderr).write(labeller.label(block, time))
            return
        labelled, rejected = labeller.label(block, time)
        if labelled:
            self._stdout.write(labelled)
        if rejected:
            self._stderr.write(self._not_json(stream, rejected, time))

    def _not_json(self, stream: Stream, lines: list[bytes], time: bytes) -> bytes:
        """Non-JSON stdout lines: a warning each, or the plain prefix form when warnings are
        hidden -- never dropped (§4.3)."""
        label = b"%s/%s: " % (stream.name.encode("utf-8", "surrogateescape"), stream.stage.encode())
        if log.enabled("warning"):
            return b"".join(log.render("warning", label + b"not JSON stdout: " + line, service=stream.name,
                                       stage=stream.stage, line=line) for line in lines)
        label = b"%s: " % label_bytes(stream.name, stream.stage, self._colors[1])
        return b"".join(b"%s %s%s\n" % (time, label, line) for line in lines)

    def _close(self, stream: Stream) -> None:
        """EOF: emit the unfinished last line, release the fd, say when no stream is left."""
        block, cut = stream.splitter.flush()
        self._emit(stream, block, cut)
        self._unwatch(stream)
        del self._streams[stream.fd]
        os.close(stream.fd)
        if not self._streams and self.on_idle is not None:
            self.on_idle()

    def _pause(self) -> None:
        """Stop reading until the writers drain; programs then block on their own writes."""
        if self._paused:
            return
        self._paused = True
        for stream in self._streams.values():
            self._unwatch(stream)
        self._arm_resume()

    def _arm_resume(self) -> None:
        resume = self._resume_threadsafe
        for writer in (self._stdout, self._stderr):
            writer.on_drain = resume
        # The writer thread may have drained between our check and setting on_drain.
        if not (self._stdout.congested or self._stderr.congested):
            self._resume()

    def _resume_threadsafe(self) -> None:
        self._loop.call_soon_threadsafe(self._resume)

    def _resume(self) -> None:
        if not self._paused:
            return
        if self._stdout.congested or self._stderr.congested:
            self._arm_resume()
            return
        self._paused = False
        for writer in (self._stdout, self._stderr):
            writer.on_drain = None
        for stream in self._streams.values():
            self._watch(stream)

