"""dinit's own messages (§7): key/value events, their text and JSON renderings, DINIT_LOG_FORMAT.

Unit tests assert on the events themselves (structlog's ``capture_logs``) and on what the processor
chain renders from them: the §7 text line, or under ``json`` one JSON object whose ``msg`` is the text
form's message. Behaviour tests run the real dinit as PID 1 (and as a subreaper) and parse every line
it writes on stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from harness import TIME, Collector, Dinit, Services, run
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from dinit import log
from dinit.config import ConfigError, load, log_format_from
from dinit.log import logger

LINE = re.compile(TIME + rb" dinit: (debug|info|warning|error): (.*)\n")
TIME_TEXT = re.compile(TIME.decode())


def emit(collector: Collector, log_format: str, level: str, event: str, /, **fields: Any) -> bytes:
    """One message of ``level`` rendered in ``log_format``."""
    log._json = log_format == "json"
    getattr(logger, level)(event, **fields)
    return collector.take()


def text_message(line: bytes) -> tuple[str, bytes]:
    """Level and message of a single text line (asserting it is exactly one §7 line)."""
    match = LINE.fullmatch(line)
    assert match, line
    return match[1].decode(), match[2]


def json_object(line: bytes) -> dict[str, Any]:
    """The object of a single JSON line (asserting it is exactly one line)."""
    assert line.endswith(b"\n") and line.count(b"\n") == 1, line
    value = orjson.loads(line)
    assert isinstance(value, dict) and list(value)[:3] == ["time", "level", "msg"], value
    assert TIME_TEXT.fullmatch(value["time"]), value
    return value


def both(collector: Collector, level: str, event: str, /, **fields: Any) -> tuple[bytes, dict[str, Any]]:
    """The text form's message and the JSON form's object for the same event."""
    text_level, message = text_message(emit(collector, "text", level, event, **fields))
    obj = json_object(emit(collector, "json", level, event, **fields))
    assert obj["level"] == text_level
    return message, obj


# -- events ------------------------------------------------------------------------------------------

def test_events_carry_their_fields(out: Collector) -> None:
    with capture_logs() as events:
        logger.info("running with PID {pid}", service="web", stage="run", pid=7)
        logger.warning("plain message")
        logger.error("PID {pid} finished with status {status}", service="db", stage=12, pid=12, status=1)
    assert events == [
        {"event": "running with PID {pid}", "service": "web", "stage": "run", "pid": 7, "log_level": "info"},
        {"event": "plain message", "log_level": "warning"},
        {"event": "PID {pid} finished with status {status}", "service": "db", "stage": 12, "pid": 12,
         "status": 1, "log_level": "error"},
    ]
    assert out.take() == b""  # captured, not rendered


def test_level_is_checked_before_structlog(out: Collector) -> None:
    log.setup("warning", out, "text")  # type: ignore[arg-type]
    with capture_logs() as events:
        logger.debug("hidden {x}", x=1)
        logger.info("hidden")
        logger.warning("shown")
    assert [event["event"] for event in events] == ["shown"]


def test_none_hides_everything(out: Collector) -> None:
    log.setup("none", out, "json")  # type: ignore[arg-type]
    with capture_logs() as events:
        logger.error("hidden {x}", x=1)
    assert events == []
    assert out.take() == b""


def test_structlog_is_not_imported_when_nothing_is_shown() -> None:
    """Start-up stays fast: at the default level a run that logs nothing never imports structlog."""
    code = ("import sys; from dinit import cli, log; from dinit.output.writer import Writer; "
            "log.setup('warning', Writer(2, 'stderr'), 'json'); log.logger.info('x {y}', y=1); "
            "print('structlog' in sys.modules, 'orjson' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stdout == b"False False\n"
    assert result.stderr == b""


def test_setup_refuses_an_unknown_format(out: Collector) -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        log.setup("info", out, "xml")  # type: ignore[arg-type]


# -- rendering -----------------------------------------------------------------------------------------

def test_text_is_the_section_7_line(out: Collector) -> None:
    line = emit(out, "text", "info", "running with PID {pid}", service="web", stage="run", pid=7)
    assert re.fullmatch(TIME + rb" dinit: info: web/run: running with PID 7\n", line), line


def test_json_is_one_object_with_msg_and_fields(out: Collector) -> None:
    line = emit(out, "json", "info", "running with PID {pid}", service="web", stage="run", pid=7)
    obj = json_object(line)
    assert obj == {"time": obj["time"], "level": "info", "msg": "web/run: running with PID 7",
                   "service": "web", "stage": "run", "pid": 7}
    assert list(obj) == ["time", "level", "msg", "service", "stage", "pid"]


@pytest.mark.parametrize(("event", "fields", "message"), [
    ("plain message", {}, b"plain message"),
    ("stopping", {"service": "web"}, b"web: stopping"),
    ("stopping", {"service": "web", "stage": None}, b"web: stopping"),
    ("finished", {"service": "sleep", "stage": 42}, b"sleep/42: finished"),
    ("status {{ok}} {n}", {"n": 1}, b"status {ok} 1"),
    ("literal {braces} without fields", {}, b"literal {braces} without fields"),  # legacy f-strings
    ("{error!r} at {path}", {"error": ValueError("gone"), "path": Path("/x")},
     b"ValueError('gone') at /x"),
    ("{timeout:g}s", {"timeout": 2.50}, b"2.5s"),
    ("line\nbreak\r{x}", {"x": "a\nb"}, b"line\\nbreak\\ra\\nb"),
    ("missing {key}", {"service": "web", "stage": "run", "pid": 7}, b"web/run: missing {key} pid=7"),
    ("stray {", {"n": 1}, b"stray { n=1"),
    ("positional {0}", {"service": "web"}, b"web: positional {0}"),
    ("bad spec {n:q}", {"n": 1}, b"bad spec {n:q} n=1"),
])
def test_messages(out: Collector, event: str, fields: dict[str, Any], message: bytes) -> None:
    text, obj = both(out, "info", event, **fields)
    assert text == message
    assert obj["msg"] == message.decode()


def test_levels_by_name(out: Collector) -> None:
    for level in ("debug", "info", "warning", "error"):
        assert text_message(emit(out, "text", level, "x"))[0] == level
        assert json_object(emit(out, "json", level, "x"))["level"] == level


def test_json_values_as_they_are_else_str(out: Collector) -> None:
    _, obj = both(out, "info", "x", n=1, f=0.5, b=True, none=None, items=[1, "a"], mapping={"k": 2},
                  path=Path("/x"), error=OSError(2, "gone"), big=2**70, raw=b"\xffok")
    assert obj["n"] == 1 and obj["f"] == 0.5 and obj["b"] is True and obj["none"] is None
    assert obj["items"] == [1, "a"] and obj["mapping"] == {"k": 2}
    assert obj["path"] == "/x" and obj["error"] == "[Errno 2] gone" and obj["big"] == str(2**70)
    assert obj["raw"] == "\\xffok"


def test_invalid_utf8_still_gives_valid_json(out: Collector) -> None:
    """A command line with undecodable bytes arrives as surrogate escapes: the text line keeps the
    bytes, the JSON line writes them as ``\\xNN`` (valid UTF-8, nothing lost)."""
    command = os.fsdecode(b"/bin/prog \xff\xfe")
    text, obj = both(out, "error", "cannot run {command}", service="w\udcffeb", stage="run", command=command,
                     lone="\ud800")
    assert text == b"w\xffeb/run: cannot run /bin/prog \xff\xfe"
    assert obj["msg"] == "w\\xffeb/run: cannot run /bin/prog \\xff\\xfe"
    assert obj["service"] == "w\\xffeb" and obj["command"] == "/bin/prog \\xff\\xfe"
    assert obj["lone"] == "\\ud800"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __format__ = None  # type: ignore[assignment]


def test_values_that_cannot_be_printed_do_not_raise(out: Collector) -> None:
    text, obj = both(out, "info", "x {v}", service=Unprintable(), v=Unprintable())
    assert re.fullmatch(rb"<test_log.Unprintable object at 0x\w+>: x \{v\} v=<test_log.Unprintable .*>", text)
    assert obj["msg"] == text.decode() and obj["v"].startswith("<test_log.Unprintable object")


def test_reserved_names_do_not_overwrite(out: Collector) -> None:
    _, obj = both(out, "info", "m {msg}", msg="given", time=1, level="x", event="e")
    assert obj["msg"] == "m given"
    assert obj["msg_"] == "given" and obj["time_"] == 1 and obj["level_"] == "x" and obj["event_"] == "e"


def test_render_text_is_unchanged(out: Collector) -> None:
    line = log.render("warning", b"svc/run: not JSON stdout: \xff raw", line=b"\xff raw")
    assert re.fullmatch(TIME + rb" dinit: warning: svc/run: not JSON stdout: \xff raw\n", line), line


def test_render_json_keeps_every_byte_of_the_line(out: Collector) -> None:
    log._json = True
    line = log.render("warning", b"svc/run: not JSON stdout: \xff {raw", service="svc", stage="run",
                      line=b"\xff {raw")
    obj = json_object(line)
    assert obj == {"time": obj["time"], "level": "warning", "msg": "svc/run: not JSON stdout: \\xff {raw",
                   "service": "svc", "stage": "run", "line": "\\xff {raw"}


texts = st.one_of(st.text(), st.binary().map(os.fsdecode),
                  st.text(st.characters(codec=None, categories=None)))  # lone surrogates too
values = st.one_of(texts, st.integers(), st.floats(), st.none(), st.booleans(), st.binary(),
                   st.lists(st.one_of(st.integers(), texts), max_size=3))


@given(event=st.one_of(texts, st.sampled_from(["{a}", "{b}", "{a} {{}}", "{", "}", "{0}", "{a!r:>5}"])),
       fields=st.dictionaries(st.sampled_from(["a", "b", "service", "stage", "pid", "msg", "line"]), values,
                              max_size=4),
       level=st.sampled_from(["debug", "info", "warning", "error"]))
def test_any_event_is_one_line_and_json_msg_is_the_text_message(
        event: str, fields: dict[str, Any], level: str) -> None:
    collector = Collector()
    saved = log._threshold, log._writer, log._json
    log.setup("debug", collector, "text")  # type: ignore[arg-type]
    try:
        message, obj = both(collector, level, event, **fields)
    finally:
        log._threshold, log._writer, log._json = saved
    assert obj["msg"] == message.decode("utf-8", "backslashreplace")
    assert set(obj) == {"time", "level", "msg", *(f"{key}_" if key == "msg" else key for key in fields)}


# -- configuration ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("", "text"), ("text", "text"), ("json", "json"), (" JSON ", "json"), ("Text", "text")])
def test_log_format_values(value: str, expected: str) -> None:
    assert load({"DINIT_LOG_FORMAT": value}).log_format == expected
    assert log_format_from({"DINIT_LOG_FORMAT": value, "DINIT_KILL_TIMEOUT": "bad"}) == expected


def test_log_format_invalid() -> None:
    with pytest.raises(ConfigError, match=r"^invalid DINIT_LOG_FORMAT 'xml': accepted are text, json$"):
        load({"DINIT_LOG_FORMAT": "xml"})
    assert log_format_from({"DINIT_LOG_FORMAT": "xml"}) == "text"


# -- as PID 1 ------------------------------------------------------------------------------------------

PY = f"#!{sys.executable}\n"
PID = re.compile(r"\bPID \d+")


def crashing_run(services: Services, log_format: str, pid1: bool = True) -> Dinit:
    """A few services, one of which crashes (taking the others down), every message shown."""
    services.add("web", "exec sleep 1000\n")
    ready = services.root / "api-ready"
    services.add("api", PY + "import sys, time\nprint('{\"ok\": 1}', flush=True)\n"
                 f"sys.stderr.write('api stderr line\\n')\nsys.stderr.flush()\nopen({str(ready)!r}, 'w')\n"
                 "time.sleep(1000)\n")
    services.add("crash", f"printf 'not json \\377\\n'\n"
                 f"while [ ! -e {ready} ]; do sleep 0.01; done\nexit 2\n")
    return run(services, pid1=pid1, DINIT_LOG_LEVEL="info", DINIT_LOG_FORMAT=log_format)


def own_objects(dinit: Dinit) -> list[dict[str, Any]]:
    """Every stderr line that is not a program's prefix-form line, each parsed as one JSON object."""
    objects = []
    for line in dinit.stderr.splitlines():
        if re.match(TIME + rb" \w+/\w+: ", line):  # program stderr keeps its prefix form (§4.4)
            continue
        obj = orjson.loads(line)
        assert list(obj)[:3] == ["time", "level", "msg"], obj
        assert TIME_TEXT.fullmatch(obj["time"]) and obj["level"] in ("debug", "info", "warning", "error")
        objects.append(obj)
    return objects


def normalised(messages: list[str]) -> list[str]:
    """Messages with PIDs blanked and sorted: two runs differ in PIDs and in how services interleave."""
    return sorted(PID.sub("PID N", message) for message in messages)


def test_json_run_every_own_line_is_an_object(services: Services, pid1: bool) -> None:
    dinit = crashing_run(services, "json", pid1)
    assert dinit.returncode == 3
    objects = own_objects(dinit)
    messages = [obj["msg"] for obj in objects]
    assert "crash/run: not JSON stdout: not json \\xff" in messages
    assert "dinit exiting with status 3" in messages
    assert objects[-1] == {"time": objects[-1]["time"], "level": "info", "msg": "dinit exiting with status 3",
                           "status": 3}
    assert re.findall(TIME + rb" api/run: (.*)", dinit.stderr) == [b"api stderr line"]
    assert b'"ok": 1' in dinit.stdout and b"not json" not in dinit.stdout
    cause = next(obj for obj in objects if obj["msg"].endswith(", stopping the container"))
    assert cause == {"time": cause["time"], "level": "warning", "service": "crash", "stage": "run",
                     "msg": f"crash/run: PID {cause['pid']} exited with status 2, stopping the container",
                     "pid": cause["pid"], "how": "exited with status 2"}
    # Every message about a service says which one as a field too, not only in its text.
    for obj in objects:
        named = re.match(r"(api|web|crash)/run: ", obj["msg"])
        assert named is None or (obj.get("service"), obj.get("stage")) == (named[1], "run"), obj


def test_json_and_text_runs_say_the_same(services: Services) -> None:
    as_json = crashing_run(services, "json")
    as_text = crashing_run(services, "text")
    assert as_json.returncode == as_text.returncode == 3
    json_messages = [f"{obj['level']}: {obj['msg']}" for obj in own_objects(as_json)]
    text_messages = [line.decode("utf-8", "backslashreplace")
                     for line in re.findall(TIME + rb" dinit: (\w+: .*)", as_text.stderr)]
    assert len(text_messages) >= 8
    assert normalised(json_messages) == normalised(text_messages)
    assert not any(line.startswith(b"{") for line in as_text.stderr.splitlines())


def test_config_error_is_json_too(services: Services) -> None:
    services.add("web", "exec sleep 1000\n")
    dinit = run(services, DINIT_LOG_FORMAT="json", DINIT_KILL_TIMEOUT="soon")
    assert dinit.returncode == 1
    [obj] = own_objects(dinit)
    assert obj["level"] == "error"
    assert obj["msg"] == "invalid DINIT_KILL_TIMEOUT 'soon': accepted is a non-negative number of seconds"


def test_invalid_log_format_is_a_config_error(services: Services) -> None:
    services.add("web", "exec sleep 1000\n")
    dinit = run(services, DINIT_LOG_FORMAT="yaml")
    assert dinit.returncode == 1
    assert dinit.messages() == [b"invalid DINIT_LOG_FORMAT 'yaml': accepted are text, json"]
    assert dinit.stdout == b""


def test_hidden_warnings_keep_program_lines_in_prefix_form(services: Services) -> None:
    """Under json with warnings hidden a non-JSON stdout line is program output, not a message:
    it keeps the prefix form (§4.3), and dinit itself says nothing."""
    services.add("svc", "echo 'plain \\377'\n")
    dinit = run(services, DINIT_LOG_FORMAT="json", DINIT_LOG_LEVEL="error")
    assert dinit.returncode == 0
    assert re.fullmatch(TIME + rb" svc/run: plain \xff\n", dinit.stderr), dinit.stderr


def test_structlog_helpers_see_dinit_config(out: Collector) -> None:
    """capture_logs works because dinit configures structlog globally, once (a later setup()
    must not reconfigure it and so lose a capture)."""
    with capture_logs() as events:
        log.setup("info", out, "json")  # type: ignore[arg-type]
        logger.info("x {n}", n=1)
    assert events == [{"event": "x {n}", "n": 1, "log_level": "info"}]
    assert structlog.is_configured()
