"""The control protocol (§12): JSON lines over a stream socket, one request object per line,
answered in order.

``{"v":1,"id":7,"cmd":"stop","args":{...}}`` is answered by ``{"v":1,"id":7,"ok":true,"result":...}``
or ``{"v":1,"id":7,"ok":false,"error":{"code":"unknown-service","message":"..."}}``. The codec is
shared by server and client and imports only the standard library, so the client stays fast;
``json`` itself is imported on first use, so dinit's start-up does not pay for it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from ..lean import NamedTuple


VERSION = 1
#: The default socket locations, in order (§12): dinit listens on the first it can own; a client
#: without DINIT_SOCKET uses the first that answers.
DEFAULT_PATHS = ("/run/dinit/control.sock", "/dev/shm/dinit/control.sock")
#: Longest request line, newline included (§12).
MAX_LINE = 64 * 1024
#: Connections served at once; one more is answered ``busy`` and closed (§12).
MAX_CONNECTIONS = 32
#: A request line must arrive within this many seconds of the connection becoming idle (§12).
REQUEST_TIMEOUT = 10.0
#: Output a connection may leave unread before it is disconnected (§12: subscribers; also answers).
MAX_QUEUED = 1 << 20

BAD_REQUEST = "bad-request"
UNKNOWN_COMMAND = "unknown-command"
UNKNOWN_SERVICE = "unknown-service"
PERMISSION_DENIED = "permission-denied"
BUSY = "busy"
TEARING_DOWN = "tearing-down"
NAME_IN_USE = "name-in-use"
EXEC_FAILED = "exec-failed"
TIMEOUT = "timeout"
#: Every error code (§12).
CODES = frozenset({BAD_REQUEST, UNKNOWN_COMMAND, UNKNOWN_SERVICE, PERMISSION_DENIED, BUSY, TEARING_DOWN,
                   NAME_IN_USE, EXEC_FAILED, TIMEOUT})

RequestId = int | str | None


class ProtocolError(Exception):
    """A request that cannot be served; becomes one error answer."""

    def __init__(self, code: str, message: str, request_id: RequestId = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.extra = extra or {}


class Request(NamedTuple):
    id: RequestId
    cmd: str
    args: dict[str, Any]


def _dumps(value: Any) -> bytes:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")


def encode_request(request_id: RequestId, cmd: str, args: dict[str, Any] | None = None) -> bytes:
    return _dumps({"v": VERSION, "id": request_id, "cmd": cmd, "args": args or {}}) + b"\n"


def decode_request(line: bytes) -> Request:
    """Parse one request line (without its newline). Raises ProtocolError(bad-request) carrying the
    request's id when one could be read, so even a bad request is answered under its own id."""
    import json

    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_REQUEST, "request is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(BAD_REQUEST, "request is not a JSON object")
    request_id = message.get("id")
    if not (request_id is None or isinstance(request_id, str)
            or (isinstance(request_id, int) and not isinstance(request_id, bool))):
        raise ProtocolError(BAD_REQUEST, "id must be a number, a string or null")
    if "v" not in message:
        raise ProtocolError(BAD_REQUEST, f"v (the protocol version, {VERSION}) is missing", request_id)
    if message["v"] != VERSION:
        given = _dumps(message["v"]).decode("utf-8", "replace")
        raise ProtocolError(BAD_REQUEST, f"unsupported protocol version {given}, this dinit speaks {VERSION}",
                            request_id)
    cmd, args = message.get("cmd"), message.get("args", {})
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError(BAD_REQUEST, "cmd must be a non-empty string", request_id)
    if not isinstance(args, dict):
        raise ProtocolError(BAD_REQUEST, "args must be an object", request_id)
    return Request(request_id, cmd, args)


def encode_result(request_id: RequestId, result: Any) -> bytes:
    return _dumps({"v": VERSION, "id": request_id, "ok": True, "result": result}) + b"\n"


def encode_error(error: ProtocolError) -> bytes:
    body = {"code": error.code, "message": error.message, **error.extra}
    return _dumps({"v": VERSION, "id": error.request_id, "ok": False, "error": body}) + b"\n"


def encode_event(event: dict[str, Any]) -> bytes:
    """One line of ``events`` (§14): the event object itself, told from an answer by having no ``ok``."""
    return _dumps(event) + b"\n"


def decode_response(line: bytes) -> dict[str, Any]:
    """Parse one answer line; a malformed one raises ValueError."""
    import json

    message = json.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("ok"), bool):
        raise ValueError("not a dinit answer")
    return message


class LineBuffer:
    """Splits a byte stream into request lines of at most ``limit`` bytes, newline included."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._data = b""
        self._limit = limit
        self.overflowed = False

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines (without newlines) ``data`` finishes, up to the first one that is too
        long; after that :attr:`overflowed` is set and nothing more is accepted, so a client can never
        make dinit buffer more than ``limit`` bytes of a line."""
        if self.overflowed:
            return []
        *lines, rest = (self._data + data).split(b"\n")
        for index, line in enumerate(lines):
            if len(line) >= self._limit:
                self.overflowed = True
                return lines[:index]
        if len(rest) >= self._limit:
            self.overflowed = True
        self._data = rest
        return lines
