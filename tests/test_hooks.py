"""Container hooks (§15): ``DINIT_START_DIR`` runs before any service, ``DINIT_STOP_DIR`` after every
process is gone, both checked at start and bounded by ``DINIT_TIMEOUT``.

Each test gives dinit its own hook directories in a temp dir (the harness points them nowhere
otherwise), and dinit runs as PID 1 and as a subreaper where that could matter.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from harness import TIME, Services, run, start, write_program


def hooks(root: Path, **programs: str) -> Path:
    """A hook directory with one sh program per keyword (``_`` in a name stands for ``-``)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, body in programs.items():
        write_program(root / name.replace("_", "-"), body)
    return root


def dirs(tmp_path: Path, start_dir: Path | None = None, stop_dir: Path | None = None) -> dict[str, str]:
    return {"DINIT_START_DIR": str(start_dir or tmp_path / "no-start.d"),
            "DINIT_STOP_DIR": str(stop_dir or tmp_path / "no-stop.d")}


def test_start_hooks_run_one_at_a_time_in_byte_order_before_any_service(
        services: Services, tmp_path: Path, pid1: bool) -> None:
    trace = tmp_path / "trace"
    # Byte order: "10-b" < "2-a" < "B-c" < "a-d" (digits, then capitals, then small letters).
    body = 'echo "$(basename "$0") $(pwd)" >> {trace}; echo "hello from $(basename "$0")" >&2; sleep 0.05\n'
    start_dir = hooks(tmp_path / "start.d", **{name: body.format(trace=trace)
                                               for name in ("a_d", "B_c", "2_a", "10_b")})
    (start_dir / ".hidden").write_text("not a hook, not even executable")
    services.add("web", f"cat {trace} >&2; echo web-started >> {trace}")
    dinit = run(services, pid1=pid1, DINIT_LOG_LEVEL="info", **dirs(tmp_path, start_dir))
    assert dinit.returncode == 0, dinit.stderr.decode()
    lines = trace.read_text().splitlines()
    assert lines == [f"{name} {start_dir}" for name in ("10-b", "2-a", "B-c", "a-d")] + ["web-started"]
    for name in ("10-b", "2-a", "B-c", "a-d"):
        assert dinit.service_lines(f"start.d/{name}") == [f"hello from {name}".encode()]
    messages = dinit.messages("info")
    done = rb"start.d/\S+: PID \d+ finished with status 0"
    finished = [i for i, m in enumerate(messages) if re.fullmatch(done, m)]
    starts = [i for i, m in enumerate(messages) if re.fullmatch(rb"start.d/\S+: starting", m)]
    assert len(finished) == len(starts) == 4
    assert all(f < s for f, s in zip(finished, starts[1:], strict=False)), messages  # one at a time
    assert finished[-1] < messages.index(b"web/run: starting")


def test_start_hook_json_stdout_is_labelled_start_d(services: Services, tmp_path: Path) -> None:
    start_dir = hooks(tmp_path / "start.d", setup='echo \'{"migrated":true}\'')
    services.add("web", "exit 0")
    dinit = run(services, **dirs(tmp_path, start_dir))
    assert dinit.returncode == 0
    [line] = dinit.json_lines()
    assert (line["migrated"], line["service"], line["stage"]) == (True, "start.d", "setup")


def test_a_failing_start_hook_stops_everything_before_any_service_starts(
        services: Services, tmp_path: Path, pid1: bool) -> None:
    ran = tmp_path / "ran"
    start_dir = hooks(tmp_path / "start.d", **{"10_ok": "exit 0",
                                               "20_fail": "echo cannot migrate >&2; exit 3",
                                               "30_never": f"touch {ran}-30"})
    stop_dir = hooks(tmp_path / "stop.d", cleanup='echo "status=$DINIT_STATUS" >&2')
    services.add("web", f"touch {ran}")
    dinit = run(services, pid1=pid1, **dirs(tmp_path, start_dir, stop_dir))
    assert dinit.returncode == 1
    assert not ran.exists() and not Path(f"{ran}-30").exists()
    assert dinit.service_lines("start.d/20-fail") == [b"cannot migrate"]
    errors = dinit.messages("error")
    assert errors == [b"start.d/20-fail: PID " + errors[0].split()[2]
                      + b" exited with status 3, not starting any service"]
    # Stop hooks are the cleanup half: they run after a failed start too, told the exit code.
    assert dinit.service_lines("stop.d/cleanup") == [b"status=1"]


def test_a_start_hook_that_cannot_be_executed_is_exit_1(services: Services, tmp_path: Path) -> None:
    start_dir = tmp_path / "start.d"
    start_dir.mkdir()
    (start_dir / "bad").write_text("#!/nonexistent/interpreter\n")
    (start_dir / "bad").chmod(0o755)
    services.add("web", f"touch {tmp_path / 'ran'}")
    dinit = run(services, **dirs(tmp_path, start_dir))
    assert dinit.returncode == 1
    assert not (tmp_path / "ran").exists()
    assert re.fullmatch(rb"start.d/bad: cannot run .*/bad: .*, not starting any service",
                        dinit.messages("error")[0]), dinit.stderr


def test_stop_hooks_run_in_order_after_every_process_is_gone_with_dinit_status(
        services: Services, tmp_path: Path, pid1: bool) -> None:
    gone = tmp_path / "gone"
    flag = tmp_path / "flag"
    # The service's slow SIGTERM handler and its background child must both be gone first.
    services.add("slow", f"trap 'sleep 0.3; touch {gone}; exit 0' TERM\n"
                         f"(trap '' TERM; sleep 0.5; touch {gone}-child) &\n"
                         "echo ready >&2\nwhile :; do sleep 0.05; done")
    services.add("web", f"while [ ! -e {flag} ]; do sleep 0.01; done; exit 3")
    check = (f'for f in {gone} {gone}-child; do\n'
             '  [ -e $f ] && echo "$(basename "$0") saw $(basename $f)"\ndone\n')
    stop_dir = hooks(tmp_path / "stop.d", **{
        "1_first": check + 'echo "status=$DINIT_STATUS"; exit 2',
        "2_second": "exec >&2\n" + check + 'echo "status=$DINIT_STATUS"'})
    dinit = start(services, pid1=pid1, DINIT_JSON_STDOUT="off", **dirs(tmp_path, stop_dir=stop_dir))
    dinit.wait_for(rb"slow/run: ready")
    flag.touch()
    assert dinit.wait() == 3  # a failing stop hook never changes the exit code
    assert dinit.stdout.count(b"stop.d/1-first: ") == 3
    assert re.search(TIME + rb" stop.d/1-first: 1-first saw gone\n.* stop.d/1-first: 1-first saw gone-child\n"
                     rb".* stop.d/1-first: status=3\n", dinit.stdout), dinit.stdout
    assert dinit.service_lines("stop.d/2-second") == [b"2-second saw gone", b"2-second saw gone-child",
                                                       b"status=3"]
    [warning] = [m for m in dinit.messages("warning") if m.startswith(b"stop.d/")]
    assert re.fullmatch(rb"stop.d/1-first: PID \d+ exited with status 2", warning)


@pytest.mark.parametrize("which", ["start", "stop"])
def test_hooks_are_bounded_by_dinit_timeout(services: Services, tmp_path: Path, which: str) -> None:
    body = "sleep 1000 &\nexec sleep 1000"  # a hung hook with a child in its session
    hook_dir = hooks(tmp_path / f"{which}.d", **{"1_hang": body, "2_next": "echo next ran >&2"})
    services.add("web", "exit 0")
    dinit = run(services, DINIT_TIMEOUT="0.3", **dirs(tmp_path, **{f"{which}_dir": hook_dir}))
    [warning] = [m for m in dinit.messages("warning") if m.startswith(f"{which}.d/".encode())][:1]
    pattern = (rf"{which}.d/1-hang: still running 0.3 s after it started \(DINIT_TIMEOUT\), "
               r"sent SIGKILL to session (\d+): PIDs (\d+) (\d+)")
    match = re.fullmatch(pattern.encode(), warning)
    assert match and match.group(1) in match.group(2, 3), warning  # the hook and its child
    if which == "start":
        assert dinit.returncode == 1
        assert re.fullmatch(rb"start.d/1-hang: PID \d+ died of signal 9 \(SIGKILL\), "
                            rb"not starting any service", dinit.messages("error")[0])
        assert dinit.service_lines("start.d/2-next") == []
    else:
        assert dinit.returncode == 0
        assert dinit.service_lines("stop.d/2-next") == [b"next ran"]


def test_a_stop_signal_during_a_start_hook_stops_it_and_starts_no_service(
        services: Services, tmp_path: Path, pid1: bool) -> None:
    start_dir = hooks(tmp_path / "start.d", **{"1_wait": "echo waiting >&2; exec sleep 1000",
                                               "2_never": f"touch {tmp_path / 'never'}"})
    stop_dir = hooks(tmp_path / "stop.d", cleanup='echo "status=$DINIT_STATUS" >&2')
    services.add("web", f"touch {tmp_path / 'ran'}")
    dinit = start(services, pid1=pid1, **dirs(tmp_path, start_dir, stop_dir))
    dinit.wait_for(rb"start.d/1-wait: waiting")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    assert not (tmp_path / "ran").exists() and not (tmp_path / "never").exists()
    assert dinit.messages("error") == []
    assert dinit.service_lines("stop.d/cleanup") == [b"status=0"]


def test_a_hook_directory_that_is_a_file_is_a_start_up_error(services: Services, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "start.d"
    not_a_dir.write_text("")
    services.add("web", f"touch {tmp_path / 'ran'}")
    dinit = run(services, **dirs(tmp_path, not_a_dir))
    assert dinit.returncode == 1
    assert dinit.messages("error") == [f"DINIT_START_DIR {not_a_dir}: not a directory".encode()]
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("entry", ["not-executable", "directory", "dangling"])
def test_a_hook_that_cannot_run_is_a_start_up_error_naming_it(services: Services, tmp_path: Path,
                                                              entry: str) -> None:
    stop_dir = hooks(tmp_path / "stop.d", ok="exit 0")
    path = stop_dir / "bad"
    reason = {"not-executable": "not executable", "directory": "not a regular file",
              "dangling": "dangling symlink"}[entry]
    if entry == "not-executable":
        path.write_text("#!/bin/sh\n")
    elif entry == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere")
    start_dir = hooks(tmp_path / "start.d", first=f"touch {tmp_path / 'hook-ran'}")
    services.add("web", f"touch {tmp_path / 'ran'}")
    dinit = run(services, **dirs(tmp_path, start_dir, stop_dir))
    assert dinit.returncode == 1
    assert dinit.messages("error") == [f"stop.d/bad: {path}: {reason}".encode()]
    assert not (tmp_path / "ran").exists() and not (tmp_path / "hook-ran").exists()


def test_default_hook_directories_are_etc_dinit(services: Services, tmp_path: Path) -> None:
    """With the variables empty (= default), /etc/dinit/start.d and stop.d are used -- in a private
    /etc, so the host's are never run."""
    marker = tmp_path / "marker"
    script = tmp_path / "private-etc"
    script.write_text("\n".join([
        "#!/bin/sh", "set -e", "mount -t tmpfs dinit-test-etc /etc",
        "mkdir -p /etc/dinit/start.d /etc/dinit/stop.d",
        f"printf '#!/bin/sh\\necho start >> {marker}\\n' > /etc/dinit/start.d/hook",
        f"printf '#!/bin/sh\\necho stop >> {marker}\\n' > /etc/dinit/stop.d/hook",
        "chmod +x /etc/dinit/start.d/hook /etc/dinit/stop.d/hook", 'exec "$@"', ""]))
    script.chmod(0o755)
    services.add("web", f"echo run >> {marker}")
    dinit = run(services, wrapper=("unshare", "--mount", "--propagation", "private", str(script)),
                DINIT_START_DIR="", DINIT_STOP_DIR="")
    assert dinit.returncode == 0, dinit.stderr.decode()
    assert marker.read_text().split() == ["start", "run", "stop"]


def test_missing_hook_directories_are_no_hooks(services: Services, tmp_path: Path) -> None:
    services.add("web", "echo hi >&2")
    dinit = run(services, DINIT_LOG_LEVEL="debug", **dirs(tmp_path))
    assert dinit.returncode == 0
    assert not [m for m in dinit.messages() if b".d/" in m]
