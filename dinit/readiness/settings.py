"""The variables of §13 and §14, parsed and validated with the others at start (§1).

Kept out of ``config.Config`` so the readiness feature stays in its own modules; the parsing rules
(empty means default, one error line naming the variable) are ``config``'s own.
"""

from __future__ import annotations

import os

from ..config import ConfigError, seconds_at_least

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from typing import NamedTuple
else:
    from ..lean import NamedTuple


#: Variables of dinit's own that no program gets (§13, §14): the web hook's token must not leak,
#: and a program answering dinit's own supervisor would confuse it.
PRIVATE = ("NOTIFY_SOCKET", "DINIT_WEBHOOK", "DINIT_WEBHOOK_METHOD", "DINIT_WEBHOOK_TIMEOUT",
           "DINIT_WEBHOOK_TOKEN")


class Settings(NamedTuple):
    check_interval: float = 1.0
    check_timeout: float = 10.0
    ready_file: str | None = None
    http_addr: tuple[str, int] | None = None
    notify_socket: str | None = None
    webhook: str | None = None
    webhook_method: str = "PUT"
    webhook_timeout: float = 5.0
    webhook_token: str | None = None

    @property
    def exposed(self) -> bool:
        """Whether the container's readiness is shown anywhere (a ready file, HTTP, sd_notify)."""
        return bool(self.ready_file or self.http_addr or self.notify_socket)


def parse_address(name: str, value: str) -> tuple[str, int]:
    """``[host]:port``: ``:8080`` (every address), ``127.0.0.1:8080``, ``[::1]:8080``."""
    text = value.strip()
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535 \
            or "[" in host or "]" in host:
        raise ConfigError(f"invalid {name} {value!r}: accepted is [host]:port, e.g. :8080 or "
                          f"127.0.0.1:8080")
    return host, int(port)


def _url(name: str, value: str) -> str:
    from urllib.parse import urlsplit  # only with a hook configured

    text = value.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"invalid {name}: accepted is an http:// or https:// URL")
    return text


def _positive(name: str, value: str) -> float:
    return seconds_at_least(name, value, inclusive=False)


def load(environ: Mapping[str, str]) -> Settings:
    """Parse the §13/§14 variables; an empty one means its default."""
    values: dict[str, object] = {}

    def given(variable: str) -> str | None:
        raw = environ.get(variable, "")
        return raw if raw.strip() else None

    if (raw := given("DINIT_CHECK_INTERVAL")) is not None:
        values["check_interval"] = _positive("DINIT_CHECK_INTERVAL", raw)
    if (raw := given("DINIT_CHECK_TIMEOUT")) is not None:
        values["check_timeout"] = _positive("DINIT_CHECK_TIMEOUT", raw)
    if (raw := given("DINIT_READY_FILE")) is not None:
        values["ready_file"] = os.path.abspath(raw.strip())
    if (raw := given("DINIT_HTTP_ADDR")) is not None:
        values["http_addr"] = parse_address("DINIT_HTTP_ADDR", raw)
    if (raw := given("NOTIFY_SOCKET")) is not None:
        values["notify_socket"] = raw
    if (raw := given("DINIT_WEBHOOK")) is not None:
        values["webhook"] = _url("DINIT_WEBHOOK", raw)
    if (raw := given("DINIT_WEBHOOK_METHOD")) is not None:
        method = raw.strip().upper()
        if method not in ("PUT", "POST"):
            raise ConfigError(f"invalid DINIT_WEBHOOK_METHOD {raw!r}: accepted are PUT, POST")
        values["webhook_method"] = method
    if (raw := given("DINIT_WEBHOOK_TIMEOUT")) is not None:
        values["webhook_timeout"] = _positive("DINIT_WEBHOOK_TIMEOUT", raw)
    if (raw := given("DINIT_WEBHOOK_TOKEN")) is not None:
        values["webhook_token"] = raw.strip()
    return Settings(**values)  # type: ignore[arg-type]


def strip_private(environ: MutableMapping[str, str]) -> None:
    """Remove dinit's own variables from the environment every program inherits (§13, §14)."""
    for variable in PRIVATE:
        environ.pop(variable, None)
