"""The control socket (§12): how fast the client answers, and that clients cost the rest nothing.

1. Client latency: wall time of one ``dinit status`` (the installed script and ``python -m dinit``)
   against a running dinit (PID 1 of its namespace, 3 services; the client outside it, which may
   read), next to a bare ``python3 -c pass`` and runit's ``sv status`` of a service supervised by
   ``runsv`` — runit taken from the Debian package with ``apt-get download runit && dpkg -x`` into a
   temp dir (never installed: installing it makes /etc/service a symlink); skipped if unavailable.
   All interleaved, median of ``--repeat``.
2. JSON throughput (``throughput.py``'s case and checks: 1,000,000 lines of 100 bytes, nothing lost)
   with 32 clients connected — 31 idle and one that floods requests and never reads its answers —
   reconnected whenever dinit closes them (idle ones after 10 s), against no clients. Interleaved.
3. SIGTERM to exit of dinit with 10 services, with those 32 clients connected and without.
4. ``dinit check`` (§13) wall time, in the same interleaved runs as 1, next to ``python -I -S -c pass``
   (the interpreter alone, no site): the floor any Python client pays.
5. Events per second through ``dinit events`` (§14): a service of dinit submits ``--jobs`` jobs of
   ``true`` one after the other over its control socket (a submitter must be inside dinit's
   namespace), each a transient service with several state changes; ``dinit events``, outside,
   counts every event from the first to the last job's end. Median of ``--runs``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from common import (
    PYTHON,
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
    wait_settled,
    wait_until,
)
from throughput import check, make_lines, run_dinit

CLIENTS = 32
#: The installed ``dinit`` script of the benchmarks' venv (``compile_bytecode``), as an image has it.
DINIT_SCRIPT = Path(PYTHON).parent / "dinit"
STATUS = b'{"v":1,"id":1,"cmd":"status","args":{}}\n'


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited with {done.returncode}: {done.stderr[-500:]!r}")
    return elapsed


def fetch_runit(into: Path) -> Path | None:
    """runit's ``sv`` and ``runsv`` from the Debian package, unpacked, not installed."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None
    got = subprocess.run(["apt-get", "download", "runit"], cwd=into, capture_output=True)
    debs = list(into.glob("runit_*.deb"))
    if got.returncode != 0 or not debs:
        return None
    subprocess.run(["dpkg", "-x", str(debs[0]), str(into / "root")], check=True)
    return into / "root" / "usr" / "bin"


def latency(repeat: int) -> list[dict[str, object]]:
    with tempdir("control-latency") as tmp:
        root = Path(tmp)
        services = make_services(root / "service", {name: "exec sleep 1000\n" for name in ("a", "b", "c")})
        sock = root / "control.sock"
        popen = start_dinit(services, DINIT_SOCKET=str(sock))
        env = dict(os.environ, DINIT_SOCKET=str(sock))
        runsv = None
        try:
            wait_until(sock.exists, what="the control socket")
            commands = {
                "python3 -c pass": ["python3", "-c", "pass"],
                "venv python -c pass": [PYTHON, "-c", "pass"],
                "venv python -I -S -c pass": [PYTHON, "-I", "-S", "-c", "pass"],
                "dinit check (installed script)": [str(DINIT_SCRIPT), "check"],
                "dinit status (installed script)": [str(DINIT_SCRIPT), "status"],
                "python -m dinit status": [PYTHON, "-m", "dinit", "status"],
            }
            runit = fetch_runit(root)
            if runit is not None:
                service = make_services(root / "sv", {"a": "exec sleep 1000\n"}) / "a"
                runsv = subprocess.Popen([str(runit / "runsv"), str(service)], start_new_session=True)
                wait_until(lambda: (service / "supervise" / "ok").exists(), what="runsv")
                wait_until(lambda: timed([str(runit / "sv"), "status", str(service)]) > 0, what="sv")
                commands["sv status (runit)"] = [str(runit / "sv"), "status", str(service)]
            else:
                print("# runit not available (apt-get download runit failed): sv status skipped")
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(repeat):
                for name, command in commands.items():
                    times[name].append(timed(command, env))
        finally:
            if runsv is not None:
                os.killpg(runsv.pid, signal.SIGTERM)
                runsv.wait()
            os.kill(dinit_pid(popen, True), signal.SIGTERM)
            popen.wait(20)
    print(f"{'command':40} {'median ms':>10} {'min ms':>10}")
    for name, values in times.items():
        print(f"{name:40} {median(values) * 1000:>10.1f} {min(values) * 1000:>10.1f}")
    floor = median(times["venv python -c pass"])
    rows = [result("dinit status (installed script), client wall time", median(times[name]) * 1000, "ms",
                   baseline=floor * 1000, baseline_label="venv python -c pass", target="< 100 ms",
                   ok=median(times[name]) < 0.1)
            for name in ("dinit status (installed script)",)]
    bare = median(times["venv python -I -S -c pass"])
    rows.append(result("dinit check (installed script), client wall time",
                       median(times["dinit check (installed script)"]) * 1000, "ms", baseline=bare * 1000,
                       baseline_label="venv python -I -S -c pass", target="< 100 ms",
                       ok=median(times["dinit check (installed script)"]) < 0.1))
    if "sv status (runit)" in times:
        print(f"ratio dinit status / sv status: "
              f"{median(times['dinit status (installed script)']) / median(times['sv status (runit)']):.1f}")
    return rows


class Crowd:
    """32 connected clients (one deaf, flooding requests), reconnected whenever dinit closes one; in
    a process of their own, so they do not share the GIL with the benchmark's line counting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Crowd:
        self.process = subprocess.Popen([PYTHON, __file__, "--crowd", str(self.path)])
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait()


def _connect(path: Path) -> socket.socket | None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
    except OSError:
        client.close()
        return None
    client.setblocking(False)
    return client


def crowd(path: Path) -> None:
    """The crowd process: until SIGTERM."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    while not path.exists() and not stopped.is_set():
        time.sleep(0.001)
    clients = [c for c in (_connect(path) for _ in range(CLIENTS)) if c is not None]
    deaf = clients[0] if clients else None
    reconnects = 0
    while not stopped.is_set():
        if deaf is not None:
            with contextlib.suppress(OSError):
                deaf.send(STATUS * 64)
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([c for c in clients if c is not deaf], [], [], 0.2)
        for client in readable:
            with contextlib.suppress(OSError):
                if client.recv(65536):
                    continue
            clients.remove(client)
            client.close()
            reconnects += 1
            if (new := _connect(path)) is not None:
                clients.append(new)
    print(f"# the crowd reconnected {reconnects} times", flush=True)


def throughput(repeat: int, count: int) -> list[dict[str, object]]:
    with tempdir("control-throughput") as tmp:
        root = Path(tmp)
        data = root / "lines.json"
        data.write_bytes(make_lines(0, count))
        single = make_services(root / "single", {"svc": f"cat {data}; exec sleep 1000\n"})
        sock = root / "control.sock"
        rates: dict[str, list[float]] = {"no clients": [], f"{CLIENTS} clients": []}
        for _ in range(repeat):
            consumed = run_dinit(single, root / "err", count, DINIT_SOCKET=str(sock))
            check(consumed, count, "json", {"svc"})
            rates["no clients"].append(count / consumed.seconds)
            with Crowd(sock):
                consumed = run_dinit(single, root / "err", count, DINIT_SOCKET=str(sock))
            check(consumed, count, "json", {"svc"})
            rates[f"{CLIENTS} clients"].append(count / consumed.seconds)
    for name, values in rates.items():
        print(f"JSON lines/s, {name:12}: median {fmt(median(values))}, best {fmt(max(values))}")
    quiet, crowded = median(rates["no clients"]), median(rates[f"{CLIENTS} clients"])
    return [result(f"JSON mode with {CLIENTS} control clients (31 idle, 1 never reading)", crowded,
                   "lines/s", baseline=quiet, baseline_label="no clients", higher_is_better=True,
                   target="within 10 % of no clients", ok=crowded >= 0.9 * quiet)]


def shutdown(repeat: int) -> list[dict[str, object]]:
    with tempdir("control-shutdown") as tmp:
        root = Path(tmp)
        services = make_services(root / "service", {f"s{k}": "exec sleep 1000\n" for k in range(10)})
        sock = root / "control.sock"
        times: dict[str, list[float]] = {"no clients": [], f"{CLIENTS} clients": []}

        def once(crowded: bool) -> float:
            popen = start_dinit(services, DINIT_SOCKET=str(sock))
            pid = dinit_pid(popen, True)
            wait_until(lambda: len(os.listdir(f"/proc/{pid}/task/{pid}")) and _children(pid) >= 10,
                       what="10 services")
            wait_settled(pid)
            with Crowd(sock) if crowded else contextlib.nullcontext():
                if crowded:
                    time.sleep(0.3)  # the crowd connected and flooding
                start = time.perf_counter()
                os.kill(pid, signal.SIGTERM)
                popen.wait(20)
                return time.perf_counter() - start

        for _ in range(repeat):
            times["no clients"].append(once(False))
            times[f"{CLIENTS} clients"].append(once(True))
    for name, values in times.items():
        print(f"SIGTERM to exit, {name:12}: median {median(values) * 1000:.1f} ms")
    crowded = median(times[f"{CLIENTS} clients"]) * 1000
    return [result(f"SIGTERM to exit with {CLIENTS} control clients", crowded, "ms",
                   baseline=median(times["no clients"]) * 1000, baseline_label="no clients")]


SUBMITTER = """import json, os, socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(os.environ["DINIT_SOCKET"])
reader = client.makefile("rb")
for k in range(int(sys.argv[1])):
    args = {"argv": ["true"], "name": None, "critical": False, "wait": False, "cwd": "/"}
    client.sendall(json.dumps({"v": 1, "id": k, "cmd": "submit", "args": args}).encode() + b"\\n")
    answer = json.loads(reader.readline())
    assert answer["ok"], answer
"""


def events(runs: int, jobs: int) -> list[dict[str, object]]:
    rates: list[float] = []
    counts: list[int] = []
    with tempdir("control-events") as tmp:
        root = Path(tmp)
        (root / "submitter.py").write_text(SUBMITTER)
        gate = root / "gate"
        run = (f"while [ ! -e {gate} ]; do sleep 0.005; done\n"
               f"{PYTHON} {root / 'submitter.py'} {jobs}\nexec sleep 1000\n")
        services = make_services(root / "service", {"submitter": run})
        sock = root / "control.sock"
        env = dict(os.environ, DINIT_SOCKET=str(sock))
        for _ in range(runs):
            gate.unlink(missing_ok=True)
            popen = start_dinit(services, DINIT_SOCKET=str(sock))
            wait_until(sock.exists, what="the control socket")
            subscriber = subprocess.Popen([str(DINIT_SCRIPT), "events"], stdout=subprocess.PIPE, env=env)
            assert subscriber.stdout is not None
            try:
                subscriber.stdout.readline()  # the replay has begun: subscribed
                gate.touch()
                count, ended, first, last = 0, 0, 0.0, 0.0
                while ended < jobs:
                    event = json.loads(subscriber.stdout.readline())
                    if event["replay"]:
                        continue
                    now = time.perf_counter()
                    first = first or now
                    last, count = now, count + 1
                    if str(event["service"]).startswith("submit-") and event["exit"] is not None:
                        ended += 1
            finally:
                os.kill(dinit_pid(popen, True), signal.SIGTERM)
                popen.wait(20)
                subscriber.wait(20)
            rates.append(count / (last - first))
            counts.append(count)
    print(f"events through dinit events: {counts[0]} events for {jobs} jobs; "
          f"median {fmt(median(rates))}/s, best {fmt(max(rates))}/s")
    return [result(f"events per second through dinit events ({jobs} submitted jobs of true)",
                   median(rates), "events/s", higher_is_better=True)]


def _children(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return len(file.read().split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="client runs per command")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="throughput and shutdown runs per case")
    parser.add_argument("--jobs", type=int, default=1000, help="submitted jobs per events run")
    parser.add_argument("--crowd", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crowd is not None:
        crowd(args.crowd)
        return
    header("control socket: client latency, throughput, SIGTERM with clients connected, events/s")
    compile_bytecode()
    rows = latency(args.repeat) + throughput(args.runs, args.lines) + shutdown(args.runs * 2)
    rows += events(args.runs, args.jobs)
    emit(rows)


if __name__ == "__main__":
    main()
