"""Output throughput: lines/s through dinit (as PID 1) from services writing 100-byte lines as fast as
they can, with nothing lost.

Producers are ``cat <prebuilt file>; exec sleep 1000`` (N lines of exactly 100 bytes including
``\\n``, each a JSON object with a sequence number), so the producer is far faster than dinit.
dinit's stdout is a pipe (default 64 KiB, as a container runtime gives) read by the benchmark
process itself in 1 MiB reads, counting ``\\n``; its stderr goes to a file. The clock runs from
starting dinit to the arrival of the last line, so start-up is included (the rate from the first
byte is printed too). The services then sleep instead of exiting, because one service exiting tears
the others down (§5.1) and would cut the 8-service case short; once the clock has stopped dinit gets
SIGTERM and is read to EOF.

Checked every run (a lost, split, merged or duplicated line fails the run, it is not a timing): the
line count is N, every output line has the same length (the input lines are equal-sized and the
label is fixed-size), the first and last lines are the first and last input lines correctly
labelled (JSON-parsed in JSON mode), and stderr is empty.

Cases: JSON mode, prefix mode (``DINIT_JSON_STDOUT=0``), and 8 services each writing N/8 lines
concurrently (JSON mode; compared with the single-service JSON figure); also, with no target, JSON
lines that carry a ``"service"`` member of their own, which dinit removes from each line. Baselines
in the same run: the producer alone into the same consumer (``cat file``), and the same producer
through a relay (``cat file | cat``), the shape of dinit's data path without its work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    compile_bytecode,
    dinit_pid,
    emit,
    fmt,
    header,
    make_services,
    median,
    result,
    start_dinit,
    tempdir,
)

LINE = 100
JSON_TARGET = 1_000_000
PREFIX_TARGET = 1_500_000
CONCURRENT = 8
CONCURRENT_TOLERANCE = 0.20
#: Sequence numbers start at 10**9 so every line has the same length and is valid JSON.
_SEQ0 = 1_000_000_000
_HEAD = b'{"seq":%d,"msg":"'
_PAD = b"x" * (LINE - len(_HEAD % _SEQ0) - len(b'"}\n'))
#: Ends the lines of the "own key" case: a member named like dinit's, which dinit cuts out of each
#: line before appending its own (no target; it shows what that costs).
_OWN_KEY = b'","service":"x'


def make_lines(first: int, count: int, own_key: bool = False) -> bytes:
    pad, tail = (_PAD[len(_OWN_KEY):], _OWN_KEY) if own_key else (_PAD, b"")
    return b"".join(_HEAD % (_SEQ0 + i) + pad + tail + b'"}\n' for i in range(first, first + count))


@dataclass
class Consumed:
    lines: int
    size: int
    head: bytes
    tail: bytes
    seconds: float
    from_first_byte: float


def consume(fd: int, start: int, expected: int, on_complete: Callable[[], None] | None = None) -> Consumed:
    """Read ``fd`` to EOF in big chunks, counting lines; keep the first and last 4 KiB. The clock
    stops when ``expected`` lines have arrived; then ``on_complete`` runs (e.g. stopping dinit)."""
    lines = size = 0
    head = tail = b""
    first_byte = end = 0
    while chunk := os.read(fd, 1 << 20):
        if not first_byte:
            first_byte = time.perf_counter_ns()
        lines += chunk.count(b"\n")
        size += len(chunk)
        if len(head) < 4096:
            head += chunk[:4096]
        tail = chunk[-4096:] if len(chunk) >= 4096 else (tail + chunk)[-4096:]
        if not end and lines >= expected:
            end = time.perf_counter_ns()
            if on_complete is not None:
                on_complete()
    end = end or time.perf_counter_ns()
    return Consumed(lines, size, head, tail, (end - start) / 1e9, (end - (first_byte or end)) / 1e9)


def pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    return read_end, write_end


def run_dinit(services: Path, err_path: Path, count: int, **variables: str) -> Consumed:
    """Services write their file then sleep (so one finishing does not tear the others down); the
    clock stops at the last expected line, then dinit gets SIGTERM and is read to EOF."""
    read_end, write_end = pipe()
    with open(err_path, "wb") as err:
        start = time.perf_counter_ns()
        popen = start_dinit(services, pid1=True, stdout=write_end, stderr=err, **variables)
        os.close(write_end)
        try:
            consumed = consume(read_end, start, count,
                               lambda: os.kill(dinit_pid(popen, True), signal.SIGTERM))
        finally:
            os.close(read_end)
        if popen.wait(60) != 0:
            raise RuntimeError(f"dinit exited with {popen.returncode}: {err_path.read_bytes()[-2000:]!r}")
    stderr = err_path.read_bytes()
    if stderr:
        raise RuntimeError(f"unexpected stderr output: {stderr[:2000]!r}")
    return consumed


def run_shell(commands: list[list[str]], count: int) -> Consumed:
    """Baseline: each command writes into the consumer pipe (a pipeline when several are chained with
    ``|`` is built by the caller as one ``sh -c``)."""
    read_end, write_end = pipe()
    start = time.perf_counter_ns()
    processes = [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=write_end)
                 for command in commands]
    os.close(write_end)
    try:
        consumed = consume(read_end, start, count)
    finally:
        os.close(read_end)
    for process in processes:
        if process.wait(60) != 0:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
    return consumed


def check(consumed: Consumed, count: int, mode: str, names: set[str]) -> None:
    """Nothing lost, split, merged or duplicated (see module docstring)."""
    if consumed.lines != count:
        raise RuntimeError(f"{mode}: {consumed.lines} lines out, {count} in")
    first = consumed.head.split(b"\n", 1)[0]
    last = consumed.tail.rsplit(b"\n", 2)[-2]
    if consumed.size != count * (len(first) + 1) or len(last) != len(first):
        raise RuntimeError(f"{mode}: output lines differ in length (lost or merged bytes)")
    if mode == "raw":
        return
    for line in (first, last):
        if mode == "json":
            value = json.loads(line)
            if value["service"] not in names or value["stage"] != "run" or len(value) != 5:
                raise RuntimeError(f"bad JSON line {line!r}")
        elif not (line[23:24] == b"Z" and line.split(b" ", 2)[1].rstrip(b":").decode() in
                  {f"{name}/run" for name in names}):
            raise RuntimeError(f"bad prefix line {line!r}")
    # One stream keeps its order, so its first and last lines are the input's.
    if len(names) == 1 and ((_HEAD % _SEQ0) not in first or (_HEAD % (_SEQ0 + count - 1)) not in last):
        raise RuntimeError(f"{mode}: first/last line out of order: {first[:60]!r} {last[:60]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000,
                        help="lines per case (rounded down to a multiple of 8)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (median reported)")
    args = parser.parse_args()
    count = args.lines - args.lines % CONCURRENT
    header(f"output throughput: {count:,} lines of {LINE} bytes, dinit as PID 1, stdout to a pipe")
    compile_bytecode()
    with tempdir("throughput") as tmp:
        root = Path(tmp)
        data = root / "lines.json"
        data.write_bytes(make_lines(0, count))
        own = root / "own.json"
        own.write_bytes(make_lines(0, count, own_key=True))
        per = count // CONCURRENT
        parts = []
        for k in range(CONCURRENT):
            part = root / f"part{k}.json"
            part.write_bytes(make_lines(k * per, per))
            parts.append(part)
        single = make_services(root / "single", {"svc": f"cat {data}; exec sleep 1000\n"})
        own_key = make_services(root / "own", {"svc": f"cat {own}; exec sleep 1000\n"})
        many = make_services(root / "many", {f"svc{k}": f"cat {parts[k]}; exec sleep 1000\n"
                                             for k in range(CONCURRENT)})
        err = root / "stderr"
        cases = {
            "producer alone (cat file)": (lambda: run_shell([["cat", str(data)]], count), "raw", {"-"}),
            "relay baseline (cat file | cat)": (
                lambda: run_shell([["sh", "-c", f"cat {data} | cat"]], count), "raw", {"-"}),
            f"producers alone, {CONCURRENT} at once (cat part)": (
                lambda: run_shell([["cat", str(part)] for part in parts], count), "raw", {"-"}),
            "dinit JSON mode": (lambda: run_dinit(single, err, count), "json", {"svc"}),
            "dinit prefix mode": (
                lambda: run_dinit(single, err, count, DINIT_JSON_STDOUT="0"), "prefix", {"svc"}),
            f"dinit JSON mode, {CONCURRENT} services": (
                lambda: run_dinit(many, err, count), "json", {f"svc{k}" for k in range(CONCURRENT)}),
            "dinit JSON mode, lines with a service key": (
                lambda: run_dinit(own_key, err, count), "json", {"svc"}),
        }
        rates: dict[str, list[float]] = {name: [] for name in cases}
        steady: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, (measure, mode, names) in cases.items():
                consumed = measure()
                print(f"# {name}: {consumed.seconds:.2f} s", flush=True)
                check(consumed, count, mode, names)
                rates[name].append(count / consumed.seconds)
                steady[name].append(count / consumed.from_first_byte)
    print("lines/s, start to last line: median and best of the runs; from first byte: median")
    print(f"{'case':50} {'median':>12} {'best':>12} {'first byte':>12}")
    for name in cases:
        print(f"{name:50} {fmt(median(rates[name])):>12} {fmt(max(rates[name])):>12} "
              f"{fmt(median(steady[name])):>12}")
    print("all runs: line count, line lengths, first/last lines checked; nothing lost")
    relay = median(rates["relay baseline (cat file | cat)"])
    relay_many = median(rates[f"producers alone, {CONCURRENT} at once (cat part)"])
    json_rate = median(rates["dinit JSON mode"])
    prefix_rate = median(rates["dinit prefix mode"])
    many_rate = median(rates[f"dinit JSON mode, {CONCURRENT} services"])
    print(f"ratios: JSON/relay {json_rate / relay:.3f}, prefix/relay {prefix_rate / relay:.3f}, "
          f"{CONCURRENT} services/1 service {many_rate / json_rate:.3f}")
    emit([
        result("JSON mode, 1 service, 100-byte lines", json_rate, "lines/s", baseline=relay,
               baseline_label="cat file | cat", target=f">= {JSON_TARGET:,}", ok=json_rate >= JSON_TARGET,
               higher_is_better=True, detail=f"best {fmt(max(rates['dinit JSON mode']))}"),
        result("prefix mode, 1 service, 100-byte lines", prefix_rate, "lines/s", baseline=relay,
               baseline_label="cat file | cat", target=f">= {PREFIX_TARGET:,}",
               ok=prefix_rate >= PREFIX_TARGET, higher_is_better=True,
               detail=f"best {fmt(max(rates['dinit prefix mode']))}"),
        result(f"JSON mode, {CONCURRENT} services concurrently", many_rate, "lines/s", baseline=json_rate,
               baseline_label="dinit JSON, 1 service",
               target=f"within {CONCURRENT_TOLERANCE:.0%} of 1 service",
               ok=many_rate >= (1 - CONCURRENT_TOLERANCE) * json_rate, higher_is_better=True,
               detail=f"best {fmt(max(rates[f'dinit JSON mode, {CONCURRENT} services']))}"),
        result("JSON mode, every line with a \"service\" member of its own",
               median(rates["dinit JSON mode, lines with a service key"]), "lines/s",
               baseline=json_rate, baseline_label="dinit JSON, plain lines", higher_is_better=True),
    ])
    print(f"({CONCURRENT} producers alone, into the same consumer: {fmt(relay_many)} lines/s)")


if __name__ == "__main__":
    main()
