"""Shared helpers for the benchmarks: service directories, starting dinit as in production, /proc
readings, and the one-line result format ``run_all.py`` collects.

Every benchmark runs the real dinit (``<python> -m dinit``), by default as PID 1 of a fresh PID
namespace (``unshare --pid --fork --mount-proc``, needs root), on service directories made in a temp
dir. Timings are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
UNSHARE = ("unshare", "--pid", "--fork", "--kill-child", "--mount-proc")
RESULT_MARK = "BENCH-RESULT "


def compile_bytecode() -> None:
    """Run the calling benchmark on dinit as an image has it: installed into a virtual environment
    (not as an editable install, whose import hook alone costs ~15 ms of every start on this machine)
    with its bytecode compiled and without setuptools, like the Dockerfile's. The environment is
    made once per state of the source tree (kept in the temp dir); the benchmark re-executes itself
    under its interpreter."""
    if os.environ.get("DINIT_BENCH_INSTALLED") == str(ROOT):
        print(f"# dinit installed (not editable, bytecode compiled) in {sys.prefix}")
        return
    digest = hashlib.sha256()
    for path in sorted([ROOT / "pyproject.toml", *(ROOT / "dinit").rglob("*.py")]):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    venv = Path(tempfile.gettempdir()) / f"dinit-bench-{digest.hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
        # As the Dockerfile does: setuptools' .pth file would be imported at every start.
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True)
        subprocess.run([str(python), "-m", "compileall", "-q", str(venv / "lib")], check=True)
    os.environ["DINIT_BENCH_INSTALLED"] = str(ROOT)
    os.execv(str(python), [str(python), *sys.argv])


def header(title: str) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"## {title}")
    print(f"# python {sys.version.split()[0]} ({PYTHON}), {os.cpu_count()} CPUs, load average {load}")


def tempdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"dinit-bench-{prefix}-")


def write_program(path: Path, body: str) -> Path:
    """An executable script; a body without ``#!`` runs under /bin/sh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def make_services(root: Path, services: dict[str, str]) -> Path:
    """A DINIT_DIR with one ``<name>/run`` per entry; returns the directory."""
    root.mkdir(parents=True, exist_ok=True)
    for name, body in services.items():
        write_program(root / name / "run", body)
    return root


def dinit_env(directory: Path, **variables: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DINIT_")}
    env["DINIT_DIR"] = str(directory)
    # No container hooks (§15): the host's /etc/dinit must not run, nor take part in the timing.
    env["DINIT_START_DIR"] = env["DINIT_STOP_DIR"] = "/nonexistent/dinit-bench/hooks"
    # The control socket is on, as in production, but beside the services, not in the host's /run.
    env["DINIT_SOCKET"] = os.environ.get("BENCH_SOCKET", str(directory.parent / "control.sock"))
    env.update(variables)
    return env


def dinit_command(pid1: bool) -> list[str]:
    """The installed ``dinit`` script, as an image's ENTRYPOINT runs it (``python -m dinit`` without one)."""
    script = Path(PYTHON).parent / "dinit"
    command = [str(script)] if script.exists() else [PYTHON, "-m", "dinit"]
    return [*UNSHARE, *command] if pid1 else command


def start_dinit(directory: Path, pid1: bool = True, stdout: Any = subprocess.DEVNULL,
                stderr: Any = subprocess.DEVNULL, cwd: str | None = None,
                **variables: str) -> subprocess.Popen[bytes]:
    """Start dinit like a container runtime would: stdin /dev/null, its own session."""
    return subprocess.Popen(dinit_command(pid1), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            env=dinit_env(directory, **variables), cwd=cwd or str(directory.parent),
                            start_new_session=True)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.002,
               what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; raise (this is a setup failure, not a timing) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list)."""
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return pids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as file:
                pids.extend(map(int, file.read().split()))
        except FileNotFoundError:
            continue
    return pids


def dinit_pid(popen: subprocess.Popen[bytes], pid1: bool, timeout: float = 20.0) -> int:
    """The PID (in our namespace) of the dinit process itself (unshare's child when PID 1)."""
    if not pid1:
        return popen.pid

    def child() -> int | None:
        if popen.poll() is not None:
            raise RuntimeError(f"unshare exited with {popen.returncode}")
        pids = children_of(popen.pid)
        return pids[0] if pids else None

    return wait_until(child, timeout, what="dinit to start in its namespace")


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as file:
            return file.read().strip()
    except OSError:
        return ""


def wait_for_children(pid: int, count: int, name: str, timeout: float = 20.0) -> list[int]:
    """Wait until ``pid`` has ``count`` children that have exec'd ``name``."""

    def ready() -> list[int] | None:
        pids = [child for child in children_of(pid) if comm(child) == name]
        return pids if len(pids) >= count else None

    return wait_until(ready, timeout, what=f"{count} {name} children of {pid}")


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, e.g. VmRSS, VmHWM."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all threads) in clock ticks, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread in nanoseconds (/proc/<pid>/task/*/schedstat): finer than ticks."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                total += int(file.read().split()[0])
        except FileNotFoundError:
            continue
    return total


def wait_settled(pid: int, quiet: float = 0.05, timeout: float = 20.0) -> None:
    """Wait until ``pid`` used no CPU for ``quiet`` seconds. dinit sets up its control server and
    hot reload only once its programs run (ARCHITECTURE.md, start-up): a measurement of a running
    dinit begins after that, not in the middle of it."""
    deadline = time.monotonic() + timeout
    last = cpu_ns(pid)
    while True:
        time.sleep(quiet)
        now = cpu_ns(pid)
        if now == last:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PID {pid} never went quiet for {quiet} s")
        last = now


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def summary(values: Sequence[float]) -> str:
    """``median (min..max, n=N)`` with 3 significant digits."""
    return f"median {fmt(median(values))} (min {fmt(min(values))}, max {fmt(max(values))}, n={len(values)})"


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def result(name: str, value: float, unit: str, *, baseline: float | None = None,
           baseline_label: str = "", target: str = "", ok: bool | None = None,
           higher_is_better: bool = False, detail: str = "") -> dict[str, Any]:
    """One row of the summary table (``detail`` is shown next to the value)."""
    return {"name": name, "value": value, "unit": unit, "baseline": baseline,
            "baseline_label": baseline_label, "target": target, "ok": ok,
            "higher_is_better": higher_is_better, "detail": detail}


def emit(rows: list[dict[str, Any]]) -> None:
    """Print the rows for run_all.py (one line, after the human-readable output)."""
    print(RESULT_MARK + json.dumps(rows), flush=True)


def stop(popen: subprocess.Popen[bytes], pid: int, timeout: float = 20.0) -> int:
    """SIGTERM dinit and wait for it (and unshare) to exit; SIGKILL the session if it does not."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        raise RuntimeError("dinit did not exit after SIGTERM") from None
