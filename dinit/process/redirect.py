"""Pointing fds 1 and 2 of a running process at dinit's FIFOs, from outside, with ptrace (§6.3).

An adopted daemon usually had its stdout and stderr pointed at ``/dev/null`` (or a file) by whoever
daemonised it, so dinit would never see its output. The only way to change another process's fd table
is to make that process do it, so we briefly become its tracer and run a few system calls *inside* it:

* ``PTRACE_SEIZE`` + ``PTRACE_INTERRUPT`` stop it wherever it is, typically blocked in a syscall.
* Each injected syscall re-uses an existing ``syscall`` instruction (``0f 05``): the one the tracee just
  executed, else one from the vDSO, else from any executable mapping. We point ``rip`` at it, load the
  syscall number and arguments, and step over it with two ``PTRACE_SYSCALL`` stops (entry and exit).
* ``mmap`` a scratch page, write the FIFO paths into it through ``/proc/<pid>/mem``, ``openat`` them,
  ``dup3`` onto 1 and 2, ``close`` the temporaries, ``munmap``.
* Finally the original registers are put back and the tracee is detached. If it had been interrupted in
  the middle of a blocking syscall (rax = -ERESTART*), the registers get the kernel's "restart this
  syscall" fix-up applied by us. Current kernels would also apply it on their own, since PTRACE_DETACH
  wakes the tracee with TIF_SIGPENDING, but that is an implementation detail; the fix-up is idempotent
  (once rax holds a syscall number there is nothing left to restart), so doing it here costs nothing.

Signals that arrive while we hold the tracee are taken out of its way (it must only run our syscalls) and
put back before detaching, so that the kernel delivers them with their usual semantics.

Only ctypes and the standard library are used: no compiled helper has to exist in the container.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import procfs
from . import ptrace_arch as arch

__all__ = ["RedirectError", "TargetExited", "redirect_stdio", "supported"]


class RedirectError(Exception):
    """Redirection is impossible or failed; ``str(e)`` is a one-line reason.

    The target has been left running with its fds unchanged (barring a ``dup3`` failing between the
    two fds, after both opens succeeded, which has no known cause).
    """


class TargetExited(Exception):
    """The target exited while being redirected and its wait status has been consumed by us.

    The caller must treat this exactly like having reaped ``pid`` with ``status`` (raw, as returned by
    ``os.waitpid``): nobody will be able to wait for it again.
    """

    def __init__(self, pid: int, status: int) -> None:
        super().__init__(pid, status)
        self.pid = pid
        self.status = status

    def __str__(self) -> str:
        return f"process {self.pid} exited while being redirected (wait status {self.status:#x})"


class _Vanished(Exception):
    """A descendant went away while traced; it is simply skipped (its status is not ours to report)."""


# -- kernel ABI (generic; x86-64's own tables are in ptrace_arch) -------------------------------------

_PTRACE_CONT = 7
_PTRACE_DETACH = 17
_PTRACE_SYSCALL = 24
_PTRACE_GETSIGINFO = 0x4202
_PTRACE_SETSIGINFO = 0x4203
_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_GET_SYSCALL_INFO = 0x420E
_PTRACE_O_TRACESYSGOOD = 1
_PTRACE_EVENT_STOP = 128
_SYSCALL_INFO_ENTRY = 1
_SYSCALL_INFO_EXIT = 2
_WALL = 0x40000000
_SYSCALL_STOP = signal.SIGTRAP | 0x80

_ERESTARTSYS = 512
_ERESTARTNOINTR = 513
_ERESTARTNOHAND = 514
_ERESTART_RESTARTBLOCK = 516

_AT_FDCWD = -100
_F_SETFL = 4
_F_DUPFD_CLOEXEC = 1030
_KCMP_FILE = 0
_PAGE = 4096
_PROT_READ_WRITE = 0x1 | 0x2
_MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20
_MASK64 = (1 << 64) - 1
#: An injected syscall that reports one of these was interrupted before doing anything: run it again.
#: (Not EINTR: a close() that says EINTR has closed the fd, and retrying could hit another thread's.)
_RETRY = frozenset({-_ERESTARTSYS, -_ERESTARTNOINTR, -_ERESTARTNOHAND, -_ERESTART_RESTARTBLOCK})
_CAP_SYS_PTRACE = 19
_RETRIES = 5
_DEFAULT_IGNORED = frozenset({signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH})
#: How long a process in uninterruptible sleep is given to leave it before we give up on it.
_D_STATE_GRACE = 0.05


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _signed(value: int) -> int:
    """A register value read as the kernel's ``long`` (syscall results are negative errnos)."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def _raw_syscall(nr: int, *args: int) -> int:
    """``syscall(2)`` in dinit itself; raises OSError like the os module does."""
    result = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(arg) for arg in args))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


# -- public API -----------------------------------------------------------------------------------


def supported() -> str | None:
    """None if this machine can redirect another process's stdio, else a one-line reason why not.

    Register layout and syscall numbers come from ``ptrace_arch``, which has x86-64's only.
    """
    reason = arch.unsupported()
    if reason is not None:
        return reason
    if not os.path.isdir("/proc/self/fd"):
        return "stdio redirection needs /proc"
    return None


def redirect_stdio(pid: int, stdout_path: str, stderr_path: str) -> list[int]:
    """Make fd 1 of ``pid`` an ``O_WRONLY`` open of ``stdout_path`` and fd 2 one of ``stderr_path``.

    The paths are FIFOs whose read ends the caller already holds open, so the opens do not block (they
    are done with ``O_NONBLOCK``, which is cleared afterwards, so a missing reader gives a RedirectError
    instead of a hang). Relative paths are resolved in dinit's working directory; the target resolves
    them under its own root and with its own credentials.

    Descendants of ``pid`` whose fd 1 or fd 2 is the very open file description of ``pid``'s fd 1 or
    fd 2 (e.g. a shell's background jobs) get the corresponding path for that fd. A descendant that
    cannot be redirected (exited, not permitted, ...) is skipped silently.

    Returns the pids that were changed, ``pid`` first. Raises RedirectError (``pid`` untouched) or
    TargetExited (``pid`` exited while traced; its status has been consumed here). Blocks until the
    target has run the injected syscalls: about a millisecond per process, longer only if the target sits
    in uninterruptible sleep at that moment.
    """
    reason = supported()
    if reason is not None:
        raise RedirectError(reason)
    paths = {1: os.path.abspath(stdout_path), 2: os.path.abspath(stderr_path)}
    for path in paths.values():
        if len(os.fsencode(path)) >= _PAGE // 2:
            raise RedirectError(f"FIFO path too long: {path}")
    shared: dict[int, dict[int, str]] = {}
    with _Tracee.attached(pid, primary=True) as tracee:
        # Compared while pid is stopped, before its own fds change: afterwards nothing would match.
        shared = _sharing_descendants(pid, paths)
        tracee.redirect(paths)
    changed = [pid]
    for descendant, fd_paths in shared.items():
        try:
            with _Tracee.attached(descendant, primary=False) as tracee:
                tracee.redirect(fd_paths)
        except (RedirectError, _Vanished):
            continue
        changed.append(descendant)
    return changed


# -- which descendants share the target's stdout/stderr -------------------------------------------


def _same_description(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """True if the two fds are one open file description (same pipe end, same file offset, ...).

    kcmp says exactly that; where it is unavailable (Docker's default seccomp profile blocks it) the
    inode plus the open flags is a close enough stand-in.
    """
    try:
        return _raw_syscall(arch.NR_KCMP, pid1, pid2, _KCMP_FILE, fd1, fd2) == 0
    except OSError as error:
        if error.errno not in (errno.ENOSYS, errno.EPERM, errno.EACCES):
            return False  # EBADF (fd closed), ESRCH (process gone): not shared
    return _same_description_fallback(pid1, fd1, pid2, fd2)


def _fd_identity(pid: int, fd: int) -> tuple[int, int, int] | None:
    """(st_dev, st_ino, open flags) of one fd of another process, or None if it cannot be read.

    fdinfo's flags include the fd's own close-on-exec bit, which is not part of the description.
    """
    try:
        info = os.stat(f"/proc/{pid}/fd/{fd}")
        with open(f"/proc/{pid}/fdinfo/{fd}") as file:
            flags = next(int(line.split()[1], 8) for line in file if line.startswith("flags:"))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return info.st_dev, info.st_ino, flags & ~os.O_CLOEXEC


def _same_description_fallback(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """Approximation of kcmp(KCMP_FILE) from /proc: same inode and same open flags."""
    first = _fd_identity(pid1, fd1)
    return first is not None and first == _fd_identity(pid2, fd2)


def _sharing_descendants(pid: int, paths: dict[int, str]) -> dict[int, dict[int, str]]:
    """For each descendant, which of its fds 1/2 share one of pid's fds 1/2, and the path each gets.

    A descendant's fd n takes the path of pid's fd n if they match, else the path of pid's other std fd
    if it matches that one (a child started with ``2>&1`` inside a daemon whose stdout and stderr
    differ keeps writing where its parent's stdout goes).
    """
    result: dict[int, dict[int, str]] = {}
    for descendant in procfs.descendants(pid):
        fd_paths: dict[int, str] = {}
        for fd in (1, 2):
            for source in (fd, 3 - fd):
                if _same_description(pid, source, descendant, fd):
                    fd_paths[fd] = paths[source]
                    break
        if fd_paths:
            result[descendant] = fd_paths
    return result


# -- /proc facts ----------------------------------------------------------------------------------


def _precheck(pid: int) -> None:
    """Refuse targets we cannot or must not stop, before touching them at all.

    A zombie cannot be traced (and its status belongs to the reaper), a traced process has a tracer
    already, and a process in uninterruptible sleep would not stop for us until the sleep ends, which
    could block dinit's event loop for as long as, say, a hung NFS server likes.
    """
    if pid <= 0:
        raise RedirectError(f"invalid pid {pid}")
    if pid == os.getpid():
        raise RedirectError("cannot redirect dinit's own output")
    deadline = time.monotonic() + _D_STATE_GRACE
    while True:
        try:
            state, _, threads = procfs.stat(pid)
            tracer = int(procfs.status_field(pid, "TracerPid") or 0)
        except (OSError, ValueError, IndexError):
            raise RedirectError(f"process {pid} does not exist") from None
        if state in "ZX":
            if state == "Z" and threads > 1:  # a zombie leader counts itself until reaped
                raise RedirectError(f"the main thread of process {pid} has exited")
            raise RedirectError(f"process {pid} has already exited")
        if tracer:
            raise RedirectError(f"process {pid} is already being traced by process {tracer}")
        if state != "D":
            return
        if time.monotonic() >= deadline:
            raise RedirectError(f"process {pid} is in uninterruptible sleep")
        time.sleep(0.002)


def _mappings(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, name) of each mapping of ``pid``."""
    result = []
    with open(f"/proc/{pid}/maps") as file:
        for line in file:
            parts = line.split(maxsplit=5)
            start, end = (int(part, 16) for part in parts[0].split("-"))
            name = parts[5].strip() if len(parts) > 5 else ""
            result.append((start, end, parts[1], name))
    return result


def _signal_set(pid: int, name: str) -> int:
    """A bit set from /proc/<pid>/status: SigBlk, SigIgn, SigCgt (bit n-1 is signal n), CapEff..."""
    try:
        return int(procfs.status_field(pid, name) or "0", 16)
    except (OSError, ValueError):
        return 0


def _has_effect(pid: int, number: int) -> bool:
    """Would delivering this signal do anything? Not if it is ignored, explicitly or by default.

    Such a signal would have been discarded when sent to an untraced process, so dropping it is the
    faithful thing to do (re-sending a SIGCONT could even undo a later stop).
    """
    bit = 1 << (number - 1)
    if _signal_set(pid, "SigCgt") & bit:
        return True
    return not (_signal_set(pid, "SigIgn") & bit or number in _DEFAULT_IGNORED)


# -- the tracer -----------------------------------------------------------------------------------


@dataclass
class _Signal:
    """A signal taken out of the tracee's way while it ran our syscalls, with its original siginfo."""

    number: int
    siginfo: bytes


class _Tracee:
    """One ptrace session with the main thread of one process: attach, inject syscalls, restore, detach.

    ``primary`` marks dinit's own child: its exit is reported as TargetExited. For a descendant (not
    dinit's child) an exit is handed back to its real parent, or left for dinit's reaper if it was
    reparented to dinit meanwhile, and the session just ends with _Vanished.
    """

    def __init__(self, pid: int, primary: bool) -> None:
        self.pid = pid
        self.primary = primary
        self.saved = arch.Regs()
        self.syscall_insn = 0
        self.restart_nr = arch.NR_RESTART_SYSCALL
        self.signals: list[_Signal] = []
        self.stopped = False
        self.at_entry = False
        self.gone = False
        self.mem = -1

    @classmethod
    @contextlib.contextmanager
    def attached(cls, pid: int, primary: bool) -> Iterator[_Tracee]:
        """Attach (stopping the process), yield, and always restore and detach, whatever happened."""
        _precheck(pid)
        tracee = cls(pid, primary)
        tracee._seize()
        try:
            tracee._first_stop()
            yield tracee
        except OSError as error:  # ptrace or /proc/<pid>/mem refused mid-way
            raise RedirectError(f"redirecting process {pid} failed: {error}") from error
        finally:
            tracee._finish()

    # -- low level -------------------------------------------------------------------------------

    def _ptrace(self, request: int, addr: int = 0, data: int = 0) -> int:
        ctypes.set_errno(0)
        result = _libc.ptrace(request, self.pid, addr, data)
        if result == -1:
            err = ctypes.get_errno()
            if err:
                raise OSError(err, os.strerror(err))
        return int(result)

    def _getregs(self) -> arch.Regs:
        regs = arch.Regs()
        self._ptrace(arch.PTRACE_GETREGS, 0, ctypes.addressof(regs))
        return regs

    def _setregs(self, regs: arch.Regs) -> None:
        self._ptrace(arch.PTRACE_SETREGS, 0, ctypes.addressof(regs))

    def _resume(self, request: int, sig: int = 0) -> None:
        self._ptrace(request, 0, sig)
        self.stopped = False

    def _wait(self) -> int:
        """Wait for the next stop of the tracee and return its raw status; exits raise."""
        if not self.primary:
            self._peek_descendant_exit()
        _, status = os.waitpid(self.pid, _WALL)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.gone = True
            if self.primary:
                raise TargetExited(self.pid, status)
            raise _Vanished(self.pid)
        self.stopped = True
        return status

    def _peek_descendant_exit(self) -> None:
        """If a descendant exited, make sure its status reaches whoever must reap it, then give up.

        Waiting as its tracer would consume the status for good if dinit is also its real parent
        (it was reparented to dinit while we held it), so look first without reaping.
        """
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT | _WALL)
        if info is None or info.si_code not in (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED):
            return
        self.gone = True
        try:
            parent = procfs.stat(self.pid)[1]
        except (OSError, ValueError, IndexError):
            parent = 0
        if parent != os.getpid():
            # Reaping as tracer releases it to its real parent, which then gets its own notification.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, _WALL)
        raise _Vanished(self.pid)

    def _record(self, status: int) -> None:
        """Keep the signal of a signal-delivery-stop (with its siginfo) for re-delivery at the end."""
        info = ctypes.create_string_buffer(128)
        try:
            self._ptrace(_PTRACE_GETSIGINFO, 0, ctypes.addressof(info))
            siginfo = info.raw
        except OSError:
            siginfo = b""
        self.signals.append(_Signal(os.WSTOPSIG(status), siginfo))

    def _syscall_op(self) -> tuple[int, int]:
        """(op, nr-or-return value) of the current syscall stop, from PTRACE_GET_SYSCALL_INFO."""
        info = ctypes.create_string_buffer(88)
        self._ptrace(_PTRACE_GET_SYSCALL_INFO, len(info), ctypes.addressof(info))
        op, audit_arch = struct.unpack_from("<B3xI", info.raw)
        if op in (_SYSCALL_INFO_ENTRY, _SYSCALL_INFO_EXIT) and audit_arch != arch.AUDIT_ARCH:
            raise RedirectError(f"process {self.pid} runs a non-x86-64 syscall ABI")
        (value,) = struct.unpack_from("<q", info.raw, 24)
        return op, value

    def _run_to(self, op: int) -> int:
        """PTRACE_SYSCALL until the syscall stop ``op`` (entry or exit); other stops are absorbed.

        Signal-delivery-stops are suppressed and remembered; group-stops and interrupt stops are just
        resumed (leaving group-stop is undone by the kernel when we detach: it re-stops the tracee).
        """
        while True:
            self._resume(_PTRACE_SYSCALL)
            status = self._wait()
            sig = os.WSTOPSIG(status)
            if sig == _SYSCALL_STOP:
                got, value = self._syscall_op()
                self.at_entry = got == _SYSCALL_INFO_ENTRY
                if got == op:
                    return value
                continue
            if status >> 16 == 0:
                self._record(status)
            # PTRACE_EVENT_STOP (interrupt or group-stop) and anything unexpected: just go on.

    def _peek(self, address: int, size: int) -> bytes:
        return os.pread(self.mem, size, address)

    # -- attaching -------------------------------------------------------------------------------

    def _seize(self) -> None:
        try:
            self._ptrace(_PTRACE_SEIZE, 0, _PTRACE_O_TRACESYSGOOD)
        except OSError as error:
            self._explain_seize_failure(error)
        with contextlib.suppress(OSError):  # fails only if it is exiting: _first_stop's wait says so
            self._ptrace(_PTRACE_INTERRUPT)

    def _explain_seize_failure(self, error: OSError) -> None:
        """Turn a PTRACE_SEIZE failure into a RedirectError that says what actually happened."""
        if error.errno == errno.ESRCH:
            raise RedirectError(f"process {self.pid} does not exist") from None
        try:
            state = procfs.stat(self.pid)[0]
        except (OSError, ValueError, IndexError):
            raise RedirectError(f"process {self.pid} does not exist") from None
        if state in "ZX":
            raise RedirectError(f"process {self.pid} has already exited") from None
        hint = ""
        if os.geteuid() == 0 and not _signal_set(os.getpid(), "CapEff") >> _CAP_SYS_PTRACE & 1:
            hint = " (dinit lacks CAP_SYS_PTRACE, needed for other users' and non-dumpable processes)"
        raise RedirectError(f"ptrace not permitted: {error}{hint}") from None

    def _first_stop(self) -> None:
        """Wait for the tracee to stop, save its registers and find a syscall instruction to reuse."""
        status = self._wait()
        if status >> 16 == 0 and os.WSTOPSIG(status) != _SYSCALL_STOP:
            self._record(status)  # a signal was on its way in: hold it back until we are done
        self.saved = self._getregs()
        if self.saved.cs != arch.USER_CS_64:
            raise RedirectError(f"process {self.pid} is a 32-bit process, which is not supported")
        try:
            self.mem = os.open(f"/proc/{self.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except OSError as error:
            raise RedirectError(f"cannot access the memory of process {self.pid}: {error}") from None
        self.syscall_insn = self._find_syscall_insn()

    def _find_syscall_insn(self) -> int:
        """Address of a ``syscall`` instruction in the tracee, where injected syscalls will run.

        Stopped inside a syscall, rip-2 is the instruction it used; otherwise the vDSO always has one,
        and as a last resort any executable mapping will (the two bytes need not start an instruction
        of the original code: executed from there they are a ``syscall`` all the same).
        """
        if _signed(self.saved.orig_rax) >= 0 and self.saved.rip >= 2:
            with contextlib.suppress(OSError):
                previous = self._peek(self.saved.rip - 2, 2)
                if previous == arch.SYSCALL_INSN:
                    return int(self.saved.rip) - 2
                if previous == arch.INT80_INSN:
                    self.restart_nr = arch.NR_I386_RESTART_SYSCALL
        try:
            maps = _mappings(self.pid)
        except OSError as error:
            raise RedirectError(f"cannot read the mappings of process {self.pid}: {error}") from None
        candidates = [m for m in maps if m[3] == "[vdso]"] + [
            m for m in maps if m[2].startswith("r-x") and m[3] not in ("[vdso]", "[vsyscall]")
        ]
        for start, end, _, _ in candidates:
            found = self._search(start, end)
            if found is not None:
                return found
        raise RedirectError(f"found no syscall instruction in process {self.pid}")

    def _search(self, start: int, end: int) -> int | None:
        """First ``0f 05`` in [start, end) of the tracee's memory, reading in bounded chunks."""
        chunk = 1 << 20
        address = start
        while address < end:
            try:
                data = self._peek(address, min(chunk + 1, end - address))
            except OSError:
                return None
            index = data.find(arch.SYSCALL_INSN)
            if index >= 0:
                return address + index
            if len(data) <= 1:
                return None
            address += len(data) - 1  # overlap one byte: the pair may straddle two chunks
        return None

    # -- injection -------------------------------------------------------------------------------

    def syscall(self, nr: int, *args: int) -> int:
        """Run one syscall inside the tracee and return its result (negative errno on failure)."""
        for _ in range(_RETRIES):
            regs = arch.Regs.from_buffer_copy(self.saved)
            regs.rip = self.syscall_insn
            regs.rax = nr
            regs.orig_rax = _MASK64  # -1: not in a syscall, so the kernel applies no restart fix-up
            for name, value in zip(arch.ARGUMENT_REGISTERS, args, strict=False):
                setattr(regs, name, value & _MASK64)
            self._setregs(regs)
            entered = self._run_to(_SYSCALL_INFO_ENTRY)
            if entered != nr:
                raise RedirectError(f"process {self.pid} entered syscall {entered} instead of {nr}")
            result = self._run_to(_SYSCALL_INFO_EXIT)
            if result not in _RETRY:
                return result
        return result

    def _checked(self, what: str, result: int) -> int:
        if -4095 <= result < 0:
            raise RedirectError(f"{what} failed in process {self.pid}: {os.strerror(-result)}")
        return result

    def redirect(self, fd_paths: dict[int, str]) -> None:
        """Point each fd of ``fd_paths`` at an O_WRONLY open of its path, all opens before any change."""
        page = self._checked("mmap", self.syscall(
            arch.NR_MMAP, 0, _PAGE, _PROT_READ_WRITE, _MAP_PRIVATE_ANONYMOUS, -1, 0))
        try:
            opened: dict[int, int] = {}
            try:
                for index, (fd, path) in enumerate(sorted(fd_paths.items())):
                    address = page + index * (_PAGE // 2)
                    os.pwrite(self.mem, os.fsencode(path) + b"\0", address)
                    opened[fd] = self._open(address, path)
                for fd, temporary in opened.items():
                    self._checked(f"dup3 onto fd {fd}", self.syscall(arch.NR_DUP3, temporary, fd, 0))
            finally:
                for temporary in opened.values():
                    self._cleanup(arch.NR_CLOSE, temporary)
        finally:
            self._cleanup(arch.NR_MUNMAP, page, _PAGE)

    def _cleanup(self, nr: int, *args: int) -> None:
        """An undo step that must not hide the error being handled; pointless once the tracee is gone."""
        if not self.gone:
            self.syscall(nr, *args)

    def _open(self, address: int, path: str) -> int:
        """Open ``path`` (already at ``address`` in the tracee) write-only as an fd >= 3.

        O_NONBLOCK makes a FIFO without reader fail with ENXIO instead of hanging the tracee (and
        us); it is cleared again so the program gets the blocking stdout it expects. An fd below 3 would
        mean the program had closed a std fd, and dup3 onto itself is an error: move it up.
        """
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        result = self.syscall(arch.NR_OPENAT, _AT_FDCWD, address, flags, 0)
        if result == -errno.ENXIO:
            raise RedirectError(f"nobody has {path} open for reading")
        fd = self._checked(f"opening {path}", result)
        if fd < 3:
            moved = self.syscall(arch.NR_FCNTL, fd, _F_DUPFD_CLOEXEC, 3)
            self.syscall(arch.NR_CLOSE, fd)
            fd = self._checked("fcntl(F_DUPFD_CLOEXEC)", moved)
        try:
            self._checked("fcntl(F_SETFL)", self.syscall(arch.NR_FCNTL, fd, _F_SETFL, 0))
        except RedirectError:
            self._cleanup(arch.NR_CLOSE, fd)
            raise
        return fd

    # -- restoring and detaching -----------------------------------------------------------------

    def _restarted(self) -> arch.Regs:
        """The saved registers with the syscall-restart fix-up the kernel would have applied.

        At the interrupt stop the tracee sat inside get_signal() with the interrupted syscall's
        -ERESTART* code in rax; the kernel fixes that up on its way out of get_signal(), and we detach
        from a syscall-exit stop instead. (Detaching happens to send it through get_signal() again on
        current kernels, which then finds nothing to fix in these registers.)
        """
        regs = arch.Regs.from_buffer_copy(self.saved)
        if _signed(regs.orig_rax) < 0:
            return regs
        code = -_signed(regs.rax)
        if code in (_ERESTARTSYS, _ERESTARTNOINTR, _ERESTARTNOHAND):
            regs.rax = regs.orig_rax
            regs.rip -= 2
        elif code == _ERESTART_RESTARTBLOCK:
            regs.rax = self.restart_nr
            regs.rip -= 2
        return regs

    def _finish(self) -> None:
        """Leave the tracee as it was: never stopped by us, registers restored, signals given back.

        Runs on every path out of a session. TargetExited (or _Vanished) can still come out of here,
        since the tracee may be killed at any moment; nothing else does.
        """
        try:
            if not self.gone:
                self._restore_and_detach()
        finally:
            if self.mem >= 0:
                os.close(self.mem)
                self.mem = -1

    def _restore_and_detach(self) -> None:
        try:
            if not self.stopped:
                self._stop_again()
            if self.at_entry:
                self._skip_syscall()
            self._detach()
        except OSError as error:
            if error.errno != errno.ESRCH:
                raise RedirectError(f"detaching from process {self.pid} failed: {error}") from error
            self._collect_death()

    def _collect_death(self) -> None:
        """ESRCH while we believed the tracee stopped: it was SIGKILLed. Collect that exit (raises)."""
        for _ in range(_RETRIES):
            try:
                status = self._wait()
            except ChildProcessError:
                self.gone = True
                return
            if status >> 16 == 0 and os.WSTOPSIG(status) != _SYSCALL_STOP:
                self._record(status)
            with contextlib.suppress(OSError):
                self._detach()
                return

    def _stop_again(self) -> None:
        """An error left the tracee running mid-session: interrupt it so it can be restored."""
        with contextlib.suppress(OSError):
            self._ptrace(_PTRACE_INTERRUPT)
        status = self._wait()
        if os.WSTOPSIG(status) == _SYSCALL_STOP:
            self.at_entry = self._syscall_op()[0] == _SYSCALL_INFO_ENTRY
        elif status >> 16 == 0:
            self._record(status)

    def _skip_syscall(self) -> None:
        """At a syscall-entry stop, cancel the syscall (nr -1) and go to its exit stop."""
        regs = self._getregs()
        regs.orig_rax = _MASK64
        self._setregs(regs)
        self._run_to(_SYSCALL_INFO_EXIT)

    def _detach(self) -> None:
        """Restore the registers and detach, re-delivering any signal we held back.

        Without held-back signals: registers with the restart fix-up, detach. With some that the
        tracee can take right now: the original registers (still saying "syscall interrupted"), the
        signals queued again with tgkill, and the detach done from the signal-delivery-stop that
        follows, so the kernel itself decides between restarting the syscall and failing it with EINTR
        (SA_RESTART, pause(), sigsuspend()...), exactly as if we had never been there.
        """
        self.signals = [held for held in self.signals if _has_effect(self.pid, held.number)]
        if not self.signals:
            self._setregs(self._restarted())
            self._ptrace(_PTRACE_DETACH)
            return
        if not self._queue_signals():
            # Cannot send them back ourselves: hand the first one to the detach (kernel send_sig).
            self._setregs(self._restarted())
            self._ptrace(_PTRACE_DETACH, 0, self.signals[0].number)
            return
        blocked = _signal_set(self.pid, "SigBlk")
        if all(blocked >> (held.number - 1) & 1 for held in self.signals):
            # All blocked (the tracee was in sigsuspend() or similar): they stay pending for later.
            self._setregs(self._restarted())
            self._ptrace(_PTRACE_DETACH)
            return
        self._setregs(self.saved)
        self._resume(_PTRACE_CONT)
        while True:
            status = self._wait()
            sig = os.WSTOPSIG(status)
            if status >> 16 == 0 and sig != _SYSCALL_STOP:
                self._restore_siginfo(sig)
                self._ptrace(_PTRACE_DETACH, 0, sig)
                return
            if status >> 16 == _PTRACE_EVENT_STOP:
                self._ptrace(_PTRACE_DETACH)  # inside get_signal() too; queued signals stay pending
                return
            self._resume(_PTRACE_CONT)

    def _queue_signals(self) -> bool:
        """Send the held-back signals to the tracee's main thread again; False if none could be sent."""
        sent = 0
        for held in self.signals:
            with contextlib.suppress(OSError):
                _raw_syscall(arch.NR_TGKILL, self.pid, self.pid, held.number)
                sent += 1
        return sent > 0

    def _restore_siginfo(self, number: int) -> None:
        """Give the signal being delivered its original siginfo (sender, value...), not tgkill's."""
        for held in self.signals:
            if held.number == number and len(held.siginfo) == 128:
                buffer = ctypes.create_string_buffer(held.siginfo, 128)
                with contextlib.suppress(OSError):
                    self._ptrace(_PTRACE_SETSIGINFO, 0, ctypes.addressof(buffer))
                return
