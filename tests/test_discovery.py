"""Service discovery (§2): which entries of DINIT_DIR are services, in which order they start, which
files of a service directory count, and that a broken directory is reported with one error line and
exit 1 *before anything starts*, even when only the last service by name is broken.

dinit runs as PID 1 of a fresh PID namespace unless a test says ``pid1=False``.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Dinit, Services, poll, run, start, write_program


def _started(dinit: Dinit) -> list[bytes]:
    """Names of the services whose run was started, in order."""
    return [line[:-len(b"/run: starting")] for line in dinit.messages("info")
            if line.endswith(b"/run: starting")]


# -- what is a service -----------------------------------------------------------------------------


def test_dot_entries_and_files_ignored(services: Services, tmp_path: Path) -> None:
    """§2: entries starting with ``.`` (even valid service directories, even broken ones) and entries
    that are not directories (plain files, symlinks to files, FIFOs) are not services; each is
    ignored with a debug line."""
    marker = tmp_path / "hidden-ran"
    services.add(".hidden", f"touch {marker}\n")
    (services.root / ".broken").mkdir()  # no run: would be an error if it counted
    (services.root / ".dotfile").write_text("x")
    write_program(services.root / "README", f"touch {marker}\n")
    (services.root / "file-link").symlink_to(services.root / "README")
    os.mkfifo(services.root / "fifo")
    services.add("a", "echo a ran >&2\n")
    dinit = run(services, DINIT_LOG_LEVEL="debug")
    assert dinit.returncode == 0, dinit.stderr.decode(errors="replace")
    assert _started(dinit) == [b"a"]
    assert dinit.service_lines("a/run") == [b"a ran"]
    assert not marker.exists()
    assert dinit.messages("error") == dinit.messages("warning", cause=False) == []
    debug = b"\n".join(dinit.messages("debug"))
    for entry in (".hidden", ".broken", ".dotfile"):
        assert re.search(rb"ignoring \S*/" + re.escape(entry.encode()) + rb": dot entry", debug), entry
    for entry in ("README", "file-link", "fifo"):
        assert re.search(rb"ignoring \S*/" + re.escape(entry.encode()) + rb"\b", debug), entry


def test_symlinked_service_directory(services: Services, tmp_path: Path, pid1: bool) -> None:
    """§2: a symlink to a directory is a service named after the symlink (not its target); a
    symlinked DINIT_DIR works too."""
    target = Services(tmp_path / "elsewhere").add("real-name", 'echo "ran in $PWD" >&2\n')
    services.root.mkdir(parents=True, exist_ok=True)
    (services.root / "linked").symlink_to(target)
    (tmp_path / "dir-link").symlink_to(services.root)
    dinit = run(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_DIR=str(tmp_path / "dir-link"))
    assert dinit.returncode == 0, dinit.stderr.decode(errors="replace")
    assert _started(dinit) == [b"linked"]
    assert dinit.service_lines("linked/run") == [f"ran in {target}".encode()]
    assert dinit.service_lines("real-name/run") == []


# -- start order -----------------------------------------------------------------------------------

#: Byte order: digits, uppercase, "_", lowercase (locale order would put "a" before "B"); a prefix
#: before its extensions; then multi-byte UTF-8.
ORDERED_NAMES = [b"0", b"B", b"Z", b"_x", b"a", b"a-b", b"a.b", b"a_b", b"aa", b"b",
                 "é".encode(), "\U0001f600".encode()]


def _byte_named_services(services: Services, names: list[bytes], shared: Path) -> None:
    """Services named by raw bytes (created in reverse order: creation order must not matter), each
    appending its name to ``shared`` and then staying up."""
    root = os.fsencode(services.root)
    for name in reversed(names):
        directory = os.path.join(root, name)
        os.mkdir(directory)
        run_file = os.path.join(directory, b"run")
        with open(run_file, "wb") as file:
            file.write(b"#!/bin/sh\necho '" + name + b"' >> " + os.fsencode(shared) + b"\nexec sleep 1000\n")
        os.chmod(run_file, 0o755)


def _check_start_order(services: Services, names: list[bytes], pid1: bool) -> None:
    shared = services.root.parent / "shared-log"
    _byte_named_services(services, names, shared)
    dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"/run: running with PID", count=len(names))
    assert _started(dinit) == names, dinit.stderr.decode(errors="replace")
    running = [m.group(1) for line in dinit.messages("info")
               if (m := re.fullmatch(rb"(.*)/run: running with PID \d+", line))]
    assert running == names
    poll(lambda: shared.exists() and sorted(shared.read_bytes().splitlines()) == sorted(names),
         message="every service to have run (appended its name)")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert b"Traceback" not in dinit.stderr


def test_services_start_in_byte_order(services: Services, pid1: bool) -> None:
    """§2: services start in byte order of their names (not locale order): seen in the order of the
    ``starting`` and ``running with PID`` lines; every one of them ran."""
    _check_start_order(services, ORDERED_NAMES, pid1)


def test_non_utf8_service_name(services: Services) -> None:
    """§2: a name is the entry's name, whatever its bytes: a service named by the invalid UTF-8 byte
    FF runs like any other, after U+1F600 (F0 9F 98 80) in byte order, although as Python code
    points (surrogate U+DCFF) it would sort first; dinit must not crash on it."""
    _check_start_order(services, [b"a", "\U0001f600".encode(), b"\xff"], True)


def test_start_order_visible_to_services(services: Services, tmp_path: Path) -> None:
    """§2: a service that starts later by name can rely on earlier ones having been started: each
    appends its name to a shared file only after seeing the previous name's entry there."""
    shared = tmp_path / "shared"
    names = ["C", "a", "b"]  # byte order; alphabetical-ignoring-case would be a, b, C
    for index, name in enumerate(names):
        wait = "" if index == 0 else (f"while ! grep -qx {names[index - 1]} {shared} 2>/dev/null; "
                                      "do sleep 0.01; done\n")
        services.add(name, f"{wait}echo {name} >> {shared}\nexec sleep 1000\n")
    dinit = start(services, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb"running with PID", count=3)
    poll(lambda: shared.exists() and shared.read_text().split() == names, timeout=10,
         message="every service to append its name in order")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert _started(dinit) == [name.encode() for name in names]


# -- down, finish, terminate -----------------------------------------------------------------------


def test_down_file(services: Services, tmp_path: Path) -> None:
    """§2: a service with a ``down`` file is not started, with an info line; the others run."""
    marker = tmp_path / "down-ran"
    services.add("a", "echo a ran >&2\n")
    services.add("b", f"touch {marker}\n", down=True)
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 0
    assert b"b: down file present, not starting" in dinit.messages("info")
    assert _started(dinit) == [b"a"]
    assert not marker.exists()


def test_down_file_at_default_level_silent(services: Services, tmp_path: Path) -> None:
    """§2: the down line is info, so at the default level (warn) nothing is printed about it."""
    services.add("a", "exit 0\n")
    services.add("b", "exit 0\n", down=True)
    dinit = run(services)
    assert dinit.returncode == 0
    assert dinit.own_lines(cause=False) == []


@pytest.mark.parametrize(("file", "stage", "finish_mode"), [
    ("terminate", "term", ""), ("terminate", "term", "runit"), ("terminate", "term", "stop"),
    ("finish", "finish", "stop"), ("finish", "finish", "STOP")])
def test_stop_hook_names(services: Services, file: str, stage: str, finish_mode: str) -> None:
    """§2: the stop hook is ``terminate``, or ``finish`` under ``DINIT_FINISH=stop`` (tozd dinit < 0.2);
    its output is labelled with stage ``term`` or ``finish`` and it replaces SIGTERM (§5.2)."""
    hook = 'echo "hook for $DINIT_PID" >&2\nkill "$DINIT_PID"\n'
    services.add("a", "exec sleep 1000\n", **{file: hook})
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_FINISH=finish_mode)
    [match] = dinit.wait_for(rb"a/run: running with PID (\d+)")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    pid = match.group(1)
    assert dinit.service_lines(f"a/{stage}") == [b"hook for " + pid]
    assert re.search(rb"a/" + stage.encode() + rb": running with PID \d+", dinit.stderr)
    assert b"a/run: sending SIGTERM" not in dinit.stderr


@pytest.mark.parametrize("finish_mode", ["", "runit", " Runit "])
def test_runit_finish_is_no_stop_hook(services: Services, tmp_path: Path, finish_mode: str) -> None:
    """§2 (changed in turn 2): by default ``S/finish`` has runit's meaning, so it is *not* the stop
    hook: at teardown ``run`` gets SIGTERM, and nothing of ``finish`` runs before that (a runit finish
    that waits for its service used to make ``docker stop`` hang until SIGKILL). With a ``terminate``
    too, that is the stop hook, and having both is no error."""
    services.add("a", "exec sleep 1000\n", finish="exit 0\n")
    services.add("b", "exec sleep 1000\n", finish="exit 0\n", terminate='kill "$DINIT_PID"\n')
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_FINISH=finish_mode)
    [match] = dinit.wait_for(rb"a/run: running with PID (\d+)")
    dinit.wait_for(rb"b/run: running with PID")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    info = dinit.messages("info")
    sigterm = info.index(b"a/run: sending SIGTERM to PID " + match.group(1))
    assert not any(line.startswith(b"a/finish") for line in info[:sigterm])
    assert re.search(rb"b/term: running with PID \d+", dinit.stderr)
    assert b"b/run: sending SIGTERM" not in dinit.stderr
    assert dinit.messages("error") == []


# -- broken service directories: one error line, exit 1, nothing started ---------------------------


def _missing_run(directory: Path) -> tuple[Path, str]:
    directory.mkdir(parents=True)
    return directory / "run", "missing"


def _run_not_executable(directory: Path) -> tuple[Path, str]:
    path = write_program(directory / "run", "exit 0\n")
    path.chmod(0o644)
    return path, "not executable"


def _run_dangling(directory: Path) -> tuple[Path, str]:
    directory.mkdir(parents=True)
    (directory / "run").symlink_to(directory / "nowhere")
    return directory / "run", "dangling symlink"


def _run_link_not_executable(directory: Path) -> tuple[Path, str]:
    directory.mkdir(parents=True)
    target = directory / "target"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o644)
    (directory / "run").symlink_to(target)
    return directory / "run", "not executable"


def _run_is_directory(directory: Path) -> tuple[Path, str]:
    (directory / "run").mkdir(parents=True)
    return directory / "run", "not a regular file"


def _log_run_not_executable(directory: Path) -> tuple[Path, str]:
    write_program(directory / "run", "exec sleep 1000\n")
    path = write_program(directory / "log" / "run", "exec cat\n")
    path.chmod(0o600)
    return path, "not executable"


def _log_without_run(directory: Path) -> tuple[Path, str]:
    write_program(directory / "run", "exec sleep 1000\n")
    (directory / "log").mkdir()
    return directory / "log" / "run", "missing"


def _log_run_dangling(directory: Path) -> tuple[Path, str]:
    write_program(directory / "run", "exec sleep 1000\n")
    (directory / "log").mkdir()
    (directory / "log" / "run").symlink_to("/nonexistent/logger")
    return directory / "log" / "run", "dangling symlink"


def _broken_directory(name: str, dangling: bool) -> Callable[[Path], tuple[Path, str]]:
    """A breaker making ``S/<name>`` (``log`` or ``env``) a dangling symlink, or a plain file."""

    def breaker(directory: Path) -> tuple[Path, str]:
        write_program(directory / "run", "exec sleep 1000\n")
        path = directory / name
        if dangling:
            path.symlink_to(f"/nonexistent/{name}")
            return path, "dangling symlink"
        path.write_text("A=1\n")
        return path, "not a directory"

    breaker.__name__ = f"_{name}_{'dangling' if dangling else 'is_file'}"
    return breaker


def _env_file_dangling(directory: Path) -> tuple[Path, str]:
    write_program(directory / "run", "exec sleep 1000\n")
    (directory / "env").mkdir()
    (directory / "env" / "VAR").symlink_to("/nonexistent/value")
    return directory / "env" / "VAR", "dangling symlink"


def _finish_not_executable(directory: Path) -> tuple[Path, str]:
    write_program(directory / "run", "exec sleep 1000\n")
    path = write_program(directory / "finish", "exit 0\n")
    path.chmod(0o644)
    return path, "not executable"


def _terminate_not_executable(directory: Path) -> tuple[Path, str]:
    write_program(directory / "run", "exec sleep 1000\n")
    path = write_program(directory / "terminate", "exit 0\n")
    path.chmod(0o444)
    return path, "not executable"


def _finish_dangling(directory: Path) -> tuple[Path, str]:
    write_program(directory / "run", "exec sleep 1000\n")
    (directory / "finish").symlink_to("missing-hook")
    return directory / "finish", "dangling symlink"


BROKEN: list[Callable[[Path], tuple[Path, str]]] = [
    _missing_run, _run_not_executable, _run_dangling, _run_link_not_executable, _run_is_directory,
    _log_run_not_executable, _log_without_run, _log_run_dangling,
    *(_broken_directory(name, dangling) for name in ("log", "env") for dangling in (True, False)),
    _env_file_dangling, _finish_not_executable,
    _terminate_not_executable, _finish_dangling,
]


def _good_services(services: Services, marker: Path) -> None:
    """Services sorting before ``zz`` that would leave a marker if any of their programs started."""
    services.add("a", f"touch {marker}\nexec sleep 1000\n")
    services.add("b", f"touch {marker}\nexec sleep 1000\n", log=f"touch {marker}\nexec cat\n",
                 finish=f"touch {marker}\n")


def _assert_nothing_started(dinit: Dinit, marker: Path) -> None:
    assert dinit.returncode == 1
    assert dinit.stdout == b""
    assert not marker.exists(), "a program ran although the service directory is broken"
    assert not any(b"starting" in line or b"running with PID" in line for line in dinit.messages())


@pytest.mark.parametrize("breaker", BROKEN, ids=[b.__name__.strip("_") for b in BROKEN])
def test_broken_last_service(services: Services, tmp_path: Path, pid1: bool,
                             breaker: Callable[[Path], tuple[Path, str]]) -> None:
    """§2: a broken file in the LAST service by name (``zz``) is found before anything starts: exactly
    one line, the error naming the service, the file and the reason; exit 1; the earlier, valid
    services never ran."""
    marker = tmp_path / "started"
    _good_services(services, marker)
    path, reason = breaker(services.root / "zz")
    dinit = run(services, pid1=pid1)
    _assert_nothing_started(dinit, marker)
    assert dinit.own_lines() == [f"error: zz: {path}: {reason}".encode()]


def test_broken_service_at_info_level(services: Services, tmp_path: Path) -> None:
    """§2: also at info level the error is the only error line, and no ``starting`` line appears."""
    marker = tmp_path / "started"
    _good_services(services, marker)
    path, reason = _run_not_executable(services.root / "zz")
    dinit = run(services, DINIT_LOG_LEVEL="info")
    _assert_nothing_started(dinit, marker)
    assert dinit.messages("error") == [f"zz: {path}: {reason}".encode()]
    assert dinit.messages()[-1] == b"dinit exiting with status 1"


def test_dangling_service_symlink(services: Services, tmp_path: Path) -> None:
    """§2: a dangling symlink as a service entry is an error naming it, before anything starts."""
    marker = tmp_path / "started"
    _good_services(services, marker)
    (services.root / "zz").symlink_to(tmp_path / "gone")
    dinit = run(services)
    _assert_nothing_started(dinit, marker)
    [line] = dinit.own_lines()
    assert line.startswith(b"error: zz: ") and b"dangling symlink" in line


@pytest.mark.parametrize("breaker", [_finish_not_executable, _finish_dangling],
                         ids=["finish-not-executable", "finish-dangling"])
def test_broken_finish_as_stop_hook(services: Services, tmp_path: Path,
                                    breaker: Callable[[Path], tuple[Path, str]]) -> None:
    """§2: under ``DINIT_FINISH=stop`` a broken ``finish`` (now the stop hook) is a broken directory
    too (test_broken_last_service covers runit's meaning, the default)."""
    marker = tmp_path / "started"
    _good_services(services, marker)
    path, reason = breaker(services.root / "zz")
    dinit = run(services, DINIT_FINISH="stop")
    _assert_nothing_started(dinit, marker)
    assert dinit.own_lines() == [f"error: zz: {path}: {reason}".encode()]


def test_both_finish_and_terminate(services: Services, tmp_path: Path) -> None:
    """§2: under ``DINIT_FINISH=stop``, having both ``finish`` and ``terminate`` (two stop hooks) is an
    error naming the service and its directory."""
    marker = tmp_path / "started"
    _good_services(services, marker)
    directory = services.add("zz", "exec sleep 1000\n", finish="exit 0\n", terminate="exit 0\n")
    dinit = run(services, DINIT_FINISH="stop")
    _assert_nothing_started(dinit, marker)
    assert dinit.own_lines() == [f"error: zz: {directory}: has both finish and terminate, keep one".encode()]


#: Runs dinit as root without the capabilities that bypass file permissions, as a non-root image would.
NO_DAC_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def _unreadable_dinit_dir(services: Services) -> tuple[Path, str]:
    services.root.chmod(0)
    return services.root, f"DINIT_DIR {services.root}: Permission denied"


def _unreadable_service(services: Services) -> tuple[Path, str]:
    directory = services.add("zz", "exec sleep 1000\n")
    directory.chmod(0)
    return directory, f"zz: {directory / 'run'}: Permission denied"


def _unreadable_env(services: Services) -> tuple[Path, str]:
    directory = services.add("zz", "exec sleep 1000\n", env={"A": b"1"})
    (directory / "env").chmod(0)
    return directory, f"zz: {directory / 'env'}: Permission denied"


UNREADABLE = [_unreadable_dinit_dir, _unreadable_service, _unreadable_env]


@pytest.mark.parametrize("breaker", UNREADABLE, ids=[b.__name__.strip("_") for b in UNREADABLE])
def test_unreadable_is_one_error_line(services: Services, tmp_path: Path,
                                      breaker: Callable[[Services], tuple[Path, str]]) -> None:
    """§2/§7: a directory dinit may not read (an image running dinit without root) is one error line
    with the reason and exit 1, nothing started -- not a traceback."""
    marker = tmp_path / "started"
    services.add("a", f"touch {marker}\nexec sleep 1000\n")
    path, message = breaker(services)
    try:
        dinit = run(services, wrapper=NO_DAC_OVERRIDE)
    finally:
        path.chmod(0o755)
    _assert_nothing_started(dinit, marker)
    assert dinit.own_lines() == [f"error: {message}".encode()]


def test_missing_directory(tmp_path: Path, pid1: bool) -> None:
    """§2: a missing DINIT_DIR is one error line naming it, exit 1."""
    missing = tmp_path / "no-such-dir"
    dinit = run(None, pid1=pid1, DINIT_DIR=str(missing))
    assert dinit.returncode == 1
    assert dinit.stdout == b""
    assert dinit.own_lines() == [f"error: DINIT_DIR {missing}: no such directory".encode()]


@pytest.mark.parametrize("target", ["/etc/passwd", "program"])
def test_directory_is_a_file(tmp_path: Path, pid1: bool, target: str) -> None:
    """§2, §16: a DINIT_DIR that is a file says ``not a directory`` (not ``no such directory``, which
    sends one looking for a typo): one error line, exit 1. A symlink to a file too."""
    path = Path(target) if target.startswith("/") else write_program(tmp_path / target, "exit 0\n")
    for given in (path, tmp_path / "link"):
        if given != path:
            given.symlink_to(path)
        dinit = run(None, pid1=pid1, DINIT_DIR=str(given))
        assert dinit.returncode == 1
        assert dinit.stdout == b""
        assert dinit.own_lines() == [f"error: DINIT_DIR {given}: not a directory".encode()]


def test_dangling_directory_symlink(tmp_path: Path) -> None:
    """§2: DINIT_DIR as a dangling symlink is missing: ``no such directory``."""
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    dinit = run(None, DINIT_DIR=str(tmp_path / "link"))
    assert dinit.returncode == 1
    assert dinit.own_lines() == [f"error: DINIT_DIR {tmp_path / 'link'}: no such directory".encode()]


# -- no services -----------------------------------------------------------------------------------


def _empty(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)


def _only_dot_entries(root: Path) -> None:
    Services(root).add(".hidden", "exit 0\n")
    (root / ".file").write_text("x")


def _only_files(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_program(root / "run", "exit 0\n")
    (root / "notes.txt").write_text("x")


@pytest.mark.parametrize("content", [_empty, _only_dot_entries, _only_files],
                         ids=["empty", "only-dot-entries", "only-files"])
def test_no_services(services: Services, pid1: bool, content: Callable[[Path], None]) -> None:
    """§2: no services → warning ``no services found, exiting`` (the only line), exit 0."""
    content(services.root)
    dinit = run(services, pid1=pid1)
    assert dinit.returncode == 0
    assert dinit.own_lines() == [b"warning: no services found, exiting"]
    assert dinit.stdout == b""


def test_every_service_down(services: Services, tmp_path: Path, pid1: bool) -> None:
    """§16 + Clarifications: when every service has a ``down`` file, dinit says so (a warning naming
    them, byte order, separated by ``, ``) instead of ``no services found``, starts nothing, exits 0
    (the per-service ``down file present`` line is the supervisor's ``down`` transition, which is not
    reached then: the warning names them all)."""
    marker = tmp_path / "started"
    for name in ("sshd", "B", "cron"):
        services.add(name, f"touch {marker}\nexec sleep 1000\n", down=True)
    (services.root / ".hidden").mkdir()
    dinit = run(services, pid1=pid1)
    assert dinit.returncode == 0
    warning = b"warning: no services to start: every service has a down file (B, cron, sshd)"
    assert dinit.own_lines() == [warning]
    assert dinit.stdout == b""
    assert not marker.exists()
    info = run(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    assert info.returncode == 0
    assert not any(b"starting" in line and b"not starting" not in line for line in info.messages())


def test_down_service_still_checked(services: Services, tmp_path: Path) -> None:
    """§2: a service with a ``down`` file is checked like the others (it may be started later, §10):
    a broken one is an error, exit 1, also when every service is down."""
    directory = services.add("a", "exec sleep 1000\n", down=True)
    (directory / "run").chmod(0o644)
    dinit = run(services)
    assert dinit.returncode == 1
    assert dinit.own_lines() == [f"error: a: {directory / 'run'}: not executable".encode()]


def test_down_and_command(services: Services) -> None:
    """§9: with a command, down services in the directory do not count: the command runs alone and
    its status is propagated, as without them."""
    services.add("a", "exec sleep 1000\n", down=True)
    dinit = run(services, "--", "sh", "-c", "exit 7")
    assert dinit.returncode == 7, dinit.stderr.decode(errors="replace")
    assert b"no services" not in dinit.stderr
