"""The web hook (§14): every event is sent, in order, by one sender thread.

The thread only sends: it never touches a process, and what it has to say (a failure streak) it
queues and hands to the loop with ``call_soon_threadsafe``; what the loop, stopped at exit, no longer
prints, dinit's main thread prints once the final flush is over (:meth:`Webhook.close`).
``http.client`` is imported only when a hook is configured, so it costs nothing otherwise. A
receiver that hangs delays nothing: the loop only appends to a bounded queue (the oldest event is
dropped, and counted, when it is full), and at exit the queue gets at most ``FLUSH`` seconds after
the last process is gone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import orjson

from .. import __version__
from ..log import logger
from ..loop import Loop
from .settings import Settings

if TYPE_CHECKING:
    from .events import Event

QUEUE = 1024
RETRIES = 3
#: Waits before the 1st, 2nd and 3rd retry.
BACKOFF = (0.5, 1.0, 2.0)
FLUSH = 2.0


def safe_url(url: str) -> str:
    """The URL as it may be logged: scheme, host, port and path, never user, password nor query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class Webhook:
    """A bounded queue of events and the thread sending them."""

    def __init__(self, settings: Settings, loop: Loop) -> None:
        assert settings.webhook is not None
        self._loop = loop
        self._url = urlsplit(settings.webhook)
        self._shown = safe_url(settings.webhook)
        self._method = settings.webhook_method
        self._timeout = settings.webhook_timeout
        self._headers = {"Content-Type": "application/json", "User-Agent": f"dinit/{__version__}"}
        if settings.webhook_token:
            self._headers["Authorization"] = f"Bearer {settings.webhook_token}"
        elif self._url.username is not None:
            import base64

            pair = f"{unquote(self._url.username)}:{unquote(self._url.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self._queue: deque[Event] = deque()
        self._condition = threading.Condition()
        self.dropped = 0
        self._deadline: float | None = None
        self._failing = False
        self._said: list[tuple[Any, str, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self._run, name="dinit-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, event: Event) -> None:
        """On the loop: queue an event, dropping the oldest when the queue is full."""
        with self._condition:
            if len(self._queue) >= QUEUE:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            self._condition.notify()

    def close(self, grace: float = FLUSH) -> None:
        """At exit, on the main thread once the loop has stopped: give what is queued at most ``grace``
        seconds, then leave (the thread is a daemon), printing what the thread said meanwhile."""
        with self._condition:
            self._deadline = time.monotonic() + grace
            self._condition.notify()
        self._thread.join(grace)
        self._tell()

    # -- the sender thread ----------------------------------------------------------------------

    def _next(self) -> tuple[Event, int] | None:
        with self._condition:
            while not self._queue and self._deadline is None:
                self._condition.wait()
            if not self._queue or self._expired():
                return None
            return self._queue.popleft(), self.dropped

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _run(self) -> None:
        import http.client  # only with a hook configured

        connection_class: Any = (http.client.HTTPSConnection if self._url.scheme == "https"
                                 else http.client.HTTPConnection)
        while (item := self._next()) is not None:
            event, dropped = item
            body = orjson.dumps(dict(event, dropped=dropped))
            self._deliver(connection_class, body, event["seq"])

    def _deliver(self, connection_class: Any, body: bytes, seq: int) -> None:
        """One event, with up to RETRIES retries (the same body, so the same seq) on connection
        errors, 429 and 5xx."""
        problem = ""
        for attempt in range(RETRIES + 1):
            if attempt and not self._pause(BACKOFF[attempt - 1]):
                break
            if self._expired():
                break
            retry, problem = self._send_once(connection_class, body)
            if not problem:
                if self._failing:
                    self._failing = False
                    self._say(logger.info, "web hook {url}: delivering again", url=self._shown)
                return
            if not retry:
                break
        if not self._failing:
            self._failing = True
            self._say(logger.warning, "web hook {url}: event {seq} not delivered: {problem}",
                      url=self._shown, seq=seq, problem=problem)

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False when the flush at exit would end first: giving up at once
        lets the warning come while dinit is still there to print it."""
        with self._condition:
            if self._deadline is not None and time.monotonic() + seconds >= self._deadline:
                return False
            self._condition.wait(seconds)
        return True

    def _send_once(self, connection_class: Any, body: bytes) -> tuple[bool, str]:
        """Send once; returns (worth retrying, problem or "" on success). A certificate that fails
        verification (untrusted, expired, another host's) is not worth retrying."""
        import ssl

        timeout = self._timeout
        if self._deadline is not None:
            timeout = max(0.05, min(timeout, self._deadline - time.monotonic()))
        kwargs: dict[str, Any] = {"timeout": timeout}
        if self._url.scheme == "https":
            kwargs["context"] = ssl.create_default_context()  # verified, as every TLS client should
        path = (self._url.path or "/") + (f"?{self._url.query}" if self._url.query else "")
        connection = connection_class(self._url.hostname, self._url.port, **kwargs)
        try:
            connection.request(self._method, path, body=body, headers=self._headers)
            response = connection.getresponse()
            response.read()
            status = int(response.status)
        except ssl.SSLCertVerificationError as error:  # the same certificate on every try
            return False, f"certificate refused: {error.verify_message or error}"
        except (OSError, ValueError) as error:
            return True, type(error).__name__ if not str(error) else f"{error}"
        finally:
            connection.close()
        if status < 300:
            return False, ""
        return status == 429 or status >= 500, f"HTTP {status}"

    def _say(self, log: Any, message: str, **fields: Any) -> None:
        """The thread never logs itself: the loop does (one thread writes dinit's messages), or, once
        it has stopped, :meth:`close` on the same thread."""
        with self._condition:
            self._said.append((log, message, fields))
        self._loop.call_soon_threadsafe(self._tell)

    def _tell(self) -> None:
        """Print what the thread said and nobody printed yet, in order, each message once."""
        with self._condition:
            said, self._said = self._said, []
        for log, message, fields in said:
            log(message, **fields)
