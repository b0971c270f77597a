"""Hot reload (§11): latency from ``mkdir`` + ``run`` written to the new service's first output,
with DINIT_WATCH=on and poll; idle CPU with watching on (10 services, 10 s); start-up time and idle
RSS with DINIT_WATCH=on beside off.

The new service's ``run`` writes into a FIFO the benchmark holds open, so the clock stops the moment
it runs (no parsing, no clock in the service). dinit runs as PID 1 (unshare) throughout.
"""

from __future__ import annotations

import argparse
import os
import select
import time
from pathlib import Path

from common import (
    CLK_TCK,
    compile_bytecode,
    cpu_ns,
    cpu_ticks,
    dinit_pid,
    emit,
    header,
    make_services,
    median,
    result,
    start_dinit,
    status_kib,
    stop,
    summary,
    tempdir,
    wait_for_children,
    write_program,
)

LATENCY_TARGET_MS = 300.0
CPU_TARGET_PCT = 0.5
STARTUP_TARGET_MS = 80.0
RSS_TARGET_MIB = 30.0
SERVICES = 10


def wait_fifo(read_end: int, timeout: float = 30.0) -> None:
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    if not poller.poll(timeout * 1000):
        raise RuntimeError("the service never wrote")
    os.read(read_end, 4096)


def latency(tmp: Path, mode: str, rounds: int, interval: str) -> list[float]:
    """Milliseconds from mkdir to the new service's first write, one new service per round."""
    services = make_services(tmp / f"service-{mode}", {"base": "exec sleep 1000\n"})
    fifo = tmp / f"fifo-{mode}"
    os.mkfifo(fifo)
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(fifo, os.O_WRONLY)  # so the read end never sees EOF between rounds
    popen = start_dinit(services, DINIT_WATCH=mode, DINIT_WATCH_INTERVAL=interval)
    times = []
    try:
        pid = dinit_pid(popen, True)
        wait_for_children(pid, 1, "sleep")
        time.sleep(0.5)  # the watcher is armed
        for index in range(rounds):
            start = time.monotonic()
            directory = services / f"new{index:02d}"
            directory.mkdir()
            write_program(directory / "run", f"echo up > {fifo}\nexec sleep 1000\n")
            wait_fifo(read_end)
            times.append((time.monotonic() - start) * 1000)
        stop(popen, pid)
    finally:
        if popen.poll() is None:
            popen.kill()
        os.close(read_end)
        os.close(keep)
    return times


def startup(tmp: Path, mode: str) -> float:
    """Milliseconds from starting dinit to its one service's first write."""
    fifo = tmp / f"start-{mode}"
    services = make_services(tmp / f"start-service-{mode}", {"web": f"echo up > {fifo}\nexec sleep 1000\n"})
    os.mkfifo(fifo)
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    start = time.monotonic()
    popen = start_dinit(services, DINIT_WATCH=mode)
    try:
        wait_fifo(read_end)
        elapsed = (time.monotonic() - start) * 1000
        stop(popen, dinit_pid(popen, True))
    finally:
        if popen.poll() is None:
            popen.kill()
        os.close(read_end)
        fifo.unlink()
        for child in services.iterdir():
            (child / "run").unlink()
            child.rmdir()
        services.rmdir()
    return elapsed


def idle(tmp: Path, mode: str, window: float) -> tuple[float, float, float]:
    """(CPU % of a core by schedstat, by ticks, RSS MiB after 1 s) with SERVICES idle services."""
    bodies = {f"idle{i:02d}": "exec sleep 1000\n" for i in range(SERVICES)}
    services = make_services(tmp / f"idle-{mode}", bodies)
    popen = start_dinit(services, DINIT_WATCH=mode)
    try:
        pid = dinit_pid(popen, True)
        wait_for_children(pid, SERVICES, "sleep")
        time.sleep(1.0)
        rss = status_kib(pid, "VmRSS") / 1024
        ns0, ticks0, wall0 = cpu_ns(pid), cpu_ticks(pid), time.monotonic()
        time.sleep(window)
        ns1, ticks1, wall = cpu_ns(pid), cpu_ticks(pid), time.monotonic() - wall0
        stop(popen, pid)
    finally:
        if popen.poll() is None:
            popen.kill()
    return (ns1 - ns0) / 1e9 / wall * 100, (ticks1 - ticks0) / CLK_TCK / wall * 100, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--poll-interval", default="1")
    args = parser.parse_args()
    header("hot reload: latency of a new service, idle cost and start-up with DINIT_WATCH")
    compile_bytecode()
    with tempdir("reload") as name:
        tmp = Path(name)
        on = latency(tmp, "on", args.rounds, "5")
        poll = latency(tmp, "poll", max(3, args.rounds // 2), args.poll_interval)
        starts: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for mode in starts:
                starts[mode].append(startup(tmp, mode))
        idle_on = idle(tmp, "on", args.window)
        idle_off = idle(tmp, "off", 1.0)
    print(f"latency on:   {summary(on)} ms")
    print(f"latency poll: {summary(poll)} ms (interval {args.poll_interval} s)")
    for mode, values in starts.items():
        print(f"start-up {mode}: {summary(values)} ms")
    print(f"idle on: CPU {idle_on[0]:.4f} % (schedstat), {idle_on[1]:.3f} % (ticks), "
          f"RSS {idle_on[2]:.1f} MiB; off: RSS {idle_off[2]:.1f} MiB")
    emit([
        result("new service: mkdir+run to first output, DINIT_WATCH=on", median(on), "ms",
               target=f"<= {LATENCY_TARGET_MS:g} ms", ok=median(on) <= LATENCY_TARGET_MS),
        result(f"new service: mkdir+run to first output, poll every {args.poll_interval} s",
               median(poll), "ms",
               target="<= interval + 300 ms",
               ok=median(poll) <= float(args.poll_interval) * 1000 + LATENCY_TARGET_MS),
        result(f"CPU, {SERVICES} idle services, watching on, {args.window:g} s (schedstat)", idle_on[0],
               "% of a core", target=f"< {CPU_TARGET_PCT:g} %", ok=idle_on[0] < CPU_TARGET_PCT),
        result("start-up, DINIT_WATCH=on", median(starts["on"]), "ms", baseline=median(starts["off"]),
               baseline_label="DINIT_WATCH=off", target=f"< {STARTUP_TARGET_MS:g} ms",
               ok=median(starts["on"]) < STARTUP_TARGET_MS),
        result(f"RSS, {SERVICES} idle services, DINIT_WATCH=on", idle_on[2], "MiB", baseline=idle_off[2],
               baseline_label="DINIT_WATCH=off", target=f"< {RSS_TARGET_MIB:g} MiB",
               ok=idle_on[2] < RSS_TARGET_MIB),
    ])


if __name__ == "__main__":
    main()
