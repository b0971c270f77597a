"""The command line: ``dinit [--help] [--version] [--] [CMD [ARG...]]`` and the start-up sequence.

Start-up order matters: fds and the signal mask are fixed first (programs inherit them), then the
writers and logging exist so every later error can be reported, then configuration and the service
directory are validated completely before the first program starts (§1, §2).
"""

from __future__ import annotations

import os
import sys

from . import __version__
from . import log as own_log
from .config import (
    Config,
    ConfigError,
    ExitCodeMode,
    FinishMode,
    WatchMode,
    load,
    log_format_from,
    log_level_from,
)
from .lifecycle.hooks import HookError, HookPaths
from .lifecycle.hooks import scan_all as scan_hooks
from .lifecycle.outcome import EXIT_ERROR, EXIT_OK, Outcome
from .lifecycle.signals import STOP_SIGNALS
from .lifecycle.supervisor import Supervisor
from .log import logger
from .loop import Loop
from .output.color import colored
from .output.multiplexer import Multiplexer
from .output.writer import Writer
from .process.programs import become_subreaper, prepare_own_fds
from .readiness import settings as readiness_settings
from .service.discovery import Service, ServiceError, scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Sequence
    from typing import NoReturn

    from .control.listener import Listener
    from .control.server import Server
    from .readiness.events import Events
    from .readiness.probes import Exposure
else:
    import _signal as signal  # signal without its enums (lean.py: start-up)


USAGE = """\
usage: dinit [--help] [--version] [--] [CMD [ARG...]]

Runs every service of DINIT_DIR (default /etc/service) as an init for containers, multiplexing their
output onto its own. With CMD, CMD runs as one more service named "main" (then a missing DINIT_DIR
is fine, and without a service directory CMD's exit status becomes dinit's, like tini).

options:
  -h, --help     print this help and exit
  -V, --version  print the version and exit
  --             end of dinit's options; everything after is CMD and its arguments

Configuration is by environment variables: DINIT_DIR, DINIT_JSON_STDOUT, DINIT_LOG_LEVEL,
DINIT_LOG_FORMAT, DINIT_REPARENTING_POLICY, DINIT_KILL_TIMEOUT, DINIT_TIMEOUT, DINIT_EXIT_CODE,
DINIT_FINISH, DINIT_START_DIR, DINIT_STOP_DIR, DINIT_STOP_DELAY, DINIT_COLOR (and NO_COLOR),
DINIT_STOP_IGNORED, DINIT_WATCH, DINIT_WATCH_INTERVAL, DINIT_CHECK_INTERVAL, DINIT_CHECK_TIMEOUT,
DINIT_READY_FILE, DINIT_HTTP_ADDR, DINIT_WEBHOOK, DINIT_WEBHOOK_METHOD, DINIT_WEBHOOK_TIMEOUT,
DINIT_WEBHOOK_TOKEN, DINIT_SOCKET (see README).
Client mode: dinit status|list|start|stop|restart|signal|submit|reload|shutdown|pid|version|check|events
(dinit status --help).
"""

MAIN_SERVICE = "main"


class UsageError(Exception):
    """A command line dinit does not understand."""


def parse_args(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """Split dinit's own options from the command. Returns (``help``/``version``/None, command)."""
    for index, arg in enumerate(args):
        if arg == "--":
            return None, list(args[index + 1:])
        if arg in ("-h", "--help"):
            return "help", []
        if arg in ("-V", "--version"):
            return "version", []
        if arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r} (options come before CMD; see dinit --help)")
        return None, list(args[index:])
    return None, []


class Dinit:
    """One run of dinit: owns the writers so every exit path flushes them."""

    def __init__(self) -> None:
        self.loop = Loop()
        for signum in STOP_SIGNALS:
            self.loop.catch(signum)
        self.stdout = Writer(1, "stdout")
        self.stderr = Writer(2, "stderr")
        self.stdout.fallback, self.stderr.fallback = self.stderr, self.stdout
        self.stdout.on_closed = self.stderr.on_closed = self._stream_closed
        own_log.setup(log_level_from(os.environ), self.stderr, log_format_from(os.environ))
        self.readiness = readiness_settings.Settings()
        self.events: Events | None = None
        #: The control socket's server, once set up after the start.
        self.server: Server | None = None

    def _stream_closed(self, writer: Writer, error: OSError) -> None:
        """Said once, on the other stream; the closed stream's lines go there from now on (§4.6)."""
        other = self.stderr if writer is self.stdout else self.stdout
        other.write(own_log.render("error", f"{writer.name} is closed ({error.strerror}), writing its "
                                   f"lines to {other.name} from now on".encode()))

    def exit(self, code: int) -> NoReturn:
        logger.info("dinit exiting with status {status}", status=code)
        self.stdout.close()
        self.stderr.close()
        os._exit(code)

    def fail(self, message: str) -> NoReturn:
        logger.error(message)
        self.exit(EXIT_ERROR)

    def run(self, args: Sequence[str]) -> NoReturn:
        try:
            action, command = parse_args(args)
        except UsageError as error:
            self.fail(str(error))
        if action is not None:
            # Answered before the environment is read: help works even when the configuration is bad.
            self.stdout.write((USAGE if action == "help" else f"dinit {__version__}\n").encode())
            self.stdout.close()
            os._exit(EXIT_OK)
        try:
            config = load(os.environ)
            self.readiness = readiness_settings.load(os.environ)
        except ConfigError as error:
            self.fail(str(error))
        readiness_settings.strip_private(os.environ)  # §13, §14: never passed to programs
        own_log.setup(config.log_level, self.stderr, config.log_format)
        if os.getpid() != 1:
            logger.info("not running as a PID 1, but PID {pid}, registering as a process subreaper",
                        pid=os.getpid())
            try:
                become_subreaper()
            except OSError as error:
                self.fail(f"cannot register as a process subreaper: {error.strerror}")
        try:
            services = find_services(config, command)
        except ServiceError as error:
            self.fail(str(error))
        try:
            hooks = scan_hooks("DINIT_START_DIR", config.start_dir, "DINIT_STOP_DIR", config.stop_dir)
        except HookError as error:
            self.fail(str(error))
        watching = config.watch is not WatchMode.OFF
        if not services:
            if not watching:
                logger.warning("no services found, exiting")
                self.exit(EXIT_OK)
            logger.warning("no services found, waiting for services to be added")
        elif all(service.down for service in services):
            names = ", ".join(service.name for service in services)
            logger.warning("no services to start: every service has a down file ({names})", names=names)
            if not watching:
                self.exit(EXIT_OK)
        # Command mode without (runnable) directory services is the tini case: transparent (§17);
        # not with a directory being watched, where services may come at any time.
        transparent = bool(command) and sum(not service.down for service in services) == 1 and not (
            watching and os.path.isdir(config.directory))
        propagate = config.exit_code is ExitCodeMode.PROPAGATE or (
            config.exit_code is None and transparent)
        self.exit(self._supervise(config, services, propagate, transparent, hooks))

    def _supervise(self, config: Config, services: list[Service], propagate: bool,
                   transparent: bool, hooks: HookPaths) -> int:
        loop = self.loop
        listener = self._listen(config)  # before the services: their programs get DINIT_SOCKET
        mux = Multiplexer(loop, self.stdout, self.stderr, config.json_stdout,
                          colors=(colored(config.color, 1), colored(config.color, 2)))
        supervisor = Supervisor(config, services, mux, loop, propagate, transparent, hooks, self.readiness)
        loop.exception_handler = lambda error: _internal_error(supervisor, error)
        exposure = self._expose(supervisor)
        webhook = None
        if self.readiness.webhook:
            from .readiness.webhook import Webhook

            webhook = Webhook(self.readiness, loop)
            self._events(supervisor).subscribers.append(webhook.put)  # it must see every event
            webhook.start()
        try:
            return supervisor.run(lambda: self._after_start(config, supervisor, listener))
        finally:
            if exposure is not None:
                exposure.close()
            if self.server is not None:
                self.server.close()  # the listener with it
            elif listener is not None:
                listener.close()  # no server took it (the set-up after the start failed)
            supervisor.reparenter.close()
            if webhook is not None:
                webhook.close()

    def _expose(self, supervisor: Supervisor) -> Exposure | None:
        """The ready file, HTTP probe and sd_notify of §13, when any is configured."""
        if not self.readiness.exposed:
            return None
        from .readiness.probes import Exposure, ProbeError

        try:
            return Exposure(supervisor, self.readiness)
        except ProbeError as error:
            self.fail(str(error))

    def _events(self, supervisor: Supervisor) -> Events:
        """The event stream (§14), made when something first subscribes: the web hook at start-up,
        else the control socket's ``events`` once it is served."""
        if self.events is None:
            from .readiness.events import Events

            self.events = Events(supervisor)
        return self.events

    def _after_start(self, config: Config, supervisor: Supervisor, listener: Listener | None) -> None:
        """Hot reload (§11) and serving the control socket (§12), once the first programs run: their
        modules are not needed before, and importing them would delay the first ``run``. Clients
        that connect earlier wait in the socket's backlog."""
        from .lifecycle.reconcile import Reconciler

        reconciler = Reconciler(config, supervisor, self.loop)
        reconciler.start()
        if listener is not None:
            from .control.handlers import Handlers
            from .control.server import Server

            self.server = Server(self.loop, listener, Handlers(
                supervisor, rescan=lambda: [(c.name, c.action.value) for c in reconciler.rescan()],
                events=self._events(supervisor)))

    def _listen(self, config: Config) -> Listener | None:
        """The control socket (§12); an explicit DINIT_SOCKET that cannot be used is a
        configuration error."""
        if config.socket is None:
            return None
        from .control.listener import SocketUnusable, open_listener

        try:
            listener = open_listener(config.socket)
        except SocketUnusable as error:
            self.fail(f"invalid DINIT_SOCKET {config.socket!r}: {error}")
        if listener is not None:
            os.environ["DINIT_SOCKET"] = listener.path
        return listener


def _internal_error(supervisor: Supervisor, error: BaseException) -> None:
    """A bug must not leave the container half-alive: report it and tear down with exit code 1."""
    logger.error("internal error: {error!r}", error=error)
    supervisor.teardown(Outcome.error())


def find_services(config: Config, command: list[str]) -> list[Service]:
    """The directory's services plus the command's ``main`` service, in name order."""
    skip_directory = command and not os.path.isdir(config.directory)
    services = [] if skip_directory else scan(config.directory, config.finish is FinishMode.STOP)
    if command:
        if any(service.name == MAIN_SERVICE for service in services):
            raise ServiceError(f"{MAIN_SERVICE}: {config.directory}/{MAIN_SERVICE}: a service named "
                               f"{MAIN_SERVICE!r} conflicts with the command given to dinit")
        import shutil  # command mode only; kept off the usual start-up path

        cwd = os.getcwd()
        program = command[0] if "/" in command[0] else shutil.which(command[0]) or command[0]
        services.append(Service(name=MAIN_SERVICE, directory=cwd, run=program, argv=tuple(command),
                                command=True, origin="command"))
        services.sort(key=lambda service: os.fsencode(service.name))
    return services


def undo_locale_coercion() -> None:
    """Give programs dinit's environment as dinit received it (§3): when the locale is "C", Python's
    start-up sets LC_CTYPE in its own environment (PEP 538). The original is in /proc/self/environ."""
    try:
        with open("/proc/self/environ", "rb") as file:
            given = file.read().split(b"\0")
    except OSError:
        return
    original = [entry[len(b"LC_CTYPE="):] for entry in given if entry.startswith(b"LC_CTYPE=")]
    if original:
        os.environ["LC_CTYPE"] = os.fsdecode(original[-1])
    else:
        os.environ.pop("LC_CTYPE", None)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``dinit`` console script and ``python -m dinit``."""
    undo_locale_coercion()
    prepare_own_fds()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    dinit = Dinit()
    try:
        dinit.run(sys.argv[1:] if argv is None else argv)
    except Exception as error:  # a bug ends in one error line and exit 1 (§5.3), not a traceback
        dinit.fail(f"internal error: {error!r}")
