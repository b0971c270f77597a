"""Timestamps in the one format every line uses: UTC, RFC 3339, milliseconds, ``Z``.

Formatting a time is the costliest part of labelling a small chunk of output, so the part up to the
second is cached: within one second only the milliseconds are formatted.
"""

from __future__ import annotations

import time

_cached_second = -1
_cached_prefix = b""


def timestamp() -> bytes:
    """The current time as ``2026-11-22T12:59:35.708Z`` (bytes, as it goes straight into output)."""
    global _cached_second, _cached_prefix
    now_ms = time.time_ns() // 1_000_000
    second, millis = divmod(now_ms, 1000)
    if second != _cached_second:
        _cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        _cached_second = second
    return b"%s%03dZ" % (_cached_prefix, millis)
