"""The watcher thread of hot reload (§11): inotify through watchfiles' Rust notifier, not recursive.

The thread never touches supervisor state and never forks: when something changed under a watched
directory it only wakes the event loop (``wake``, which must be thread-safe), and the loop rescans.
Only watchfiles' extension module is loaded, not the ``watchfiles`` package, whose ``__init__``
imports anyio and much else (about 40 ms): start-up time must not grow when watching is on.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

#: How long watchfiles groups a burst of changes before it reports them (an inotify storm is one
#: report per this period), and how long it waits for more once one arrived.
_DEBOUNCE_MS = 250
_STEP_MS = 50
#: How often creating the notifier is retried when a path vanished in between (a race, not a failure).
_CREATE_ATTEMPTS = 5


def load_notifier() -> Any:
    """``watchfiles._rust_notify.RustNotify``, loaded from the extension module file alone."""
    spec = importlib.util.find_spec("watchfiles")  # finds a top-level package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("watchfiles is not installed")
    for directory in spec.submodule_search_locations:
        for name in sorted(os.listdir(directory)):
            if name.startswith("_rust_notify.") and name.endswith(".so"):
                path = os.path.join(directory, name)
                loader = importlib.machinery.ExtensionFileLoader("watchfiles._rust_notify", path)
                module_spec = importlib.util.spec_from_file_location(
                    "watchfiles._rust_notify", path, loader=loader)
                assert module_spec is not None
                module = importlib.util.module_from_spec(module_spec)
                loader.exec_module(module)
                return module.RustNotify
    raise ImportError("watchfiles has no _rust_notify extension module")


class Watcher:
    """One thread watching a set of directories; :meth:`watch` (loop thread) changes the set."""

    def __init__(self, wake: Callable[[], None], failed: Callable[[str], None]) -> None:
        self._wake = wake
        self._failed = failed
        self._paths: frozenset[str] = frozenset()
        #: Set to make the thread's current ``watch`` return so it re-arms with the new paths.
        self._rearm = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dinit-watch", daemon=True)

    def start(self, paths: Iterable[str]) -> None:
        self._paths = frozenset(paths)
        self._thread.start()

    def watch(self, paths: Iterable[str]) -> None:
        """Watch exactly ``paths`` from now on (re-armed only when the set changed)."""
        wanted = frozenset(paths)
        if wanted != self._paths:
            self._paths = wanted  # one reference assignment: atomic for the thread
            self._rearm.set()

    def _run(self) -> None:
        try:
            notifier_class = load_notifier()
            first = True
            while True:
                self._rearm.clear()  # before reading the paths, so no change is missed
                notifier = self._create(notifier_class, self._paths)
                if not first:
                    self._wake()  # what changed in a new directory before it was watched
                first = False
                try:
                    self._watch(notifier)
                finally:
                    notifier.close()
        except Exception as error:  # any failure is one warning, rescans go on
            self._failed(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)

    def _create(self, notifier_class: Any, paths: frozenset[str]) -> Any:
        """A notifier over the paths that exist; one that vanishes meanwhile is left out next try."""
        for attempt in range(_CREATE_ATTEMPTS):
            existing = sorted(path for path in paths if os.path.isdir(path))
            try:
                return notifier_class(existing, False, False, 0, False, True)
            except FileNotFoundError:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _watch(self, notifier: Any) -> None:
        """Report changes until the set of paths is to change."""
        while True:
            result = notifier.watch(_DEBOUNCE_MS, _STEP_MS, 0, self._rearm)
            if result == "stop":
                return
            if isinstance(result, set) and result:
                self._wake()
