"""Start-up latency: wall time from starting dinit to its first service's ``run`` executing.

The service's ``run`` is ``#!/bin/sh`` + ``echo started > FIFO``. The benchmark holds the FIFO's read
end open and polls it, so the clock stops the moment ``run`` writes, with no clock read in the
service and no parsing. The same script started directly (and under ``unshare`` alone) is the
baseline measured in the same run; ``python -c pass`` and ``/bin/true`` show the floors, and so does
a "spawn-only" Python program: the same interpreter importing nothing of dinit but its
configuration, the service scan and ``spawn``, then starting the services -- the least any dinit
written in Python could do before its first ``run``, so the rest is the cost of supervising.
Variants are interleaved (round-robin) so drift on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import time
from pathlib import Path

from common import (
    PYTHON,
    UNSHARE,
    compile_bytecode,
    dinit_command,
    dinit_env,
    emit,
    header,
    make_services,
    median,
    result,
    summary,
    tempdir,
)

TARGET_MS = 20.0

#: The floor of a Python init on this machine: dinit's configuration, scan and spawn modules, and
#: nothing else (no loop, no multiplexer, no control socket), run as dinit's script is.
SPAWN_ONLY = """\
import os

from dinit.config import load
from dinit.process.spawn import spawn
from dinit.service.discovery import scan

read_end, write_end = os.pipe2(os.O_CLOEXEC)
children = [spawn(service.run, service.argv, service.directory, os.environ, 0, write_end, write_end)
            for service in scan(load(os.environ).directory)]
os.close(write_end)
for child in children:
    os.waitpid(child, 0)
"""


def time_to_fifo(command: list[str], env: dict[str, str], fifo: Path, cwd: str) -> float:
    """Milliseconds from Popen to the first byte written into ``fifo``; waits for the exit too."""
    os.mkfifo(fifo)
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(read_end, select.POLLIN)
        start = time.perf_counter_ns()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        events = poller.poll(20_000)
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if not events:
            process.kill()
            raise RuntimeError(f"{command} never wrote to the FIFO")
        if process.wait(20) != 0:
            raise RuntimeError(f"{command} exited with {process.returncode}")
        return elapsed
    finally:
        os.close(read_end)
        os.unlink(fifo)


def time_to_exit(command: list[str]) -> float:
    """Milliseconds from Popen to the exit of ``command``."""
    start = time.perf_counter_ns()
    subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter_ns() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    header("start-up latency (dinit start -> first run executing)")
    compile_bytecode()
    with tempdir("startup") as tmp:
        root = Path(tmp)
        fifo = root / "started.fifo"
        services = make_services(root / "service", {"first": f"echo started > {fifo}\n"})
        run = str(services / "first" / "run")
        env = dinit_env(services)
        spawn_only = root / "spawn_only.py"
        spawn_only.write_text(SPAWN_ONLY)
        variants: dict[str, object] = {
            "dinit as PID 1 (unshare)": lambda: time_to_fifo(dinit_command(True), env, fifo, tmp),
            "dinit not PID 1 (subreaper)": lambda: time_to_fifo(dinit_command(False), env, fifo, tmp),
            "baseline: run started directly": lambda: time_to_fifo([run], env, fifo, tmp),
            "baseline: run under unshare": lambda: time_to_fifo([*UNSHARE, run], env, fifo, tmp),
            "floor: spawn-only python, PID 1": lambda: time_to_fifo(
                [*UNSHARE, PYTHON, str(spawn_only)], env, fifo, tmp),
            "floor: /bin/true to exit": lambda: time_to_exit(["/bin/true"]),
            "floor: python -c pass to exit": lambda: time_to_exit([PYTHON, "-c", "pass"]),
            "floor: python -I -S -c pass": lambda: time_to_exit([PYTHON, "-I", "-S", "-c", "pass"]),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for run_index in range(args.runs + 2):
            for name, measure in variants.items():
                value = measure()  # type: ignore[operator]
                if run_index >= 2:  # two warm-up rounds (page cache, bytecode)
                    times[name].append(value)
    for name, values in times.items():
        print(f"{name:34} {summary(values)} ms")
    pid1 = median(times["dinit as PID 1 (unshare)"])
    plain = median(times["dinit not PID 1 (subreaper)"])
    direct = median(times["baseline: run started directly"])
    under_unshare = median(times["baseline: run under unshare"])
    true = median(times["floor: /bin/true to exit"])
    bare = median(times["floor: python -I -S -c pass"])
    floor = median(times["floor: spawn-only python, PID 1"])
    print(f"dinit's own cost: {pid1 - under_unshare:.1f} ms as PID 1 (vs run under unshare), "
          f"{plain - direct:.1f} ms not PID 1 (vs run directly); /bin/true alone: {true:.2f} ms "
          f"(ratios {pid1 / true:.0f}x, {plain / true:.0f}x)")
    print(f"supervising costs {pid1 - floor:.1f} ms of it as PID 1: the spawn-only Python floor is "
          f"{floor:.1f} ms ({bare:.1f} ms of it the bare interpreter)")
    against_true = (f"/bin/true: {true:.2f} ms, bare python -I -S -c pass: {bare:.1f} ms, "
                    f"spawn-only python: {floor:.1f} ms")
    emit([
        result("start-up to first `run`, PID 1", pid1, "ms", baseline=under_unshare,
               baseline_label="run under unshare", target=f"< {TARGET_MS:g} ms", ok=pid1 < TARGET_MS,
               detail=against_true),
        result("start-up to first `run`, not PID 1", plain, "ms", baseline=direct,
               baseline_label="run started directly", target=f"< {TARGET_MS:g} ms", ok=plain < TARGET_MS,
               detail=against_true),
    ])


if __name__ == "__main__":
    main()
