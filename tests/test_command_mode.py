"""Command mode without services is transparent, the way tini is (§17), as PID 1.

Every signal reaches the command as it is, the command's own status (128+N for a signal) is dinit's,
it reads dinit's stdin, on a terminal it owns the terminal, and dinit itself moves to ``/``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import orjson
import pytest
from harness import TIME, Services, run, start

#: A command that reports every signal it gets as a JSON line and exits 0 on SIGUSR2.
RECORDER = (
    "import json, os, signal, sys\n"
    "def got(signum, _frame):\n"
    "    print(json.dumps({'got': signum}), flush=True)\n"
    "    if signum == signal.SIGUSR2: sys.exit(0)\n"
    "for s in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}:\n"
    "    try: signal.signal(s, got)\n"
    "    except (OSError, ValueError): pass\n"
    "print(json.dumps({'ready': True}), flush=True)\n"
    "while True: signal.pause()\n"
)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                                (signal.SIGQUIT, 131)])
def test_stop_signal_reaches_the_command_as_it_is(signum: int, status: int) -> None:
    """Ctrl-C gives 130 and ``docker stop`` 143 for a command that does not handle them (tini)."""
    dinit = start(None, "--", "sleep", "1000", DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"main/run: running with PID")
    dinit.signal(signum)
    assert dinit.wait() == status
    assert f"forwarding signal {int(signum)} to PID".encode() in dinit.stderr


def test_every_signal_is_passed_on() -> None:
    """SIGQUIT, SIGCONT, SIGPWR, SIGTSTP and the rest reach the command; dinit never stops."""
    dinit = start(None, "--", sys.executable, "-c", RECORDER)
    dinit.wait_for(rb'"ready": true', stream="stdout")
    sent = [signal.SIGHUP, signal.SIGQUIT, signal.SIGCONT, signal.SIGPWR, signal.SIGTSTP,
            signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGWINCH, signal.SIGRTMIN + 3]
    for signum in sent:
        dinit.signal(signum)
        dinit.wait_for(b'"got": %d' % signum, stream="stdout")
    dinit.signal(signal.SIGUSR2)
    assert dinit.wait() == 0
    got = [orjson.loads(line).get("got") for line in dinit.stdout.splitlines()]
    assert [signum for signum in got if signum] == [*sent, signal.SIGUSR2]


def test_the_command_reads_dinits_stdin() -> None:
    """``echo 'exit 3' | docker run -i IMAGE sh`` exits 3, as under tini."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"echo from-stdin >&2\nexit 3\n")
    os.close(write_end)
    try:
        dinit = run(None, "--", "sh", stdin=read_end)
    finally:
        os.close(read_end)
    assert dinit.returncode == 3
    assert dinit.service_lines("main/run") == [b"from-stdin"]


def test_on_a_terminal_the_command_owns_it() -> None:
    """With a terminal on stdin (``docker run -it``), the command is the terminal's foreground
    process group and writes to dinit's stdout unlabelled: an interactive session, not a log."""
    primary, secondary = os.openpty()
    probe = ("import os; print('foreground' if os.tcgetpgrp(0) == os.getpgrp() else 'background',"
             " os.getsid(0) == os.getsid(1))")
    try:
        # setsid -c makes the terminal on stdin the controlling terminal of dinit's session, as a
        # container runtime does for PID 1.
        dinit = run(None, "--", sys.executable, "-c", probe, stdin=secondary,
                    wrapper=("setsid", "-c"))
    finally:
        os.close(secondary)
        os.close(primary)
    assert dinit.returncode == 0
    assert dinit.stdout == b"foreground True\n"


def test_dinit_leaves_the_working_directory(tmp_path: Path) -> None:
    """The command keeps the working directory (Docker's WORKDIR); dinit moves to ``/`` (§17)."""
    dinit = start(None, "--", "sh", "-c", "pwd; while [ \"$(readlink /proc/1/cwd)\" != / ]; do "
                  "sleep 0.01; done; echo dinit-in-root", cwd=str(tmp_path), DINIT_JSON_STDOUT="0")
    assert dinit.wait() == 0
    assert re.findall(TIME + rb" main/run: (.*)", dinit.stdout) == [str(tmp_path).encode(),
                                                                    b"dinit-in-root"]


def test_with_services_signals_keep_section_8(services: Services) -> None:
    """With a service directory, SIGINT still tears down with SIGTERM to every ``run`` (§8)."""
    services.add("web", "trap 'echo got-term >&2; exit 0' TERM\nwhile :; do sleep 0.05; done\n")
    dinit = start(services, "--", "sh", "-c", "trap 'echo main-term >&2; exit 0' TERM\n"
                  "while :; do sleep 0.05; done", DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"main/run: running with PID")
    dinit.wait_for(rb"web/run: running with PID")
    dinit.signal(signal.SIGINT)
    assert dinit.wait() == 0
    assert dinit.service_lines("web/run") == [b"got-term"]
    assert dinit.service_lines("main/run") == [b"main-term"]
