"""Shutdown latency: time from SIGTERM to dinit's exit, with 10 services that exit promptly on SIGTERM
(``exec sleep 1000``).

dinit is measured running: once its 10 services run and it has used no CPU for 50 ms (it sets up
its control server and hot reload after the first spawn, ARCHITECTURE.md). The clock starts just
before ``kill(dinit, SIGTERM)`` and stops when a pidfd of the dinit process
(not unshare's) becomes readable, i.e. when dinit has exited. Baseline, same run: SIGTERM sent
directly to 10 ``sleep 1000`` processes by the benchmark, until all of them have exited.
Variants are interleaved.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import time
from pathlib import Path

from common import (
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
    wait_settled,
)

SERVICES = 10
TARGET_MS = 50.0


def wait_pidfds(pidfds: list[int], timeout: float = 20.0) -> None:
    """Wait until every pidfd is readable (its process has exited)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    left = set(pidfds)
    deadline = time.monotonic() + timeout
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError("processes did not exit after SIGTERM")
        for fd, _ in poller.poll(remaining * 1000):
            left.discard(fd)
            poller.unregister(fd)


def dinit_shutdown(services: Path, pid1: bool) -> float:
    popen = start_dinit(services, pid1=pid1)
    try:
        pid = dinit_pid(popen, pid1)
        wait_for_children(pid, SERVICES, "sleep")
        wait_settled(pid)
        pidfd = os.pidfd_open(pid)
        try:
            start = time.perf_counter_ns()
            os.kill(pid, signal.SIGTERM)
            wait_pidfds([pidfd])
            elapsed = (time.perf_counter_ns() - start) / 1e6
        finally:
            os.close(pidfd)
        if popen.wait(20) != 0:
            raise RuntimeError(f"dinit exited with {popen.returncode} after SIGTERM")
        return elapsed
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()


def direct_shutdown() -> float:
    processes = [subprocess.Popen(["sleep", "1000"], start_new_session=True) for _ in range(SERVICES)]
    wait_for_children(os.getpid(), SERVICES, "sleep")
    pidfds = [os.pidfd_open(process.pid) for process in processes]
    try:
        start = time.perf_counter_ns()
        for process in processes:
            os.kill(process.pid, signal.SIGTERM)
        wait_pidfds(pidfds)
        elapsed = (time.perf_counter_ns() - start) / 1e6
    finally:
        for fd in pidfds:
            os.close(fd)
        for process in processes:
            process.kill()
            process.wait()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    header(f"shutdown latency: SIGTERM -> dinit exit, {SERVICES} services `exec sleep 1000`")
    compile_bytecode()
    with tempdir("shutdown") as tmp:
        services = make_services(Path(tmp) / "service",
                                 {f"svc{i:02d}": "exec sleep 1000\n" for i in range(SERVICES)})
        variants = {
            "dinit as PID 1 (unshare)": lambda: dinit_shutdown(services, True),
            "dinit not PID 1 (subreaper)": lambda: dinit_shutdown(services, False),
            "baseline: SIGTERM 10 sleeps directly": direct_shutdown,
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for run_index in range(args.runs + 1):
            for name, measure in variants.items():
                value = measure()
                if run_index:  # one warm-up round
                    times[name].append(value)
    for name, values in times.items():
        print(f"{name:38} {summary(values)} ms")
    pid1 = median(times["dinit as PID 1 (unshare)"])
    plain = median(times["dinit not PID 1 (subreaper)"])
    direct = median(times["baseline: SIGTERM 10 sleeps directly"])
    emit([
        result("SIGTERM to exit, PID 1", pid1, "ms", baseline=direct,
               baseline_label="SIGTERM sleeps directly",
               target=f"< {TARGET_MS:g} ms", ok=pid1 < TARGET_MS),
        result("SIGTERM to exit, not PID 1", plain, "ms", baseline=direct,
               baseline_label="SIGTERM sleeps directly", target=f"< {TARGET_MS:g} ms", ok=plain < TARGET_MS),
    ])


if __name__ == "__main__":
    main()
