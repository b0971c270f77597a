"""The control protocol's codec and line splitting (§12), property-tested: every request round-trips,
no input makes the decoder fail other than with a ``bad-request`` answer, and line splitting does not
depend on how the stream is chunked while never holding more than 64 KiB of one line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dinit.control import protocol
from dinit.control.protocol import LineBuffer, ProtocolError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=10)
ids = st.none() | st.integers() | st.text()


@settings(deadline=None)  # a slow shared machine must not fail a property
@given(ids, st.text(min_size=1), st.dictionaries(st.text(), json_values, max_size=4))
def test_a_request_round_trips(request_id: int | str | None, cmd: str, args: dict[str, object]) -> None:
    line = protocol.encode_request(request_id, cmd, args)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.decode_request(line[:-1]) == protocol.Request(request_id, cmd, args)


@settings(deadline=None)  # a slow shared machine must not fail a property
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_a_bad_request(line: bytes) -> None:
    try:
        request = protocol.decode_request(line)
    except ProtocolError as error:
        assert error.code == protocol.BAD_REQUEST
    else:
        assert isinstance(request.cmd, str) and isinstance(request.args, dict)


@pytest.mark.parametrize(("line", "message", "request_id"), [
    (b"{nope", "request is not valid JSON", None),
    (b"[1]", "request is not a JSON object", None),
    (b'{"v":2,"id":3,"cmd":"status"}', "unsupported protocol version 2, this dinit speaks 1", 3),
    (b'{"v":"1","id":3,"cmd":"status"}', 'unsupported protocol version "1", this dinit speaks 1', 3),
    (b'{"id":5,"cmd":"status"}', "v (the protocol version, 1) is missing", 5),
    (b'{"v":1,"id":4,"cmd":""}', "cmd must be a non-empty string", 4),
    (b'{"v":1,"id":5,"cmd":"status","args":[]}', "args must be an object", 5),
    (b'{"v":1,"id":true,"cmd":"status"}', "id must be a number, a string or null", None),
])
def test_bad_requests_say_why_under_their_id(line: bytes, message: str, request_id: object) -> None:
    with pytest.raises(ProtocolError) as raised:
        protocol.decode_request(line)
    assert (raised.value.code, raised.value.message, raised.value.request_id) == (
        protocol.BAD_REQUEST, message, request_id)


@settings(deadline=None)  # a slow shared machine must not fail a property
@given(ids, json_values)
def test_answers_are_one_line_of_json(request_id: int | str | None, result: object) -> None:
    ok = protocol.decode_response(protocol.encode_result(request_id, result).rstrip(b"\n"))
    assert ok == {"v": 1, "id": request_id, "ok": True, "result": result}
    line = protocol.encode_error(ProtocolError(protocol.TIMEOUT, "web: slow", request_id, {"x": 1}))
    assert line.count(b"\n") == 1
    assert json.loads(line)["error"] == {"code": "timeout", "message": "web: slow", "x": 1}


@settings(deadline=None)  # a slow shared machine must not fail a property
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
       st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=8))
def test_lines_do_not_depend_on_chunking(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    buffer = LineBuffer(limit=64)
    got: list[bytes] = []
    position, index = 0, 0
    while position < len(stream):
        size = cuts[index % len(cuts)]
        got += buffer.feed(stream[position:position + size])
        position, index = position + size, index + 1
    assert got == lines and not buffer.overflowed


@settings(deadline=None)  # a slow shared machine must not fail a property
@given(st.integers(min_value=0, max_value=3), st.integers(min_value=64, max_value=300))
def test_a_line_over_the_limit_stops_the_buffer(good: int, long: int) -> None:
    buffer = LineBuffer(limit=64)
    got = buffer.feed(b"ok\n" * good + b"x" * long)
    assert got == [b"ok"] * good and buffer.overflowed
    assert buffer.feed(b"\nmore\n") == []


def test_the_limit_counts_the_newline() -> None:
    """64 KiB with its newline is the longest request line (§12)."""
    assert LineBuffer().feed(b"x" * (protocol.MAX_LINE - 1) + b"\n") == [b"x" * (protocol.MAX_LINE - 1)]
    buffer = LineBuffer()
    assert buffer.feed(b"x" * protocol.MAX_LINE + b"\n") == [] and buffer.overflowed


def test_the_error_codes_are_those_of_the_contract() -> None:
    expected = {"bad-request", "unknown-command", "unknown-service", "permission-denied", "busy",
                "tearing-down", "name-in-use", "exec-failed", "timeout"}
    assert expected == protocol.CODES
