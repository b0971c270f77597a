"""dinit-log (§15): the bundled svlogd-style logger, run as a real process on real directories.

Every test feeds the real program (``python -m dinit.logtool``, the ``dinit-log`` console script or
``dinit log``) through a pipe and reads the files it leaves. Waiting is polling with a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DEFAULT_TIMEOUT, Services, poll, run, start

PYTHON = sys.executable
MODULE = (PYTHON, "-m", "dinit.logtool")
SCRIPT = Path(PYTHON).parent / "dinit-log"
ARCHIVE = re.compile(r"@4000[0-9a-f]{20}\.s(\.gz)?")


def logger(directory: Path, *options: str, command: tuple[str, ...] = MODULE,
           wrapper: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """A running logger reading from a pipe the test writes to."""
    return subprocess.Popen([*wrapper, *command, *options, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def feed(directory: Path, data: bytes, *options: str, command: tuple[str, ...] = MODULE
         ) -> subprocess.CompletedProcess[bytes]:
    """Run a logger on ``data`` until EOF."""
    return subprocess.run([*command, *options, str(directory)], input=data, capture_output=True,
                          timeout=DEFAULT_TIMEOUT, check=False)


def archives(directory: Path) -> list[Path]:
    """The rotated files, oldest first (their TAI64N names sort by age)."""
    return sorted(path for path in directory.iterdir() if path.name.startswith("@"))


def content(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def everything(directory: Path) -> bytes:
    """All that is logged, in order: the archives, then current."""
    return b"".join(content(path) for path in archives(directory)) + (directory / "current").read_bytes()


def numbered(count: int, width: int = 10) -> list[bytes]:
    """``count`` distinct lines of exactly ``width`` bytes."""
    return [b"%0*d\n" % (width - 1, number) for number in range(count)]


def finish(process: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    """Close the logger's input and collect its exit code and output."""
    stdout, stderr = process.communicate(timeout=DEFAULT_TIMEOUT)
    return process.returncode, stdout, stderr


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Loggers a test starts; any still running at the end is killed so no test leaves one behind."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_size_rotation_keeps_the_newest_num_files(tmp_path: Path) -> None:
    """-s rotates when current is full (at a line boundary), -n keeps the newest archives: the oldest
    go first, so what is left is exactly the end of the input."""
    lines = numbered(100)
    result = feed(tmp_path / "log", b"".join(lines), "-s", "100", "-n", "3")
    assert result.returncode == 0, result.stderr
    kept = archives(tmp_path / "log")
    assert [ARCHIVE.fullmatch(path.name) is not None for path in kept] == [True] * 3
    assert [path.read_bytes() for path in kept] == [b"".join(lines[n:n + 10]) for n in (70, 80, 90)]
    assert (tmp_path / "log" / "current").read_bytes() == b""
    assert {oct(path.stat().st_mode & 0o777) for path in kept} == {"0o744"}  # as svlogd: closed properly
    assert (tmp_path / "log" / "lock").exists()


def test_total_cap_removes_the_oldest_archives(tmp_path: Path) -> None:
    """-S caps the archives' total size; -n 0 means no count limit."""
    lines = numbered(100)
    result = feed(tmp_path / "log", b"".join(lines), "-s", "100", "-n", "0", "-S", "250")
    assert result.returncode == 0, result.stderr
    kept = archives(tmp_path / "log")
    assert sum(path.stat().st_size for path in kept) <= 250
    assert everything(tmp_path / "log") == b"".join(lines[80:])


def test_a_line_is_never_split_across_files(tmp_path: Path) -> None:
    """Rotation by size cuts between lines: each archive is as full as whole lines allow."""
    lines = [b"x" * length + b"\n" for length in (30, 40, 50, 20, 60, 10, 70)]
    result = feed(tmp_path / "log", b"".join(lines), "-s", "100", "-n", "0")
    assert result.returncode == 0, result.stderr
    files = [path.read_bytes() for path in archives(tmp_path / "log")]
    assert files == [lines[0] + lines[1], lines[2] + lines[3], lines[4] + lines[5]]
    assert (tmp_path / "log" / "current").read_bytes() == lines[6]


@pytest.mark.parametrize("length", [250, 300_000], ids=["buffered", "streamed"])
def test_a_line_longer_than_size_gets_a_file_of_its_own(tmp_path: Path, length: int) -> None:
    """A line longer than -s is not cut: it gets an archive to itself (also one long enough to be
    streamed rather than held in memory)."""
    size = 100 if length < 1000 else 1000
    short, long = b"a\n" * 10, b"X" * length + b"\n"
    result = feed(tmp_path / "log", short + long + b"b\n", "-s", str(size), "-n", "0")
    assert result.returncode == 0, result.stderr
    assert [path.read_bytes() for path in archives(tmp_path / "log")] == [short, long]
    assert (tmp_path / "log" / "current").read_bytes() == b"b\n"


def test_gzip_archives_decompress_to_the_exact_bytes(tmp_path: Path) -> None:
    """-z: archives are ``.s.gz`` and decompress to exactly what was written (any bytes, CRs, tabs,
    invalid UTF-8); no ``.u``/``.t`` file of the way is left."""
    lines = [bytes([n % 256 for n in range(start, start + 40) if n % 256 != 10]) + b"\r\t\xff\n"
             for start in range(0, 4000, 37)]
    data = b"".join(lines)
    result = feed(tmp_path / "log", data, "-z", "-s", "1000", "-n", "0")
    assert result.returncode == 0, result.stderr
    names = [path.name for path in archives(tmp_path / "log")]
    assert len(names) >= 4
    assert all(name.endswith(".s.gz") for name in names)
    assert everything(tmp_path / "log") == data
    assert sorted(path.name for path in (tmp_path / "log").iterdir() if not path.name.startswith("@")) \
        == ["current", "lock"]


def test_archiving_a_killed_run_left_half_done_is_finished(tmp_path: Path) -> None:
    """A ``.u`` (rotated, not compressed yet) is compressed at start; a ``.t`` (half compressed) is
    removed; new archives sort after the old labels."""
    directory = tmp_path / "log"
    directory.mkdir()
    label = "@4000000065000000" + "00000000"
    (directory / f"{label}.u").write_bytes(b"old line\n")
    (directory / f"{label}.t").write_bytes(b"\x1f\x8b half")
    result = feed(directory, b"new line\n", "-z", "-s", "5")
    assert result.returncode == 0, result.stderr
    names = [path.name for path in archives(directory)]
    assert names[0] == f"{label}.s.gz" and len(names) == 2
    assert everything(directory) == b"old line\nnew line\n"


def test_tee_copies_every_line_to_stdout(tmp_path: Path) -> None:
    """--tee writes the same bytes to stdout (for docker logs); the last line gets its newline."""
    data = b"one\n{\"json\": true}\n\xfe bytes\r\nlast"
    result = feed(tmp_path / "log", data, "--tee", "-s", "20", "-n", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == data + b"\n"
    assert everything(tmp_path / "log") == data + b"\n"
    assert len(archives(tmp_path / "log")) >= 1


def test_no_tee_means_nothing_on_stdout(tmp_path: Path) -> None:
    result = feed(tmp_path / "log", b"quiet\n")
    assert (result.returncode, result.stdout) == (0, b"")
    assert (tmp_path / "log" / "current").read_bytes() == b"quiet\n"


def locked(directory: Path) -> bool:
    """Whether some process holds the directory's lock."""
    try:
        fd = os.open(directory / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_second_logger_on_a_locked_directory_exits_111(tmp_path: Path,
                                                         processes: list[subprocess.Popen[bytes]]) -> None:
    """The second instance exits 111 at once (its input still open) and the first keeps logging."""
    first = logger(tmp_path / "log")
    processes.append(first)
    poll(lambda: locked(tmp_path / "log"), message="the first logger to lock the directory")
    second = logger(tmp_path / "log")
    processes.append(second)
    assert second.wait(DEFAULT_TIMEOUT) == 111
    assert second.stderr is not None
    assert second.stderr.read() == f"dinit-log: {tmp_path / 'log'}: locked by another logger\n".encode()
    assert first.stdin is not None
    first.stdin.write(b"still here\n")
    assert finish(first)[0] == 0
    assert (tmp_path / "log" / "current").read_bytes() == b"still here\n"


def test_sigalrm_rotates(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGALRM rotates at once, even while stdin is idle; with an empty current it does nothing."""
    process = logger(tmp_path / "log")
    processes.append(process)
    assert process.stdin is not None
    current = tmp_path / "log" / "current"
    process.stdin.write(b"one\n")
    process.stdin.flush()
    poll(lambda: current.exists() and current.read_bytes() == b"one\n", message="the first line")
    process.send_signal(signal.SIGALRM)
    poll(lambda: len(archives(tmp_path / "log")) == 1, message="a rotation at SIGALRM")
    process.send_signal(signal.SIGALRM)  # current is empty: no empty archive
    process.stdin.write(b"two\n")
    process.stdin.flush()
    poll(lambda: logged_so_far(tmp_path / "log") == b"one\ntwo\n", message="the second line")
    process.send_signal(signal.SIGALRM)
    poll(lambda: logged_so_far(tmp_path / "log") == b"one\ntwo\n" and current.exists()
         and current.stat().st_size == 0, message="the second rotation")
    assert [path.read_bytes() for path in archives(tmp_path / "log")] == [b"one\n", b"two\n"]
    assert process.poll() is None
    assert finish(process)[0] == 0


def test_age_rotation(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """-t rotates a non-empty current once it is that old, while input is idle."""
    process = logger(tmp_path / "log", "-t", "0.2", "-s", "0")
    processes.append(process)
    poll(lambda: locked(tmp_path / "log"), message="the logger to start")
    assert process.stdin is not None
    process.stdin.write(b"first\n")
    process.stdin.flush()
    poll(lambda: len(archives(tmp_path / "log")) == 1, message="the first rotation by age")
    process.stdin.write(b"second\n")
    process.stdin.flush()
    poll(lambda: len(archives(tmp_path / "log")) == 2, message="the second rotation by age")
    assert [path.read_bytes() for path in archives(tmp_path / "log")] == [b"first\n", b"second\n"]
    assert finish(process)[0] == 0
    assert (tmp_path / "log" / "current").read_bytes() == b""


def test_sigterm_finishes_the_line_in_hand(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM mid-line: the part read so far is written with a newline and the logger exits 0
    without waiting for EOF (its input is still open)."""
    process = logger(tmp_path / "log")
    processes.append(process)
    assert process.stdin is not None
    process.stdin.write(b"whole\npart")
    process.stdin.flush()
    current = tmp_path / "log" / "current"
    poll(lambda: current.exists() and current.read_bytes() == b"whole\n", message="the whole line")
    process.send_signal(signal.SIGTERM)
    assert process.wait(DEFAULT_TIMEOUT) == 0
    assert current.read_bytes() == b"whole\npart\n"
    process.stdin.close()


@pytest.mark.parametrize("command", [(str(SCRIPT),), MODULE, (PYTHON, "-m", "dinit", "log")],
                         ids=["console-script", "module", "dinit-log-subcommand"])
def test_eof_writes_the_last_line_with_a_newline(tmp_path: Path, command: tuple[str, ...]) -> None:
    """At EOF a last line without a newline gets one; every way of starting the logger works."""
    result = feed(tmp_path / "log", b"a\nb", command=command)
    assert (result.returncode, result.stderr) == (0, b"")
    assert (tmp_path / "log" / "current").read_bytes() == b"a\nb\n"
    assert (tmp_path / "log" / "current").stat().st_mode & 0o777 == 0o744  # svlogd: closed properly


def test_a_restart_appends_and_never_glues_lines(tmp_path: Path) -> None:
    """A new run appends to current; a line a crash cut short is ended before the next one."""
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "current").write_bytes(b"old\ncut sho")
    result = feed(tmp_path / "log", b"new\n")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "log" / "current").read_bytes() == b"old\ncut sho\nnew\n"


@pytest.mark.parametrize(("arguments", "message"), [
    ([], b"exactly one log directory is needed"),
    (["-s", "ten", "d"], b"-s needs a non-negative whole number, not 'ten'"),
    (["-t", "-1", "d"], b"-t needs a non-negative number of seconds, not '-1'"),
    (["-x", "d"], b"unknown option -x"),
    (["-n"], b"-n needs a value"),
])
def test_bad_usage_is_one_line_and_exit_100(tmp_path: Path, arguments: list[str], message: bytes) -> None:
    result = subprocess.run([*MODULE, *arguments], capture_output=True, cwd=tmp_path,
                            timeout=DEFAULT_TIMEOUT, check=False)
    assert result.returncode == 100
    assert result.stderr.splitlines() == [b"dinit-log: " + message, b"usage: dinit-log [-s BYTES] [-n NUM] "
                                          b"[-S TOTAL] [-t SECONDS] [-z] [--tee] DIR"]
    assert not (tmp_path / "d").exists()


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as file:
        for block in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    file.write(b"\0" * block)
    return filler


def fill_pipe(fd: int, data: bytes, sent: int) -> int:
    """Write ``data[sent:]`` without blocking until the pipe is full; returns the new ``sent``."""
    with contextlib.suppress(BlockingIOError):
        while sent < len(data):
            sent += os.write(fd, data[sent:])
    return sent


def logged_so_far(directory: Path) -> bytes | None:
    """:func:`everything` while the logger runs (None if a rotation moved a file under us)."""
    try:
        return everything(directory)
    except FileNotFoundError:
        return None


def test_a_full_disk_stops_reading_and_loses_nothing(tmp_path: Path,
                                                     processes: list[subprocess.Popen[bytes]]) -> None:
    """On a full tmpfs the logger says so once, stops reading (the writer's pipe stays full) and does
    not exit; once space is freed it resumes, and every line is in the files, whole and in order."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    script = 'mount -t tmpfs -o size=512k tmpfs "$1" && shift && exec "$@"'
    process = logger(mountpoint / "log", "-s", "20000", "-n", "0",
                     wrapper=("unshare", "--mount", "sh", "-c", script, "sh", str(mountpoint)))
    processes.append(process)
    inside = Path(f"/proc/{process.pid}/root") / mountpoint.relative_to("/")  # the private mount
    poll(lambda: (inside / "log" / "current").exists(), message="the logger to start on the tmpfs")
    filler = fill(inside)
    data = b"".join(b"line %06d %s\n" % (number, b"." * (number % 50)) for number in range(5000))
    assert 160 * 1024 < len(data) < 256 * 1024  # more than a pipe and a read; fits once freed
    assert process.stdin is not None and process.stderr is not None
    stdin, stderr = process.stdin.fileno(), process.stderr.fileno()
    os.set_blocking(stdin, False)
    sent = fill_pipe(stdin, data, 0)
    error = bytearray()

    def stalled() -> bool:
        with contextlib.suppress(BlockingIOError):
            error.extend(os.read(stderr, 4096))
        assert process.poll() is None, bytes(error)
        return b"No space left on device; not reading until there is room" in error

    os.set_blocking(stderr, False)
    poll(stalled, message="the full-disk message")
    sent = fill_pipe(stdin, data, sent)  # it stopped reading: the pipe fills up and stays full
    assert sent < len(data), "the logger kept reading on a full disk"
    assert error.count(b"\n") == 1 and process.poll() is None
    filler.unlink()
    os.set_blocking(stdin, True)
    process.stdin.write(data[sent:])
    process.stdin.flush()
    poll(lambda: logged_so_far(inside / "log") == data, message="every line in the log files")
    assert all(path.read_bytes().endswith(b"\n") for path in archives(inside / "log"))
    process.stdin.close()
    assert process.wait(DEFAULT_TIMEOUT) == 0
    os.set_blocking(stderr, True)
    error.extend(process.stderr.read())
    assert error.endswith(f"dinit-log: {mountpoint}/log/current: there is room again, reading on\n".encode())


def test_as_a_services_logger_under_dinit_as_pid1(services: Services, tmp_path: Path) -> None:
    """``exec dinit-log --tee DIR`` as S/log/run: the service's lines land in DIR/current and, through
    --tee, in dinit's own output; at SIGTERM dinit stops everything and exits 0."""
    directory = tmp_path / "app-log"
    services.add("app", "printf '{\"msg\":\"hello\"}\\nplain words\\n'; exec sleep 1000",
                 log=f"exec {SCRIPT} --tee -s 1000 {directory}\n")
    dinit = start(services)
    current = directory / "current"
    poll(lambda: current.exists() and current.read_bytes() == b'{"msg":"hello"}\nplain words\n',
         message="the service's lines in current")
    dinit.wait_for(rb'"msg":"hello"', stream="stdout")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert [(line["msg"], line["service"], line["stage"]) for line in dinit.json_lines()] \
        == [("hello", "app", "run")]
    assert b"plain words" in dinit.stderr
    assert dinit.messages("error") == []
    assert not locked(directory)


def test_dinit_log_subcommand_hands_over_first(services: Services) -> None:
    """``dinit log`` hands over before dinit sets anything up: with no directory it is dinit-log's
    usage error (100), not dinit starting the services it was given."""
    services.add("app", "echo should not run")
    finished = run(services, "log", pid1=False)
    assert finished.returncode == 100
    assert finished.stderr.startswith(b"dinit-log: exactly one log directory is needed\n")
    assert finished.stdout == b""
