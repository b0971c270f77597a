"""Hot reload (§11): the service directory is the desired state, and a rescan reconciles with it.

After each rescan, *wanted* is every service entry with a runnable ``run`` and no ``down`` file:
start what is wanted and not live, stop what is live and not wanted. An instance is identified by
its name, the ``(st_dev, st_ino)`` of its entry (symlinks followed) and a fingerprint of its files:
an edit in place (same inode) or a Kubernetes ConfigMap swap (new inode, same fingerprint) restarts
nothing; other content is a replacement, started only once every process of the old instance is
gone, so there is never more than one live instance of a name. A rename (a new name whose entry has
the identity of the instance being removed under another) waits for the old instance the same way.

Everything here runs on the event loop thread; the watcher thread (``service.watch``) only asks for
a rescan. Nothing after start-up is fatal: a broken directory stays ``pending`` with one line per
distinct reason, an exec failure of a service added here is the same, and ``ETXTBSY`` (a ``run``
still open for writing) is retried by one timer per service, however often rescans come.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from ..config import Config, FinishMode, WatchMode
from ..log import logger
from ..loop import Loop, Timer
from ..process import exec_errors
from ..process.procfs import session_members
from ..service.discovery import Service, ServiceError, load_service
from .state import LIVE, UP, Phase, ServiceState, StopReason
from .supervisor import Supervisor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from enum import Enum
    from typing import NamedTuple

    Identity = tuple[int, int]
else:
    from ..lean import Enum, NamedTuple


#: A new or changed service starts only after this long without changes under its directory, and
#: rescans asked for by events come at most this often (an inotify storm is one rescan per period).
QUIET = 0.25
#: ``ETXTBSY`` at exec (``run`` still open for writing) is retried this often, for this long.
BUSY_RETRY = 0.25
BUSY_FOR = 5.0
#: How often dinit looks whether every process of an instance being stopped is gone.
GONE_POLL = 0.05
#: The files whose content makes up an instance's fingerprint (besides ``env/*``).
_FINGERPRINTED = ("run", "finish", "terminate", "log/run", "notification-fd", "notify-socket", "check",
                  "ready-port")
#: The paths whose status tells a directory is still being written (the debounce signature).
_SIGNED = (".", "run", "finish", "terminate", "log", "log/run", "env", "down")


class Action(Enum):
    """What one rescan does to one name (the §11 info lines)."""

    ADDED = "added, starting"
    REMOVED = "removed, stopping"
    REPLACED = "replaced, starting the new one once the old one has stopped"
    DOWN_ADDED = "down file added, stopping"
    DOWN_REMOVED = "down file removed, starting"
    PENDING = "pending"


class Change(NamedTuple):
    """One thing a rescan decided, as returned by :meth:`Reconciler.rescan` (``dinit reload``)."""

    name: str
    action: Action


class Entry(NamedTuple):
    """What a rescan sees of one service entry of the directory."""

    identity: Identity
    down: bool
    #: The validated service, or None with ``reason`` when it is not runnable (yet).
    service: Service | None
    reason: str | None
    signature: tuple[tuple[str, int, int, int, int], ...]
    #: Wall-clock time of the newest change under the directory (the signature's ctimes: unlike
    #: mtimes, a chmod or a rename changes them, and no program sets them).
    newest: float


class Record:
    """What the reconciler knows of one name. A plain class, not a dataclass: ``dataclasses``
    imports ``inspect`` and ``ast``, which would cost start-up time before the first service runs."""

    __slots__ = ("announced", "busy_retry", "busy_until", "down", "failed", "fingerprint", "identity",
                 "leaving", "reason", "renamed_from", "sessions", "signature", "signature_since",
                 "start_due", "started")

    def __init__(self, identity: Identity | None = None, fingerprint: bytes | None = None,
                 down: bool = False) -> None:
        #: Identity and fingerprint of the directory the supervisor's current instance was loaded
        #: from; None while nothing was loaded (new, pending) or once a replacement is due.
        self.identity = identity
        self.fingerprint = fingerprint
        #: Whether the instance is down because of its down file (not the control socket).
        self.down = down
        #: A start is due once the old instance is gone and the directory is quiet.
        self.start_due = False
        #: The last pending reason logged, so each distinct reason is one line.
        self.reason: str | None = None
        #: ``added, starting`` was said for the start that is due.
        self.announced = False
        #: The signature at an exec failure: retried once the directory changed.
        self.failed: tuple[tuple[str, int, int, int, int], ...] | None = None
        self.signature: tuple[tuple[str, int, int, int, int], ...] = ()
        self.signature_since = 0.0
        #: Sessions (``run`` PIDs) of stopped instances that must be empty before the next start.
        self.sessions: list[int] = []
        #: The identity of the instance removed under this name, until all of it is gone: a new
        #: entry with this identity under another name is a rename and waits for it.
        self.leaving: Identity | None = None
        #: The instance this name was renamed from, whose programs must be gone before it starts
        #: (its sessions are in :attr:`sessions`).
        self.renamed_from: ServiceState | None = None
        #: Until when an ``ETXTBSY`` exec failure is retried, and the one retry scheduled: a
        #: rescan meanwhile does not start the service (that would be a second retry chain).
        self.busy_until: float | None = None
        self.busy_retry: Timer | None = None
        #: The state this reconciler started (its exec failures are not fatal).
        self.started: ServiceState | None = None


def decide(record: Record | None, entry: Entry | None, live: bool, fingerprint: Callable[[], bytes]
           ) -> Action | None:
    """The reconcile rule for one name, without side effects. ``live``: its ``run`` is running and
    not being stopped yet. ``fingerprint`` is called only when the entry's identity changed."""
    known = record is not None and record.identity is not None
    if entry is None:
        return Action.REMOVED if live else None
    if not known:
        return Action.PENDING if entry.service is None else Action.ADDED
    assert record is not None
    if entry.identity != record.identity and fingerprint() != record.fingerprint:
        return Action.REPLACED
    if live and entry.down:
        return Action.DOWN_ADDED
    if live and entry.service is None:
        return Action.REMOVED  # no runnable ``run`` any more: not wanted
    if not live and record.down and not entry.down:
        return Action.DOWN_REMOVED
    return None


def _stat_key(path: str, name: str) -> tuple[str, int, int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (name, info.st_ino, info.st_ctime_ns, info.st_size, info.st_mode)


def signature(directory: str) -> tuple[tuple[str, int, int, int, int], ...]:
    """The status of the files that matter (bounded: not every file of the directory, so an
    inotify storm of 10 000 files costs no more): changes while a directory is being written."""
    keys = [_stat_key(os.path.join(directory, name), name) for name in _SIGNED]
    env = os.path.join(directory, "env")
    try:
        names = sorted(os.listdir(env))
    except OSError:
        names = []
    keys += [_stat_key(os.path.join(env, name), "env/" + name) for name in names]
    return tuple(key for key in keys if key is not None)


def fingerprint(directory: str) -> bytes:
    """A digest of the files that make up a service (``run``, stop hooks, ``finish``, ``log/run``,
    ``env/*``, the readiness files of §13): names, whether executable, and content.

    The digest is Python's own keyed 64-bit string hash (SipHash): fingerprints are compared only
    within one dinit process, and ``hashlib`` would load OpenSSL into every idle dinit."""
    parts: list[bytes] = []
    env = os.path.join(directory, "env")
    try:
        env_names = sorted("env/" + name for name in os.listdir(env))
    except OSError:
        env_names = []
    for name in (*_FINGERPRINTED, *env_names):
        path = os.path.join(directory, name)
        parts.append(name.encode() + b"\0")
        try:
            with open(path, "rb") as file:
                content = file.read()
            parts.append(b"x" if os.access(path, os.X_OK) else b"-")
            parts.append(len(content).to_bytes(8, "little") + content)
        except OSError:
            parts.append(b"?")
    return hash(b"".join(parts)).to_bytes(8, "little", signed=True)


def observe(name: str, path: str, finish_is_stop: bool) -> Entry | None:
    """One entry as a rescan sees it; None if it is not a service entry (§2)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    signed = signature(path)
    try:
        service: Service | None = load_service(name, path, finish_is_stop)
        reason = None
    except ServiceError as error:
        service, reason = None, str(error).removeprefix(f"{name}: ")
    newest = max((key[2] for key in signed), default=0) / 1e9
    down = os.path.lexists(os.path.join(path, "down"))
    return Entry((info.st_dev, info.st_ino), down, service, reason, signed, newest)


class Reconciler:
    """Keeps the supervisor's services in line with ``DINIT_DIR`` (§11)."""

    def __init__(self, config: Config, supervisor: Supervisor, loop: Loop) -> None:
        self.config = config
        self.supervisor = supervisor
        self.loop = loop
        self._finish_is_stop = config.finish is FinishMode.STOP
        self._records: dict[str, Record] = {}
        self._rescan_timer: Timer | None = None
        self._last_rescan = float("-inf")
        self._gone_timer: Timer | None = None
        self._directory_missing = False
        #: A directory entry named like command mode's ``main`` was said to be ignored (once while
        #: it stays).
        self._conflict_said = False
        self._watcher: object | None = None
        supervisor.on_exec_failure = self._exec_failed

    # -- the public side: start, rescan, events ---------------------------------------------------

    def start(self) -> None:
        """Remember what was started (identities, fingerprints), then watch. Called once the loop
        runs, after every service was started, so none of this delays start-up."""
        self.loop.call_later(0, self._begin)

    def rescan(self) -> list[Change]:
        """Rescan ``DINIT_DIR`` now and reconcile; what changed. ``dinit reload`` calls this."""
        self._last_rescan = self.loop.time()
        if self.supervisor.terminating:
            return []  # during teardown, changes are ignored and pending starts cancelled
        logger.debug("rescanning {directory}", directory=self.config.directory)
        names = self._list()
        if names is None:
            return []
        changes: list[Change] = []
        # names that left first: a rename's new name then finds the instance it must wait for
        for name in sorted(set(names) | set(self._records), key=lambda known: (known in names,
                                                                               os.fsencode(known))):
            action = self._reconcile(name, name in names)
            if action is not None:
                changes.append(Change(name, action))
        self._advance_all()
        self._rewatch()
        return changes

    def changed(self) -> None:
        """Something changed on disk (the watcher): rescan, at most once per :data:`QUIET`."""
        if self._rescan_timer is not None and not self._rescan_timer.cancelled:
            return
        delay = max(0.0, self._last_rescan + QUIET - self.loop.time())
        self._rescan_timer = self.loop.call_later(delay, self._timed_rescan)

    # -- periodic work ------------------------------------------------------------------------------

    def _begin(self) -> None:
        for name, state in self.supervisor.states.items():
            if state.service.command:
                continue
            path = os.path.join(self.config.directory, name)
            entry = observe(name, path, self._finish_is_stop)
            if entry is not None:
                record = Record(identity=entry.identity, fingerprint=fingerprint(path),
                                down=state.service.down)
                record.signature, record.signature_since = entry.signature, self.loop.time()
                self._records[name] = record
        if self.config.watch is WatchMode.ON:
            self._start_watcher()
        if self.config.watch is not WatchMode.OFF:
            self.loop.call_later(self.config.watch_interval, self._periodic)

    def _periodic(self) -> None:
        if self.supervisor.terminating:
            return
        self.rescan()
        self.loop.call_later(self.config.watch_interval, self._periodic)

    def _timed_rescan(self) -> None:
        self._rescan_timer = None
        self.rescan()

    def _rescan_at(self, delay: float) -> None:
        """A rescan no later than ``delay`` from now (to start a service once it is quiet)."""
        when = self.loop.time() + delay
        if self._rescan_timer is not None and not self._rescan_timer.cancelled:
            if self._rescan_timer.when <= when:
                return
            self._rescan_timer.cancel()
        self._rescan_timer = self.loop.call_later(max(0.0, delay), self._timed_rescan)

    # -- the directory ------------------------------------------------------------------------------

    def _list(self) -> set[str] | None:
        """The candidate names of the directory; None (one warning) while it is gone or unreadable:
        running services are not stopped for that."""
        try:
            names = {name for name in os.listdir(self.config.directory) if not name.startswith(".")}
        except OSError as error:
            if not self._directory_missing:
                self._directory_missing = True
                logger.warning("DINIT_DIR {directory}: {reason}, services keep running; watching for "
                               "it to come back", directory=self.config.directory,
                               reason=error.strerror)
                self._rewatch()
            return None
        if self._directory_missing:
            self._directory_missing = False
            logger.info("DINIT_DIR {directory} is back", directory=self.config.directory)
        return names

    def _reconcile(self, name: str, listed: bool) -> Action | None:
        state = self.supervisor.states.get(name)
        if state is not None and state.service.command:  # never touched by a rescan (§11)
            if listed and not self._conflict_said:
                logger.warning("service directory {path} conflicts with the command given to dinit, "
                               "not started", service=name, path=os.path.join(self.config.directory, name))
            self._conflict_said = listed
            return None
        path = os.path.join(self.config.directory, name)
        entry = observe(name, path, self._finish_is_stop) if listed else None
        record = self._records.get(name)
        if entry is None and record is None:
            return None
        if record is None:
            record = self._records[name] = Record()
        live = state is not None and state.phase in UP
        action = decide(record, entry, live, lambda: fingerprint(path))
        edited = entry is not None and entry.signature != record.signature
        self._note_signature(record, entry)
        if entry is None:
            self._gone(name, record, state, live)
        elif action is Action.REPLACED:
            self._replace(name, record, state, live)
        elif action is Action.ADDED:
            action = self._add(name, record, entry)
        elif action is Action.PENDING:
            action = self._pending(name, record, state, entry)
        elif action is Action.DOWN_ADDED:
            self._stop(name, record, StopReason.DOWN_FILE, Action.DOWN_ADDED)
            record.down = True
        elif action is Action.REMOVED:
            self._stop(name, record, StopReason.REMOVED, Action.REMOVED)
            record.start_due = True  # once it is runnable again
        elif action is Action.DOWN_REMOVED:
            logger.info(Action.DOWN_REMOVED.value, service=name)
            record.down = False
            record.start_due = True
        elif record.identity is not None and entry.identity != record.identity:
            record.identity = entry.identity  # same fingerprint: a ConfigMap swap, nothing restarts
            logger.debug("new directory with the same content, nothing to restart", service=name)
        elif record.identity is not None and edited:
            record.fingerprint = fingerprint(path)  # edited in place: accepted without a restart
        if entry is not None and record.start_due and entry.service is None and action is None:
            action = self._pending(name, record, state, entry)
        if entry is not None and record.identity is None:
            self._follow_rename(name, record, entry.identity)
        return action

    def _follow_rename(self, name: str, record: Record, identity: Identity) -> None:
        """A new entry with the identity of an instance still being removed under another name is
        that instance renamed: it starts only once every process of the old one is gone."""
        for old_name, old in self._records.items():
            if old_name != name and old.leaving == identity:
                record.renamed_from = self.supervisor.states.get(old_name)
                record.sessions += [session for session in old.sessions if session not in record.sessions]

    def _note_signature(self, record: Record, entry: Entry | None) -> None:
        if entry is not None and entry.signature != record.signature:
            record.signature = entry.signature
            record.signature_since = self.loop.time()

    def _gone(self, name: str, record: Record, state: ServiceState | None, live: bool) -> None:
        """The entry left the directory: stop a live instance, forget the name once all is gone."""
        if live:
            self._stop(name, record, StopReason.REMOVED, Action.REMOVED)
        if record.identity is not None and state is not None and (state.programs() or record.sessions):
            record.leaving = record.identity
        record.identity = None
        record.start_due = False
        record.busy_until = None
        self._cancel_retry(record)
        if state is None or self.supervisor.remove_service(name):
            del self._records[name]

    def _replace(self, name: str, record: Record, state: ServiceState | None, live: bool) -> None:
        if live:
            self._stop(name, record, StopReason.REPLACED, Action.REPLACED)
        else:
            logger.info(Action.REPLACED.value, service=name)
        record.identity = None
        record.start_due = True
        record.reason = None
        record.announced = True  # "replaced, starting the new one ..." said it: no "added" after it

    def _add(self, name: str, record: Record, entry: Entry) -> Action | None:
        """A new entry that is runnable: said once, started once it is quiet."""
        record.start_due = True
        if record.announced or entry.down:
            return None
        record.announced = True
        logger.info(Action.ADDED.value, service=name)
        return Action.ADDED

    def _pending(self, name: str, record: Record, state: ServiceState | None,
                 entry: Entry) -> Action | None:
        """Not runnable yet: one line per distinct reason, re-checked on every rescan."""
        record.start_due = True
        if entry.reason is None or entry.reason == record.reason:
            return None
        record.reason = entry.reason
        if state is None or not state.programs():
            state = self.supervisor.add_service(_placeholder(name, self.config.directory))
        if state.phase not in LIVE:
            state.transition(Phase.PENDING, self.loop.time(), why=entry.reason)
        return Action.PENDING

    def _stop(self, name: str, record: Record, reason: StopReason, action: Action) -> None:
        """Stop one instance as teardown does: its stop hook if the file is still there, else
        SIGTERM (a hook removed with its directory is no error)."""
        state = self.supervisor.states[name]
        logger.info(action.value, service=name)
        service = state.service
        if service.hook is not None and not os.path.exists(service.hook):
            service = service._replace(hook=None)
        if service.finish is not None and not os.path.exists(service.finish):
            service = service._replace(finish=None)
        state.service = service
        if state.run is not None:
            record.sessions.append(state.run.pid)
        self.supervisor.stop_service(name, reason)

    # -- starting once quiet and once the old instance is gone ---------------------------------------

    def _advance_all(self) -> None:
        for name in sorted(self._records, key=os.fsencode):
            self._advance(name)

    def _advance(self, name: str) -> None:
        """Take the next step for a name whose old instance may just have gone: forget it (removed),
        mark it down (down file), or start the new instance."""
        record = self._records.get(name)
        if record is None or self.supervisor.terminating or record.busy_retry is not None:
            return  # a retry after ETXTBSY is due: it, not this, starts the service
        state = self.supervisor.states.get(name)
        removed = record.identity is None and not record.start_due
        going_down = (record.down and state is not None and state.reason is StopReason.DOWN_FILE
                      and state.phase is not Phase.DOWN)
        if not (removed or going_down or record.start_due):
            return
        if not self._old_gone(record, state):
            self._poll_gone()
            return
        if removed:
            if state is None or self.supervisor.remove_service(name):
                del self._records[name]
        elif going_down:
            assert state is not None
            state.transition(Phase.DOWN, self.loop.time())
        else:
            self._start_if_quiet(name, record)

    def _old_gone(self, record: Record, state: ServiceState | None) -> bool:
        """Every process of the old instance gone: run, hook, logger, finish, and its session; for a
        rename, those of the instance under the old name."""
        if any(old is not None and old.programs() for old in (state, record.renamed_from)):
            return False
        record.sessions = [session for session in record.sessions if session_members(session)]
        if record.sessions:
            return False
        record.leaving = record.renamed_from = None
        return True

    def _poll_gone(self) -> None:
        if self._gone_timer is None:
            self._gone_timer = self.loop.call_later(GONE_POLL, self._gone_poll)

    def _gone_poll(self) -> None:
        self._gone_timer = None
        self._advance_all()

    def _start_if_quiet(self, name: str, record: Record) -> None:
        path = os.path.join(self.config.directory, name)
        entry = observe(name, path, self._finish_is_stop)
        if entry is None or entry.service is None:
            return  # gone, or pending (its reason was said by the rescan)
        self._note_signature(record, entry)
        if record.failed == entry.signature:
            return  # failed to exec: retried once something changed
        record.down = entry.down
        if entry.down:
            record.start_due = False
            record.identity, record.fingerprint = entry.identity, fingerprint(path)
            state = self.supervisor.states.get(name)
            if state is None or state.phase is not Phase.DOWN:
                self.supervisor.add_service(entry.service).transition(Phase.DOWN, self.loop.time())
            return
        wait = self._quiet_in(record, entry)
        if wait > 0:
            self._rescan_at(wait)
            return
        record.start_due = record.announced = False
        record.reason = record.failed = None
        record.identity, record.fingerprint = entry.identity, fingerprint(path)
        state = self.supervisor.add_service(entry.service)
        record.started = state
        self.supervisor.start_service(state)
        if state.run is not None:
            record.busy_until = None

    def _quiet_in(self, record: Record, entry: Entry) -> float:
        """Seconds until the directory has been quiet for :data:`QUIET`: by the files' own times
        when they are sane, else since this rescan first saw the current signature."""
        now = time.time()
        by_mtime = entry.newest + QUIET - now if entry.newest <= now else QUIET
        by_signature = record.signature_since + QUIET - self.loop.time()
        return min(by_mtime, by_signature)

    def _exec_failed(self, state: ServiceState, stage: str, error: OSError) -> bool:
        """Exec failures of services added here are never fatal: ``ETXTBSY`` is retried every
        :data:`BUSY_RETRY` for :data:`BUSY_FOR`; anything else makes the service pending."""
        record = self._records.get(state.name)
        if record is None or record.started is not state:
            return False
        path = {"run": state.service.run, "log": state.service.log_run}.get(stage) or state.service.run
        now = self.loop.time()
        if error.errno == errno.ETXTBSY:
            record.busy_until = record.busy_until or now + BUSY_FOR
            if now < record.busy_until:
                logger.info("{path} is still open for writing, retrying", service=state.name, path=path)
                record.start_due = True
                self._cancel_retry(record)
                record.busy_retry = self.loop.call_later(BUSY_RETRY, self._retry_busy, state.name)
                return True
        record.busy_until = None
        reason = exec_errors.explain(path, error)
        logger.error("cannot run {path}: {reason}", service=state.name, stage=stage, path=path,
                     reason=reason)
        record.reason = f"{path}: {reason}"
        record.start_due = True
        record.failed = record.signature
        state.transition(Phase.PENDING, now, why=record.reason)
        return True

    def _retry_busy(self, name: str) -> None:
        record = self._records.get(name)
        if record is not None:
            record.busy_retry = None
            self._advance(name)

    @staticmethod
    def _cancel_retry(record: Record) -> None:
        """Drop the retry scheduled after ``ETXTBSY`` (the entry is gone, or a new one replaces it)."""
        if record.busy_retry is not None:
            record.busy_retry.cancel()
            record.busy_retry = None

    # -- the watcher ----------------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        from ..service.watch import Watcher  # only with DINIT_WATCH=on

        watcher = Watcher(lambda: self.loop.call_soon_threadsafe(self.changed),
                          lambda reason: self.loop.call_soon_threadsafe(self._watcher_failed, reason))
        self._watcher = watcher
        watcher.start(self._paths())

    def _watcher_failed(self, reason: str) -> None:
        logger.warning("cannot watch {directory} for changes ({reason}), rescanning every "
                       "{interval:g} s", directory=self.config.directory, reason=reason,
                       interval=self.config.watch_interval)
        self._watcher = None

    def _rewatch(self) -> None:
        from ..service.watch import Watcher

        if isinstance(self._watcher, Watcher):
            self._watcher.watch(self._paths())

    def _paths(self) -> set[str]:
        """DINIT_DIR (or, while it is gone, the nearest directory above it) and the real path of
        every service, its ``log/`` and ``env/``: symlinked service directories are seen too."""
        directory = self.config.directory
        paths = {directory}
        if not os.path.isdir(directory):
            parent = directory
            while not os.path.isdir(parent) and parent != os.path.dirname(parent):
                parent = os.path.dirname(parent)
            return {parent}
        try:
            names = [name for name in os.listdir(directory) if not name.startswith(".")]
        except OSError:
            return paths
        for name in names:
            real = os.path.realpath(os.path.join(directory, name))
            for sub in ("", "log", "env"):
                path = os.path.join(real, sub) if sub else real
                if os.path.isdir(path):
                    paths.add(path)
        return paths


def _placeholder(name: str, directory: str) -> Service:
    """The description of a service that cannot be loaded yet, so it has a state (``pending``)."""
    path = os.path.join(directory, name)
    run = os.path.join(path, "run")
    return Service(name=name, directory=path, run=run, argv=(run,))
