"""dinit-log (§15): lines/s into a log directory, its memory, and its start-up time.

Throughput: the same N lines are written through a pipe (1 MiB writes from this process) into
  * ``sh -c 'cat > file'`` -- the baseline: copying with no logic at all,
  * ``dinit-log`` (the console script, default rotation: -s 1000000 -n 0 so nothing is deleted),
  * ``dinit-log -z`` (every rotated file gzipped),
  * runit's ``svlogd`` with its defaults but ``n0`` (keep every file), when it can be had from
    Debian without installing it (``apt-get download runit && dpkg -x`` into a temp dir; installing
    runit would turn /etc/service into a symlink on this machine) or is given with ``--svlogd``.
The clock runs from starting the consumer until every byte is in its files; variants are
interleaved and the median of ``--repeat`` runs is reported with the ratio to ``cat``.

The logger is also started as README recommends for an image (``python -I -S -c <launcher>``: no
``site``, cached bytecode). Note that this repository's venv has an editable install, whose import
hook (pathlib, re, urllib...) adds about 2 MiB and 15 ms to every start of the console script; in a
regular (wheel) install the console script is about 9.7 MiB.

Memory: VmRSS and VmHWM of the logger once all lines are written (the process still running), target
< 12 MiB. Start-up: wall time of ``dinit-log DIR </dev/null`` for each way of starting it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import PYTHON, ROOT, compile_bytecode, emit, fmt, header, median, result, status_kib, summary

SCRIPT = str(Path(PYTHON).parent / "dinit-log")
MAIN = str(ROOT / "dinit" / "logtool" / "main.py")
LAUNCH = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from dinit.logtool.main import main; main()"
# The form README recommends for S/log/run in an image: no site, the package's cached bytecode.
MINIMAL = [PYTHON, "-I", "-S", "-c", LAUNCH]
RSS_TARGET_MIB = 12


def make_input(lines: int) -> bytes:
    """Log-like lines of varying length (about 80 bytes)."""
    return b"".join(b"2026-12-01T10:00:00.%06dZ worker[%d]: request %d handled in %d ms %s\n"
                    % (n % 1000000, n % 7, n, n % 997, b"x" * (n % 23)) for n in range(lines))


def logged_bytes(target: Path) -> int:
    """Bytes logged so far: the file's size, or the uncompressed total of a log directory."""
    if target.is_file():
        return target.stat().st_size
    total = 0
    for path in target.iterdir() if target.is_dir() else ():
        if path.name == "current" or path.name.endswith(".s"):
            total += path.stat().st_size
        elif path.name.endswith(".s.gz"):
            total += int.from_bytes(path.read_bytes()[-4:], "little")  # gzip's ISIZE trailer
    return total


def run_one(command: list[str], target: Path, data: bytes) -> tuple[float, int, int]:
    """Seconds until every byte is logged, and VmRSS/VmHWM (KiB) of the consumer at that moment."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert process.stdin is not None
    fd = process.stdin.fileno()

    def write() -> None:
        view = memoryview(data)
        for offset in range(0, len(view), 1 << 20):
            piece = view[offset:offset + (1 << 20)]
            while piece:
                piece = piece[os.write(fd, piece):]

    writer = threading.Thread(target=write)
    writer.start()
    while True:
        try:
            if logged_bytes(target) >= len(data):
                break
        except FileNotFoundError:  # a rotation moved a file while we looked
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {process.returncode} before logging everything")
        time.sleep(0.0005)
    elapsed = time.monotonic() - start
    rss, hwm = status_kib(process.pid, "VmRSS"), status_kib(process.pid, "VmHWM")
    writer.join()
    process.stdin.close()
    if process.wait(60) != 0:
        raise RuntimeError(f"{command[0]} exited with {process.returncode}")
    return elapsed, rss, hwm


def fetch_svlogd(directory: Path) -> str | None:
    """runit's svlogd from Debian's package, unpacked (not installed) into ``directory``."""
    try:
        subprocess.run(["apt-get", "download", "runit"], cwd=directory, check=True,
                       capture_output=True, timeout=120)
        package = next(directory.glob("runit_*.deb"))
        subprocess.run(["dpkg", "-x", str(package), str(directory / "root")], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError, StopIteration) as error:
        print(f"# svlogd not available ({error}); its row is skipped")
        return None
    path = directory / "root" / "usr" / "bin" / "svlogd"
    return str(path) if path.exists() else None


def startup(command: list[str], work: Path, repeat: int) -> list[float]:
    """Wall seconds of a logger that gets EOF at once (start-up, lock, open, exit)."""
    times = []
    for n in range(repeat):
        start = time.monotonic()
        subprocess.run([*command, str(work / f"startup-{n}")], stdin=subprocess.DEVNULL, check=True)
        times.append(time.monotonic() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--svlogd", help="path of an svlogd binary (default: fetch runit's from Debian)")
    args = parser.parse_args()
    header("dinit-log throughput, memory and start-up")
    compile_bytecode()
    data = make_input(args.lines)
    print(f"# {args.lines:,} lines, {len(data) / 2**20:.1f} MiB, through a pipe")
    with tempfile.TemporaryDirectory(prefix="dinit-bench-log-") as temp:
        work = Path(temp)
        svlogd = args.svlogd or fetch_svlogd(work)
        variants: dict[str, tuple[list[str], bool]] = {
            "cat > file": (["sh", "-c", 'exec cat > "$0"'], False),
            "dinit-log": ([SCRIPT, "-n", "0"], True),
            "dinit-log -z": ([SCRIPT, "-n", "0", "-z"], True),
            "python -I -S": ([*MINIMAL, "-n", "0"], True),
            "python -I -S, -z": ([*MINIMAL, "-n", "0", "-z"], True),
        }
        if svlogd:
            variants["svlogd"] = ([svlogd], True)
        times: dict[str, list[float]] = {name: [] for name in variants}
        memory: dict[str, tuple[int, int]] = {}
        for run in range(args.repeat):
            for name, (command, is_directory) in variants.items():
                target = work / f"{name.replace(' ', '_').replace('>', '')}-{run}"
                if is_directory:
                    target.mkdir()
                    if name == "svlogd":
                        (target / "config").write_text("n0\n")  # keep every file, as -n 0 does
                elapsed, rss, hwm = run_one([*command, str(target)], target, data)
                times[name].append(elapsed)
                memory[name] = (max(rss, memory.get(name, (0, 0))[0]), max(hwm, memory.get(name, (0, 0))[1]))
                shutil.rmtree(target) if is_directory else target.unlink()
        rate = {name: args.lines / median(values) for name, values in times.items()}
        for name, values in times.items():
            rss, hwm = memory[name]
            print(f"{name:16} {fmt(rate[name]):>12} lines/s  ({summary(values)} s)   "
                  f"ratio to cat {rate[name] / rate['cat > file']:.2f}   "
                  f"VmRSS {rss / 1024:.1f} MiB  VmHWM {hwm / 1024:.1f} MiB")
        starts = {
            "dinit-log (console script)": startup([SCRIPT], work, 10),
            "python -m dinit.logtool": startup([PYTHON, "-m", "dinit.logtool"], work, 10),
            "python -I -S main.py": startup([PYTHON, "-I", "-S", MAIN], work, 10),
            "python -I -S -c (launcher)": startup(MINIMAL, work, 10),
        }
        for name, values in starts.items():
            print(f"start-up {name:28} {summary([value * 1000 for value in values])} ms")
    rows = [result(f"dinit-log lines/s ({name})", rate[name], "lines/s", baseline=rate["cat > file"],
                   baseline_label="cat > file", higher_is_better=True)
            for name in variants if name != "cat > file"]
    for name in ("dinit-log", "dinit-log -z", "python -I -S", "python -I -S, -z"):
        rows.append(result(f"{name} peak RSS (VmHWM)", memory[name][1] / 1024, "MiB",
                           baseline=memory["cat > file"][1] / 1024, baseline_label="cat",
                           target=f"< {RSS_TARGET_MIB} MiB", ok=memory[name][1] / 1024 < RSS_TARGET_MIB))
    rows.extend(result(f"dinit-log start-up, {name}", median(values) * 1000, "ms")
                for name, values in starts.items())
    emit(rows)


if __name__ == "__main__":
    main()
