"""dinit's output as PID 1 (§4): lines (§4.1), stages (§4.2), JSON mode (§4.3), prefix form (§4.4),
logging programs (§4.5), integrity and flow (§4.6).

Every test runs the real dinit on real service directories and asserts on its real stdout, stderr
and exit code. Programs that must wait for something wait for a marker (a file, a PID gone), never
for a fixed time.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import re
import signal
import subprocess
import sys
import termios
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import TIME, Dinit, Services, dinit_command, environment, poll, run, start

PY = f"#!{sys.executable}\n"
MIB = 1024 * 1024
LOGGED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def stdout_lines(dinit: Dinit) -> list[bytes]:
    """dinit's stdout cut at ``\\n`` (every line it writes ends in one)."""
    data = dinit.stdout
    assert data == b"" or data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def prefix_lines(data: bytes, label: str) -> list[bytes]:
    """The ``<time> <label>: <line>`` lines of ``data`` (the text after the label), byte-exact."""
    return re.findall(rb"(?m)^" + TIME + rb" " + re.escape(label.encode("utf-8", "surrogateescape"))
                      + rb": (.*)$", data)


def not_json(dinit: Dinit, label: str = "svc/run") -> list[bytes]:
    """The lines dinit reported as ``<label>: not JSON stdout: <line>`` warnings."""
    prefix = label.encode() + b": not JSON stdout: "
    return [message[len(prefix):] for message in dinit.messages("warning") if message.startswith(prefix)]


def parse_utc(logged: str) -> datetime.datetime:
    return datetime.datetime.strptime(logged, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)


# -- §4.1 lines --------------------------------------------------------------------------------------

#: Output with CRLF endings, empty lines, a doubled \r, invalid UTF-8 and a last line without \n.
LINES_SERVICE = PY + r"""import os
os.write(1, b'{"a":1}\r\n\n\r\n{"b":"x\\r"}\nbad \xff\xfe utf8\r\nx\r\r\n\n{"c":3}')
os.write(2, b'err crlf\r\n\n\r\nerr \xff\xc0 bytes\n\n\nlast err')
"""
STDOUT_LINES = [b'{"a":1}', b'{"b":"x\\r"}', b"bad \xff\xfe utf8", b"x\r", b'{"c":3}']
STDERR_LINES = [b"err crlf", b"err \xff\xc0 bytes", b"last err"]


def test_lines_prefix_mode_byte_exact(services: Services) -> None:
    """§4.1/§4.4: with DINIT_JSON_STDOUT=0 both streams come out in prefix form: CR removed once,
    empty lines dropped, the last line without ``\\n`` emitted, invalid UTF-8 passed through."""
    services.add("svc", LINES_SERVICE)
    dinit = run(services, DINIT_JSON_STDOUT="0")
    assert dinit.returncode == 0
    assert prefix_lines(dinit.stdout, "svc/run") == STDOUT_LINES
    assert len(stdout_lines(dinit)) == len(STDOUT_LINES)
    assert dinit.service_lines("svc/run") == STDERR_LINES
    assert dinit.messages("warning", cause=False) == []


@pytest.mark.parametrize("level", ["warn", "info"])
def test_lines_json_mode_byte_exact(services: Services, level: str) -> None:
    """§4.1/§4.3: in JSON mode the objects (CRLF or not, last one without ``\\n``) are annotated; the
    other stdout lines are reported byte-exact (invalid UTF-8, inner ``\\r``) as not-JSON warnings."""
    services.add("svc", LINES_SERVICE)
    dinit = run(services, DINIT_LOG_LEVEL=level)
    assert dinit.returncode == 0
    out = stdout_lines(dinit)
    assert [line.split(b',"service"')[0] for line in out] == [b'{"a":1', b'{"b":"x\\r"', b'{"c":3']
    assert [orjson.loads(line)["service"] for line in out] == ["svc"] * 3
    assert not_json(dinit) == [b"bad \xff\xfe utf8", b"x\r"]
    assert dinit.service_lines("svc/run") == STDERR_LINES


@pytest.mark.parametrize("level", ["error", "none"])
def test_lines_json_mode_rejected_lines_never_dropped(services: Services, level: str) -> None:
    """§4.3: when the level hides warnings, non-JSON stdout lines still reach stderr, in prefix form."""
    services.add("svc", LINES_SERVICE)
    dinit = run(services, DINIT_LOG_LEVEL=level)
    assert dinit.returncode == 0
    assert len(stdout_lines(dinit)) == 3
    assert dinit.messages() == []
    lines = dinit.service_lines("svc/run")
    assert [line for line in lines if line in STDERR_LINES] == STDERR_LINES
    assert [line for line in lines if line not in STDERR_LINES] == [b"bad \xff\xfe utf8", b"x\r"]


#: Builds ``line``: 5 MiB plus a remainder, without ``\n``; a JSON object of that size if ``json``.
BIG_LINE = r"""
unit = b"0123456789abcdef\xff"
line = (unit * (5 * 1048576 // len(unit) + 1))[:5 * 1048576] + b"tail-remainder"
if json:
    line = b'{"big":"' + line[:-10].replace(b"\xff", b"x") + b'"}'
"""


def big_line(json: bool) -> bytes:
    scope: dict[str, Any] = {"json": json}
    exec(BIG_LINE, scope)
    return scope["line"]


def big_line_service(fd: int, json: bool) -> str:
    """A service writing the big line on ``fd``, then two short lines, then exiting 0."""
    return PY + f"""import os
json = {json}
{BIG_LINE}
def write(data):
    view = memoryview(data)
    while view:
        view = view[os.write({fd}, view):]
write(line + b"\\n")
write(b'{{"after":1}}\\n{{"after":2}}\\n')
"""


@pytest.mark.parametrize("stream", ["stderr", "stdout-prefix", "stdout-json"])
def test_five_mebibyte_line_in_pieces(services: Services, stream: str) -> None:
    """§4.1: a 5 MiB (+ remainder) line arrives as five 1 MiB pieces and the remainder, in order,
    bytes unchanged, with one warning; the lines after it arrive; the service is not harmed."""
    json = stream == "stdout-json"
    line = big_line(json)
    fd = 2 if stream == "stderr" else 1
    services.add("svc", big_line_service(fd, json))
    variables = {"DINIT_JSON_STDOUT": "0"} if stream == "stdout-prefix" else {}
    dinit = run(services, timeout=60, **variables)
    assert dinit.returncode == 0
    assert dinit.messages("warning").count(
        b"svc/run: line longer than 1048576 bytes, emitted in pieces") == 1
    if json:
        pieces = not_json(dinit)
        assert [orjson.loads(out)["after"] for out in stdout_lines(dinit)] == [1, 2]
    else:
        lines = prefix_lines(dinit.stderr if fd == 2 else dinit.stdout, "svc/run")
        pieces = lines[:-2]
        assert lines[-2:] == [b'{"after":1}', b'{"after":2}']
    assert [len(piece) for piece in pieces] == [MIB] * 5 + [len(line) - 5 * MIB]
    assert b"".join(pieces) == line


# -- §4.3 JSON mode ----------------------------------------------------------------------------------

def test_json_lines_annotated_with_time_of_reading(services: Services) -> None:
    """§4.3: objects keep their bytes and get service, stage and a UTC millisecond ``logged`` time
    taken while dinit ran; a program's own ``service`` is replaced; ``{}`` stays valid."""
    services.add("svc", r"""
printf '%s\n' '{"z": 1, "a" : 123456789012345678901234567890, "n":1.50}'
printf '%s\n' '{"service":"fake","x":"\u00e9"}'
printf '%s\n' '{}'
""")
    before = datetime.datetime.now(datetime.UTC)
    dinit = run(services)
    after = datetime.datetime.now(datetime.UTC)
    assert dinit.returncode == 0
    out = stdout_lines(dinit)
    assert len(out) == 3
    assert out[0].startswith(b'{"z": 1, "a" : 123456789012345678901234567890, "n":1.50,"service":"svc",')
    assert out[1].startswith(b'{"x":"\\u00e9","service":"svc",')
    assert out[2].startswith(b'{"service":"svc",')
    for line in out:
        value = orjson.loads(line)
        assert list(value)[-3:] == ["service", "stage", "logged"]
        assert (value["service"], value["stage"]) == ("svc", "run")
        assert LOGGED.match(value["logged"])
        logged = parse_utc(value["logged"])
        assert before - datetime.timedelta(seconds=1) <= logged <= after


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error", "none"])
def test_non_json_stdout_goes_to_stderr(services: Services, level: str) -> None:
    """§4.3: a stdout line that is no JSON object never reaches stdout; it is a warning on stderr,
    or a prefix-form stderr line when the level hides warnings."""
    services.add("svc", """
echo '{"ok":1}'
echo 'plain text'
echo '[1,2]'
echo '{"ok":2}'
""")
    dinit = run(services, DINIT_LOG_LEVEL=level)
    assert dinit.returncode == 0
    assert [orjson.loads(line)["ok"] for line in stdout_lines(dinit)] == [1, 2]
    if level in ("error", "none"):
        assert not_json(dinit) == []
        assert dinit.service_lines("svc/run") == [b"plain text", b"[1,2]"]
    else:
        assert not_json(dinit) == [b"plain text", b"[1,2]"]
        assert dinit.service_lines("svc/run") == []


#: 3000 JSON lines written at once, among them lines with dinit's own keys, an empty object and, in
#: the middle, a three-line traceback: the chunks dinit reads take the block check and its halving.
MIXED_SERVICE = PY + r"""import os
lines = []
for i in range(3000):
    if i == 1500:
        lines += [b"Traceback (most recent call last):", b'  File "x.py", line 1', b"ValueError: boom"]
    if i % 500 == 7:
        lines.append(b'{"i":%d,"service":"own","inner":{"service":[1]},"stage":2}' % i)
    elif i == 2000:
        lines.append(b"{ }")
    else:
        lines.append(b'{"i":%d,"msg":"%s"}' % (i, b"x" * (i % 50)))
view = memoryview(b"\n".join(lines) + b"\n")
while view:
    view = view[os.write(1, view):]
"""


def test_json_many_lines_with_odd_ones_among_them(services: Services) -> None:
    """§4.3 at volume: every object is annotated once, in order, with the program's own ``service``
    and ``stage`` members replaced (a nested one kept), and the non-JSON lines among thousands of
    objects go to stderr, in order, nothing lost."""
    services.add("svc", MIXED_SERVICE)
    dinit = run(services)
    assert dinit.returncode == 0
    out = stdout_lines(dinit)
    values = [orjson.loads(line) for line in out]
    assert [value.get("i") for value in values] == [None if i == 2000 else i for i in range(3000)]
    for line, value in zip(out, values, strict=True):
        assert list(value)[-3:] == ["service", "stage", "logged"]
        assert (value["service"], value["stage"]) == ("svc", "run")
        assert line.count(b'"stage"') == 1 and line.count(b'"service"') == 1 + (b'"inner"' in line)
    assert out[7].startswith(b'{"i":7,"inner":{"service":[1]},"service":"svc","stage":"run",')
    assert not_json(dinit) == [b"Traceback (most recent call last):", b'  File "x.py", line 1',
                               b"ValueError: boom"]


def test_json_stdout_off_writes_prefix_form_to_stdout(services: Services) -> None:
    """§4.4: with DINIT_JSON_STDOUT=0 every stdout line, JSON or not, is prefix form on stdout."""
    services.add("svc", """
echo '{"ok":1}'
echo 'plain text'
echo 'on stderr' >&2
""")
    dinit = run(services, DINIT_JSON_STDOUT="0")
    assert dinit.returncode == 0
    assert prefix_lines(dinit.stdout, "svc/run") == [b'{"ok":1}', b"plain text"]
    assert len(stdout_lines(dinit)) == 2
    assert dinit.service_lines("svc/run") == [b"on stderr"]
    assert dinit.messages("warning", cause=False) == []


def test_service_name_not_utf8(services: Services) -> None:
    """§4.3: a service directory whose name is not UTF-8 still runs; its JSON lines are annotated with
    a valid JSON string and its stderr lines carry the name's bytes."""
    services.add("bad\udcffname", """
echo '{"ok":1}'
echo 'err' >&2
""")
    dinit = run(services)
    assert dinit.returncode == 0, dinit.stderr.decode(errors="replace")
    out = stdout_lines(dinit)
    assert len(out) == 1
    value = orjson.loads(out[0])
    assert value["ok"] == 1
    assert value["service"].startswith("bad") and value["service"].endswith("name")
    assert prefix_lines(dinit.stderr, "bad\udcffname/run") == [b"err"]


# -- §4.2 / §4.5 logging programs --------------------------------------------------------------------

WRAPPING_LOGGER = """
echo "logger started" >&2
while IFS= read -r line; do printf '{"via":"logger","orig":%s}\\n' "$line"; done
echo "logger saw EOF" >&2
"""


def test_logger_stages_and_stop_hook_output(services: Services) -> None:
    """§4.2/§4.5: the logger reads run's stdout and the stop hook's stdout; its stdout is stage ``run``
    (JSON-annotated), its stderr stage ``log``; the hook's stderr is stage ``finish``."""
    services.add(
        "svc",
        """
echo '{"from":"run"}'
echo 'run stderr' >&2
exec sleep 1000
""",
        finish="""
echo '{"from":"finish"}'
echo 'hook stderr' >&2
kill "$DINIT_PID"
""",
        log=WRAPPING_LOGGER,
    )
    dinit = start(services, DINIT_LOG_LEVEL="info", DINIT_FINISH="stop")
    dinit.wait_for(rb'"orig":\{"from":"run"\}', stream="stdout")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0
    objects = dinit.json_lines()
    assert [(obj["via"], obj["orig"], obj["service"], obj["stage"]) for obj in objects] == [
        ("logger", {"from": "run"}, "svc", "run"),
        ("logger", {"from": "finish"}, "svc", "run"),
    ]
    assert dinit.service_lines("svc/log") == [b"logger started", b"logger saw EOF"]
    assert dinit.service_lines("svc/run") == [b"run stderr"]
    assert dinit.service_lines("svc/finish") == [b"hook stderr"]
    assert any(re.fullmatch(rb"svc/log: PID \d+ finished with status 0", message)
               for message in dinit.messages("info"))


def test_logger_exit_115_hands_stdout_to_dinit(services: Services, tmp_path: Path) -> None:
    """§4.5: a logger exiting 115 disables itself without teardown; the service's later stdout lines
    are read by dinit directly, labelled ``run``; the service runs to its own end."""
    marker = tmp_path / "logger-pid"
    services.add(
        "svc",
        f"""
echo '{{"n":1}}'
while [ ! -s {marker} ]; do sleep 0.01; done
pid=$(cat {marker})
while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
echo '{{"n":2}}'
echo 'not json'
echo '{{"n":3}}'
exit 0
""",
        log=f"""
IFS= read -r line
printf '{{"via":"logger","orig":%s}}\\n' "$line"
echo $$ > {marker}.tmp && mv {marker}.tmp {marker}
exit 115
""",
    )
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 0
    objects = dinit.json_lines()
    assert [(obj.get("via"), obj.get("orig"), obj.get("n"), obj["stage"]) for obj in objects] == [
        ("logger", {"n": 1}, None, "run"), (None, None, 2, "run"), (None, None, 3, "run")]
    assert not_json(dinit) == [b"not json"]
    messages = dinit.messages("info")
    assert b"svc/log: logger disabled, reading svc/run stdout directly" in messages
    assert any(re.fullmatch(rb"svc/run: PID \d+ finished with status 0", m) for m in messages)
    assert b"svc/run: stopping" not in messages


def _logger_terminated(services: Services, **variables: str) -> tuple[Dinit, list[bytes]]:
    """Run dinit to its end (exit 0) and check that svc's logger was told its input is closed and
    got SIGTERM; returns the run and dinit's messages."""
    dinit = run(services, DINIT_LOG_LEVEL="info", **variables)
    assert dinit.returncode == 0
    messages = dinit.messages()
    assert b"svc/log: still running after its input was closed" in messages
    assert any(re.fullmatch(rb"svc/log: sending SIGTERM to PID \d+", m) for m in messages)
    return dinit, messages


def test_logger_ignoring_eof_is_terminated(services: Services) -> None:
    """§4.5: a logger that keeps running after its input is closed gets SIGTERM; dinit exits."""
    services.add("svc", "echo '{\"n\":1}'\n", log="cat >/dev/null\nsleep 1000\n")
    _, messages = _logger_terminated(services)
    assert not any(b"SIGKILL" in m for m in messages)
    assert messages[-1] == b"dinit exiting with status 0"


def test_logger_that_never_reads_is_terminated_and_its_input_read(services: Services) -> None:
    """§4.5 "dinit never hangs on a logger": a logger that never reads its input (so the pipe is
    closed but not empty) gets SIGTERM too, and dinit then reads what it left: nothing is lost."""
    services.add("svc", "echo '{\"n\":1}'\necho '{\"n\":2}'\n", log="exec sleep 1000\n")
    dinit, _ = _logger_terminated(services)
    assert [(obj["n"], obj["service"], obj["stage"]) for obj in dinit.json_lines()] == [
        (1, "svc", "run"), (2, "svc", "run")]


def test_slow_logger_is_not_cut_short(services: Services) -> None:
    """§4.5: a logger that is still working through its input after the service is gone (here:
    one line every 0.3 s, 6 lines, well past the 1 s grace period) is not terminated."""
    lines = "".join(f"echo '{{\"n\":{n}}}'\n" for n in range(6))
    services.add("svc", lines, log="while IFS= read -r line; do echo \"$line\"; sleep 0.3; done\n")
    dinit = run(services, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 0
    assert [obj["n"] for obj in dinit.json_lines()] == list(range(6))
    assert b"still running after its input was closed" not in dinit.stderr
    assert any(re.fullmatch(rb"svc/log: PID \d+ finished with status 0", m) for m in dinit.messages())


def test_logger_ignoring_eof_and_sigterm_is_killed(services: Services) -> None:
    """§4.5: a logger that also ignores SIGTERM gets SIGKILL after DINIT_KILL_TIMEOUT; dinit exits 0."""
    services.add("svc", "echo '{\"n\":1}'\n", log=PY + """import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.buffer.read()
time.sleep(1000)
""")
    _, messages = _logger_terminated(services, DINIT_KILL_TIMEOUT="1")
    assert any(re.fullmatch(rb"svc/log: sending SIGKILL to PID \d+", m) for m in messages)
    assert any(re.fullmatch(rb"svc/log: PID \d+ finished with signal 9", m) for m in messages)
    assert messages[-1] == b"dinit exiting with status 0"


# -- §4.6 integrity and flow -------------------------------------------------------------------------

FLOOD_SERVICE = PY + """import os, random, zlib
name, seed, done = {name!r}, {seed}, {done!r}
rng = random.Random(seed)
base = rng.randbytes(120_000).hex()
pending = {{1: [], 2: []}}
sizes = {{1: 0, 2: 0}}
counts = {{1: 0, 2: 0}}

def flush(fd):
    view = memoryview(b"".join(pending[fd]))
    while view:
        view = view[os.write(fd, view[:rng.randint(1, 200_000)]):]
    pending[fd].clear()
    sizes[fd] = 0

for _ in range(100_000):
    length = rng.randint(0, 100 * 1024) if rng.random() < 0.001 else int(rng.expovariate(1 / 100))
    start = rng.randrange(0, len(base) - length)
    pad = base[start:start + length]
    crc = zlib.crc32(pad.encode())
    fd = rng.choice((1, 2))
    seq = counts[fd]
    counts[fd] += 1
    if fd == 1:
        line = '{{"svc":"%s","seq":%d,"len":%d,"crc":%d,"pad":"%s"}}\\n' % (name, seq, length, crc, pad)
    else:
        line = "%s %d %d %d %s\\n" % (name, seq, length, crc, pad)
    pending[fd].append(line.encode())
    sizes[fd] += len(line)
    if sizes[fd] > 65536:
        flush(fd)
flush(1)
flush(2)
with open(done + ".tmp", "w") as file:
    file.write("%d %d" % (counts[1], counts[2]))
os.rename(done + ".tmp", done)
os._exit(115)  # disabled itself: the others keep running
"""


def test_concurrent_services_lines_whole_once_in_order(services: Services, tmp_path: Path) -> None:
    """§4.6: 8 services each write 100 000 lines (mostly short, some up to 100 KiB) on stdout and
    stderr at once; every line arrives whole, exactly once, in per-stream order."""
    names = [f"s{i}" for i in range(8)]
    for index, name in enumerate(names):
        services.add(name, FLOOD_SERVICE.format(name=name, seed=index, done=str(tmp_path / name)))
    dinit = start(services)

    def finished() -> bool:
        assert dinit.popen.poll() is None, "dinit exited before every service finished writing"
        return all((tmp_path / name).exists() for name in names)

    poll(finished, timeout=120, interval=0.1, message="every service to finish writing")
    dinit.signal(signal.SIGTERM)
    assert dinit.wait(120) == 0
    expected = {name: tuple(map(int, (tmp_path / name).read_text().split())) for name in names}

    seen_out: dict[str, list[int]] = {name: [] for name in names}
    for line in dinit.stdout.splitlines():
        obj = orjson.loads(line)
        assert (obj["service"], obj["stage"]) == (obj["svc"], "run")
        assert len(obj["pad"]) == obj["len"] and zlib.crc32(obj["pad"].encode()) == obj["crc"]
        seen_out[obj["svc"]].append(obj["seq"])

    seen_err: dict[str, list[int]] = {name: [] for name in names}
    line_re = re.compile(TIME + rb" (s\d)/run: (s\d) (\d+) (\d+) (\d+) ([0-9a-f]*)")
    stderr = dinit.stderr.split(b"\n")
    assert stderr.pop() == b""
    own = [line for line in stderr if re.match(TIME + rb" dinit: ", line)]
    assert [line[25:] for line in own] in (
        [], [b"dinit: warning: all services have disabled themselves, waiting for a signal to exit"])
    for line in stderr:
        if line in own:
            continue
        match = line_re.fullmatch(line)
        assert match, line[:200]
        label, name, seq, length, crc, pad = match.groups()
        assert label == name
        assert len(pad) == int(length) and zlib.crc32(pad) == int(crc)
        seen_err[name.decode()].append(int(seq))

    for name in names:
        assert seen_out[name] == list(range(expected[name][0])), name
        assert seen_err[name] == list(range(expected[name][1])), name
        assert sum(expected[name]) == 100_000


def test_million_lines_before_exit(services: Services) -> None:
    """§4.6: a service writing 1 000 000 lines as fast as it can and exiting at once: all of them
    are on stdout, in order, before dinit exits."""
    services.add("fast", PY + """import os
for start in range(0, 1_000_000, 20_000):
    view = memoryview("".join('{"seq":%d}\\n' % i for i in range(start, start + 20_000)).encode())
    while view:
        view = view[os.write(1, view):]
""")
    dinit = run(services, timeout=120)
    assert dinit.returncode == 0
    out = dinit.stdout
    seqs = re.findall(rb'(?m)^\{"seq":(\d+),"service":"fast","stage":"run","logged":"' + TIME + rb'"\}$',
                      out)
    assert len(seqs) == 1_000_000
    assert out.count(b"\n") == 1_000_000
    assert list(map(int, seqs)) == list(range(1_000_000))


GRANDCHILD_SERVICE = PY + """import os, signal, sys, time
ready = {ready!r}
pid = os.fork()
if pid == 0:
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(1))
    parent = os.getppid()
    os.write(1, b'{{"from":"grandchild","n":0}}\\n')
    open(ready, "w").close()
    while os.getppid() == parent:
        time.sleep(0.005)
    os.write(1, b'{{"from":"grandchild","n":1}}\\n')
    os.write(2, b"grandchild stderr after run exited\\n")
    while not terminated:
        time.sleep(0.005)
    for n in range(2, 5):
        os.write(1, b'{{"from":"grandchild","n":%d}}\\n' % n)
    os.write(2, b"grandchild done\\n")
    os._exit(0)
while not os.path.exists(ready):
    time.sleep(0.005)
os.write(1, b'{{"from":"run"}}\\n')
"""


def test_grandchild_output_after_service_exit(services: Services, tmp_path: Path, pid1: bool) -> None:
    """§4.6: a grandchild holding the service's pipes keeps being read under the service's label
    after ``run`` exited, including the lines it writes when terminated at teardown (§6.2)."""
    services.add("svc", GRANDCHILD_SERVICE.format(ready=str(tmp_path / "ready")))
    dinit = run(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    assert dinit.returncode == 0
    objects = dinit.json_lines()
    assert {(obj["service"], obj["stage"]) for obj in objects} == {("svc", "run")}
    assert [obj["n"] for obj in objects if obj["from"] == "grandchild"] == [0, 1, 2, 3, 4]
    assert len([obj for obj in objects if obj["from"] == "run"]) == 1
    assert dinit.service_lines("svc/run") == [b"grandchild stderr after run exited", b"grandchild done"]
    assert any(b"terminating reparented child process with PID" in m for m in dinit.messages("warning"))


class RawDinit:
    """dinit (as PID 1) whose stdout the test reads itself (or not), or whose stdout or stderr is a
    pipe without reader (``closed``); the other stream is collected in a thread."""

    def __init__(self, services: Services, closed: str | None = None, **variables: str) -> None:
        command = dinit_command()
        streams: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        if closed is not None:
            read_end, write_end = os.pipe()
            os.close(read_end)  # no reader from the start: every write gets EPIPE
            streams[closed] = write_end
        self.popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True,
                                      env=environment(services, **variables), **streams)
        if closed is not None:
            os.close(streams[closed])
        collected = self.popen.stdout if closed == "stderr" else self.popen.stderr
        assert collected is not None
        self._collected_fd = collected.fileno()
        self._data = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        while chunk := os.read(self._collected_fd, 1 << 16):
            with self._lock:
                self._data.extend(chunk)

    @property
    def collected(self) -> bytes:
        """What the collector thread read so far (stderr, or stdout when stderr is ``closed``)."""
        with self._lock:
            return bytes(self._data)

    def wait_collected(self, pattern: bytes, timeout: float = 20) -> None:
        poll(lambda: re.search(pattern, self.collected), timeout, message=f"{pattern!r}")

    def dinit_pid(self) -> int:
        def child() -> int | None:
            try:
                with open(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children") as file:
                    pids = file.read().split()
            except FileNotFoundError:
                return None
            return int(pids[0]) if pids else None
        return poll(child, message="dinit to start")

    def finish(self, timeout: float = 30) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


@contextlib.contextmanager
def raw_dinit(services: Services, closed: str | None = None, **variables: str) -> Iterator[RawDinit]:
    dinit = RawDinit(services, closed, **variables)
    try:
        yield dinit
    finally:
        dinit.kill()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def unread(fd: int) -> int:
    buffer = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buffer)
    return int.from_bytes(buffer, "little")


def test_stalled_stdout_bounds_memory_and_keeps_teardown(services: Services) -> None:
    """§4.6: while nobody reads dinit's stdout and a service floods it, dinit's memory stays bounded
    and SIGTERM still starts teardown, signals and reaps the service; once stdout is read, dinit
    writes what it holds and exits 0."""
    services.add("svc", "exec yes '{\"flood\":\"" + "x" * 200 + "\"}'\n")
    with raw_dinit(services, DINIT_LOG_LEVEL="info") as dinit:
        assert dinit.popen.stdout is not None
        out_fd = dinit.popen.stdout.fileno()
        pid = dinit.dinit_pid()
        dinit.wait_collected(rb"svc/run: running with PID")
        poll(lambda: unread(out_fd) >= 60_000, message="dinit's stdout pipe to fill up")
        peak = 0
        window = time.monotonic() + 2.0
        while time.monotonic() < window:  # a measurement window, not a wait for something
            peak = max(peak, rss_kib(pid))
            time.sleep(0.05)
        os.kill(pid, signal.SIGTERM)
        dinit.wait_collected(rb"dinit: info: got signal 15, terminating services")
        dinit.wait_collected(rb"svc/run: sending SIGTERM to PID \d+")
        dinit.wait_collected(rb"svc/run: PID \d+ finished with signal 15")
        peak = max(peak, rss_kib(pid))
        assert dinit.popen.poll() is None, "dinit exited without writing its stdout"
        assert peak < 200 * 1024, f"dinit's RSS reached {peak} KiB while stdout was stalled"
        out = b""
        while chunk := os.read(out_fd, 1 << 20):
            out += chunk
        assert dinit.finish() == 0
        assert out.endswith(b"\n")
        for line in out.split(b"\n")[:-1]:
            assert orjson.loads(line)["flood"] == "x" * 200
        assert re.search(rb"dinit: info: dinit exiting with status 0\n$", dinit.collected)


def test_last_output_comes_before_finished_even_after_a_busy_spell(services: Services,
                                                                  tmp_path: Path) -> None:
    """§4.6 order: a program that wrote much more than one read (128 KiB) and exited while dinit
    was busy (here: stopped) still has all of its lines before dinit's line saying it finished."""
    pid_file, go = tmp_path / "pid", tmp_path / "go"
    services.add("svc", PY + f"""import os, sys, time
open({str(pid_file)!r}, "w").write(str(os.getpid()))
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
sys.stderr.buffer.write(b"".join(b"line %06d %s\\n" % (n, b"x" * 50) for n in range(14000)))
sys.stderr.buffer.write(b"LAST\\n")
sys.stderr.flush()
""")
    # Not PID 1, so the service's PID is the same in the test's namespace (the order is the same).
    dinit = start(services, pid1=False, DINIT_LOG_LEVEL="info")
    service = int(poll(lambda: pid_file.exists() and pid_file.read_text(), message="the service's PID"))
    os.kill(dinit.pid, signal.SIGSTOP)
    try:
        go.touch()
        poll(lambda: Path(f"/proc/{service}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z",
             message="the service to exit while dinit is stopped")
    finally:
        os.kill(dinit.pid, signal.SIGCONT)
    assert dinit.wait() == 0
    err = dinit.stderr
    assert len(dinit.service_lines("svc/run")) == 14001
    assert err.index(b" svc/run: LAST\n") < err.index(f"svc/run: PID {service} finished".encode())


def test_logger_blocked_by_dinits_backpressure_is_not_terminated(services: Services) -> None:
    """§4.5/§4.6: while nobody reads dinit's stdout, a logger blocks on its writes and stops reading
    its (closed) input: that is dinit's doing, so the logger is left alone, and once stdout is read
    every line arrives and the logger exits by itself."""
    # About 7 MB once labelled: more than the 4 MiB dinit queues before it stops reading.
    services.add("svc", PY + """import os
os.write(1, b"".join(b"line %07d %s\\n" % (n, b"x" * 50) for n in range(70000)))
""", log="exec cat\n")
    with raw_dinit(services, DINIT_JSON_STDOUT="0", DINIT_LOG_LEVEL="info") as dinit:
        assert dinit.popen.stdout is not None
        out_fd = dinit.popen.stdout.fileno()
        dinit.wait_collected(rb"svc/run: PID \d+ finished with status 0")
        window = time.monotonic() + 2.0  # stalled for twice the logger's grace period
        while time.monotonic() < window:  # a measurement window, not a wait for something
            time.sleep(0.05)
        out = b""
        while chunk := os.read(out_fd, 1 << 20):
            out += chunk
        assert dinit.finish() == 0
    assert b"still running after its input was closed" not in dinit.collected
    assert re.search(rb"svc/log: PID \d+ finished with status 0", dinit.collected)
    assert len(prefix_lines(out, "svc/run")) == 70000


@pytest.mark.parametrize("json", ["on", "off"])
def test_tiny_lines_with_a_long_label_bound_memory(services: Services, json: str) -> None:
    """§4.6: one-byte lines from a service with a 250-byte name grow about 150-fold when labelled
    (prefix form, or the "not JSON stdout" warning); read in full 128 KiB chunks, a single read
    would queue tens of MiB at once. Reads are shortened for long labels, so dinit's memory stays
    bounded while its output is read as fast as it comes."""
    name = "s" * 250
    services.add(name, "exec yes a\n")
    with raw_dinit(services, DINIT_JSON_STDOUT=json) as dinit:
        assert dinit.popen.stdout is not None
        out_fd = dinit.popen.stdout.fileno()
        pid = dinit.dinit_pid()
        peak = 0
        window = time.monotonic() + 2.0
        while time.monotonic() < window:  # a measurement window, not a wait for something
            if json == "off":  # the lines come on stdout; else on stderr, read by the collector
                os.read(out_fd, 1 << 20)
            peak = max(peak, rss_kib(pid))
        os.kill(pid, signal.SIGTERM)
        while os.read(out_fd, 1 << 20):
            pass
        assert dinit.finish() == 0
        if json == "on":
            assert f"{name}/run: not JSON stdout: a\n".encode() in dinit.collected
        assert peak < 64 * 1024, f"dinit's RSS reached {peak} KiB"


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_closed_stream_keeps_supervising(services: Services, tmp_path: Path, closed: str) -> None:
    """§4.6: when dinit's stdout (or stderr) is closed, dinit says so once on the other stream, keeps
    supervising to a normal end (exit 0) and writes the closed stream's lines to the other one."""
    marker = tmp_path / "first-written"
    services.add("svc", f"""
echo '{{"n":1}}'
echo 'err 1' >&2
touch {marker}
echo '{{"n":2}}'
echo 'err 2' >&2
echo '{{"n":3}}'
echo 'done' >&2
""")
    other = "stderr" if closed == "stdout" else "stdout"
    with raw_dinit(services, closed, DINIT_LOG_LEVEL="info") as dinit:
        code = dinit.finish()
        data = dinit.collected
    assert code == 0
    assert marker.exists()
    closed_messages = re.findall(TIME + rb" dinit: error: (\w+ is closed .*)", data)
    assert closed_messages == [
        f"{closed} is closed (Broken pipe), writing its lines to {other} from now on".encode()]
    objects = [orjson.loads(line) for line in data.split(b"\n") if line.startswith(b"{")]
    assert [(obj["n"], obj["service"], obj["stage"]) for obj in objects] == [
        (1, "svc", "run"), (2, "svc", "run"), (3, "svc", "run")]
    assert prefix_lines(data, "svc/run") == [b"err 1", b"err 2", b"done"]
    assert re.search(rb"svc/run: PID \d+ finished with status 0", data)
    assert data.endswith(b"dinit: info: dinit exiting with status 0\n")
