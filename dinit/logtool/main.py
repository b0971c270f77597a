"""dinit-log: copy stdin to an svlogd-style log directory with rotation (SPEC §15).

``dinit-log [-s BYTES] [-n NUM] [-S TOTAL] [-t SECONDS] [-z] [--tee] DIR``

The directory holds ``current`` (the file being written), ``lock`` (held with flock while a logger
runs; a second one exits 111) and the archives ``@<tai64n>.s`` (``.s.gz`` with ``-z``), named by the
TAI64N label of the moment they were rotated, so that sorting the names sorts them by age.

Why it looks the way it does:

* It is its own process (never PID 1), so plain blocking reads are fine; ``select`` on stdin and a
  signal wake-up pipe makes SIGALRM (rotate) and SIGTERM (finish) act at once even while stdin is idle.
  Handlers only record the signal; the work is done between reads, so a line is never half-handled.
* Lines are never split across files: complete lines are written in bulk, a partial line waits in
  memory until its newline (or, once longer than ``LINE_BUFFER``, is streamed into a file of its own,
  and rotations wait until it ends).
* A full disk (ENOSPC, EDQUOT) is waited out, not fatal: the unwritten bytes stay in hand, nothing more
  is read, so the service blocks on its pipe and no line is lost; writing resumes once there is room.
* Only small built-in modules are imported (``_signal`` rather than ``signal``, ``zlib`` lazily and
  with ``-z`` only), and nothing from the rest of dinit, so the file also runs on its own under
  ``python -I -S``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time: annotations only
    import signal
    from collections.abc import Callable
    from typing import NoReturn
else:  # the C module has the same functions; ``signal`` adds enum and collections (~0.8 MiB, ~3 ms)
    import _signal as signal

USAGE = "usage: dinit-log [-s BYTES] [-n NUM] [-S TOTAL] [-t SECONDS] [-z] [--tee] DIR"
EXIT_USAGE = 100  # daemontools/s6 convention for a usage error
EXIT_FATAL = 111  # svlogd's "temporary failure": also a locked directory (§15 clarification)

READ_SIZE = 65536
LINE_BUFFER = 128 * 1024  # a partial line longer than this is streamed instead of held in memory
TAI_OFFSET = (1 << 62) + 10  # TAI64 label of the Unix epoch, as libtai/svlogd write it
FULL = (errno.ENOSPC, errno.EDQUOT)
RETRY_FIRST, RETRY_LONGEST = 0.01, 1.0  # seconds between attempts while the disk is full

CURRENT, LOCK = "current", "lock"
WRITING, FINISHED = 0o644, 0o744  # svlogd's modes: a file being written, and one closed properly


class Fatal(Exception):
    """An error that ends the logger with exit 111 and one line on stderr."""


class UsageError(Exception):
    """Bad command line: one line and the usage on stderr, exit 100."""


class Options:
    """The command line; defaults are svlogd's (runit 2.1.2: ``s`` 1000000 bytes, ``n`` 10; 0 turns a
    limit off)."""

    def __init__(self) -> None:
        self.size = 1_000_000
        self.count = 10
        self.total = 0
        self.age = 0.0
        self.gzip = False
        self.tee = False
        self.directory = ""


def _number(flag: str, text: str, fraction: bool = False) -> float:
    """A non-negative decimal (integer unless ``fraction``) for ``flag``."""
    try:
        value = float(text) if fraction else int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value < float("inf"):
        kind = "number of seconds" if fraction else "whole number"
        raise UsageError(f"{flag} needs a non-negative {kind}, not {text!r}")
    return value


def parse(argv: list[str]) -> Options:
    """Parse the command line by hand: argparse alone would double the start-up time."""
    options = Options()
    arguments = list(argv)
    while arguments and arguments[0].startswith("-") and arguments[0] != "-":
        flag = arguments.pop(0)
        if flag == "--":
            break
        if flag == "--tee":
            options.tee = True
        elif flag == "-z":
            options.gzip = True
        elif flag[:2] in ("-s", "-n", "-S", "-t"):
            value = flag[2:]
            if not value:
                if not arguments:
                    raise UsageError(f"{flag} needs a value")
                value = arguments.pop(0)
            if flag[1] == "s":
                options.size = int(_number("-s", value))
            elif flag[1] == "n":
                options.count = int(_number("-n", value))
            elif flag[1] == "S":
                options.total = int(_number("-S", value))
            else:
                options.age = _number("-t", value, fraction=True)
        else:
            raise UsageError(f"unknown option {flag}")
    if len(arguments) != 1 or not arguments[0]:
        raise UsageError("exactly one log directory is needed")
    options.directory = arguments[0]
    return options


def say(message: str) -> None:
    """One line on stderr (which dinit labels ``<name>/log``)."""
    try:  # noqa: SIM105 - contextlib would cost start-up time
        os.write(2, f"dinit-log: {message}\n".encode(errors="surrogateescape"))
    except OSError:
        pass


def is_archive(name: str, suffixes: tuple[str, ...] = ("s", "s.gz")) -> bool:
    """``@`` + 24 hex digits + ``.s`` (svlogd) or ``.s.gz`` (ours with -z); with other ``suffixes``,
    svlogd's processor files: ``.u`` (rotated, not yet processed) and ``.t`` (being processed)."""
    stem, dot, suffix = name.partition(".")
    if len(stem) != 25 or stem[0] != "@" or suffix not in suffixes or not dot:
        return False
    try:
        int(stem[1:], 16)
    except ValueError:
        return False
    return True


def tai64n(nanoseconds: int) -> str:
    """The TAI64N label ``@`` + 16 hex digits of seconds + 8 of nanoseconds (no leap-second table)."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    return f"@{TAI_OFFSET + seconds:016x}{fraction:08x}"


class Logger:
    """The log directory and the copy loop; all state of one running logger."""

    def __init__(self, options: Options, wakeup: int) -> None:
        self.options = options
        self.wakeup = wakeup
        self.signals: set[int] = set()
        self.directory = options.directory
        self.dir_fd = -1
        self.lock = -1  # held open (and flocked) until the process exits
        self.fd = -1
        self.size = 0
        self.started = 0.0  # monotonic time of the first byte in current (for -t)
        self.pending = b""  # the partial line read so far (not yet in current)
        self.mid_line = False  # current ends inside a line being streamed
        self.newest = ""  # the newest archive label: a new one must sort after it
        self.tee = options.tee

    # -- set-up ------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create and lock the directory, finish what a crashed run left, open ``current``."""
        path = self.directory
        try:
            os.makedirs(path, exist_ok=True)
            self.dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.lock = os.open(LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=self.dir_fd)
        except OSError as error:
            raise Fatal(f"{path}: {error.strerror}") from None
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Fatal(f"{path}: locked by another logger") from None
        self._recover()
        self._open_current()
        if self.size and os.pread(self.fd, 1, self.size - 1) != b"\n":
            self._write_file(b"\n")  # a crash cut the last line: never glue the next one to it

    def _recover(self) -> None:
        """Find the newest label; finish the archiving a killed run left half done (``.u``/``.t``)."""
        names = sorted(os.listdir(self.dir_fd))
        for name in names:
            if is_archive(name, ("s", "s.gz", "u", "t")):
                self.newest = max(self.newest, name[:25])
            if is_archive(name, ("t",)):
                os.unlink(name, dir_fd=self.dir_fd)
        for name in names:
            if is_archive(name, ("u",)):
                self._archive(name[:25])

    def _open_current(self) -> None:
        def open_it() -> None:
            self.fd = os.open(CURRENT, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644,
                              dir_fd=self.dir_fd)

        self._retrying(CURRENT, open_it)
        os.fchmod(self.fd, WRITING)  # if this run is killed, svlogd will see current unfinished
        self.size = os.fstat(self.fd).st_size
        self.started = time.monotonic()

    # -- full disk -----------------------------------------------------------------------------------

    def _stalled(self, name: str, error: OSError, attempt: int) -> None:
        """A full disk: say so once, then wait (signals end the wait early). At SIGTERM the data in
        hand cannot be written: that is the one case that gives up, with exit 111."""
        if self._stopping():
            raise Fatal(f"{self.directory}/{name}: {error.strerror}; stopped with data not written")
        if attempt == 0:
            say(f"{self.directory}/{name}: {error.strerror}; not reading until there is room")
        self._wait(min(RETRY_FIRST * 2 ** attempt, RETRY_LONGEST))

    def _retrying(self, name: str, operation: Callable[[], object]) -> None:
        """Run ``operation`` (idempotent) until it does not fail for want of space."""
        attempt = 0
        while True:
            try:
                operation()
            except OSError as error:
                if error.errno not in FULL:
                    raise Fatal(f"{self.directory}/{name}: {error.strerror}") from None
                self._stalled(name, error, attempt)
                attempt += 1
                continue
            if attempt:
                say(f"{self.directory}/{name}: there is room again, reading on")
            return

    def _write_file(self, data: bytes | memoryview) -> None:
        """Append all of ``data`` to current; a short write on a full disk keeps the rest in hand."""
        view = memoryview(data)
        if not self.size:
            self.started = time.monotonic()
        attempt = 0
        while view:
            try:
                written = os.write(self.fd, view)
            except OSError as error:
                if error.errno not in FULL:
                    raise Fatal(f"{self.directory}/{CURRENT}: {error.strerror}") from None
                self._stalled(CURRENT, error, attempt)
                attempt += 1
                continue
            view = view[written:]
            self.size += written
        if attempt:
            say(f"{self.directory}/{CURRENT}: there is room again, reading on")

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    # -- writing -----------------------------------------------------------------------------------

    def _out(self, data: bytes | memoryview) -> None:
        """One piece to current and, with --tee, the same bytes to stdout."""
        self._write_file(data)
        if self.tee:
            self._tee(memoryview(data))

    def _tee(self, view: memoryview) -> None:
        try:
            while view:
                view = view[os.write(1, view):]
        except OSError as error:
            self.tee = False  # the directory still gets every line
            say(f"stdout: {error.strerror}; --tee stopped")

    def feed(self, data: bytes) -> None:
        """Handle bytes read from stdin: complete lines go out now, a partial line waits."""
        if self.mid_line:
            newline = data.find(b"\n")
            if newline < 0:
                self._out(data)
                return
            self._out(memoryview(data)[:newline + 1])
            self.mid_line = False
            if self.options.size and self.size >= self.options.size:
                self.rotate()
            data = data[newline + 1:]
        buffer = self.pending + data if self.pending else data
        end = buffer.rfind(b"\n") + 1
        if end:
            self._lines(buffer, end)
        self.pending = buffer[end:]
        if len(self.pending) > LINE_BUFFER:
            self._stream()

    def _lines(self, buffer: bytes, end: int) -> None:
        """Write ``buffer[:end]`` (whole lines) in as few writes as rotation by size allows."""
        limit = self.options.size
        view = memoryview(buffer)
        position = 0
        while position < end:
            cut = end
            if limit and end - position > limit - self.size:
                cut = buffer.rfind(b"\n", position, position + max(limit - self.size, 0)) + 1
                if cut <= position:  # not even the next line fits
                    if self.size:
                        self.rotate()
                        continue
                    cut = buffer.index(b"\n", position) + 1  # longer than -s: a file of its own
            self._out(view[position:cut])
            position = cut
            if limit and self.size >= limit:
                self.rotate()

    def _stream(self) -> None:
        """A very long line: start it in a file of its own (with -s) and write it as it comes."""
        if self.size and self.options.size:
            self.rotate()
        self._out(self.pending)
        self.pending = b""
        self.mid_line = True

    # -- rotation ----------------------------------------------------------------------------------

    def rotate(self) -> None:
        """fsync + rename current to the next archive, open a new current, drop the oldest."""
        if not self.size or self.mid_line:
            return
        self._retrying(CURRENT, lambda: os.fsync(self.fd))
        os.fchmod(self.fd, FINISHED)
        label = self._label()
        os.rename(CURRENT, label + (".u" if self.options.gzip else ".s"),
                  src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        os.close(self.fd)
        self.fd = -1
        if self.options.gzip:
            self._archive(label)
        self._retrying(".", lambda: os.fsync(self.dir_fd))
        self._open_current()
        self._prune()

    def _label(self) -> str:
        """A TAI64N label after every existing archive (even if the clock stepped back)."""
        label = tai64n(time.time_ns())
        if label <= self.newest:
            label = "@" + format(int(self.newest[1:], 16) + 1, "024x")
        self.newest = label
        return label

    def _archive(self, label: str) -> None:
        """Turn ``<label>.u`` into an archive: gzip it with -z, else (a -z run was killed, this one has
        no -z) just rename it to ``.s``."""
        if not self.options.gzip:
            os.rename(label + ".u", label + ".s", src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            return
        self._retrying(label + ".t", lambda: self._compress(label))
        os.unlink(label + ".u", dir_fd=self.dir_fd)

    def _compress(self, label: str) -> None:
        """gzip ``.u`` into ``.t``, fsync, rename to ``.s.gz`` (svlogd's processor steps); a failure
        leaves ``.u`` whole, so the attempt can simply be repeated."""
        import zlib  # only with -z; zlib alone (wbits 31 = gzip format) is lighter than gzip

        source = os.open(label + ".u", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dir_fd)
        target = os.open(label + ".t", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644,
                         dir_fd=self.dir_fd)
        try:
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # a gzip member: mtime 0, no name
            while chunk := os.read(source, READ_SIZE):
                self._write_all(target, packer.compress(chunk))
            self._write_all(target, packer.flush())
            os.fsync(target)
            os.fchmod(target, FINISHED)
            os.rename(label + ".t", label + ".s.gz", src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            os.unlink(label + ".t", dir_fd=self.dir_fd)
            raise
        finally:
            os.close(source)
            os.close(target)

    def _prune(self) -> None:
        """Remove the oldest archives beyond -n files or -S bytes (names sort by age)."""
        count, total = self.options.count, self.options.total
        if not count and not total:
            return
        archives = sorted(name for name in os.listdir(self.dir_fd) if is_archive(name))
        sizes = [os.stat(name, dir_fd=self.dir_fd).st_size for name in archives] if total else []
        used = sum(sizes)
        while archives and ((count and len(archives) > count) or (total and used > total)):
            os.unlink(archives.pop(0), dir_fd=self.dir_fd)
            if total:
                used -= sizes.pop(0)

    # -- the loop ----------------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return signal.SIGTERM in self.signals or signal.SIGINT in self.signals

    def _wait(self, seconds: float) -> None:
        """Sleep until a signal arrives or ``seconds`` pass (0: just empty the wake-up pipe)."""
        if select.select([self.wakeup], [], [], seconds)[0]:
            os.read(self.wakeup, 512)  # readable, so this does not block

    def _due(self) -> float | None:
        """Seconds until -t rotation is due (None: no timeout needed)."""
        if not self.options.age or not self.size or self.mid_line:
            return None
        return max(self.started + self.options.age - time.monotonic(), 0.0)

    def run(self) -> None:
        """Copy stdin until EOF or SIGTERM; SIGALRM and -t rotate between reads."""
        while True:
            if self._stopping():
                break
            if signal.SIGALRM in self.signals and not self.mid_line:
                self.signals.discard(signal.SIGALRM)
                self.rotate()
            due = self._due()
            if due == 0.0:
                self.rotate()
                continue
            try:
                ready = select.select([0, self.wakeup], [], [], due)[0]
            except OSError as error:
                raise Fatal(f"stdin: {error.strerror}") from None
            if self.wakeup in ready:
                self._wait(0)
            if 0 in ready and not self._stopping():
                try:
                    data = os.read(0, READ_SIZE)
                except OSError as error:
                    raise Fatal(f"stdin: {error.strerror}") from None
                if not data:
                    break
                self.feed(data)
        self.finish()

    def finish(self) -> None:
        """EOF or SIGTERM: the line in hand gets its newline; current is fsynced and marked finished
        (not rotated: the next run appends to it, as svlogd does)."""
        if self.pending or self.mid_line:
            self.feed(b"\n")
        self._retrying(CURRENT, lambda: os.fsync(self.fd))
        os.fchmod(self.fd, FINISHED)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of ``dinit-log``, ``dinit log`` and ``python -m dinit.logtool``."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] in (["-h"], ["--help"]):
        print(USAGE)
        sys.exit(0)
    try:
        options = parse(arguments)
    except UsageError as error:
        say(str(error))
        os.write(2, (USAGE + "\n").encode())
        sys.exit(EXIT_USAGE)
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    logger = Logger(options, read_end)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(signum, lambda signum, _frame: logger.signals.add(signum))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # svlogd re-reads its config at HUP; there is none
    try:
        logger.open()
        logger.run()
    except Fatal as error:
        say(str(error))
        sys.exit(EXIT_FATAL)
    sys.exit(0)


if __name__ == "__main__":
    main()
