"""Run every benchmark and print a markdown summary table (for the README's Performance section).

Usage: ``.venv/bin/python bench/run_all.py [--profile] [--only NAME ...]`` as root (dinit runs as
PID 1 of a new PID namespace). Each benchmark is a separate script run in its own process; its
human-readable output is shown as it runs, and its last line (``BENCH-RESULT [...]``) is collected.
Timings are reported, never asserted: the exit status is non-zero only if a benchmark itself failed
(e.g. lost output lines), not if a target was missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import PYTHON, RESULT_MARK, compile_bytecode, fmt

BENCH = Path(__file__).resolve().parent
SCRIPTS = ("startup", "idle", "shutdown", "throughput", "long_lines", "reparent", "dinit_log", "reload",
           "readiness", "control")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_script(name: str) -> tuple[list[dict[str, Any]] | None, float]:
    """Run one benchmark, echoing its output; return its result rows (None if it failed)."""
    start = time.monotonic()
    process = subprocess.Popen([PYTHON, str(BENCH / f"{name}.py")], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=str(BENCH))
    rows = None
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(RESULT_MARK):
            rows = json.loads(line[len(RESULT_MARK):])
        else:
            print(line, end="", flush=True)
    status = process.wait()
    elapsed = time.monotonic() - start
    print(f"# {name}.py: exit status {status}, {elapsed:.1f} s\n", flush=True)
    return (rows if status == 0 else None), elapsed


def ratio(row: dict[str, Any]) -> str:
    if not row.get("baseline"):
        return ""
    return f"{row['value'] / row['baseline']:.3g}x"


def table(results: dict[str, list[dict[str, Any]] | None]) -> str:
    lines = ["| benchmark | result | baseline (same run) | ratio | target | |",
             "|---|---:|---|---:|---|---|"]
    for script, rows in results.items():
        if rows is None:
            lines.append(f"| `{script}.py` | **failed** | | | | error |")
            continue
        for row in rows:
            baseline = (f"{fmt(row['baseline'])} {row['unit']} ({row['baseline_label']})"
                        if row.get("baseline") is not None else "")
            value = f"{fmt(row['value'])} {row['unit']}"
            if row.get("detail"):
                value += f" ({row['detail']})"
            status = {True: "pass", False: "**miss**", None: ""}[row.get("ok")]
            cells = [row["name"], value, baseline, ratio(row), row.get("target", ""), status]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true", help="also run profile_json.py (not in the table)")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these benchmarks")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: dinit runs as PID 1 of a new PID namespace (unshare --pid)")
    compile_bytecode()
    started = time.monotonic()
    results: dict[str, list[dict[str, Any]] | None] = {}
    for name in args.only or SCRIPTS:
        results[name], _ = run_script(name)
    if args.profile:
        run_script("profile_json")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"## Summary ({time.monotonic() - started:.0f} s)\n")
    print(f"{os.cpu_count()} x {cpu_model()}, Linux {platform.release()}, Python {sys.version.split()[0]}, "
          f"dinit bytecode compiled, dinit as PID 1 (`unshare --pid --fork --mount-proc`) unless "
          f"the row says otherwise; load average at the end {load}. Medians unless stated.\n")
    print(table(results))
    if any(rows is None for rows in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
