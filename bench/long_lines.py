"""Peak memory of dinit (as PID 1) while passing very long lines (§4.1: lines over 1 MiB are emitted
in pieces of at most 1 MiB).

Cases, each a service ``cat <prebuilt file>; exec sleep 1000`` (it keeps running, so dinit's VmHWM
can be read once all output has arrived; then dinit gets SIGTERM):
- JSON mode, 200 JSON-object lines of 1 MiB - 1 bytes (+ ``\\n``): the longest lines kept whole;
- JSON mode, 40 lines of 3 MiB: each is cut into 3 pieces, which are not JSON objects, so they go
  to stderr as ``not JSON stdout`` warnings (plus one ``line longer than`` warning per line);
- prefix mode, 40 lines of 3 MiB: 120 pieces on stdout, 40 warnings on stderr.
stdout and stderr are pipes read by the benchmark in 1 MiB reads; the output line counts are
checked. Baselines, same run: a ``cat`` relay passing the 1 MiB lines (``cat file | cat``, the
relay's VmHWM and rate: what moving the bytes alone costs), and dinit's VmHWM after passing one
short line (the interpreter's own share). Ratios are to the ``cat`` relay.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from common import (
    compile_bytecode,
    dinit_pid,
    emit,
    header,
    make_services,
    result,
    start_dinit,
    status_kib,
    tempdir,
    wait_until,
)

MIB = 1024 * 1024
TARGET_MIB = 64.0


class Counter(threading.Thread):
    """Reads a pipe to EOF, counting lines and bytes."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.lines = 0
        self.size = 0

    def run(self) -> None:
        while chunk := os.read(self.fd, MIB):
            self.lines += chunk.count(b"\n")
            self.size += len(chunk)
        os.close(self.fd)


def write_lines(path: Path, line: bytes, count: int) -> None:
    with open(path, "wb") as file:
        for _ in range(count):
            file.write(line)


def peak(directory: Path, out_lines: int, err_lines: int, **variables: str) -> tuple[float, float, Counter]:
    """Run dinit until the expected output has arrived; return (VmHWM MiB, seconds, stdout counter)."""
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    start = time.perf_counter()
    popen = start_dinit(directory, pid1=True, stdout=out_write, stderr=err_write, **variables)
    os.close(out_write)
    os.close(err_write)
    out, err = Counter(out_read), Counter(err_read)
    out.start()
    err.start()
    try:
        pid = dinit_pid(popen, True)
        wait_until(lambda: out.lines >= out_lines and err.lines >= err_lines, timeout=50,
                   what=f"{out_lines} stdout and {err_lines} stderr lines")
        seconds = time.perf_counter() - start
        hwm = status_kib(pid, "VmHWM") / 1024
        os.kill(pid, signal.SIGTERM)
        if popen.wait(20) != 0:
            raise RuntimeError(f"dinit exited with {popen.returncode}")
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    out.join(20)
    err.join(20)
    if out.lines != out_lines or err.lines != err_lines:
        raise RuntimeError(f"expected {out_lines}/{err_lines} stdout/stderr lines, "
                           f"got {out.lines}/{err.lines}")
    return hwm, seconds, out


def cat_relay(path: Path, lines: int) -> tuple[float, float]:
    """VmHWM (MiB) and seconds of ``cat`` relaying ``path`` (whose producer stays alive, so the relay
    is still there to be measured once every line has arrived)."""
    feed_read, feed_write = os.pipe2(os.O_CLOEXEC)
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    start = time.perf_counter()
    producer = subprocess.Popen(["sh", "-c", f"cat {path}; exec sleep 1000"], stdout=feed_write,
                                start_new_session=True)
    relay = subprocess.Popen(["cat"], stdin=feed_read, stdout=out_write)
    for fd in (feed_read, feed_write, out_write):
        os.close(fd)
    out = Counter(out_read)
    out.start()
    try:
        wait_until(lambda: out.lines >= lines, timeout=50, what=f"{lines} lines through cat")
        seconds = time.perf_counter() - start
        hwm = status_kib(relay.pid, "VmHWM") / 1024
    finally:
        os.killpg(producer.pid, signal.SIGKILL)
        producer.wait()
        relay.wait(20)
        out.join(20)
    return hwm, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--whole", type=int, default=200, help="number of 1 MiB lines")
    parser.add_argument("--split", type=int, default=40, help="number of 3 MiB lines")
    args = parser.parse_args()
    header("peak memory with long lines, dinit as PID 1")
    compile_bytecode()
    with tempdir("longlines") as tmp:
        root = Path(tmp)
        whole = root / "whole.json"
        write_lines(whole, b'{"x":"' + b"a" * (MIB - 1 - 8) + b'"}\n', args.whole)
        split = root / "split.json"
        write_lines(split, b'{"x":"' + b"b" * (3 * MIB - 8) + b'"}\n', args.split)

        def service(name: str, path: Path | None) -> Path:
            body = f"cat {path}; exec sleep 1000\n" if path else "echo '{\"a\":1}'; exec sleep 1000\n"
            return make_services(root / name, {"svc": body})

        cases = [
            ("baseline: one short JSON line", service("short", None), 1, 0, {}, 0),
            (f"JSON, {args.whole} lines of 1 MiB - 1 B", service("whole", whole), args.whole, 0, {},
             whole.stat().st_size),
            (f"JSON, {args.split} lines of 3 MiB (split, to stderr)", service("split", split), 0,
             4 * args.split, {}, split.stat().st_size),
            (f"prefix, {args.split} lines of 3 MiB (split)", service("split_prefix", split),
             3 * args.split, args.split, {"DINIT_JSON_STDOUT": "0"}, split.stat().st_size),
        ]
        cat_hwm, cat_seconds = cat_relay(whole, args.whole)
        cat_rate = whole.stat().st_size / MIB / cat_seconds
        print(f"{'baseline: cat file | cat, 1 MiB lines':48} VmHWM {cat_hwm:6.1f} MiB  "
              f"({cat_seconds:.2f} s, {cat_rate:.0f} MiB/s)")
        peaks: dict[str, float] = {}
        for name, directory, out_lines, err_lines, variables, size in cases:
            hwm, seconds, _ = peak(directory, out_lines, err_lines, **variables)
            peaks[name] = hwm
            rate = f", {size / MIB / seconds:.0f} MiB/s" if size else ""
            print(f"{name:48} VmHWM {hwm:6.1f} MiB  ({seconds:.2f} s{rate})")
    short = peaks[cases[0][0]]
    print("ratios to the cat relay: " + ", ".join(f"{value / cat_hwm:.1f}x" for value in peaks.values())
          + f" (dinit's own floor, one short line: {short:.1f} MiB)")
    emit([result(f"peak RSS (VmHWM), {name}", value, "MiB", baseline=cat_hwm,
                 baseline_label="cat file | cat relay", target=f"< {TARGET_MIB:g} MiB",
                 ok=value < TARGET_MIB, detail=f"one short line: {short:.1f} MiB")
          for name, value in list(peaks.items())[1:]])


if __name__ == "__main__":
    main()
