"""Readiness (§13): how soon it is visible, and what watching it costs.

- ready-file latency: from a service writing its s6 notification newline (it records the time just
  before) to ``DINIT_READY_FILE`` existing, seen by a 0.5 ms poll; median of ``--runs`` starts.
- ``/readyz`` latency: round trip of ``GET /readyz`` (http.client, a new connection each time) on
  ``DINIT_HTTP_ADDR``; median over ``--requests``.
- idle CPU with readiness sources polling: 10 services whose ``ready-port`` never listens (dinit
  keeps polling /proc/net for them) over ``--window`` seconds, as % of one core (schedstat).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import time
from pathlib import Path

from common import (
    compile_bytecode,
    cpu_ns,
    dinit_pid,
    emit,
    header,
    make_services,
    median,
    result,
    start_dinit,
    stop,
    summary,
    tempdir,
    wait_for_children,
    wait_until,
)

SERVICES = 10
CPU_TARGET_PCT = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready_file_latency(runs: int) -> list[float]:
    latencies = []
    with tempdir("ready-file") as tmp:
        root = Path(tmp)
        stamp, ready = root / "stamp", root / "ready"
        services = make_services(root / "service", {"web": (
            f"sleep 0.2\ndate +%s.%N > {stamp}.tmp && mv {stamp}.tmp {stamp}\necho >&3\nexec sleep 1000\n")})
        (services / "web" / "notification-fd").write_text("3")
        for _ in range(runs):
            stamp.unlink(missing_ok=True)
            popen = start_dinit(services, DINIT_READY_FILE=str(ready))
            pid = dinit_pid(popen, True)
            wait_until(ready.exists, interval=0.0005, what="the ready file")
            seen = time.time()
            latencies.append((seen - float(stamp.read_text())) * 1000)
            stop(popen, pid)
    return latencies


def readyz_latency(requests: int) -> list[float]:
    with tempdir("readyz") as tmp:
        services = make_services(Path(tmp) / "service", {"web": "exec sleep 1000\n"})
        port = _free_port()
        popen = start_dinit(services, DINIT_HTTP_ADDR=f"127.0.0.1:{port}")
        pid = dinit_pid(popen, True)
        try:
            wait_for_children(pid, 1, "sleep")
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/readyz")
                assert connection.getresponse().status == 200
                connection.close()
                times.append((time.perf_counter() - start) * 1000)
        finally:
            stop(popen, pid)
    return times


def polling_cpu(window: float) -> float:
    with tempdir("polling") as tmp:
        services = make_services(Path(tmp) / "service",
                                 {f"svc{i:02d}": "exec sleep 1000\n" for i in range(SERVICES)})
        for i in range(SERVICES):
            (services / f"svc{i:02d}" / "ready-port").write_text(f"tcp:{_free_port()}\n")
        popen = start_dinit(services)
        pid = dinit_pid(popen, True)
        try:
            wait_for_children(pid, SERVICES, "sleep")
            time.sleep(1.0)
            ns0, wall0 = cpu_ns(pid), time.monotonic()
            time.sleep(window)
            ns1, wall = cpu_ns(pid), time.monotonic() - wall0
        finally:
            stop(popen, pid)
    return (ns1 - ns0) / 1e9 / wall * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    header("readiness: ready file and /readyz latency, CPU of polling sources")
    compile_bytecode()
    files = ready_file_latency(args.runs)
    print(f"ready file after the notification newline (ms): {summary(files)}")
    http_times = readyz_latency(args.requests)
    print(f"GET /readyz round trip (ms): {summary(http_times)}")
    cpu = polling_cpu(args.window)
    print(f"CPU with {SERVICES} services polling ready-port: {cpu:.3f} % of one core (pid {os.getpid()})")
    emit([
        result("ready file after notification (median)", median(files), "ms"),
        result("GET /readyz round trip (median)", median(http_times), "ms"),
        result(f"CPU, {SERVICES} services polling ready-port", cpu, "% of a core",
               target=f"< {CPU_TARGET_PCT:g} %", ok=cpu < CPU_TARGET_PCT),
    ])


if __name__ == "__main__":
    main()
