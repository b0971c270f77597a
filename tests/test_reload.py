"""Hot reload (§11, §16) as PID 1 and as subreaper: services added, removed, replaced, held down and
broken at run time, with DINIT_WATCH=on (inotify) and poll. Every wait polls dinit's real output with
a deadline; "nothing restarted" is proven by PIDs compared after a later observable event."""

from __future__ import annotations

import itertools
import re
import shutil
import signal
from datetime import datetime
from pathlib import Path

import pytest
from harness import TIME, Dinit, Services, start, write_program

#: A service that says its PID once, then stays (``exec``: the PID is run's own).
UP = 'echo "up {tag} $$" >&2\nexec sleep 1000\n'
WATCH = {"DINIT_WATCH": "on", "DINIT_LOG_LEVEL": "info", "DINIT_JSON_STDOUT": "0"}
POLL = {"DINIT_WATCH": "poll", "DINIT_WATCH_INTERVAL": "0.2", "DINIT_LOG_LEVEL": "info",
        "DINIT_JSON_STDOUT": "0"}


def ups(dinit: Dinit, name: str) -> list[tuple[str, int]]:
    """Every ``up <tag> <pid>`` line of ``name`` so far."""
    return [(tag.decode(), int(pid)) for tag, pid in
            (line.split(b" ")[1:3] for line in dinit.service_lines(f"{name}/run")
             if line.startswith(b"up "))]


def wait_up(dinit: Dinit, name: str, count: int = 1) -> list[tuple[str, int]]:
    dinit.wait_for(re.escape(name.encode()) + rb"/run: up ", count=count)
    return ups(dinit, name)


def stop(dinit: Dinit) -> int:
    dinit.signal(signal.SIGTERM)
    return dinit.wait()


@pytest.mark.parametrize("mode", [WATCH, POLL], ids=["on", "poll"])
def test_a_service_added_at_run_time_starts_once(services: Services, pid1: bool,
                                                 mode: dict[str, str]) -> None:
    services.add("base", UP.format(tag="base"))
    dinit = start(services, pid1=pid1, **mode)
    wait_up(dinit, "base")
    services.add("web", UP.format(tag="web"))
    dinit.wait_for(rb"dinit: info: web: added, starting")
    assert [tag for tag, _ in wait_up(dinit, "web")] == ["web"]
    assert stop(dinit) == 0
    assert len(ups(dinit, "web")) == 1


def test_built_in_place_and_renamed_from_a_dot_name_start_exactly_once(services: Services,
                                                                        tmp_path: Path) -> None:
    services.add("base", UP.format(tag="base"))
    dinit = start(services, **WATCH)
    wait_up(dinit, "base")
    # mkdir, then run written a moment later, not executable yet, then made executable
    (services.root / "built").mkdir()
    dinit.wait_for(rb"built: not started yet: \S+/built/run: missing")
    (services.root / "built" / "run").write_text("#!/bin/sh\n" + UP.format(tag="built"))
    dinit.wait_for(rb"built: not started yet: \S+/built/run: not executable")
    (services.root / "built" / "run").chmod(0o755)
    wait_up(dinit, "built")
    # built under a dot name, renamed into place
    staging = services.root / ".web.tmp"
    write_program(staging / "run", UP.format(tag="web"))
    services.add("marker", UP.format(tag="marker"))
    wait_up(dinit, "marker")  # the dot entry was seen by now and ignored
    staging.rename(services.root / "web")
    wait_up(dinit, "web")
    services.add("later", UP.format(tag="later"))
    wait_up(dinit, "later")
    assert stop(dinit) == 0
    assert len(ups(dinit, "built")) == len(ups(dinit, "web")) == 1
    assert b".web.tmp" not in dinit.stderr
    assert dinit.messages().count(b"built: added, starting") == 1


def test_symlinked_service_directory_and_changes_inside_its_target(services: Services,
                                                                    tmp_path: Path, pid1: bool) -> None:
    services.add("base", UP.format(tag="base"))
    target = tmp_path / "srv" / "web"
    target.mkdir(parents=True)
    dinit = start(services, pid1=pid1, **WATCH)
    wait_up(dinit, "base")
    (services.root / "web").symlink_to(target)  # the runit convention
    dinit.wait_for(rb"web: not started yet: \S+/web/run: missing")
    write_program(target / "run", UP.format(tag="web"))  # inside the target, seen through the link
    _, first = wait_up(dinit, "web")[0]
    (target / "down").touch()
    dinit.wait_for(rb"web: down file added, stopping")
    dinit.wait_for(rb"web/run: PID %d finished" % first)
    (target / "down").unlink()
    dinit.wait_for(rb"web: down file removed, starting")
    assert len(wait_up(dinit, "web", count=2)) == 2
    (services.root / "web").unlink()
    dinit.wait_for(rb"web: removed, stopping")
    dinit.wait_for(rb"web/run: PID \d+ finished", count=2)
    assert stop(dinit) == 0


@pytest.mark.parametrize("how", ["rm-r", "down"])
def test_removal_stops_like_teardown_and_the_container_stays_up(services: Services, pid1: bool,
                                                                 how: str) -> None:
    """The stop hook runs if its file is still there (down), else SIGTERM (rm -r); the logger gets
    EOF and is drained; the exit code is untouched; rm down starts it again."""
    services.add("base", UP.format(tag="base"))
    services.add("web", UP.format(tag="web") + "", terminate='echo "hook for $DINIT_PID" >&2\n'
                 'kill "$DINIT_PID"\n',
                 log='while read -r line; do echo "logged $line" >&2; done\necho "logger done" >&2\n')
    dinit = start(services, pid1=pid1, **WATCH)
    _, web = wait_up(dinit, "base") and wait_up(dinit, "web")[0]
    if how == "rm-r":
        shutil.rmtree(services.root / "web")
        dinit.wait_for(rb"web: removed, stopping")
        dinit.wait_for(rb"web/run: sending SIGTERM to PID %d" % web)
    else:
        (services.root / "web" / "down").touch()
        dinit.wait_for(rb"web: down file added, stopping")
        dinit.wait_for(rb"web/term: hook for %d" % web)
    dinit.wait_for(rb"web/log: logger done")
    dinit.wait_for(rb"web/run: PID %d finished" % web)
    if how == "down":
        dinit.wait_for(rb"web: down file present, not starting")
        (services.root / "web" / "down").unlink()
        dinit.wait_for(rb"web: down file removed, starting")
        assert len(wait_up(dinit, "web", count=2)) == 2
    services.add("after", UP.format(tag="after"))
    wait_up(dinit, "after")
    assert dinit.popen.poll() is None
    assert stop(dinit) == 0
    assert b"stopping the container" not in dinit.stderr


def test_edit_in_place_and_configmap_swap_restart_nothing(services: Services, tmp_path: Path) -> None:
    """Kubernetes: /etc/service/web -> ..data/web, ..data -> ..2024_1; the swap points ..data at a
    new directory with the same content: every service gets a new inode, nothing restarts."""
    root = services.root
    first = root / "..2024_1"
    write_program(first / "web" / "run", UP.format(tag="web"))
    write_program(first / "api" / "run", UP.format(tag="api"))
    (root / "..data").symlink_to("..2024_1")
    (root / "web").symlink_to("..data/web")
    (root / "api").symlink_to("..data/api")
    dinit = start(services, **WATCH)
    web, api = wait_up(dinit, "web")[0][1], wait_up(dinit, "api")[0][1]
    with open(first / "web" / "run", "a") as run:  # edited in place: same inode
        run.write("# a comment\n")
    services.add("edited", UP.format(tag="edited"))  # seen by a rescan after the edit
    wait_up(dinit, "edited")
    second = root / "..2024_2"
    shutil.copytree(first, second, symlinks=True)
    (root / "..data_tmp").symlink_to("..2024_2")
    (root / "..data_tmp").rename(root / "..data")
    shutil.rmtree(first)
    services.add("later", UP.format(tag="later"))
    wait_up(dinit, "later")
    services.add("later2", UP.format(tag="later2"))  # a rescan after the swap was surely seen
    wait_up(dinit, "later2")
    assert ups(dinit, "web") == [("web", web)] and ups(dinit, "api") == [("api", api)]
    assert b"finished" not in dinit.stderr
    assert stop(dinit) == 0


def test_replaced_directory_starts_only_after_every_old_process_is_gone(services: Services,
                                                                        pid1: bool) -> None:
    """The old instance takes a while to stop (its session too); the new one must not start before."""
    old = ('echo "up old $$" >&2\n(trap "" TERM; sleep 0.6; echo "child gone" >&2) &\n'
           'trap "sleep 0.3; echo \\"old gone \\$(date +%s.%N)\\" >&2; exit 0" TERM\n'
           'while :; do sleep 0.05; done\n')
    services.add("web", old)
    services.add("base", UP.format(tag="base"))
    dinit = start(services, pid1=pid1, DINIT_REPARENTING_POLICY="ignore", **WATCH)
    _, old_pid = wait_up(dinit, "web")[0]
    staging = services.root / ".web.new"
    write_program(staging / "run", 'echo "up new $$ $(date +%s.%N)" >&2\nexec sleep 1000\n')
    shutil.rmtree(services.root / "web")
    staging.rename(services.root / "web")
    dinit.wait_for(rb"web: replaced, starting the new one once the old one has stopped")
    dinit.wait_for(rb"web/run: up new")
    lines = dinit.service_lines("web/run")
    gone_at = float(next(line for line in lines if line.startswith(b"old gone")).split()[2])
    new_at = float(next(line for line in lines if line.startswith(b"up new")).split()[3])
    assert new_at > gone_at
    stderr = dinit.stderr
    assert stderr.index(b"child gone") < stderr.index(b"web/run: up new")  # the old session too
    assert stderr.index(b"web/run: PID %d finished" % old_pid) < stderr.index(b"web/run: up new")
    assert b"web: added, starting" not in stderr  # the replacement's line said it
    assert stop(dinit) == 0


def test_a_renamed_directory_starts_under_its_new_name_only_after_the_old_instance_is_gone(
        services: Services, pid1: bool) -> None:
    """A rename (the new entry has the identity of the instance being removed under the old name)
    is at most one live instance too: the new name's run starts only once the old run and its
    session are gone."""
    services.add("a", 'echo "up x $$ $(date +%s.%N)" >&2\n'
                 '(trap "" TERM; sleep 1.2; echo "child gone" >&2) &\n'
                 'trap "sleep 0.8; echo \\"old gone \\$(date +%s.%N)\\" >&2; exit 0" TERM\n'
                 'while :; do sleep 0.05; done\n')
    services.add("base", UP.format(tag="base"))
    dinit = start(services, pid1=pid1, DINIT_REPARENTING_POLICY="ignore", **WATCH)
    _, old_pid = wait_up(dinit, "a")[0]
    wait_up(dinit, "base")
    (services.root / "a").rename(services.root / "b")
    dinit.wait_for(rb"a: removed, stopping")
    dinit.wait_for(rb"b/run: up ")
    dinit.wait_for(rb"a/run: old gone")
    dinit.wait_for(rb"a/run: child gone")
    gone_at = float(next(line for line in dinit.service_lines("a/run")
                         if line.startswith(b"old gone")).split()[2])
    new_at = float(next(line for line in dinit.service_lines("b/run") if line.startswith(b"up ")).split()[3])
    assert new_at > gone_at
    stderr = dinit.stderr
    assert stderr.index(b"a/run: child gone") < stderr.index(b"b/run: up ")  # the old session too
    assert stderr.index(b"a/run: PID %d finished" % old_pid) < stderr.index(b"b/run: running with PID")
    assert stop(dinit) == 0


def test_a_replacement_is_said_once(services: Services, pid1: bool) -> None:
    """"replaced, starting the new one ..." is the one line of a replacement: the new instance's
    start is not announced a second time as "added"."""
    services.add("web", UP.format(tag="old"))
    dinit = start(services, pid1=pid1, **WATCH)
    wait_up(dinit, "web")
    staging = services.root / ".web.new"
    write_program(staging / "run", UP.format(tag="new"))
    shutil.rmtree(services.root / "web")
    staging.rename(services.root / "web")
    dinit.wait_for(rb"web/run: up new")
    assert [line for line in dinit.messages("info") if line.startswith(b"web: ")] == [
        b"web: replaced, starting the new one once the old one has stopped"]
    assert stop(dinit) == 0


def test_broken_directories_stay_pending_with_one_line_per_reason(services: Services) -> None:
    services.add("base", UP.format(tag="base"))
    dinit = start(services, DINIT_FINISH="stop", **WATCH)
    wait_up(dinit, "base")
    web = services.add("web", None, finish="exit 0\n", terminate='kill "$DINIT_PID"\n')
    dinit.wait_for(rb"web: not started yet: \S+/web/run: missing")
    write_program(web / "run", UP.format(tag="web"))
    dinit.wait_for(rb"web: not started yet: \S+/web: has both finish and terminate, keep one")
    (web / "finish").unlink()
    (web / "log").mkdir()
    dinit.wait_for(rb"web: not started yet: \S+/web/log/run: missing")
    shutil.rmtree(web / "log")
    (web / "env").mkdir()
    (web / "env" / "A=B").write_text("x\n")
    dinit.wait_for(rb"web: not started yet: .*A=B")
    (web / "env" / "A=B").unlink()
    wait_up(dinit, "web")
    services.add("later", UP.format(tag="later"))
    wait_up(dinit, "later")
    pending = [line for line in dinit.messages("info") if line.startswith(b"web: not started yet")]
    assert len(pending) == len(set(pending)) == 4
    assert len(ups(dinit, "web")) == 1
    assert stop(dinit) == 0


def test_run_still_open_for_writing_is_retried(services: Services) -> None:
    services.add("base", UP.format(tag="base"))
    dinit = start(services, **WATCH)
    wait_up(dinit, "base")
    staging = services.root / ".web"
    staging.mkdir()
    run = staging / "run"
    with open(run, "w") as writer:
        writer.write("#!/bin/sh\n" + UP.format(tag="web"))
        writer.flush()
        run.chmod(0o755)
        staging.rename(services.root / "web")
        dinit.wait_for(rb"web: \S+/web/run is still open for writing, retrying")
    wait_up(dinit, "web")
    assert dinit.popen.poll() is None
    assert b"error" not in dinit.stderr
    assert stop(dinit) == 0


def test_etxtbsy_is_one_retry_chain_whatever_the_rescans_do(services: Services) -> None:
    """Rescans more often than the 250 ms retry period do not add retry chains: by dinit's own
    timestamps the retries come at most every 250 ms, and they end after 5 s with one error."""
    services.add("base", UP.format(tag="base"))
    dinit = start(services, **{**WATCH, "DINIT_WATCH_INTERVAL": "0.1"})
    wait_up(dinit, "base")
    staging = services.root / ".web"
    staging.mkdir()
    run = staging / "run"
    retrying = rb"(" + TIME + rb") dinit: info: web: \S+/web/run is still open for writing, retrying"
    with open(run, "w") as writer:
        writer.write("#!/bin/sh\n" + UP.format(tag="web"))
        writer.flush()
        run.chmod(0o755)
        staging.rename(services.root / "web")
        failed = dinit.wait_for(rb"(" + TIME + rb") dinit: error: web/run: cannot run \S+/web/run: ")[0]
    times = [datetime.fromisoformat(match.group(1).decode()).timestamp()
             for match in re.finditer(retrying, dinit.stderr)]
    # one chain: a retry every 250 ms at most; one line of slack for when each line is stamped
    assert len(times) >= 8 and len(times) - 1 <= (times[-1] - times[0]) / 0.25 + 1
    given_up = datetime.fromisoformat(failed.group(1).decode()).timestamp()
    assert given_up - times[0] >= 4.9  # dinit's own times: retried for 5 s, then given up
    assert len(re.findall(rb"cannot run", dinit.stderr)) == 1
    assert dinit.popen.poll() is None
    assert stop(dinit) == 0


def test_dinit_dir_vanishing_keeps_services_and_is_watched_again(services: Services,
                                                                 tmp_path: Path, pid1: bool) -> None:
    services.add("base", UP.format(tag="base"))
    dinit = start(services, pid1=pid1, **WATCH)
    _, base = wait_up(dinit, "base")[0]
    aside = tmp_path / "aside"
    services.root.rename(aside)
    dinit.wait_for(rb"warning: DINIT_DIR \S+: No such file or directory, services keep running")
    aside.rename(services.root)
    services.add("web", UP.format(tag="web"))
    wait_up(dinit, "web")
    assert ups(dinit, "base") == [("base", base)]
    assert dinit.messages("warning").count(dinit.messages("warning")[0]) == 1
    assert stop(dinit) == 0


def test_no_services_or_all_down_waits_with_watching_on(services: Services, pid1: bool) -> None:
    dinit = start(services, pid1=pid1, **WATCH)
    dinit.wait_for(rb"warning: no services found, waiting for services to be added")
    services.add("web", UP.format(tag="web"))
    wait_up(dinit, "web")
    assert stop(dinit) == 0


def test_every_service_down_stays_up_with_watching(services: Services) -> None:
    services.add("sshd", UP.format(tag="sshd"), down=True)
    dinit = start(services, **POLL)
    dinit.wait_for(rb"warning: no services to start: every service has a down file \(sshd\)")
    (services.root / "sshd" / "down").unlink()
    dinit.wait_for(rb"sshd: down file removed, starting")
    wait_up(dinit, "sshd")
    assert stop(dinit) == 0


def test_teardown_cancels_pending_starts(services: Services) -> None:
    services.add("base", 'echo "up base $$" >&2\nread -r _ < /dev/zero; exec sleep 1000\n')
    dinit = start(services, **WATCH)
    wait_up(dinit, "base")
    dinit.signal(signal.SIGTERM)
    dinit.wait_for(rb"terminating services")
    services.add("web", UP.format(tag="web"))
    assert dinit.wait() == 0
    assert b"web" not in dinit.stderr


def test_inotify_storm_is_at_most_one_rescan_per_quarter_second(services: Services) -> None:
    web = services.add("web", UP.format(tag="web"))
    dinit = start(services, DINIT_LOG_LEVEL="debug", DINIT_WATCH="on", DINIT_JSON_STDOUT="0",
                  DINIT_WATCH_INTERVAL="1000")
    _, pid = wait_up(dinit, "web")[0]
    for index in range(10_000):
        (web / f"f{index}").touch()
    services.add("later", UP.format(tag="later"))
    wait_up(dinit, "later")
    # the rescans caused by events (the one that starts "later" once quiet comes on its own timer)
    storm = dinit.stderr[:dinit.stderr.index(b"later: added, starting")]
    times = [float(stamp[17:23]) + 60 * int(stamp[14:16]) for stamp in
             (m.group(1).decode() for m in re.finditer(b"(" + TIME + rb") dinit: debug: rescanning",
                                                       storm))]
    assert len(times) >= 2
    assert all(later - earlier >= 0.24 for earlier, later in itertools.pairwise(times))
    assert ups(dinit, "web") == [("web", pid)]
    assert stop(dinit) == 0


def test_command_main_is_never_touched(services: Services) -> None:
    services.add("base", UP.format(tag="base"))
    dinit = start(services, "sh", "-c", 'echo "up main $$" >&2; exec sleep 1000', **WATCH)
    _, main = wait_up(dinit, "main")[0]
    services.add("web", UP.format(tag="web"))
    wait_up(dinit, "web")
    assert ups(dinit, "main") == [("main", main)] and b"finished" not in dinit.stderr
    # A directory service named main is the start-up error of §2 at start; added later, one warning.
    services.add("main", UP.format(tag="dir-main"))
    dinit.wait_for(rb"warning: main: service directory \S+/main conflicts with the command given to "
                   rb"dinit, not started")
    services.add("later", UP.format(tag="later"))  # rescans go on, the warning is not repeated
    wait_up(dinit, "later")
    assert len(re.findall(rb"conflicts with the command", dinit.stderr)) == 1
    assert ups(dinit, "main") == [("main", main)] and b"up dir-main" not in dinit.stderr
    assert stop(dinit) == 0


@pytest.mark.parametrize(("watch", "unwanted"), [("off", b"watchfiles"), ("on", b"anyio")])
def test_only_the_extension_module_is_imported(services: Services, watch: str, unwanted: bytes) -> None:
    services.add("web", UP.format(tag="web"))
    dinit = start(services, entry=("-X", "importtime", "-m", "dinit"), DINIT_WATCH=watch,
                  DINIT_JSON_STDOUT="0")
    wait_up(dinit, "web")
    services.add("later", UP.format(tag="later"))
    if watch == "on":
        wait_up(dinit, "later")
    assert stop(dinit) == 0
    imported = [line for line in dinit.stderr.splitlines() if line.startswith(b"import time:")]
    assert imported and not [line for line in imported if unwanted in line]
    assert not [line for line in imported if b"watchfiles" in line]


def test_a_watcher_that_cannot_start_is_one_warning_and_rescans_go_on(services: Services,
                                                                     tmp_path: Path) -> None:
    """§11: a watcher that cannot be created (here watchfiles' extension module cannot be found: a
    package of that name without it comes first on the path) is one warning; the periodic rescans
    go on, so a service added afterwards still starts."""
    shadow = tmp_path / "shadow" / "watchfiles"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    services.add("web", UP.format(tag="web"))
    dinit = start(services, PYTHONPATH=str(shadow.parent), **{**WATCH, "DINIT_WATCH_INTERVAL": "0.2"})
    dinit.wait_for(rb"warning: cannot watch \S+ for changes \(ImportError: watchfiles has no "
                   rb"_rust_notify extension module\), rescanning every 0.2 s")
    wait_up(dinit, "web")
    services.add("api", UP.format(tag="api"))
    wait_up(dinit, "api")
    assert stop(dinit) == 0
    assert len(re.findall(rb"cannot watch", dinit.stderr)) == 1
