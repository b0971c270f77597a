"""The readiness files of a service directory (§13): parsed and checked with the rest of §2's files,
before anything is started, so a malformed one is a broken service directory.

Kept free of imports from the service package, which imports this module.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NamedTuple
else:
    from ..lean import NamedTuple


#: Protocols a ``ready-port`` line may name; a bare port means ``tcp``.
PROTOCOLS = ("tcp", "udp", "unix")


class ReadinessError(Exception):
    """A malformed readiness file; the message names the file and what is wrong."""


class Port(NamedTuple):
    """One ``ready-port`` line: ``tcp``/``udp`` with a port number, or ``unix`` with a path."""

    protocol: str
    port: int = 0
    path: str = ""


class Readiness(NamedTuple):
    """The readiness sources of a service; all present must pass before it is ``running``."""

    notification_fd: int | None = None
    notify_socket: bool = False
    check: str | None = None
    ports: tuple[Port, ...] = ()

    @property
    def any(self) -> bool:
        return self.notification_fd is not None or self.notify_socket or self.check is not None \
            or bool(self.ports)


NONE = Readiness()


def _text(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return file.read().decode()
    except UnicodeDecodeError:
        raise ReadinessError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise ReadinessError(f"{path}: {error.strerror}") from None


def parse_notification_fd(text: str) -> int:
    """s6's ``notification-fd``: one integer, at least 3 (0-2 are the program's stdio)."""
    word = text.strip()
    if not (word.isascii() and word.isdigit()) or int(word) < 3 or int(word) > 1023:
        raise ValueError(f"expected one integer from 3 to 1023, got {word!r}")
    return int(word)


def parse_port_line(line: str) -> Port:
    """``8080``, ``tcp:8080``, ``udp:53`` or ``unix:/run/app.sock``."""
    protocol, colon, rest = line.partition(":")
    if not colon:
        protocol, rest = "tcp", line
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} in {line!r} (accepted: tcp, udp, unix)")
    if protocol == "unix":
        if not rest.startswith("/"):
            raise ValueError(f"{line!r}: a unix socket needs an absolute path")
        return Port("unix", path=os.path.normpath(rest))
    if not (rest.isascii() and rest.isdigit()) or not 1 <= int(rest) <= 65535:
        raise ValueError(f"{line!r}: the port must be a number from 1 to 65535")
    return Port(protocol, int(rest))


def parse_ports(text: str) -> tuple[Port, ...]:
    """One port per line; blank lines and ``#`` comments are skipped; at least one is required."""
    lines = [line.strip() for line in text.splitlines()]
    ports = tuple(parse_port_line(line) for line in lines if line and not line.startswith("#"))
    if not ports:
        raise ValueError("no port given")
    return ports


def _regular(path: str) -> bool:
    """Whether an optional file is present; present but not a regular file is an error."""
    if not os.path.lexists(path):
        return False
    if not os.path.exists(path):
        raise ReadinessError(f"{path}: dangling symlink")
    if not os.path.isfile(path):
        raise ReadinessError(f"{path}: not a regular file")
    return True


def load(directory: str) -> Readiness:
    """The readiness sources of the service in ``directory``. Raises ReadinessError."""
    values: dict[str, object] = {}
    parsers: tuple[tuple[str, str, Callable[[str], object]], ...] = (
        ("notification-fd", "notification_fd", parse_notification_fd), ("ready-port", "ports", parse_ports))
    for file, field, parse in parsers:
        path = os.path.join(directory, file)
        if _regular(path):
            try:
                values[field] = parse(_text(path))
            except ValueError as error:
                raise ReadinessError(f"{path}: {error}") from None
    path = os.path.join(directory, "notify-socket")
    if _regular(path):
        values["notify_socket"] = True
    path = os.path.join(directory, "check")
    if _regular(path):
        if not os.access(path, os.X_OK):
            raise ReadinessError(f"{path}: not executable")
        values["check"] = path
    return Readiness(**values)  # type: ignore[arg-type]
