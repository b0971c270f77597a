"""Reparented-process detection (§6.2): the cost of one scan, and end-to-end detection latency.

Scan cost, in this process: 10, 100 and 1000 children (``sleep 60`` via ``posix_spawn``), and two
idle threads like dinit's writer threads once it has written (``children()`` reads the main
thread's list alone, so they cost a scan nothing). Measured
with the real ``dinit.process.reparent.Reparenter.scan`` on a stub host (policy ``ignore``, so nothing
is signalled):
- steady state: every child already known (``children()`` + a ``known`` check per PID), median of many scans;
- per new orphan: a scan where every child is new (``state_and_age`` + ``cmdline`` + naming +
  registering each), minus nothing, divided by the number of children;
- the pieces alone: ``children()``, and ``state_and_age`` + ``cmdline`` + ``program_name`` per PID.
Baseline: one raw open+read+close of ``/proc/self/task/<tid>/children`` (the least a scan can do).

Detection latency, end to end, dinit as PID 1 with ``DINIT_LOG_LEVEL=warn``: a Python service
double-forks a ``sleep`` at random intervals and logs (grandchild PID, time the middle child was
reaped, i.e. the orphan exists); the benchmark timestamps dinit's ``terminating reparented child
process with PID <pid>`` warning as it reads it from dinit's stderr. Expected: up to the 0.5 s scan
interval (plus the 10 ms minimum age), about 0.25 s on average.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    compile_bytecode,
    dinit_pid,
    emit,
    header,
    make_services,
    median,
    result,
    start_dinit,
    summary,
    tempdir,
    wait_for_children,
    wait_until,
)

from dinit.config import Policy
from dinit.loop import Timer
from dinit.process.procfs import children, cmdline, program_name, state_and_age
from dinit.process.programs import Program, Role
from dinit.process.reparent import SCAN_INTERVAL, Reparenter

SIZES = (10, 100, 1000)
SCAN_TARGET_MS = 1.0
LATENCY_TARGET_S = 0.6


class _StubLoop:
    def time(self) -> float:
        return 0.0

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        return Timer(delay, callback, args)


class _StubHost:
    """What ``Reparenter.scan`` uses of its host (``ReparentHost``) under the ``ignore`` policy."""

    def __init__(self) -> None:
        self.programs: dict[int, Program] = {}
        self.terminating = False
        self.loop = _StubLoop()

    def known(self, pid: int) -> bool:
        return pid in self.programs

    def add_program(self, program: Program) -> None:
        self.programs[program.pid] = program

    def reap_soon(self) -> None:
        raise RuntimeError("no zombie expected during the benchmark")


def timed(function: Any, runs: int) -> list[float]:
    """Microseconds per call, one sample per run."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        function()
        samples.append((time.perf_counter_ns() - start) / 1e3)
    return samples


def raw_read() -> None:
    with open(f"/proc/self/task/{threading.get_native_id()}/children", "rb") as file:
        file.read()


def scan_costs(sleep: str) -> tuple[list[dict[str, Any]], float]:
    idle = threading.Event()  # the writer threads' stand-ins
    threads = [threading.Thread(target=idle.wait, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    rows = []
    orphan_row = None
    baseline = median(timed(raw_read, 2000))
    print(f"baseline: raw read of one children file: median {baseline:.1f} µs")
    try:
        for size in SIZES:
            pids = [os.posix_spawn(sleep, ["sleep", "60"], os.environ) for _ in range(size)]
            try:
                wait_for_children(os.getpid(), size, "sleep", timeout=30)
                time.sleep(0.02)  # older than MIN_AGE (10 ms), like an orphan found by a scan
                supervisor = _StubHost()
                reparenter = Reparenter(supervisor, Policy.IGNORE, 30.0)  # type: ignore[arg-type]
                known = {pid: Program(pid, "sleep", "run", Role.RUN) for pid in pids}
                runs = 20_000 // size + 20
                supervisor.programs = known
                steady = median(timed(reparenter.scan, runs))
                listing = median(timed(children, runs))

                def fresh_scan(supervisor: _StubHost = supervisor,
                               reparenter: Reparenter = reparenter) -> None:
                    supervisor.programs = {}
                    reparenter.scan()

                new = median(timed(fresh_scan, max(5, runs // 10)))
                if len(supervisor.programs) != size:
                    raise RuntimeError(f"scan found {len(supervisor.programs)} of {size} children")

                def facts(pids: list[int] = pids) -> None:
                    for pid in pids:
                        state_and_age(pid)
                        program_name(pid, cmdline(pid))

                pieces = median(timed(facts, max(5, runs // 10)))
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                for pid in pids:
                    os.waitpid(pid, 0)
            per_orphan = (new - steady) / size
            print(f"{size:5} children: steady scan {steady:8.1f} µs (children() alone {listing:8.1f} µs); "
                  f"all-new scan {new / 1e3:7.2f} ms = {per_orphan:5.1f} µs per new orphan "
                  f"(/proc facts alone {pieces / size:5.1f} µs)")
            rows.append(result(f"orphan scan, steady state, {size} children", steady, "µs",
                               baseline=baseline, baseline_label="one raw children read",
                               target=f"< {SCAN_TARGET_MS:g} ms" if size == 100 else "",
                               ok=steady / 1e3 < SCAN_TARGET_MS if size == 100 else None))
            if size == 100:
                orphan_row = result("handling one new orphan (ignore policy), 100 children", per_orphan,
                                    "µs", baseline=baseline, baseline_label="one raw children read")
    finally:
        idle.set()
    if orphan_row is not None:
        rows.append(orphan_row)
    return rows, baseline


SERVICE = """#!{python} -S
import os, random, time
log = os.open(os.environ["BENCH_ORPHAN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for _ in range({count}):
    time.sleep(random.uniform(0.3, 0.6))
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        grandchild = os.fork()
        if grandchild == 0:
            os.close(write_end)
            os.execv({sleep!r}, ["sleep", "1000"])
        os.write(write_end, str(grandchild).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    orphaned = time.time_ns()
    grandchild = int(os.read(read_end, 64))
    os.close(read_end)
    os.write(log, f"{{grandchild}} {{orphaned}}\\n".encode())
time.sleep(1000)
"""
WARNING = re.compile(rb"^(\S+) dinit: warning: \S+/(\d+): "
                     rb"terminating reparented child process with PID (\d+)")


def detection_latency(root: Path, sleep: str, count: int) -> tuple[list[float], list[float]]:
    log = root / "orphans.log"
    services = make_services(root / "service", {
        "forker": SERVICE.format(python=PYTHON, sleep=sleep, count=count)})
    seen: dict[int, tuple[int, int]] = {}
    popen = start_dinit(services, pid1=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        DINIT_LOG_LEVEL="warn", BENCH_ORPHAN_LOG=str(log))

    def read_stderr() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            now = time.time_ns()
            match = WARNING.match(line)
            if match:
                logged = datetime.fromisoformat(match.group(1).decode().replace("Z", "+00:00"))
                seen[int(match.group(3))] = (now, int(logged.timestamp() * 1000))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        pid = dinit_pid(popen, True)
        wait_until(lambda: len(seen) >= count, timeout=count * 0.6 + 10, interval=0.05,
                   what=f"{count} orphan warnings")
        os.kill(pid, signal.SIGTERM)
        popen.wait(20)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    reader.join(10)
    observed, logged = [], []
    for line in log.read_text().split("\n"):
        if not line:
            continue
        grandchild, orphaned = map(int, line.split())
        if grandchild not in seen:
            raise RuntimeError(f"orphan {grandchild} was never reported")
        now, logged_ms = seen[grandchild]
        observed.append((now - orphaned) / 1e9)
        logged.append((logged_ms - orphaned / 1e6) / 1e3)
    return observed, logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orphans", type=int, default=12, help="orphans in the end-to-end test")
    args = parser.parse_args()
    header("reparented processes: scan cost and detection latency")
    compile_bytecode()
    sleep = shutil.which("sleep")
    assert sleep is not None
    rows, _ = scan_costs(sleep)
    with tempdir("reparent") as tmp:
        observed, logged = detection_latency(Path(tmp), sleep, args.orphans)
    print(f"detection latency, seen on stderr:         {summary(observed)} s")
    print(f"detection latency, dinit's own timestamp:  {summary(logged)} s")
    print(f"(scan interval {SCAN_INTERVAL} s: expected up to that, about half on average)")
    rows.append(result("orphan detection latency, median", median(observed), "s", baseline=SCAN_INTERVAL,
                       baseline_label="scan interval", target=f"<= ~{SCAN_INTERVAL:g} s (§6.2: 1 s)",
                       ok=median(observed) <= SCAN_INTERVAL))
    rows.append(result("orphan detection latency, max", max(observed), "s", baseline=SCAN_INTERVAL,
                       baseline_label="scan interval", target=f"< {LATENCY_TARGET_S:g} s (§6.2: 1 s)",
                       ok=max(observed) < LATENCY_TARGET_S))
    emit(rows)


if __name__ == "__main__":
    main()
