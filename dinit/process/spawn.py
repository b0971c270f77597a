"""Starting programs: glibc's ``posix_spawn`` called through ``_ctypes`` (§3, ``libc.py``).

``posix_spawn`` is a vfork-style clone: fast even when dinit's heap is large, and exec failures are
reported synchronously. Python's ``os.posix_spawn`` cannot be used as is: it refuses glibc's two
internal signals (32 and 33) in ``setsigdef``, and glibc's child code sets exactly those to "ignored"
unless they are in that set, so every program would start with them ignored; it also has no
"change directory" action. Calling glibc directly gives every program all signals at their defaults,
an empty signal mask, its own session, its working directory, and fds 0-2 from the given fds (all of
dinit's other fds are close-on-exec).
"""

from __future__ import annotations

import os

from .libc import Array, byref, c_char, c_char_p, c_int, c_short, libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


# <spawn.h> flags (glibc).
_SETPGROUP = 0x02
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80

# Opaque glibc structures (80 and 336 bytes on 64-bit glibc); generously sized buffers.
_ATTR_SIZE = 1024
_ACTIONS_SIZE = 1024
# sigset_t is 1024 bits; "every signal" is every bit of the first 64 (signal n is bit n-1).
_SIGSET_SIZE = 128
_ALL_SIGNALS = b"\xff" * 8 + b"\0" * (_SIGSET_SIZE - 8)
_NO_SIGNALS = b"\0" * _SIGSET_SIZE


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(result, f"{what}: {os.strerror(result)}")


def _strings(items: Sequence[bytes]) -> Array[c_char_p]:
    """A NULL-terminated ``char *[]``."""
    return (c_char_p * (len(items) + 1))(*items, None)


def spawn(path: str, argv: Sequence[str], cwd: str, env: Mapping[str, str],
          stdin: int, stdout: int, stderr: int, search_path: bool = False,
          foreground_tty: int | None = None, extra_fds: Mapping[int, int] | None = None) -> int:
    """Start a program and return its PID; raise OSError (errno of the failed step, e.g. ENOENT,
    EACCES, ENOEXEC) when it cannot be started. ``search_path`` looks ``path`` up in PATH.

    Every program gets a session of its own, except with ``foreground_tty``: then it stays in
    dinit's session (which holds the terminal) in a new process group that becomes the terminal's
    foreground group before exec, so an interactive shell has job control (§17).

    ``extra_fds`` maps fds of dinit to the numbers (> 2) they get in the program, e.g. s6's
    notification-fd (§13)."""
    actions = (c_char * _ACTIONS_SIZE)()
    attr = (c_char * _ATTR_SIZE)()
    _check(libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init")
    _check(libc.posix_spawnattr_init(attr), "posix_spawnattr_init")
    try:
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            _check(libc.posix_spawn_file_actions_adddup2(actions, fd, target), "adddup2")
        for fd, target in (extra_fds or {}).items():  # dup2 onto itself clears close-on-exec (glibc)
            _check(libc.posix_spawn_file_actions_adddup2(actions, fd, target), "adddup2")
        _check(libc.posix_spawn_file_actions_addchdir_np(actions, os.fsencode(cwd)), "addchdir")
        group = _SETSID
        if foreground_tty is not None:
            group = _SETPGROUP  # process group 0: a new group led by the program itself
            _check(libc.posix_spawn_file_actions_addtcsetpgrp_np(actions, foreground_tty), "tcsetpgrp")
        _check(libc.posix_spawnattr_setflags(attr, c_short(group | _SETSIGMASK | _SETSIGDEF)),
               "setflags")
        _check(libc.posix_spawnattr_setsigmask(attr, _NO_SIGNALS), "setsigmask")
        _check(libc.posix_spawnattr_setsigdefault(attr, _ALL_SIGNALS), "setsigdefault")
        pid = c_int()
        start = libc.posix_spawnp if search_path else libc.posix_spawn
        error = start(byref(pid), os.fsencode(path), actions, attr,
                      _strings([os.fsencode(arg) for arg in argv]),
                      _strings([os.fsencode(f"{key}={value}") for key, value in env.items()]))
        if error:
            raise OSError(error, os.strerror(error), path)
        return pid.value
    finally:
        libc.posix_spawn_file_actions_destroy(actions)
        libc.posix_spawnattr_destroy(attr)
