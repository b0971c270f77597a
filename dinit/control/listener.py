"""Where the control socket lives and binding it (§12): the part of the control socket that must
be done before the first service starts (programs get ``DINIT_SOCKET``, and an explicit path that
cannot be used is a configuration error). Serving it is ``server``, set up once the services run.

Sockets are the C module's (``_socket``): ``socket.py`` converts its constants to enums on import,
which would add about 3 ms to every start of dinit.
"""

from __future__ import annotations

import _socket
import errno
import os
import stat

from ..lean import suppress
from ..log import logger
from .protocol import DEFAULT_PATHS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from ..lean import NamedTuple


class SocketUnusable(Exception):
    """A socket location that cannot be used; the message says why."""


class AnotherDinit(Exception):
    """The socket answers: another dinit owns it."""


class Listener(NamedTuple):
    """A bound, listening control socket and the inode it created (so exit removes only its own)."""

    sock: _socket.socket
    path: str
    inode: int

    def close(self) -> None:
        with suppress(OSError):
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        self.sock.close()


def _own_directory(directory: str) -> None:
    """Create ``directory`` 0700, or accept an existing one only if dinit's user owns it and nobody
    else may write to it: otherwise someone else could put their own socket there (§12)."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise SocketUnusable(f"cannot create {directory}: {error.strerror}") from None
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise SocketUnusable(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise SocketUnusable(f"{directory} is owned by uid {info.st_uid}, not dinit's uid {os.geteuid()}")
    if info.st_mode & 0o022:
        raise SocketUnusable(f"{directory} is group- or world-writable (mode {info.st_mode & 0o7777:o})")


def _clear_stale(path: str) -> None:
    """``path`` exists: a socket nobody listens on is stale and removed; one that answers belongs to
    another dinit; anything else is not dinit's to remove."""
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketUnusable(f"{path} exists and is not a socket")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except TimeoutError:
        raise AnotherDinit(path) from None  # alive but its backlog is full
    except OSError as error:
        raise SocketUnusable(f"cannot check {path}: {error.strerror}") from None
    finally:
        probe.close()
    raise AnotherDinit(path)


def bind(path: str) -> Listener:
    """Listen on ``path``, created mode 0600 (umask during bind, so it is never more open, not even
    between bind and listen). Raises SocketUnusable or AnotherDinit."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        try:
            sock.bind(path)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            _clear_stale(path)
            sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(64)
        return Listener(sock, path, os.lstat(path).st_ino)
    except OSError as error:
        sock.close()
        raise SocketUnusable(f"cannot listen on {path}: {error.strerror or error}") from None
    except (SocketUnusable, AnotherDinit):
        sock.close()
        raise
    finally:
        os.umask(old_umask)


def open_listener(setting: str) -> Listener | None:
    """The control socket for ``DINIT_SOCKET`` (a path, or "" for the defaults; §12). A default
    location that cannot be used is an info line; an explicit path that cannot be used raises
    SocketUnusable (a configuration error); a socket that answers is another dinit's: a warning,
    and no control socket."""
    try:
        if setting:
            return bind(setting)
        for path in DEFAULT_PATHS:
            try:
                _own_directory(os.path.dirname(path))
                return bind(path)
            except SocketUnusable as error:
                logger.info("control socket: {why}", why=error)
        logger.info("no usable control socket location, running without control")
        return None
    except AnotherDinit as error:
        logger.warning("control socket {path} answers: another dinit owns it, running without control",
                       path=error)
        return None
