"""What dinit reads about processes from ``/proc``: state, age, parent, children, descendants, command
line, name, session (§6). One module, so dinit's programs, reparenting and redirection agree on how a
fact is read (e.g. what a zombie leader with live threads is).

Every reader raises OSError when the process is gone unless its docstring says otherwise.
"""

from __future__ import annotations

import os
import time

from ..lean import suppress

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[bytes]:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces and parens):
    index 0 is the state, 1 the parent, 3 the session, 17 the thread count, 19 the start time."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        data = file.read()
    return data[data.rindex(b")") + 2:].split()


def stat(pid: int) -> tuple[str, int, int]:
    """(state letter, parent PID, thread count), the state as the kernel shows it."""
    fields = _stat_fields(pid)
    return fields[0].decode(), int(fields[1]), int(fields[17])


def state_and_age(pid: int) -> tuple[str, float]:
    """The process state letter and its age in seconds, at least: the start time is counted in clock
    ticks, rounded down, so one tick is taken off. ``Z`` means every thread has exited: a main
    thread that exited while other threads run shows ``Z`` too, but that process is alive, so it
    gets its live state ``R`` here."""
    fields = _stat_fields(pid)
    started = (int(fields[19]) + 1) / _CLOCK_TICKS
    state = fields[0].decode()
    if state == "Z" and int(fields[17]) > 1:  # num_threads: a zombie leader counts itself
        state = "R"
    return state, time.clock_gettime(time.CLOCK_BOOTTIME) - started


def session_of(pid: int) -> int:
    """The session ID of a process."""
    return int(_stat_fields(pid)[3])


def session_members(session: int) -> list[int]:
    """Every process whose session ID is ``session`` (zombies included); never raises."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with suppress(OSError, ValueError, IndexError):
                if session_of(int(name)) == session:
                    members.append(int(name))
    return members


def status_field(pid: int, name: str) -> str:
    """One field of ``/proc/<pid>/status`` (e.g. TracerPid, SigBlk, CapEff); '' if absent."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    return ""


def children(pid: int | str = "self") -> set[int]:
    """Direct children of every thread of a process (dinit's own by default), living or zombie, from
    the threads' children lists: one small read each, no walk of /proc. Empty if it is gone.

    For dinit itself only the main thread's list is read: no other thread of dinit starts a
    process, and the kernel gives an orphan to the reaper's first live thread, the main one."""
    if pid == "self":
        return _task_children(f"/proc/self/task/{os.getpid()}/children")
    pids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for task in tasks:
        pids |= _task_children(f"/proc/{pid}/task/{task}/children")
    return pids


def _task_children(path: str) -> set[int]:
    try:
        with open(path, "rb") as file:
            return set(map(int, file.read().split()))
    except OSError:
        return set()


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid``, breadth first (parents before their children); never raises."""
    seen: set[int] = {pid}
    order: list[int] = []
    queue = [pid]
    while queue:
        for child in sorted(children(queue.pop(0))):
            if child not in seen:
                seen.add(child)
                order.append(child)
                queue.append(child)
    return order


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def cmdline(pid: int) -> str:
    """The command line with arguments joined by spaces (empty for zombies and kernel threads, and
    when gone). A process whose main thread has exited shows none of its own: a live thread's is
    read then."""
    data = _read(f"/proc/{pid}/cmdline")
    if not data:
        with suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                if data := _read(f"/proc/{pid}/task/{task}/cmdline"):
                    break
    return os.fsdecode(data.rstrip(b"\0").replace(b"\0", b" "))


def comm(pid: int) -> str:
    """The kernel's short name of a process (``/proc/<pid>/comm``), readable for zombies too; '' if
    gone."""
    return os.fsdecode(_read(f"/proc/{pid}/comm").removesuffix(b"\n"))


def program_name(pid: int, command: str) -> str:
    """The name a reparented process is labelled with (§6.2, §16): the last path part of the first
    word of its command line with one trailing ``:`` removed -- a daemon that set its process title
    (``nginx: master process``, ``postgres: checkpointer``) is named by its program, not the title --
    else its ``comm``. A command line that begins with a space has an empty first word (``exec -a ""``
    joins as `` 102``): its arguments are no name."""
    words = [] if command[:1].isspace() else command.split(maxsplit=1)
    if words and (name := words[0].rsplit("/", 1)[-1].removesuffix(":")):
        return name
    return comm(pid) or "unknown"


def refuses_signal(pid: int, signum: int) -> str | None:
    """``"ignores"`` or ``"blocks"`` if the process has ``signum`` ignored (``SigIgn``) or blocked
    (``SigBlk``, its main thread's mask) right now, else None -- also when it is gone: read at the
    moment dinit sends a stop signal, to say why a service may never stop (§15)."""
    try:
        masks = _signal_masks(pid)
    except (OSError, ValueError):
        return None
    bit = 1 << (signum - 1)
    if masks.get(b"SigIgn", 0) & bit:
        return "ignores"
    return "blocks" if masks.get(b"SigBlk", 0) & bit else None


def blocked_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` is still blocked and pending (``SigPnd``/``ShdPnd``): a process that only
    blocked it for a moment (a shell waiting for its child) or reads it from a signalfd has taken it
    by then; one that keeps it blocked has not. False when it is gone."""
    try:
        masks = _signal_masks(pid)
    except (OSError, ValueError):
        return False
    pending = masks.get(b"ShdPnd", 0) | masks.get(b"SigPnd", 0)
    return bool(masks.get(b"SigBlk", 0) & pending & 1 << (signum - 1))


_MASKS = (b"SigIgn", b"SigBlk", b"SigPnd", b"ShdPnd")


def _signal_masks(pid: int) -> dict[bytes, int]:
    """The signal masks of ``/proc/<pid>/status`` (``SigIgn:\t0000000000001000`` lines) from one
    read, found by name: teardown asks this of every service at once (§15)."""
    fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 16384)
    finally:
        os.close(fd)
    masks: dict[bytes, int] = {}
    for key in _MASKS:
        start = data.find(b"\n%s:" % key)
        if start >= 0:
            start += len(key) + 2
            masks[key] = int(data[start:data.find(b"\n", start)], 16)
    return masks


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets among a process's open fds (``socket:[N]`` links); never raises."""
    inodes: set[int] = set()
    directory = f"/proc/{pid}/fd"
    try:
        names = os.listdir(directory)
    except OSError:
        return inodes
    for name in names:
        with suppress(OSError):
            target = os.readlink(f"{directory}/{name}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


#: ``st`` of a listening TCP socket, and of an unconnected (bound, receiving) UDP socket.
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"
#: ``__SO_ACCEPTCON`` in /proc/net/unix flags: a listening stream socket.
_ACCEPTCON = 0x10000
_UNIX_DGRAM = 2


def listening_inet(protocol: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` (``tcp``: state LISTEN; ``udp``: bound and not
    connected), over IPv4 and IPv6 and any local address; never raises."""
    state = _TCP_LISTEN if protocol == "tcp" else _UDP_UNCONNECTED
    inodes: set[int] = set()
    for table in (protocol, protocol + "6"):
        for fields in _table(f"/proc/net/{table}"):
            if len(fields) > 9 and fields[3] == state and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def listening_unix(path: str) -> set[int]:
    """Inodes of the unix sockets bound to ``path`` that accept connections (or receive datagrams)."""
    inodes: set[int] = set()
    for fields in _table("/proc/net/unix"):
        if len(fields) > 7 and fields[7] == path and (
                int(fields[3], 16) & _ACCEPTCON or int(fields[4], 16) == _UNIX_DGRAM):
            inodes.add(int(fields[6]))
    return inodes


def _table(path: str) -> list[list[str]]:
    """The rows of a /proc/net table without its header; empty when it cannot be read."""
    try:
        with open(path, "rb") as file:
            lines = file.read().decode(errors="replace").splitlines()[1:]
    except OSError:
        return []
    return [line.split() for line in lines]
