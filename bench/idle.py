"""Resident memory and CPU of dinit (as PID 1) supervising 10 idle services (``exec sleep 1000``).

Memory: VmRSS and VmHWM of the dinit process 1 s after all 10 services run. CPU: utime+stime
(/proc/<pid>/stat, clock ticks) and, for finer resolution, the sum of every thread's
/proc/<pid>/task/*/schedstat run time, over a 10 s window, as % of one core.

Baseline, measured over the same window: a bare Python process doing the minimum an init with a
0.5 s orphan scan must do (an epoll wait of 0.5 s, then one read of its children list), so the
ratio shows what dinit costs beyond the interpreter and its scan timer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import (
    CLK_TCK,
    PYTHON,
    compile_bytecode,
    cpu_ns,
    cpu_ticks,
    dinit_pid,
    emit,
    header,
    make_services,
    result,
    start_dinit,
    status_kib,
    stop,
    tempdir,
    wait_for_children,
)

SERVICES = 10
RSS_TARGET_MIB = 30.0
CPU_TARGET_PCT = 0.5

BASELINE_CODE = """
import os, select
poller = select.epoll()
while True:
    poller.poll(0.5)
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children", "rb") as file:
            file.read()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=10.0, help="CPU measurement window (s)")
    args = parser.parse_args()
    header(f"idle cost: dinit as PID 1 with {SERVICES} services `exec sleep 1000`")
    compile_bytecode()
    import subprocess

    with tempdir("idle") as tmp:
        services = make_services(Path(tmp) / "service",
                                 {f"idle{i:02d}": "exec sleep 1000\n" for i in range(SERVICES)})
        baseline = subprocess.Popen([PYTHON, "-c", BASELINE_CODE], stdin=subprocess.DEVNULL)
        popen = start_dinit(services, pid1=True)
        try:
            pid = dinit_pid(popen, True)
            wait_for_children(pid, SERVICES, "sleep")
            time.sleep(1.0)  # the brief: memory "after 1 s"
            rss, hwm = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
            base_rss, base_hwm = status_kib(baseline.pid, "VmRSS"), status_kib(baseline.pid, "VmHWM")
            with open(f"/proc/{pid}/status") as file:
                threads = next(line.split()[1] for line in file if line.startswith("Threads:"))
            ticks0, ns0 = cpu_ticks(pid), cpu_ns(pid)
            base_ticks0, base_ns0 = cpu_ticks(baseline.pid), cpu_ns(baseline.pid)
            wall0 = time.monotonic()
            time.sleep(args.window)
            ticks1, ns1 = cpu_ticks(pid), cpu_ns(pid)
            base_ticks1, base_ns1 = cpu_ticks(baseline.pid), cpu_ns(baseline.pid)
            wall = time.monotonic() - wall0
            status = stop(popen, pid)
        finally:
            if popen.poll() is None:
                popen.kill()
            baseline.kill()
            baseline.wait()
    tick_pct = (ticks1 - ticks0) / CLK_TCK / wall * 100
    ns_pct = (ns1 - ns0) / 1e9 / wall * 100
    base_tick_pct = (base_ticks1 - base_ticks0) / CLK_TCK / wall * 100
    base_ns_pct = (base_ns1 - base_ns0) / 1e9 / wall * 100
    print(f"dinit PID {pid}: {threads} threads, exit status after SIGTERM {status}")
    print(f"VmRSS  dinit {rss / 1024:.1f} MiB   baseline python {base_rss / 1024:.1f} MiB")
    print(f"VmHWM  dinit {hwm / 1024:.1f} MiB   baseline python {base_hwm / 1024:.1f} MiB")
    print(f"CPU over {wall:.1f} s: dinit {ticks1 - ticks0} ticks = {tick_pct:.3f} %, schedstat "
          f"{(ns1 - ns0) / 1e6:.2f} ms = {ns_pct:.4f} % of one core")
    print(f"CPU baseline: {base_ticks1 - base_ticks0} ticks = {base_tick_pct:.3f} %, schedstat "
          f"{(base_ns1 - base_ns0) / 1e6:.2f} ms = {base_ns_pct:.4f} %")
    emit([
        result(f"RSS, {SERVICES} idle services (VmRSS)", rss / 1024, "MiB", baseline=base_rss / 1024,
               baseline_label="idle python", target=f"< {RSS_TARGET_MIB:g} MiB",
               ok=rss / 1024 < RSS_TARGET_MIB),
        result(f"peak RSS, {SERVICES} idle services (VmHWM)", hwm / 1024, "MiB", baseline=base_hwm / 1024,
               baseline_label="idle python", target=f"< {RSS_TARGET_MIB:g} MiB",
               ok=hwm / 1024 < RSS_TARGET_MIB),
        result(f"CPU, {SERVICES} idle services, {wall:.0f} s (schedstat)", ns_pct, "% of a core",
               baseline=base_ns_pct, baseline_label="python 0.5 s scan loop",
               target=f"< {CPU_TARGET_PCT:g} %", ok=ns_pct < CPU_TARGET_PCT),
        result(f"CPU, {SERVICES} idle services, {wall:.0f} s (utime+stime ticks)", tick_pct, "% of a core",
               baseline=base_tick_pct, baseline_label="python 0.5 s scan loop",
               target=f"< {CPU_TARGET_PCT:g} %", ok=tick_pct < CPU_TARGET_PCT),
    ])


if __name__ == "__main__":
    main()
