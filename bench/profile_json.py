"""Where dinit's own process spends its time under the JSON throughput load (not a timing benchmark;
not run by run_all.py unless ``--profile`` is given).

Same setup as ``throughput.py``'s JSON case (one service writing 100-byte JSON lines as fast as it
can, dinit as PID 1, stdout to a pipe read by this process), with the file written several times so
there are a few seconds of samples. Profilers, in order of preference:
- py-spy (``.venv/bin/pip install py-spy``; not a project dependency): samples every thread of the
  running dinit from outside, with little overhead;
- cProfile (standard library) as a fallback: dinit runs under a small wrapper that enables it and
  dumps the statistics when dinit calls ``os._exit``. It sees the event-loop thread only (not the
  two writer threads) and slows Python code down, so its shares are only indicative.
Prints the top functions by own ("self") samples and by inclusive samples, and the hottest lines.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pstats
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    CLK_TCK,
    PYTHON,
    compile_bytecode,
    dinit_env,
    header,
    make_services,
    tempdir,
    wait_until,
)

LINE = 100
_SEQ0 = 1_000_000_000
_HEAD = b'{"seq":%d,"msg":"'
_PAD = b"x" * (LINE - len(_HEAD % _SEQ0) - len(b'"}\n'))

CPROFILE_WRAPPER = """
import cProfile, os, sys
profile = cProfile.Profile()
real_exit = os._exit
def _exit(code):
    profile.disable()
    profile.dump_stats(os.environ["BENCH_PROFILE_OUT"])
    real_exit(code)
os._exit = _exit
sys.argv = ["dinit"]
from dinit.cli import main
profile.enable()
main()
"""

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def thread_cpu(pid: int) -> dict[int, tuple[int, int]]:
    """(utime, stime) in clock ticks of every thread of ``pid``."""
    times = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as file:
                data = file.read()
            fields = data[data.rindex(b")") + 2:].split()
            times[int(task)] = (int(fields[11]), int(fields[12]))
    return times


def consume_until(fd: int, expected: int, on_complete: Callable[[], None]) -> tuple[int, float]:
    lines = 0
    start = time.perf_counter()
    elapsed = 0.0
    while chunk := os.read(fd, 1 << 20):
        lines += chunk.count(b"\n")
        if not elapsed and lines >= expected:
            elapsed = time.perf_counter() - start
            on_complete()
    return lines, elapsed


def run(services: Path, command: list[str], expected: int, tmp: Path, pyspy: str | None,
        **variables: str) -> tuple[Path, float, dict[int, tuple[float, float]]]:
    """Run dinit under the chosen profiler; return the profile file, the lines/s achieved and the
    CPU use of each of dinit's threads during the load (user, system; in % of one core)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    out = tmp / ("pyspy.txt" if pyspy else "cprofile.out")
    popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.DEVNULL,
                             env=dinit_env(services, BENCH_PROFILE_OUT=str(out), **variables),
                             cwd=str(tmp), start_new_session=True)
    os.close(write_end)
    pid = popen.pid
    spy = None
    if pyspy:
        spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                                "--threads", "--gil", "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # let py-spy attach; the service waits for the go file meanwhile
    before = thread_cpu(pid)
    after: dict[int, tuple[int, int]] = {}

    def complete() -> None:
        after.update(thread_cpu(pid))
        os.kill(pid, signal.SIGTERM)

    (tmp / "go").touch()
    try:
        lines, elapsed = consume_until(read_end, expected, complete)
    finally:
        os.close(read_end)
    popen.wait(30)
    if spy is not None:
        _, err = spy.communicate(timeout=30)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
    else:
        wait_until(out.exists, 10, what="cProfile output")
    if lines != expected:
        raise RuntimeError(f"{lines} lines out, {expected} in")
    cpu = {tid: ((user - before.get(tid, (0, 0))[0]) / CLK_TCK / elapsed * 100,
                 (system - before.get(tid, (0, 0))[1]) / CLK_TCK / elapsed * 100)
           for tid, (user, system) in after.items()}
    return out, expected / elapsed, cpu


def report_cpu(pid_cpu: dict[int, tuple[float, float]], names: dict[int, str]) -> None:
    print("CPU per dinit thread during the load (/proc/<pid>/task/<tid>/stat), % of one core:")
    for tid, (user, system) in sorted(pid_cpu.items()):
        name = names.get(tid) or ("MainThread (event loop)" if tid == min(pid_cpu) else f"thread {tid}")
        print(f"  {name:32} user {user:5.1f} %  system {system:5.1f} %  "
              f"total {user + system:5.1f} %")


def thread_names(path: Path) -> dict[int, str]:
    """Thread id -> name, from py-spy's ``thread (tid): name`` frames."""
    names = {}
    for match in re.finditer(r"thread \((\d+)\): ([^;]+)", path.read_text()):
        names[int(match.group(1))] = match.group(2)
    return names


def report_pyspy(path: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for row in path.read_text().splitlines():
        stack, _, count_text = row.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((frame for frame in frames if frame.startswith("thread ")), "?")
        python = [FRAME.match(frame) for frame in frames]
        python = [match for match in python if match and match.group("file")]
        if not python:
            continue
        total += count
        threads[thread] += count
        leaf = python[-1]
        own[f"{leaf.group('function')} ({leaf.group('file')})"] += count
        lines[f"{leaf.group('function')} ({leaf.group('file')}:{leaf.group('line')})"] += count
        for name in {f"{m.group('function')} ({m.group('file')})" for m in python}:
            inclusive[name] += count
    print(f"\n{total} samples (py-spy --gil, 250 Hz: the thread holding the GIL, i.e. running Python)")
    print("by thread:")
    for name, count in threads.most_common():
        print(f"  {count / total:6.1%}  {name}")
    for title, counter in (("self (the function itself was running)", own),
                           ("inclusive (on the stack)", inclusive), ("hottest lines (self)", lines)):
        print(f"top {top}, {title}:")
        for name, count in counter.most_common(top):
            print(f"  {count / total:6.1%}  {name}")


def report_cprofile(path: Path, top: int) -> None:
    print("\ncProfile (event loop thread only):")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the file")
    parser.add_argument("--times", type=int, default=3, help="how often the service writes the file")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto")
    parser.add_argument("--prefix", action="store_true", help="profile prefix mode instead of JSON")
    args = parser.parse_args()
    header(f"profile of dinit under the {'prefix' if args.prefix else 'JSON'} throughput load")
    compile_bytecode()
    pyspy = None
    if args.profiler != "cprofile":
        pyspy = shutil.which("py-spy", path=f"{os.path.dirname(PYTHON)}:{os.environ.get('PATH', '')}")
        if pyspy is None and args.profiler == "py-spy":
            raise SystemExit("py-spy not found (.venv/bin/pip install py-spy)")
    print(f"# profiler: {pyspy or 'cProfile (py-spy not found)'}")
    with tempdir("profile") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "lines.json"
        data.write_bytes(b"".join(_HEAD % (_SEQ0 + i) + _PAD + b'"}\n' for i in range(args.lines)))
        body = (f"while [ ! -e {tmp / 'go'} ]; do sleep 0.01; done\n"
                f"for i in $(seq {args.times}); do cat {data}; done\nexec sleep 1000\n")
        services = make_services(tmp / "service", {"svc": body})
        command = [PYTHON, "-m", "dinit"] if pyspy else [PYTHON, "-c", CPROFILE_WRAPPER]
        variables = {"DINIT_JSON_STDOUT": "0"} if args.prefix else {}
        out, rate, cpu = run(services, command, args.lines * args.times, tmp, pyspy, **variables)
        print(f"{args.lines * args.times:,} lines at {rate:,.0f} lines/s under the profiler")
        names = thread_names(out) if pyspy else {}
        report_cpu(cpu, names)
        if pyspy:
            report_pyspy(out, args.top)
        else:
            report_cprofile(out, args.top)


if __name__ == "__main__":
    main()
