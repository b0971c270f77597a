"""Unit and property tests of ``dinit/lines.py``: cutting byte streams into lines (§4.1) and labelling
them in prefix form (§4.4) and JSON mode (§4.3).

The properties compare dinit's splitter and labellers against a direct model of the contract: a
stream is cut at ``\\n``, one trailing ``\\r`` is removed, empty lines are dropped, the last line is
emitted at EOF, a line over MAX_LINE bytes becomes pieces of at most MAX_LINE bytes (one cut counted
per such line), and no byte is ever changed. ``MAX_LINE`` is a module global read at call time, so
the properties patch it to a few bytes to exercise long lines cheaply.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dinit.output import lines
from dinit.output.lines import JsonLabeller, LineSplitter, PrefixLabeller, label_json_line, split_block

TIME = b"2026-11-22T12:59:35.708Z"
NAME, STAGE = "svc", "run"
SUFFIX = b',"service":"svc","stage":"run","logged":"' + TIME + b'"}\n'
RESERVED = ("service", "stage", "logged")
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the contract's model ----------------------------------------------------------------------------

def model_lines(stream: bytes, max_line: int) -> tuple[list[bytes], int]:
    """The lines §4.1 says a stream carries, and how many of them are cut into pieces."""
    raw = stream.split(b"\n")
    if not raw[-1]:
        raw.pop()
    out: list[bytes] = []
    cut = 0
    for line in raw:
        line = strip_cr(line)
        if not line:
            continue
        if len(line) > max_line:
            cut += 1
            out.extend(line[i:i + max_line] for i in range(0, len(line), max_line))
        else:
            out.append(line)
    return out, cut


@contextmanager
def max_line(size: int) -> Iterator[None]:
    """Patch the module global MAX_LINE, which the splitter reads at call time."""
    with patch.object(lines, "MAX_LINE", size):
        yield


def split_stream(stream: bytes, cuts: list[int]) -> tuple[list[bytes], int]:
    """Feed ``stream`` cut at ``cuts`` to a fresh splitter, then flush; return blocks and cuts."""
    splitter = LineSplitter()
    bounds = [0, *sorted(cuts), len(stream)]
    blocks: list[bytes] = []
    cut = 0
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        block, count = splitter.feed(stream[start:end])
        blocks.append(block)
        cut += count
    block, count = splitter.flush()
    blocks.append(block)
    return blocks, cut + count


def strip_cr(line: bytes) -> bytes:
    """A line without its one trailing ``\\r``."""
    return line[:-1] if line.endswith(b"\r") else line


class Pairs(list):  # type: ignore[type-arg]
    """A parsed JSON object as its ordered (key, value) pairs (compares equal to a plain list)."""


def no_duplicates(pairs: list[tuple[str, Any]]) -> Pairs:
    """``object_pairs_hook`` that fails on a duplicate key and keeps every object as ordered pairs."""
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return Pairs(pairs)


def strict_pairs(data: bytes) -> list[tuple[str, Any]]:
    """Parse one output line as strict JSON (UTF-8, no BOM, no NaN) into top-level (key, value) pairs."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    text = data.decode("utf-8")
    value = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=refuse)
    assert isinstance(value, Pairs), f"not a JSON object: {data!r}"
    return value


def is_json_object(line: bytes) -> bool:
    """The test's own answer to "is this line a JSON object" (strict RFC 8259, UTF-8)."""
    try:
        strict_pairs(line)
    except (ValueError, AssertionError):
        return False
    return True


def meta(time: bytes = TIME) -> list[tuple[str, Any]]:
    return [("service", NAME), ("stage", STAGE), ("logged", time.decode())]


def reference_label(block: bytes) -> tuple[bytes, list[bytes]]:
    """What the JSON labeller must give for a block: each line decided by orjson and Python's parser
    alone (dinit's own slow path, which the msgspec checks must agree with)."""
    out, rejected = b"", []
    for line in split_block(block):
        body = line.rstrip(b" \t\r\n")
        value = lines._parse(body) if body.endswith(b"}") else None
        if type(value) is not dict:
            rejected.append(line)
            continue
        empty = not value
        if not set(RESERVED).isdisjoint(value):
            body, empty = lines._drop_members(body)
        out += body[:-1] + (SUFFIX[1:] if empty else SUFFIX)
    return out, rejected


# -- strategies --------------------------------------------------------------------------------------

#: Byte streams rich in line ends, carriage returns, braces and invalid UTF-8.
streams = st.lists(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"a", b"bc", b"{}", b"\xff", b"\xc3\xa9", b"\x00"])
    | st.binary(max_size=12),
    max_size=40,
).map(b"".join)

json_scalars = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", *RESERVED]) | st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
object_keys = st.sampled_from(["a", "b", "x y", "é", *RESERVED]) | st.text(max_size=6)
json_objects = st.dictionaries(object_keys, json_values, max_size=5)


@st.composite
def object_lines(draw: st.DrawFn, reserved: bool = True) -> bytes:
    """One JSON object serialized with varied spacing and escaping (no newline inside)."""
    obj = draw(json_objects)
    if not reserved:
        obj = {key: value for key, value in obj.items() if key not in RESERVED}
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    text = json.dumps(obj, separators=separators, ensure_ascii=draw(st.booleans()))
    padding = draw(st.sampled_from(["", " ", "\t", " \t "]))
    return (padding + text + draw(st.sampled_from(["", " ", "\t"]))).encode()


junk_lines = st.sampled_from([
    b"[1]", b'"x"', b"1", b"true", b"null", b"NaN", b"Infinity", b'{"a":NaN}', b'{"a":-Infinity}',
    b'{"a":1} x', b'{"a":1}{"b":2}', b'{"a":1', b'{"a":}', b'{"a":1,}', b"{", b"}", b"plain text",
    b'{"a":"\xff"}', b"\xff\xfe", b'{"a" 1}', b"{'a': 1}",
]) | st.binary(min_size=1, max_size=16).filter(lambda b: b"\n" not in b)


# -- LineSplitter ------------------------------------------------------------------------------------

@PROPERTY
@given(stream=streams, size=st.integers(1, 12), data=st.data())
@example(stream=b"abc\rdef\n", size=4, data=None)  # an interior \r lands at the end of a piece
@example(stream=b"abcd\r\n", size=4, data=None)  # exactly MAX_LINE bytes before \r\n: not long
def test_splitter_emits_exactly_the_contract_lines(stream: bytes, size: int,
                                                   data: st.DataObject | None) -> None:
    """§4.1: any stream, cut into any chunks, yields the model's lines and cut count, unchanged bytes."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10)) if data else []
    with max_line(size):
        blocks, cut = split_stream(stream, cuts)
    expected, expected_cut = model_lines(stream, size)
    assert [line for block in blocks for line in split_block(block)] == expected
    assert cut == expected_cut


@PROPERTY
@given(stream=streams, size=st.integers(1, 12), data=st.data())
def test_splitter_blocks_are_whole_short_lines(stream: bytes, size: int, data: st.DataObject) -> None:
    """Every block is whole lines ending in ``\\n``, none longer than MAX_LINE (the piece size)."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    with max_line(size):
        blocks, _ = split_stream(stream, cuts)
    for block in blocks:
        assert block == b"" or block.endswith(b"\n")
        for raw in block.split(b"\n")[:-1]:
            assert len(raw) <= size + 1  # +1: a trailing \r that split_block removes


def test_splitter_holds_partial_line_until_newline_or_flush() -> None:
    """A line split across chunks comes out once, whole; the last line without ``\\n`` at flush."""
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == (b"", 0)
    assert splitter.feed(b"lo\nwor") == (b"hello\n", 0)
    assert splitter.feed(b"ld\nlast") == (b"world\n", 0)
    assert splitter.flush() == (b"last\n", 0)
    assert splitter.flush() == (b"", 0)


def test_splitter_real_limit_is_one_mebibyte() -> None:
    """§4.1: MAX_LINE is 1 MiB; a 5 MiB + 10 byte line fed in reads of at most 1 MiB gives six pieces
    (five of exactly 1 MiB) and one cut; the next line is whole."""
    assert lines.MAX_LINE == 1024 * 1024
    line = b"0123456789abcdef" * (5 * 65536) + b"\xff\xfe\r456789\x00"
    stream = line + b"\nafter\n"
    splitter = LineSplitter()
    out: list[bytes] = []
    cut = 0
    for start in range(0, len(stream), lines.MAX_LINE):
        block, count = splitter.feed(stream[start:start + lines.MAX_LINE])
        out += split_block(block)
        cut += count
    block, count = splitter.flush()
    out += split_block(block)
    cut += count
    assert cut == 1
    assert [len(piece) for piece in out[:-1]] == [lines.MAX_LINE] * 5 + [10]
    assert b"".join(out[:-1]) == line
    assert out[-1] == b"after"


def test_interior_carriage_return_at_a_piece_end_is_kept() -> None:
    """§4.1: only the line's one trailing ``\\r`` is removed; a ``\\r`` inside a long line that
    happens to end a piece is program data and must survive."""
    with max_line(4):
        blocks, cut = split_stream(b"abc\rdefg\n", [])
    assert [line for block in blocks for line in split_block(block)] == [b"abc\r", b"defg"]
    assert cut == 1


def test_line_of_exactly_max_line_before_crlf_is_not_cut() -> None:
    """§4.1: a CRLF line whose text is exactly MAX_LINE bytes is not longer than the limit: no cut
    (no warning), one line."""
    with max_line(4):
        blocks, cut = split_stream(b"abcd\r\n", [])
    assert [line for block in blocks for line in split_block(block)] == [b"abcd"]
    assert cut == 0


# -- PrefixLabeller ----------------------------------------------------------------------------------

@PROPERTY
@given(stream=streams, size=st.integers(1, 12), data=st.data())
def test_prefix_labeller_prefixes_every_contract_line(stream: bytes, size: int,
                                                      data: st.DataObject) -> None:
    """§4.4: the prefix form of a stream is ``<time> <name>/<stage>: <line>`` for exactly the model's
    lines, bytes unchanged (invalid UTF-8 included)."""
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    with max_line(size):
        blocks, _ = split_stream(stream, cuts)
    labeller = PrefixLabeller(NAME, STAGE)
    out = b"".join(labeller.label(block, TIME) for block in blocks if block)
    expected, _ = model_lines(stream, size)
    assert out == b"".join(TIME + b" svc/run: " + line + b"\n" for line in expected)


def test_prefix_labeller_keeps_invalid_utf8_and_strips_one_cr() -> None:
    """§4.1/§4.4: bytes pass through; one ``\\r`` is removed, a second stays; empty lines vanish."""
    block = b"\xff\xfe bad\r\n\n\r\nx\r\r\nplain\n"
    assert PrefixLabeller("a", "log").label(block, TIME) == (
        TIME + b" a/log: \xff\xfe bad\n" + TIME + b" a/log: x\r\n" + TIME + b" a/log: plain\n")


# -- label_json_line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    b'{"a":1}',
    b'{ "a" : 1 , "b":[1, 2] }',
    b'{"z":1,"a":2,"m":3}',
    b'{"n":1.50,"e":1E+2,"neg":-0.0,"big":123456789012345678901234567890}',
    b'{"u":"\\u00e9\\ud83d\\ude00 \\"q\\" \\\\","raw":"\xc3\xa9"}',
    b'{"nested":{"service":"mine","stage":1,"logged":[{"service":2}]}}',
    b'{"list":[{"service":1}]}',
])
def test_json_object_bytes_are_kept_and_members_appended(line: bytes) -> None:
    """§4.3: the program's bytes (spacing, key order, number spelling, escapes, nested objects with
    dinit's key names) are kept; dinit's three members come last."""
    out = label_json_line(line, SUFFIX)
    assert out == line[:-1] + SUFFIX
    pairs = strict_pairs(out)
    assert pairs[-3:] == meta()
    assert pairs[:-3] == strict_pairs(line)


def test_json_huge_exponent_is_kept_as_written() -> None:
    """1e400 is valid JSON grammar (it overflows a double): the line is accepted and its spelling
    kept, so a consumer sees the program's number, not ``Infinity``."""
    line = b'{"x":1e400,"y":-1e400}'
    out = label_json_line(line, SUFFIX)
    assert out == line[:-1] + SUFFIX
    assert b"Infinity" not in out
    strict_pairs(out)


def test_json_integer_of_thousands_of_digits_is_kept() -> None:
    """An integer longer than Python's 4300-digit conversion limit (and than orjson's 64 bits) is
    valid JSON: the object is annotated on stdout with the digits as written."""
    line = b'{"n":' + b"9" * 5000 + b',"m":-' + b"1" * 4400 + b".5e1}"
    assert label_json_line(line, SUFFIX) == line[:-1] + SUFFIX


@pytest.mark.parametrize(("line", "expected"), [
    (b"{}", b"{" + SUFFIX[1:]),
    (b"{ }", b"{ " + SUFFIX[1:]),
    (b"  {}  ", b"  {" + SUFFIX[1:]),
    (b'\t{"a":1}\t ', b'\t{"a":1' + SUFFIX),
    (b'{"a":1}\r', b'{"a":1' + SUFFIX),
])
def test_json_empty_objects_and_surrounding_whitespace(line: bytes, expected: bytes) -> None:
    """§4.3: ``{}`` gets no leading comma; whitespace around the object is fine."""
    out = label_json_line(line, SUFFIX)
    assert out == expected
    assert strict_pairs(out) == strict_pairs(line) + meta()


@pytest.mark.parametrize(("line", "kept"), [
    (b'{"service":"mine"}', []),
    (b'{"service":"mine","stage":"x","logged":"y"}', []),
    (b'{"a":1,"service":"mine","b":2}', [("a", 1), ("b", 2)]),
    (b'{"logged":1, "a":{"service":2}}', [("a", [("service", 2)])]),
    (b'{"s\\u0065rvice":"x","st\\u0061ge":1,"\\u006cogged":2,"k":3}', [("k", 3)]),
    (b'{"service":"a,}b\\"","x":"{[","stage":[1,{"y":"]"}],"z":1}', [("x", "{["), ("z", 1)]),
    (b'{ "service" : 1 , "a" : 2 }', [("a", 2)]),
    (b'{"service":1,"service":2}', []),
    (b'{"service ":1,"Stage":2}', [("service ", 1), ("Stage", 2)]),
])
def test_json_program_members_named_like_dinits_are_replaced(line: bytes,
                                                             kept: list[tuple[str, Any]]) -> None:
    """§4.3: a top-level ``service``/``stage``/``logged`` (also spelled with escapes) is replaced by
    dinit's value: no duplicate keys, other members kept in order, nested ones untouched."""
    out = label_json_line(line, SUFFIX)
    assert out is not None
    assert strict_pairs(out) == [*kept, *meta()]


@pytest.mark.parametrize("line", [
    b"[1]", b'"x"', b"1", b"true", b"null", b"NaN", b"-Infinity", b'{"a":NaN}', b'{"a":Infinity}',
    b'{"a":1} x', b'{"a":1}{"b":2}', b'{"a":1} {"b":2}', b"{", b'{"a":1', b'{"a":1,}', b"{'a':1}",
    b'{"a":"\xff"}', b"", b"   ", b"}", b'"}"', b"[{}]",
])
def test_json_non_objects_are_rejected(line: bytes) -> None:
    """§4.3: anything but one JSON object is not annotated (the caller reports it on stderr)."""
    assert label_json_line(line, SUFFIX) is None


@pytest.mark.parametrize("line", [
    b'\xef\xbb\xbf{"a":1}',  # UTF-8 byte order mark
    b'\x00{\x00"\x00a\x00"\x00:\x001\x00}',  # UTF-16-BE
    b"\x00{\x00}",  # UTF-16-BE {}
    b'\x00\x00\x00{\x00\x00\x00}',  # UTF-32-BE {}
])
def test_json_output_is_valid_json_whatever_the_encoding(line: bytes) -> None:
    """§4.3 "the result is always valid JSON": a line that is not a UTF-8 JSON object (BOM, UTF-16,
    UTF-32) is either rejected or annotated into strictly valid JSON, never into garbage on stdout."""
    out = label_json_line(line, SUFFIX)
    if out is not None:
        strict_pairs(out)
        orjson.loads(out)


# -- JsonLabeller ------------------------------------------------------------------------------------

@PROPERTY
@given(objects=st.lists(object_lines(), min_size=1, max_size=12),
       endings=st.lists(st.sampled_from([b"\n", b"\r\n", b"\n\n"]), min_size=12, max_size=12))
def test_json_labeller_block_of_objects(objects: list[bytes], endings: list[bytes]) -> None:
    """§4.3 fast path (only objects) and slow path (CRLF, empty lines): each object annotated as
    ``label_json_line`` does it, valid JSON without duplicate keys, nothing rejected."""
    block = b"".join(obj + end for obj, end in zip(objects, endings, strict=False))
    out, rejected = JsonLabeller(NAME, STAGE).label(block, TIME)
    assert rejected == []
    assert out == b"".join(label_json_line(obj.rstrip(b"\r"), SUFFIX) or b"" for obj in objects)
    produced = out.splitlines()
    assert len(produced) == len(objects)
    for obj, line in zip(objects, produced, strict=False):
        pairs = strict_pairs(line)
        assert pairs[-3:] == meta()
        assert pairs[:-3] == [pair for pair in strict_pairs(obj) if pair[0] not in RESERVED]


@PROPERTY
@given(items=st.lists(object_lines(reserved=False) | junk_lines, min_size=1, max_size=15),
       crlf=st.booleans())
def test_json_labeller_mixed_block_loses_nothing(items: list[bytes], crlf: bool) -> None:
    """§4.3: in a block mixing objects and junk, accepted + rejected are all the non-empty lines in
    order; accepted ones keep the program's bytes, rejected ones are returned byte-exact."""
    end = b"\r\n" if crlf else b"\n"
    block = b"".join(item + end for item in items)
    out, rejected = JsonLabeller(NAME, STAGE).label(block, TIME)
    expected_lines = [line for line in (strip_cr(item + end[:-1]) for item in items) if line]
    objects = [line for line in expected_lines if is_json_object(line)]
    assert rejected == [line for line in expected_lines if not is_json_object(line)]
    assert out == b"".join(
        (line.rstrip(b" \t\r")[:-1] + (SUFFIX[1:] if strict_pairs(line) == [] else SUFFIX))
        for line in objects)
    for line in out.splitlines():
        assert strict_pairs(line)[-3:] == meta()


@PROPERTY
@given(objects=st.lists(object_lines(reserved=False), min_size=1, max_size=10))
def test_json_fast_path_equals_line_by_line(objects: list[bytes]) -> None:
    """A block of plain object lines (the C-speed path) gives byte for byte what the per-line path
    gives, and a junk line anywhere changes nothing for the objects."""
    block = b"".join(obj + b"\n" for obj in objects)
    labeller = JsonLabeller(NAME, STAGE)
    fast, rejected = labeller.label(block, TIME)
    assert rejected == []
    slow = b"".join(label_json_line(obj, SUFFIX) or b"" for obj in objects)
    assert fast == slow
    mixed, rejected = labeller.label(b"junk\n" + block, TIME)
    assert (mixed, rejected) == (slow, [b"junk"])


@PROPERTY
@given(line=object_lines(), lead=st.sampled_from([b"", b'"a":1,', b'"a" : [1, {"service": 2}] ,']))
def test_dropping_named_members_equals_the_full_scan(line: bytes, lead: bytes) -> None:
    """Removing dinit's names found by msgspec (by their plain text) keeps exactly the bytes the
    full scan of the line keeps, and says the same about emptiness."""
    body = line.strip()
    body = body[:1] + lead + body[1:] if lead and body != b"{}" else body
    members = lines._block_members(body, [body[:-1], b""])
    if members is None:  # msgspec refuses it (e.g. an empty object): the full scan is used
        return
    assert lines._drop_named(body, members[0]) == lines._drop_members(body)


#: Bytes that make JSON subtly wrong (or subtly right) when put into an object line.
_MUTATIONS = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b" ", b"\t", b"\r", b"0", b"-", b"+",
              b"e", b".", b"u", b"n", b"t", b"x", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x0c",
              b"\xef\xbb\xbf", b"\\ud800", b"\\u0073", b'"service"', b'"stage":1', b'"logged"',
              b'"":0', b"1e400", b"NaN", b"01"]


@st.composite
def mutated_object_lines(draw: st.DrawFn) -> bytes:
    """An object line with a few bytes inserted, deleted or replaced, still ending in "}" so that a
    block of them is tried on the fast path."""
    line = draw(object_lines()).rstrip()
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(line)))
        end = at + draw(st.integers(0, 2))
        line = line[:at] + draw(st.sampled_from([b"", *_MUTATIONS])) + line[end:]
    return line if line.endswith(b"}") else line + b"}"


@settings(PROPERTY, max_examples=300)
@given(items=st.lists(mutated_object_lines(), min_size=1, max_size=3))
def test_json_fast_path_decides_as_line_by_line(items: list[bytes]) -> None:
    """The fast path (msgspec's validation of a whole block) accepts exactly what the per-line path
    (orjson, then Python's parser) accepts: valid or not, UTF-8 or not, dinit's keys or not."""
    block = b"".join(item + b"\n" for item in items)
    assert JsonLabeller(NAME, STAGE).label(block, TIME) == reference_label(block)


@PROPERTY
@given(items=st.lists(mutated_object_lines() | object_lines() | junk_lines, min_size=1, max_size=16),
       endings=st.lists(st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\n\n"]), min_size=16,
                        max_size=16))
def test_json_blocks_cut_in_halves_lose_nothing(items: list[bytes], endings: list[bytes]) -> None:
    """A block that fails the block check is cut in halves (here down to single lines) while only
    one half fails: the result is still exactly the line-by-line one, in order."""
    block = b"".join(item + end for item, end in zip(items, endings, strict=False))
    with patch.object(lines, "BISECT_MIN", 0):
        assert JsonLabeller(NAME, STAGE).label(block, TIME) == reference_label(block)


@pytest.mark.parametrize("block", [
    b'{"a":\n1}\n',  # a value across two lines
    b'{"a":{"b":1}\n,"c":2}\n{}{"d":1}\n',  # ...with a line of two objects to even the count
    b'{"a":[{}\n{}]}\n{},{}\n',
    b'{"a":"}\n{"},{}\n',  # a string across two lines
    b'{"a":1}{"b":2}\n',
    b'{"a":1} {"b":2}\n',
    b'1 {"b":2}\n',  # a number before an object: the same values as two lines would give
    b'{"a":1}\n7{"b":2}\n',
    b'{}}\n',
    b'{"a":1,}\n',
    b'{"a":1}\n{}\n',  # an empty object takes no comma
    b'{ }\n',
    b'{"a":1,"":0}0 {"b":2}\n',  # the marker itself in a line
    b'{"a":1}\n{"b":2,"serv\\u0069ce":3}\n',
    b'{"a":1}\n{"b":{"service":1}}\n',  # a nested "service" is the program's own
    b'{"a":"\\ud800"}\n',  # valid JSON that msgspec refuses
    b'{"a":"\xc3\xa9"}\n{"b":"\xff"}\n',
])
def test_json_fast_path_takes_no_block_it_should_not(block: bytes) -> None:
    """Blocks built to fool a check of the whole block at once (lines that are invalid alone but
    valid together, values across lines, lines of two values) are labelled as line by line."""
    assert JsonLabeller(NAME, STAGE).label(block, TIME) == reference_label(block)


@PROPERTY
@given(items=st.lists(object_lines() | junk_lines, min_size=1, max_size=12),
       endings=st.lists(st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r\n\r\n"]), min_size=12,
                        max_size=12),
       last_newline=st.booleans(), data=st.data())
def test_splitter_and_json_labeller_on_chunked_streams(items: list[bytes], endings: list[bytes],
                                                      last_newline: bool, data: st.DataObject) -> None:
    """§4.1 + §4.3 end to end: a stream of object and junk lines, cut into arbitrary chunks, gives
    every object annotated (valid JSON, dinit's members last) and every other line rejected,
    each group in stream order, nothing lost or changed."""
    stream = b"".join(item + end for item, end in zip(items, endings, strict=False))
    if not last_newline:
        stream = stream.rstrip(b"\r\n")
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    blocks, _ = split_stream(stream, cuts)
    labeller = JsonLabeller(NAME, STAGE)
    out = b""
    rejected: list[bytes] = []
    for block in blocks:
        labelled, bad = labeller.label(block, TIME)
        out += labelled
        rejected += bad
    expected, _ = model_lines(stream, lines.MAX_LINE)
    assert rejected == [line for line in expected if not is_json_object(line)]
    objects = [line for line in expected if is_json_object(line)]
    produced = out.splitlines()
    assert len(produced) == len(objects)
    for line, obj in zip(produced, objects, strict=True):
        pairs = strict_pairs(line)
        assert pairs[-3:] == meta()
        assert pairs[:-3] == [pair for pair in strict_pairs(obj) if pair[0] not in RESERVED]


def test_json_labeller_service_name_not_utf8() -> None:
    """§4.3: a service name that is not UTF-8 (a directory name with invalid bytes, decoded with
    surrogateescape) still gives valid JSON: the labeller must not fail."""
    out, rejected = JsonLabeller("bad\udcffname", STAGE).label(b'{"a":1}\n', TIME)
    assert rejected == []
    pairs = strict_pairs(out)
    orjson.loads(out)
    assert pairs[0] == ("a", 1)
    assert pairs[1][0] == "service" and pairs[1][1].startswith("bad") and pairs[1][1].endswith("name")


def test_json_labeller_escapes_names() -> None:
    """The service name and stage are JSON strings, escaped as needed."""
    out, _ = JsonLabeller('we"ird\\näme', "1234").label(b"{}\n", TIME)
    assert strict_pairs(out) == [("service", 'we"ird\\näme'), ("stage", "1234"),
                                 ("logged", TIME.decode())]


def test_json_labeller_rejects_keep_order_and_bytes() -> None:
    """Non-object lines come back in order, byte-exact (CR removed as a line ending only)."""
    block = b'[1]\n{"a":1}\r\n"x"\n\xff\xfe\r\n\n{}\nNaN\n'
    out, rejected = JsonLabeller(NAME, STAGE).label(block, TIME)
    assert rejected == [b"[1]", b'"x"', b"\xff\xfe", b"NaN"]
    assert out == b'{"a":1' + SUFFIX + b"{" + SUFFIX[1:]
