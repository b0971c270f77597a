"""Service discovery: turn ``DINIT_DIR`` into a validated list of services (§2).

The whole directory is checked before anything is started, so a broken image fails at once with one
line naming the service, the file and the reason, instead of half-starting and tearing down.
"""

from __future__ import annotations

import os
import stat

from ..log import logger
from ..readiness import files as readiness_files
from . import envdir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import MappingProxyType
    from typing import NamedTuple
else:
    from ..lean import NamedTuple

    MappingProxyType = type(type.__dict__)  # as types.py has it, without importing types


#: Names a stop hook may have, with the stage its output is labelled with (§2, §4.2): ``terminate``
#: always; ``finish`` only under ``DINIT_FINISH=stop`` (otherwise it is runit's finish program).
HOOK_NAMES = (("finish", "finish"), ("terminate", "term"))


class ServiceError(Exception):
    """A broken service directory; the message is the one error line dinit prints before exiting 1."""


class Service(NamedTuple):
    """One service: the program to run, its optional stop hook, finish program and logger, and its
    environment."""

    name: str
    directory: str
    run: str
    argv: tuple[str, ...]
    hook: str | None = None
    hook_stage: str = "finish"
    log_run: str | None = None
    env: Mapping[str, str | None] = MappingProxyType({})
    #: True for the command given on dinit's command line (command mode, §9): ``run`` is looked up in
    #: PATH, and when it cannot be run the propagated exit code is a shell's 127/126.
    command: bool = False
    #: runit's finish program (``S/finish`` unless ``DINIT_FINISH=stop``): run after ``run`` exits.
    finish: str | None = None
    #: ``S/down`` exists: the service is known (validated, has a state) but not started.
    down: bool = False
    #: Its readiness sources (§13): ``notification-fd``, ``notify-socket``, ``check``, ``ready-port``.
    readiness: readiness_files.Readiness = readiness_files.NONE
    #: Where it comes from: ``dir`` (DINIT_DIR), ``command`` (dinit's command line, §9) or ``submit``
    #: (``dinit submit``, §12).
    origin: str = "dir"
    #: Whether its exit tears the container down (a submitted job only with ``--critical``, §12).
    tears_down: bool = True


def program_problem(path: str) -> str | None:
    """Why ``path`` cannot be run as a program (missing, a dangling symlink, not a regular file,
    not executable), or None. Shared by every check of a file dinit will run (§2, §15)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "dangling symlink" if os.path.islink(path) else "missing"
    except OSError as error:
        return error.strerror or str(error)
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not os.access(path, os.X_OK):
        return "not executable"
    return None


def _check_program(name: str, path: str) -> None:
    """Raise if ``path`` is not an executable file, with the reason."""
    if (problem := program_problem(path)) is not None:
        raise ServiceError(f"{name}: {path}: {problem}")


def _optional(path: str) -> bool:
    """Whether an optional file is present (a dangling symlink counts, so it is reported)."""
    return os.path.lexists(path)


def _check_directory(name: str, path: str) -> None:
    """Raise unless an optional directory that is present (``log``, ``env``) is a directory."""
    if not os.path.isdir(path):
        reason = "dangling symlink" if not os.path.exists(path) else "not a directory"
        raise ServiceError(f"{name}: {path}: {reason}")


def _stop_hook(name: str, directory: str, finish_is_stop: bool) -> tuple[str | None, str]:
    """The stop hook's path and stage; when ``finish`` may be one, having both it and ``terminate``
    is ambiguous."""
    found = [(os.path.join(directory, file), stage) for file, stage in HOOK_NAMES
             if (finish_is_stop or file != "finish") and _optional(os.path.join(directory, file))]
    if len(found) > 1:
        raise ServiceError(f"{name}: {directory}: has both finish and terminate, keep one")
    if not found:
        return None, "finish"
    _check_program(name, found[0][0])
    return found[0]


def _finish(name: str, directory: str, finish_is_stop: bool) -> str | None:
    """runit's finish program, checked like every other file (Clarifications of §2)."""
    path = os.path.join(directory, "finish")
    if finish_is_stop or not _optional(path):
        return None
    _check_program(name, path)
    return path


def _logger(name: str, directory: str) -> str | None:
    """The logging program, required to be runnable once ``S/log`` exists."""
    log_dir = os.path.join(directory, "log")
    if not _optional(log_dir):
        return None
    _check_directory(name, log_dir)
    log_run = os.path.join(log_dir, "run")
    _check_program(name, log_run)
    return log_run


def _environment(name: str, directory: str) -> Mapping[str, str | None]:
    env_dir = os.path.join(directory, "env")
    if not _optional(env_dir):
        return MappingProxyType({})
    _check_directory(name, env_dir)  # runit's chpst -e fails on a non-directory too
    try:
        return envdir.read(env_dir)
    except envdir.EnvDirError as error:
        raise ServiceError(f"{name}: {error}") from None


def load_service(name: str, directory: str, finish_is_stop: bool = False) -> Service:
    """Validate one service directory and describe it. ``finish_is_stop`` is ``DINIT_FINISH=stop``."""
    run = os.path.join(directory, "run")
    _check_program(name, run)
    hook, hook_stage = _stop_hook(name, directory, finish_is_stop)
    return Service(name=name, directory=directory, run=run, argv=(run,), hook=hook,
                   hook_stage=hook_stage, log_run=_logger(name, directory),
                   env=_environment(name, directory), finish=_finish(name, directory, finish_is_stop),
                   down=_optional(os.path.join(directory, "down")), readiness=_readiness(name, directory))


def _readiness(name: str, directory: str) -> readiness_files.Readiness:
    try:
        return readiness_files.load(directory)
    except readiness_files.ReadinessError as error:
        raise ServiceError(f"{name}: {error}") from None


def _check_dinit_dir(directory: str) -> None:
    if not os.path.isdir(directory):
        reason = "not a directory" if os.path.exists(directory) else "no such directory"
        raise ServiceError(f"DINIT_DIR {directory}: {reason}")


def scan(directory: str, finish_is_stop: bool = False) -> list[Service]:
    """All services of ``directory`` in byte order of their names, those with a ``down`` file too
    (marked ``down``: they are checked and known, but not started)."""
    _check_dinit_dir(directory)
    try:
        names = sorted(os.listdir(directory), key=os.fsencode)
    except OSError as error:
        raise ServiceError(f"DINIT_DIR {directory}: {error.strerror}") from None
    services = []
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith("."):
            logger.debug("ignoring {path}: dot entry", path=path)
            continue
        if os.path.islink(path) and not os.path.exists(path):
            raise ServiceError(f"{name}: {path}: dangling symlink")
        if not os.path.isdir(path):
            logger.debug("ignoring {path}: not a directory", path=path)
            continue
        services.append(load_service(name, path, finish_is_stop))
    return services
