"""Talking to a running dinit (§12): find its socket, send requests, read answers.

Imports only the standard library and ``protocol``, so ``dinit status`` costs little more than
starting Python.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from . import protocol

#: How long connecting and an answer that does not wait may take.
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 10.0


class Unreachable(Exception):
    """No dinit answers; the message says where the client looked."""


def socket_paths(environ: Mapping[str, str]) -> list[str]:
    """``DINIT_SOCKET`` (which dinit gives its programs), else the default locations in order."""
    setting = environ.get("DINIT_SOCKET", "").strip()
    if setting.lower() == "off":
        return []
    return [setting] if setting else list(protocol.DEFAULT_PATHS)


def connect(environ: Mapping[str, str]) -> socket.socket:
    """The first socket that answers (§12 clarification)."""
    paths = socket_paths(environ)
    if not paths:
        raise Unreachable("the control socket is off (DINIT_SOCKET=off)")
    reasons = []
    for path in paths:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except OSError as error:
            sock.close()
            reasons.append(f"{path}: {error.strerror or error}")
            continue
        return sock
    raise Unreachable("cannot reach dinit: " + "; ".join(reasons))


class Client:
    """One connection, one request at a time."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._sock = connect(environ)
        self._buffer = b""
        self._next_id = 0

    def request(self, cmd: str, args: dict[str, Any] | None = None,
                timeout: float | None = ANSWER_TIMEOUT) -> dict[str, Any]:
        """Send one request and return its answer (the whole message, ``ok`` and ``result`` or
        ``error``). ``timeout`` None waits as long as dinit takes (``submit --wait``)."""
        self._next_id += 1
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(protocol.encode_request(self._next_id, cmd, args))
            while True:
                line = self._line()
                answer = protocol.decode_response(line)
                if answer.get("id") in (self._next_id, None):
                    return answer
        except TimeoutError:
            raise Unreachable("dinit did not answer in time") from None
        except (OSError, ValueError) as error:
            raise Unreachable(f"lost the connection to dinit: {error}") from None

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Send a subscription request (``events``) and yield each line's object until dinit closes
        the connection: event objects, or one error answer (it has ``ok``)."""
        self._next_id += 1
        try:
            self._sock.settimeout(None)
            self._sock.sendall(protocol.encode_request(self._next_id, cmd, args))
            while True:
                try:
                    line = self._line()
                except ConnectionError:
                    return
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not a dinit event")
                yield message
        except (OSError, ValueError) as error:
            raise Unreachable(f"lost the connection to dinit: {error}") from None

    def _line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("dinit closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def close(self) -> None:
        self._sock.close()
