"""Unit tests of ``dinit.output.writer.Writer``: its thread, and what happens to queued bytes when
dinit's stdout breaks."""

from __future__ import annotations

import fcntl
import os
import termios
import threading
from typing import Any

import pytest
from harness import poll

from dinit.output import writer as writer_module
from dinit.output.writer import Writer

_F_SETPIPE_SZ = 1031


def _pending(fd: int) -> int:
    count = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return int.from_bytes(count, "little")


def test_reader_gone_mid_line_resends_that_line_whole_to_the_fallback() -> None:
    """§4.6: a write cut short by the reader going away (EPIPE after a partial write) sends the rest
    to the other stream starting at the beginning of the cut line, so no line arrives split."""
    out_read, out_write = os.pipe()
    capacity = fcntl.fcntl(out_write, _F_SETPIPE_SZ, 4096)
    err_read, err_write = os.pipe()
    fcntl.fcntl(err_write, _F_SETPIPE_SZ, 1 << 20)  # holds everything: read only at the end
    closed: list[str] = []
    stdout, stderr = Writer(out_write, "stdout"), Writer(err_write, "stderr")
    stdout.fallback = stderr
    stdout.on_closed = lambda writer, error: closed.append(error.strerror or "")
    data = b"".join(b"line %04d %s\n" % (n, b"x" * 89) for n in range(1000))  # 100-byte lines
    try:
        stdout.write(data)
        poll(lambda: _pending(out_read) == capacity, message="the writer to fill the pipe")
        os.close(out_read)
        stdout.close()
        stderr.close()
        os.close(err_write)
        with os.fdopen(err_read, "rb") as err:
            rest = err.read()
    finally:
        os.close(out_write)
    cut = capacity // 100 * 100
    assert closed == ["Broken pipe"]
    assert rest == data[cut:]


def test_the_thread_starts_with_the_first_bytes_and_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer makes its thread only when bytes are first queued (an idle dinit has none, and a
    close with nothing written waits for nothing); several threads writing at once (the loop, and
    the other writer falling back after its fd broke) start one thread; close writes all out."""
    real = writer_module._thread.start_new_thread
    started: list[object] = []

    def start_new_thread(function: Any, args: tuple[Any, ...]) -> int:
        started.append(function)
        return real(function, args)

    monkeypatch.setattr(writer_module._thread, "start_new_thread", start_new_thread)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, _F_SETPIPE_SZ, 1 << 20)
    writer = Writer(write_end, "stdout")
    idle = Writer(write_end, "stderr")
    idle.close()
    assert started == []
    barrier = threading.Barrier(8)

    def write(n: int) -> None:
        barrier.wait()
        writer.write(b"from %d\n" % n)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert len(started) == 1
    writer.close()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        lines = pipe.read().splitlines()
    assert sorted(lines) == sorted(b"from %d" % n for n in range(8))


def test_a_thread_that_cannot_be_made_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """When no thread can be made (a container's ``pids.max`` used up), bytes are written at once
    instead, and the next write tries again; close waits only for a thread that exists."""
    read_end, write_end = os.pipe()
    real = writer_module._thread.start_new_thread
    refusals = [1]

    def start_new_thread(function: Any, args: tuple[Any, ...]) -> int:
        if refusals:
            refusals.pop()
            raise RuntimeError("can't start new thread")
        return real(function, args)

    monkeypatch.setattr(writer_module._thread, "start_new_thread", start_new_thread)
    writer = Writer(write_end, "stdout")
    writer.write(b"first\n")
    assert os.read(read_end, 100) == b"first\n"  # already written, before any thread
    writer.write(b"second\n")
    writer.close()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"second\n"


def test_bytes_falling_back_to_a_closed_writer_are_written_at_once() -> None:
    """At exit stdout is closed first; if stderr's reader goes during stderr's own final flush, its
    bytes fall back to stdout (§4.6), whose thread has ended: they are written at once, not lost."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    stdout, stderr = Writer(out_write, "stdout"), Writer(err_write, "stderr")
    stderr.fallback = stdout
    stdout.write(b"out\n")
    stdout.close()
    os.close(err_read)
    stderr.write(b"err\n")
    stderr.close()
    os.close(out_write)
    os.close(err_write)
    with os.fdopen(out_read, "rb") as pipe:
        assert pipe.read() == b"out\nerr\n"
