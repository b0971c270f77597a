"""dinit.redirect against real processes: ptrace injection, syscall restarts, descendants, failures.

Every target is a child of the test process (redirect_stdio waits for it with waitpid), is reaped by
the test itself at the end, and is checked not to be left stopped or traced. Waiting is always "poll
until a condition holds or a deadline passes". The only deliberate waits: one puts a redirection in
the middle of a long nanosleep, where it has to land, and one checks that a stopped target stays quiet.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import poll

from dinit.process import redirect
from dinit.process.redirect import RedirectError, TargetExited, redirect_stdio

pytestmark = [
    pytest.mark.skipif(redirect.supported() is not None, reason=str(redirect.supported())),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ptrace of children, setuid)"),
]

TIMEOUT = 10.0
NR_READ = 0
NR_PAUSE = 34
F_SETSIG = 10
NR_NANOSLEEP = 35
NR_CLOCK_NANOSLEEP = 230


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith("TracerPid:"))


def blocked_in(pid: int) -> int | None:
    """The syscall number pid is blocked in, from /proc/<pid>/syscall (None if running)."""
    with open(f"/proc/{pid}/syscall") as file:
        first = file.read().split()[0]
    return None if first == "running" or int(first) < 0 else int(first)


def fd_target(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


class Fifos:
    """A stdout and a stderr FIFO with their read ends held open non-blocking, as dinit does."""

    def __init__(self, directory: Path) -> None:
        self.out_path = str(directory / "out")
        self.err_path = str(directory / "err")
        os.mkfifo(self.out_path)
        os.mkfifo(self.err_path)
        self.out = os.open(self.out_path, os.O_RDONLY | os.O_NONBLOCK)
        self.err = os.open(self.err_path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = {self.out: b"", self.err: b""}

    @property
    def paths(self) -> tuple[str, str]:
        return self.out_path, self.err_path

    def read_until(self, fd: int, predicate: Callable[[bytes], bool], message: str) -> bytes:
        """Accumulate what arrives on fd until predicate(everything so far) holds."""
        deadline = time.monotonic() + TIMEOUT
        while not predicate(self.data[fd]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"timed out waiting for {message}; got {self.data[fd][-500:]!r}")
            if select.select([fd], [], [], min(remaining, 0.1))[0]:
                with contextlib.suppress(BlockingIOError):
                    self.data[fd] += os.read(fd, 65536)
        return self.data[fd]

    def close(self) -> None:
        os.close(self.out)
        os.close(self.err)


class Targets:
    """Starts targets as children of the test process and, at the end, checks and reaps them."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.reaped: set[int] = set()

    def start(self, code: str, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], **kwargs)
        self.started.append(process)
        return process

    def shell(self, script: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        process = subprocess.Popen(["sh", "-c", script], **kwargs)
        self.started.append(process)
        return process

    def reap(self, process: subprocess.Popen[bytes]) -> int:
        """Collect the exit status ourselves (Popen must never be the one to wait)."""
        _, status = os.waitpid(process.pid, 0)
        self.mark_reaped(process)
        return status

    def mark_reaped(self, process: subprocess.Popen[bytes]) -> None:
        self.reaped.add(process.pid)
        process.returncode = -1

    def finish(self) -> None:
        problems = []
        for process in self.started:
            if process.pid in self.reaped:
                continue
            if state(process.pid) != "Z":
                try:
                    poll(lambda p=process: state(p.pid) not in "tT", 2.0, "target to run")
                except pytest.fail.Exception:
                    problems.append(f"{process.pid} left in state {state(process.pid)}")
                if tracer(process.pid):
                    problems.append(f"{process.pid} still traced by {tracer(process.pid)}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            self.reap(process)
        assert not problems


@pytest.fixture
def targets() -> Iterator[Targets]:
    manager = Targets()
    try:
        yield manager
    finally:
        manager.finish()


@pytest.fixture
def fifos(tmp_path: Path) -> Iterator[Fifos]:
    pair = Fifos(tmp_path)
    try:
        yield pair
    finally:
        pair.close()


def assert_running(pid: int) -> None:
    """Not stopped, not traced, not dead (a tracee is 't' until the detach has woken it up)."""
    poll(lambda: state(pid) not in "tTZX", 2.0, f"{pid} to be running")
    assert tracer(pid) == 0


def lines(data: bytes) -> list[bytes]:
    return data.splitlines()[:-1] if not data.endswith(b"\n") else data.splitlines()


PRINTER = """
    import json, sys, time
    i = 0
    while True:
        print(json.dumps({"i": i, "t": time.monotonic()}), flush=True)
        print(f"err {i}", file=sys.stderr, flush=True)
        i += 1
        time.sleep(0.05)
"""

ECHO = "import sys\nfor line in sys.stdin:\n    print(line.strip(), flush=True)\n"


def test_supported_here() -> None:
    assert redirect.supported() is None


def test_sleeping_target_output_is_captured_and_cadence_kept(targets: Targets, fifos: Fifos) -> None:
    target = targets.start(PRINTER)
    poll(lambda: blocked_in(target.pid) == NR_CLOCK_NANOSLEEP, message="target asleep")
    started = time.monotonic()
    assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
    assert time.monotonic() - started < 1.0
    assert_running(target.pid)
    out = fifos.read_until(fifos.out, lambda d: len(lines(d)) >= 10, "10 JSON lines")
    records = [json.loads(line) for line in lines(out)]
    assert [r["i"] for r in records] == list(range(records[0]["i"], records[0]["i"] + len(records)))
    assert records[0]["t"] - started < 0.5  # the sleep went on where it was, not from scratch or never
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(records)]
    assert all(0.04 < gap < 0.5 for gap in gaps), gaps
    err = fifos.read_until(fifos.err, lambda d: len(lines(d)) >= 10, "10 stderr lines")
    assert all(line.startswith(b"err ") for line in lines(err))
    assert fd_target(target.pid, 1) == fifos.out_path
    assert fd_target(target.pid, 2) == fifos.err_path
    assert_running(target.pid)


def test_target_blocked_in_read_gets_its_read_restarted(targets: Targets, fifos: Fifos) -> None:
    target = targets.start(ECHO, stdin=subprocess.PIPE)
    assert target.stdin is not None
    poll(lambda: blocked_in(target.pid) == NR_READ, message="target blocked in read")
    assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
    assert_running(target.pid)
    poll(lambda: blocked_in(target.pid) == NR_READ, message="target blocked in read again")
    for word in (b"hello", b"world"):
        target.stdin.write(word + b"\n")
        target.stdin.flush()
        fifos.read_until(fifos.out, lambda d, w=word: d.endswith(w + b"\n"), f"echo of {word!r}")
    assert fifos.data[fifos.out] == b"hello\nworld\n"
    target.stdin.close()
    assert os.waitstatus_to_exitcode(targets.reap(target)) == 0


def test_interrupted_relative_nanosleep_continues_with_the_time_left(targets: Targets, fifos: Fifos) -> None:
    """nanosleep reports -ERESTART_RESTARTBLOCK: resuming must use restart_syscall, not start over."""
    ticks_read, ticks_write = os.pipe()
    target = targets.start(
        """
        import ctypes, os, sys, time
        libc = ctypes.CDLL(None, use_errno=True)
        second = (ctypes.c_long * 2)(1, 0)
        while True:
            if libc.syscall(35, second, None) != 0:  # nanosleep itself, not glibc's clock_nanosleep
                raise SystemExit(f"nanosleep failed: {ctypes.get_errno()}")
            now = time.monotonic()
            os.write(int(sys.argv[1]), b"%f\\n" % now)
            print(now, flush=True)
        """,
        str(ticks_write),
        pass_fds=(ticks_write,),
    )
    os.close(ticks_write)
    try:
        poll(lambda: select.select([ticks_read], [], [], 0)[0], message="first tick")
        first = float(os.read(ticks_read, 100).split()[0])
        assert blocked_in(target.pid) == NR_NANOSLEEP
        time.sleep(max(0.0, first + 0.5 - time.monotonic()))  # land in the middle of the second
        assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
        out = fifos.read_until(fifos.out, lambda d: len(lines(d)) >= 1, "tick after redirect")
        second = float(lines(out)[0])
        assert 0.9 < second - first < 1.3, second - first
        assert_running(target.pid)
    finally:
        os.close(ticks_read)


TREE = """
    import os, sys, time

    def loop(name):
        while True:
            print(name, flush=True)
            time.sleep(0.05)

    if os.fork() == 0:
        if os.fork() == 0:
            loop("grandchild")
        loop("child")
    if os.fork() == 0:
        os.dup2(2, 1)  # its stdout is the parent's stderr
        loop("crossed")
    if os.fork() == 0:
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        loop("separate")
    loop("parent")
"""


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        try:
            with open(f"/proc/{current}/task/{current}/children") as file:
                children = [int(c) for c in file.read().split()]
        except FileNotFoundError:
            continue
        found += children
        queue += children
    return found


def subshells(pid: int) -> list[int]:
    """Children of a shell that are forks of it (same command line), not commands it runs."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{child}/cmdline").read_bytes() == Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(child)
    return found


def test_descendants_sharing_stdout_or_stderr_are_redirected_too(
    targets: Targets, fifos: Fifos, tmp_path: Path
) -> None:
    separate = tmp_path / "separate.log"
    err_log = tmp_path / "err.log"
    with open(err_log, "wb") as err_file:
        target = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TREE), str(separate)],
                                  stdout=subprocess.DEVNULL, stderr=err_file)
    targets.started.append(target)
    poll(lambda: len(descendants(target.pid)) == 4, message="4 descendants")
    poll(lambda: str(separate) in [fd_target(p, 1) for p in descendants(target.pid)], message="separate")
    tree = descendants(target.pid)
    before = {pid: fd_target(pid, 1) for pid in tree}
    changed = redirect_stdio(target.pid, *fifos.paths)
    assert changed == [target.pid, *tree]  # the separate one too, for its stderr
    out, err = fifos.paths
    expected = {"/dev/null": (out, err), str(err_log): (err, err), str(separate): (str(separate), err)}
    for pid in tree:
        assert (fd_target(pid, 1), fd_target(pid, 2)) == expected[before[pid]]
    for name in (b"parent", b"child", b"grandchild"):
        fifos.read_until(fifos.out, lambda d, n=name: n in lines(d), f"{name!r} on stdout")
    fifos.read_until(fifos.err, lambda d: b"crossed" in lines(d), "crossed child on stderr FIFO")
    assert b"separate" not in fifos.data[fifos.out] + fifos.data[fifos.err]
    size = separate.stat().st_size
    poll(lambda: separate.stat().st_size > size, message="separate child still writing its file")
    for pid in [target.pid, *tree]:
        assert_running(pid)
    for pid in tree:
        os.kill(pid, signal.SIGKILL)


def test_shell_with_background_job_and_short_lived_children(targets: Targets, fifos: Fifos) -> None:
    """Plenty of `sleep` children come and go while we trace: they must be skipped, not break things."""
    target = targets.shell(
        "(while :; do echo job; sleep 0.01; done) & while :; do echo shell; sleep 0.01; done"
    )
    job = poll(lambda: subshells(target.pid), message="background job")[0]
    changed = redirect_stdio(target.pid, *fifos.paths)
    assert changed[0] == target.pid
    assert job in changed, changed
    for _ in range(10):  # from now on the job's stdout is no longer the shell's: only short-lived ones
        assert redirect_stdio(target.pid, *fifos.paths)[0] == target.pid
    fifos.read_until(fifos.out, lambda d: b"job" in lines(d) and b"shell" in lines(d), "both loops")
    assert_running(target.pid)
    for pid in descendants(target.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_zombie_target_is_refused_and_its_status_left_alone(targets: Targets, fifos: Fifos) -> None:
    target = targets.start("import os; os._exit(7)")
    poll(lambda: state(target.pid) == "Z", message="zombie")
    with pytest.raises(RedirectError, match="exited"):
        redirect_stdio(target.pid, *fifos.paths)
    assert os.waitstatus_to_exitcode(targets.reap(target)) == 7


def test_target_killed_during_injection_reports_its_status(targets: Targets, fifos: Fifos) -> None:
    """A seccomp filter that kills on dup3: the target dies on our injected syscall, deterministically."""
    target = targets.start(
        """
        import ctypes, struct, time
        libc = ctypes.CDLL(None, use_errno=True)
        # BPF: load nr; if nr == dup3 (292) kill the process, else allow.
        insns = [(0x20, 0, 0, 0), (0x15, 0, 1, 292), (0x06, 0, 0, 0x80000000), (0x06, 0, 0, 0x7FFF0000)]
        filt = b"".join(struct.pack("HBBI", *i) for i in insns)
        buf = ctypes.create_string_buffer(filt)
        prog = struct.pack("HxxxxxxQ", len(insns), ctypes.addressof(buf))
        pbuf = ctypes.create_string_buffer(prog)
        assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
        ok = libc.prctl(22, 2, ctypes.c_ulong(ctypes.addressof(pbuf)), 0, 0) == 0  # SECCOMP_MODE_FILTER
        assert ok, ctypes.get_errno()
        print("armed", flush=True)
        while True:
            time.sleep(1)
        """,
        stdout=subprocess.PIPE,
    )
    assert target.stdout is not None
    assert target.stdout.readline() == b"armed\n"
    with pytest.raises(TargetExited) as caught:
        redirect_stdio(target.pid, *fifos.paths)
    assert caught.value.pid == target.pid
    assert os.WIFSIGNALED(caught.value.status)
    assert os.WTERMSIG(caught.value.status) == signal.SIGSYS
    targets.mark_reaped(target)
    with pytest.raises(ChildProcessError):
        os.waitpid(target.pid, os.WNOHANG)  # consumed by redirect_stdio, as documented


def test_target_exiting_at_any_moment_never_loses_its_status_or_hangs(targets: Targets, fifos: Fifos) -> None:
    outcomes = set()
    for attempt in range(30):
        target = targets.start(f"import os, time; time.sleep({attempt % 8} * 0.005); os._exit(3)")
        try:
            redirect_stdio(target.pid, *fifos.paths)
        except TargetExited as exited:
            assert exited.pid == target.pid
            assert os.waitstatus_to_exitcode(exited.status) == 3
            targets.mark_reaped(target)
            with pytest.raises(ChildProcessError):
                os.waitpid(target.pid, os.WNOHANG)
            outcomes.add("exited")
            continue
        except RedirectError as error:
            assert "exited" in str(error) or "does not exist" in str(error), error
            outcomes.add("refused")
        else:
            outcomes.add("redirected")
        assert os.waitstatus_to_exitcode(targets.reap(target)) == 3
    assert outcomes


def become_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def drop_cap_sys_ptrace() -> None:
    """Stay root but lose CAP_SYS_PTRACE (effective and permitted), like dinit in a default Docker."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # 2 x {effective, permitted, inheritable}
    assert libc.capget(header, data) == 0, ctypes.get_errno()
    data[0] &= ~(1 << 19)
    data[1] &= ~(1 << 19)
    assert libc.capset(header, data) == 0, ctypes.get_errno()


def run_in_child(prepare: Callable[[], None], function: Callable[[], str]) -> str:
    """function()'s result, computed in a forked child after prepare() (e.g. dropping privileges)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (child side)
        try:
            os.close(read_end)
            prepare()
            result = function()
        except BaseException as error:  # everything must reach the parent
            result = f"{type(error).__name__}: {error}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return result


def test_unprivileged_caller_gets_a_clear_redirect_error(targets: Targets, fifos: Fifos) -> None:
    target = targets.start(PRINTER)

    def attempt() -> str:
        try:
            redirect_stdio(target.pid, *fifos.paths)
        except RedirectError as error:
            return f"RedirectError: {error}"
        return "redirected?!"

    assert run_in_child(become_nobody, attempt) == (
        "RedirectError: ptrace not permitted: [Errno 1] Operation not permitted"
    )
    assert_running(target.pid)
    assert fd_target(target.pid, 1) == "/dev/null"


def test_root_without_cap_sys_ptrace_is_told_why(targets: Targets, fifos: Fifos) -> None:
    target = targets.shell("while :; do sleep 1; done", user=65534)  # python may be out of its reach

    def attempt() -> str:
        try:
            redirect_stdio(target.pid, *fifos.paths)
        except RedirectError as error:
            return str(error)
        return "redirected?!"

    assert run_in_child(drop_cap_sys_ptrace, attempt) == (
        "ptrace not permitted: [Errno 1] Operation not permitted "
        "(dinit lacks CAP_SYS_PTRACE, needed for other users' and non-dumpable processes)"
    )
    assert_running(target.pid)


def test_already_traced_target_is_refused(targets: Targets, fifos: Fifos) -> None:
    target = targets.start(PRINTER)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import ctypes, sys, time
            libc = ctypes.CDLL(None, use_errno=True)
            libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong]
            assert libc.ptrace(0x4206, {target.pid}, 0, 0) == 0, ctypes.get_errno()
            print("seized", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == b"seized\n"
        with pytest.raises(RedirectError, match=f"already being traced by process {holder.pid}"):
            redirect_stdio(target.pid, *fifos.paths)
    finally:
        holder.stdin.close()
        holder.wait(TIMEOUT)
    assert_running(target.pid)


def test_fifo_without_reader_is_refused_and_target_unchanged(targets: Targets, tmp_path: Path) -> None:
    lonely = str(tmp_path / "lonely")
    os.mkfifo(lonely)
    target = targets.start(PRINTER)
    poll(lambda: blocked_in(target.pid) == NR_CLOCK_NANOSLEEP, message="target asleep")
    with pytest.raises(RedirectError, match=r"nobody has .*lonely open for reading"):
        redirect_stdio(target.pid, lonely, lonely)
    assert_running(target.pid)
    assert fd_target(target.pid, 1) == fd_target(target.pid, 2) == "/dev/null"
    assert sorted(os.listdir(f"/proc/{target.pid}/fd")) == ["0", "1", "2"]


def test_missing_path_is_refused_and_nothing_leaks(targets: Targets, fifos: Fifos, tmp_path: Path) -> None:
    target = targets.start("import time; time.sleep(60)")
    poll(lambda: blocked_in(target.pid) == NR_CLOCK_NANOSLEEP, message="target asleep")
    maps_before = Path(f"/proc/{target.pid}/maps").read_text()
    with pytest.raises(RedirectError, match="No such file"):
        redirect_stdio(target.pid, fifos.out_path, str(tmp_path / "missing"))
    assert_running(target.pid)
    assert sorted(os.listdir(f"/proc/{target.pid}/fd")) == ["0", "1", "2"]
    assert fd_target(target.pid, 1) == "/dev/null"
    poll(lambda: blocked_in(target.pid) == NR_CLOCK_NANOSLEEP, message="target asleep again")
    assert Path(f"/proc/{target.pid}/maps").read_text() == maps_before  # scratch page unmapped


def test_target_with_closed_std_fds(targets: Targets, fifos: Fifos) -> None:
    target = targets.start(
        """
        import os, time
        for fd in (0, 1, 2):
            os.close(fd)
        i = 0
        while True:
            try:
                os.write(1, b"out %d\\n" % i)
                os.write(2, b"err %d\\n" % i)
            except OSError:
                pass
            i += 1
            time.sleep(0.02)
        """
    )
    poll(lambda: sorted(os.listdir(f"/proc/{target.pid}/fd")) == [], message="std fds closed")
    assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
    assert sorted(os.listdir(f"/proc/{target.pid}/fd")) == ["1", "2"]
    fifos.read_until(fifos.out, lambda d: d.count(b"\n") >= 3, "stdout lines")
    fifos.read_until(fifos.err, lambda d: d.count(b"\n") >= 3, "stderr lines")
    with open(f"/proc/{target.pid}/fdinfo/1") as file:
        flags = int(next(line.split()[1] for line in file if line.startswith("flags:")), 8)
    assert flags & os.O_NONBLOCK == 0
    assert flags & 0o2000000 == 0  # O_CLOEXEC of the temporary fd did not stick
    assert flags & os.O_ACCMODE == os.O_WRONLY
    assert_running(target.pid)


def test_job_control_stopped_target_is_redirected_and_stays_stopped(targets: Targets, fifos: Fifos) -> None:
    target = targets.start(PRINTER)
    os.kill(target.pid, signal.SIGSTOP)
    poll(lambda: state(target.pid) == "T", message="stopped")
    assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
    poll(lambda: state(target.pid) == "T" and tracer(target.pid) == 0, message="stopped again")
    assert not select.select([fifos.out], [], [], 0.2)[0]
    os.kill(target.pid, signal.SIGCONT)
    fifos.read_until(fifos.out, lambda d: len(lines(d)) >= 3, "output after SIGCONT")
    assert_running(target.pid)


def test_busy_target_outside_any_syscall(targets: Targets, fifos: Fifos) -> None:
    """Interrupted in user space, there is no syscall instruction at rip-2: the vDSO provides one."""
    target = targets.start(
        """
        x = 0
        while True:
            x += 1
            if x % 200000 == 0:
                print(x, flush=True)
        """
    )
    for _ in range(5):
        assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
    out = fifos.read_until(fifos.out, lambda d: len(lines(d)) >= 5, "counter lines")
    numbers = [int(n) for n in lines(out)]
    assert numbers == sorted(numbers)
    assert_running(target.pid)


def test_multithreaded_target(targets: Targets, fifos: Fifos) -> None:
    target = targets.start(
        """
        import sys, threading, time
        def loop(name):
            while True:
                print(name, flush=True)
                time.sleep(0.02)
        for n in range(4):
            threading.Thread(target=loop, args=(f"thread{n}",), daemon=True).start()
        threading.Event().wait()
        """
    )
    poll(lambda: len(os.listdir(f"/proc/{target.pid}/task")) == 5, message="threads")
    assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
    names = {f"thread{n}".encode() for n in range(4)}
    fifos.read_until(fifos.out, lambda d: names <= set(lines(d)), "all threads")
    assert_running(target.pid)


def test_signal_storm_during_redirections(targets: Targets, fifos: Fifos) -> None:
    """Signals arriving while we hold the tracee are held back and delivered afterwards."""
    target = targets.start(
        """
        import signal, sys, time
        count = 0
        def handler(signum, frame):
            global count
            count += 1
        signal.signal(signal.SIGUSR1, handler)
        while True:
            print(count, flush=True)
            time.sleep(0.005)
        """
    )
    poll(lambda: blocked_in(target.pid) == NR_CLOCK_NANOSLEEP, message="handler installed, sleeping")
    sender = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, time
        while True:
            os.kill({target.pid}, signal.SIGUSR1)
            time.sleep(0.0002)
    """)])
    try:
        assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
        fifos.read_until(fifos.out, lambda d: any(int(n) > 0 for n in lines(d)), "the storm to start")
        for _ in range(30):
            assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
        during = int(lines(fifos.data[fifos.out])[-1]) if lines(fifos.data[fifos.out]) else 0
    finally:
        sender.kill()
        sender.wait(TIMEOUT)
    out = fifos.read_until(fifos.out, lambda d: int(lines(d)[-1]) > during, "counts going on")
    counts = [int(line) for line in lines(out)]
    assert counts == sorted(counts)
    assert_running(target.pid)


def test_ignored_signal_storm_while_blocked_in_read(targets: Targets, fifos: Fifos) -> None:
    """SIGWINCH is ignored by default: it must not leave a stale -ERESTARTSYS as read()'s result."""
    target = targets.start(ECHO, stdin=subprocess.PIPE)
    assert target.stdin is not None
    poll(lambda: blocked_in(target.pid) == NR_READ, message="target blocked in read")
    sender = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, time
        while True:
            os.kill({target.pid}, signal.SIGWINCH)
            time.sleep(0.0002)
    """)])
    try:
        for _ in range(30):
            assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
    finally:
        sender.kill()
        sender.wait(TIMEOUT)
    assert_running(target.pid)
    target.stdin.write(b"still here\n")
    target.stdin.flush()
    fifos.read_until(fifos.out, lambda d: d == b"still here\n", "echo")


def test_signal_arriving_during_injection_interrupts_pause(targets: Targets, fifos: Fifos) -> None:
    """A handled signal that arrives while we hold the tracee must make pause() return EINTR.

    The signal is made to arrive exactly then: the target's stdout is the only write end of a pipe whose
    read end (ours) sends it SIGUSR1 via O_ASYNC/F_SETSIG once the last writer closes, i.e. when our
    injected dup3 replaces fd 1. Restarting pause() (as a blind restart fix-up would) loses the wakeup.
    """
    read_end, write_end = os.pipe()
    target = targets.start(
        """
        import signal
        count = 0
        def handler(signum, frame):
            global count
            count += 1
        signal.signal(signal.SIGUSR1, handler)
        while True:
            signal.pause()
            print("woke", count, flush=True)
        """,
        stdout=write_end,
    )
    os.close(write_end)
    try:
        fcntl.fcntl(read_end, fcntl.F_SETOWN, target.pid)
        fcntl.fcntl(read_end, F_SETSIG, signal.SIGUSR1)
        fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_ASYNC)
        poll(lambda: blocked_in(target.pid) == NR_PAUSE, message="target in pause()")
        assert redirect_stdio(target.pid, *fifos.paths) == [target.pid]
        fifos.read_until(fifos.out, lambda d: d == b"woke 1\n", "pause() to return")
        assert_running(target.pid)
    finally:
        os.close(read_end)


def test_kcmp_fallback_agrees_with_kcmp(targets: Targets, tmp_path: Path) -> None:
    """The /proc approximation gives kcmp's answers when each open description has its own inode."""
    read_end, write_end = os.pipe()
    with open(tmp_path / "log", "wb") as log:
        sleep = "import time; time.sleep(60)"
        first = targets.start(sleep, stdout=write_end, stderr=subprocess.STDOUT)
        second = targets.start(sleep, stdout=write_end, stderr=subprocess.PIPE)
        third = targets.start(sleep, stdout=subprocess.PIPE, stderr=log)
    os.close(write_end)
    os.close(read_end)
    pids = [first.pid, second.pid, third.pid]
    cases = [(a, fa, b, fb) for a in pids for b in pids for fa in (1, 2) for fb in (1, 2)]
    for case in cases:
        assert redirect._same_description(*case) == redirect._same_description_fallback(*case), case
    assert redirect._same_description(first.pid, 2, second.pid, 1)
    assert not redirect._same_description(first.pid, 1, third.pid, 1)
    assert not redirect._same_description(first.pid, 1, first.pid, 9)  # closed fd
