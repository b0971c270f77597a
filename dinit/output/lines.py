"""Cutting programs' byte streams into lines and labelling them (§4.1, §4.3, §4.4).

Everything here is pure (bytes in, bytes out) so it can be property-tested, and it works on whole
chunks rather than single lines: a chunk of many ordinary lines is handled by a few C-level bytes
operations (``split``, ``join``, ``replace``) and, in JSON mode, one msgspec call that validates the
whole chunk. Lines with something unusual (``\\r\\n``, empty lines, non-JSON lines, empty objects)
are isolated by cutting the chunk in halves and then handled one by one, with orjson deciding.
Bytes are never decoded, so invalid UTF-8 passes through the prefix form unchanged.
"""

from __future__ import annotations

import itertools

from ..lean import once

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable
    from typing import NamedTuple
else:
    from ..lean import NamedTuple


#: Longest line emitted whole; longer lines are emitted in pieces of at most this size (§4.1).
MAX_LINE = 1024 * 1024

_JSON_SPACE = b" \t\r\n"
_RESERVED = frozenset({"service", "stage", "logged"})


class LineSplitter:
    """Cuts one stream into lines, holding the unfinished last line between chunks.

    :meth:`feed` returns a *block*: complete lines, each ending in ``\\n`` and at most
    :data:`MAX_LINE` bytes long (a longer line is cut into pieces, each ending in ``\\n``), plus the
    number of lines that had to be cut, so the caller can warn once per cut line.
    """

    __slots__ = ("_cutting", "_partial", "_partial_size")

    def __init__(self) -> None:
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._cutting = False

    def feed(self, chunk: bytes) -> tuple[bytes, int]:
        """Add ``chunk``; return the complete lines it finishes and how many lines were cut."""
        if len(chunk) > MAX_LINE:
            # A line wholly inside a chunk is only checked against the limit when held, so
            # bigger chunks (dinit reads at most MAX_LINE bytes) are fed in limit-sized parts.
            results = [self.feed(chunk[i:i + MAX_LINE]) for i in range(0, len(chunk), MAX_LINE)]
            return b"".join(block for block, _ in results), sum(cut for _, cut in results)
        end = chunk.rfind(b"\n") + 1
        if not end:
            return self._hold(chunk)
        if not self._partial:
            block = chunk if end == len(chunk) else chunk[:end]
            cut = 0
        else:
            first = chunk.find(b"\n") + 1
            block, cut = self._finish_line(chunk[:first])
            if first < end:
                block += chunk[first:end]
        self._partial = [chunk[end:]] if end < len(chunk) else []
        self._partial_size = len(chunk) - end
        return block, cut

    def flush(self) -> tuple[bytes, int]:
        """At EOF: the unfinished last line, as a block of its own (§4.1)."""
        if not self._partial_size:
            return b"", 0
        return self._finish_line(b"\n")

    def _hold(self, chunk: bytes) -> tuple[bytes, int]:
        """Keep a chunk without ``\\n``; emit whole pieces once the held line exceeds the limit."""
        self._partial.append(chunk)
        self._partial_size += len(chunk)
        if self._partial_size <= MAX_LINE + 1:  # + a trailing \r, which is not part of the line
            return b"", 0
        held = b"".join(self._partial)
        # Emit only pieces followed by at least two held bytes: the last piece is decided (and its
        # line's trailing \r removed) when the line ends.
        whole = (len(held) - 2) // MAX_LINE * MAX_LINE
        rest = held[whole:]
        self._partial, self._partial_size = [rest], len(rest)
        cut = 0 if self._cutting else 1
        self._cutting = True
        return _pieces(held[:whole]), cut

    def _finish_line(self, tail: bytes) -> tuple[bytes, int]:
        """Join the held part of a line with its ``tail`` (which ends in ``\\n``)."""
        line = b"".join(self._partial) + tail
        cut = 0
        body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if self._cutting or len(body) > MAX_LINE:
            cut = 0 if self._cutting else 1
            line = _pieces(body)
        self._partial, self._partial_size, self._cutting = [], 0, False
        return line, cut


def _pieces(data: bytes) -> bytes:
    """``data`` as lines of at most MAX_LINE bytes, each ending in ``\\n``."""
    # A piece ending in \r gets one more, so split_block's removal of one trailing \r keeps it.
    pieces = (data[i:i + MAX_LINE] for i in range(0, len(data), MAX_LINE))
    return b"".join(piece + (b"\r\n" if piece.endswith(b"\r") else b"\n") for piece in pieces)


def split_block(block: bytes) -> list[bytes]:
    """The non-empty lines of a block, each without ``\\n`` and one trailing ``\\r`` (§4.1)."""
    lines = []
    for line in block.split(b"\n")[:-1]:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            lines.append(line)
    return lines


def label_bytes(name: str, stage: str, color: bool = False) -> bytes:
    """``<name>/<stage>``, in the service's colour if asked (§15: prefix form only)."""
    name_bytes = name.encode("utf-8", "surrogateescape")
    label = b"%s/%s" % (name_bytes, stage.encode("utf-8", "surrogateescape"))
    if not color:
        return label
    from .color import paint

    return paint(name_bytes, label)


class PrefixLabeller:
    """Labels lines as ``<time> <name>/<stage>: <line>`` (§4.4)."""

    __slots__ = ("_label",)

    def __init__(self, name: str, stage: str, color: bool = False) -> None:
        self._label = b" %s: " % label_bytes(name, stage, color)

    def label(self, block: bytes, time: bytes) -> bytes:
        """Prefix every line of ``block``; the usual case is one ``replace`` over the whole block."""
        prefix = time + self._label
        if b"\r" not in block and block[:1] != b"\n":
            # Looking for the long separator twice in a row finds empty lines much faster than
            # looking for "\n\n" first (searches for 2-byte patterns are slow).
            separator = b"\n" + prefix
            body = block[:-1].replace(b"\n", separator)
            if separator + separator not in body and not body.endswith(separator):
                return b"".join((prefix, body, b"\n"))
        return b"".join(prefix + line + b"\n" for line in split_block(block))


def _text(name: str) -> str:
    """A name as valid Unicode for JSON: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


#: JSON's escapes, written as orjson writes them (short ones where JSON has them).
_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20)} | {
    ord("\b"): "\\b", ord("\t"): "\\t", ord("\n"): "\\n", ord("\f"): "\\f", ord("\r"): "\\r",
    ord('"'): '\\"', ord("\\"): "\\\\"}


def json_string(name: str) -> bytes:
    """A name as a JSON string, byte for byte what ``orjson.dumps(_text(name))`` gives."""
    return b'"%s"' % _text(name).translate(_ESCAPES).encode("utf-8")


class JsonLabeller:
    """Appends ``"service"``, ``"stage"`` and ``"logged"`` to each JSON object line (§4.3).

    :meth:`label` returns the annotated stdout bytes and the lines that are not JSON objects, which
    the caller reports on stderr.
    """

    __slots__ = ("_meta",)

    def __init__(self, name: str, stage: str) -> None:
        # orjson (and json, msgspec) are imported where lines are checked: with what they import
        # themselves they would be most of dinit's start-up and of an idle dinit's memory.
        self._meta = b',"service":%s,"stage":%s,"logged":"' % (json_string(name), json_string(stage))

    def label(self, block: bytes, time: bytes) -> tuple[bytes, list[bytes]]:
        """Annotate a block: ordinary blocks in one check and one join, others in halves that are
        (see :func:`_label_halves`), and odd lines one by one."""
        suffix = self._meta + time + b'"}\n'
        labelled = _label_block(block, suffix)
        if labelled is not None:
            return labelled, []
        out: list[bytes] = []
        rejected: list[bytes] = []
        _label_halves(block, suffix, out, rejected)
        return b"".join(out), rejected


#: Blocks shorter than this that fail the block check go line by line without being cut in two.
BISECT_MIN = 4096


def _label_block(block: bytes, suffix: bytes) -> bytes | None:
    """The block annotated, if every line is a non-empty JSON object ending in "}" (one check and
    one join for the block: :func:`_block_members`); else None."""
    # Every line of an ordinary block ends in "}": cut there, the annotation is one join.
    parts = block.split(b"}\n")
    if parts[-1]:
        return None
    members = _block_members(block, parts)
    return None if members is None else _join_labelled(parts, members, suffix)


def _label_halves(block: bytes, suffix: bytes, out: list[bytes], rejected: list[bytes]) -> None:
    """Annotate a block that failed the block check. When only one of its halves fails too (a few
    odd lines among many ordinary ones, say a stack trace), the other is done and the failing one
    cut again, so an odd line costs its neighbours little; otherwise, line by line."""
    middle = block.find(b"\n", len(block) // 2) + 1
    if len(block) >= BISECT_MIN and 0 < middle < len(block):
        halves = (block[:middle], block[middle:])
        done = [_label_block(half, suffix) for half in halves]
        if done.count(None) == 1:
            for half, labelled in zip(halves, done, strict=True):
                if labelled is None:
                    _label_halves(half, suffix, out, rejected)
                else:
                    out.append(labelled)
            return
    for line in split_block(block):
        labelled = label_json_line(line, suffix)
        if labelled is None:
            rejected.append(line)
        else:
            out.append(labelled)


#: Put where each line's final "}" was, to check a whole block in one decode. ``"":0}`` makes the
#: line's object end there, and only a complete top-level member can come before it, so the object
#: is valid only if the line was a non-empty object. The ``0`` after it is a value of its own only
#: outside every object and array: a line that leaves one open makes the decode fail, so no value
#: can span two lines. Nor can a string: the marker's ``,"`` would end it, and a second string
#: right after one is never valid JSON.
_MARK = b',"":0}0 '


def _block_members(block: bytes, parts: list[bytes]) -> list[object] | None:
    """If ``parts`` (``block`` cut at each ``}\\n``, last part empty) are all whole lines that are
    non-empty JSON objects, each line's members named like dinit's (see :func:`_own_members`);
    else None.

    Validation is msgspec's, one call for the block: decoding into a struct of dinit's three names
    skips every other member without building it (orjson builds whole objects, three times as
    slow). With :data:`_MARK`, a decode that succeeds has at least two values per line (one ending
    at the marker's "}", then ``0``), and exactly two only for a line that is one object: the count
    proves every line. Skipping does not check UTF-8, so the block is checked once as a whole. What
    msgspec refuses (also valid JSON it is stricter about, such as lone surrogate escapes) goes line
    by line, where orjson and Python's parser decide."""
    marked = _MARK.join(parts)
    if b"\n" in marked or not (block.isascii() or _is_utf8(block)):
        return None  # a line did not end in "}" (or was empty), or the block is not UTF-8
    msgspec = _own_members()
    try:
        values = msgspec.decode_lines(marked)
    except (msgspec.error, RecursionError):
        return None
    return values[::2] if len(values) == 2 * (len(parts) - 1) else None


def _join_labelled(parts: list[bytes], members: list[object], suffix: bytes) -> bytes:
    """The annotated lines of a checked block: one join, but for the lines that have members named
    like dinit's, which are annotated one by one between joins of the others."""
    nothing = _own_members().nothing
    if members.count(nothing) == len(members):
        return suffix.join(parts)
    out: list[bytes] = []
    start = 0
    for index in itertools.compress(range(len(members)), map(nothing.__ne__, members)):
        if index > start:
            out.append(suffix.join(parts[start:index]) + suffix)
        out.append(_annotated(*_drop_named(parts[index] + b"}", members[index]), suffix))
        start = index + 1
    out.append(suffix.join(parts[start:]))
    return b"".join(out)


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` is UTF-8, which msgspec does not check in the strings it skips."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _OwnMembers(NamedTuple):
    """What the block check needs of msgspec (imported on first use, like orjson)."""

    #: Decodes whitespace-separated JSON objects, into their members named like dinit's, and integers.
    decode_lines: Callable[[bytes], list[object]]
    #: What it gives for an object that has none of those members.
    nothing: object
    #: The value of such a member that is not there.
    unset: object
    #: What it raises for what it refuses (not a ValueError in older msgspec).
    error: type[Exception]


@once
def _own_members() -> _OwnMembers:
    import msgspec

    own = msgspec.defstruct("OwnMembers", [(name, msgspec.Raw, msgspec.UNSET) for name in _RESERVED])
    return _OwnMembers(msgspec.json.Decoder(own | int).decode_lines, own(), msgspec.UNSET,
                       msgspec.DecodeError)


def label_json_line(line: bytes, suffix: bytes) -> bytes | None:
    """One line annotated with ``suffix`` (``,"service":…}\\n``), or None if it is no JSON object.

    The program's bytes are kept; members named like dinit's three are removed first so the result
    never has duplicate keys, and an empty object gets no leading comma.
    """
    body = line.rstrip(_JSON_SPACE)
    if not body.endswith(b"}"):
        return None
    value = _parse(body)
    if type(value) is not dict:
        return None
    if not _RESERVED.isdisjoint(value):
        members = _block_members(body, [body[:-1], b""])
        body, empty = _drop_members(body) if members is None else _drop_named(body, members[0])
        return _annotated(body, empty, suffix)
    return _annotated(body, not value, suffix)


def _annotated(body: bytes, empty: bool, suffix: bytes) -> bytes:
    """Object ``body`` with ``suffix`` in place of its final "}": an empty one takes no comma."""
    return body[:-1] + (suffix[1:] if empty else suffix)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes) -> object:
    """Parse with orjson; fall back to the standard library for valid JSON orjson refuses
    (e.g. lone surrogate escapes or very deep nesting), still refusing NaN and Infinity."""
    import orjson

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    import json

    try:
        # Numbers stay text: only the structure matters here, and Python refuses to convert
        # integers of more than 4300 digits, which are valid JSON all the same.
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_int=str,
                          parse_float=str)
    except (ValueError, RecursionError):
        return None


class _Patterns(NamedTuple):
    """The regular expressions of the rare lines that have members named like dinit's (compiled on
    first use: importing ``re`` costs start-up, lean.py)."""

    #: Each of dinit's names, as a key, and as a member up to its value.
    named: tuple[tuple[str, bytes, re.Pattern[bytes]], ...]
    #: What may follow a value.
    member_end: re.Pattern[bytes]
    #: A JSON string, bracket or comma.
    token: re.Pattern[bytes]


@once
def _patterns() -> _Patterns:
    import re

    space = rb"[ \t\r\n]*"
    return _Patterns(
        tuple((name, b'"%s"' % name.encode(), re.compile(rb'"%s"%s:%s' % (name.encode(), space, space)))
              for name in _RESERVED),
        re.compile(space + rb"[,}]"),
        re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],]', re.DOTALL))


_COMMA = ord(",")


def _drop_named(body: bytes, members: object) -> tuple[bytes, bool]:
    """:func:`_drop_members` without a scan of the whole line, for a valid object whose members
    named like dinit's are known (with their values) from msgspec.

    Such a member is found by its name, which is safe when the name is written once and plainly:
    no ``\\u`` escape in the line (a letter can only be escaped that way), and the name once in the
    line (a duplicate, or the same text as a string value, would make it ambiguous). Otherwise, the
    scan."""
    if b"\\" in body and b"\\u" in body:  # (a search for one byte is much faster)
        return _drop_members(body)
    unset = _own_members().unset
    patterns = _patterns()
    for name, key, named in patterns.named:
        value = getattr(members, name)
        if value is unset:
            continue
        at = body.find(key)
        found = named.match(body, at) if body.find(key, at + 1) < 0 else None
        after = found and patterns.member_end.match(body, found.end() + len(value))
        if found is None or not after:
            return _drop_members(body)
        end = after.end()
        before = len(body[:found.start()].rstrip(_JSON_SPACE)) - 1  # the "{" or "," before it
        if body[end - 1] == _COMMA:
            body = body[:before + 1] + body[end:]  # not the last member: it goes with its ","
        elif body[before] == _COMMA:
            body = body[:before] + body[end - 1:]  # the last one: with the "," before it
        else:
            body = body[:before + 1] + body[end - 1:]  # the only one
    return body, not body.strip(_JSON_SPACE)[1:-1].strip(_JSON_SPACE)


_RESERVED_KEYS = frozenset(name.encode() for name in _RESERVED)
_QUOTE, _OPEN, _CLOSE = ord('"'), b"{[", b"}]"


def _drop_members(body: bytes) -> tuple[bytes, bool]:
    """Remove the top-level members of object ``body`` named like dinit's three, byte-exactly
    keeping everything else; also say whether the object is left empty.

    One pass over the strings and brackets of the line: the first string of a top-level member is
    its key, compared as raw bytes unless it has escapes (``"serv\\u0069ce"`` is ``service``)."""
    depth = 0
    start = 0
    head = b""
    kept: list[bytes] = []
    key_next = drop = False
    for token in _patterns().token.finditer(body):
        text = token.group()
        first = text[0]
        if first == _QUOTE:
            if key_next:
                key_next = False
                key = text[1:-1]
                drop = key in _RESERVED_KEYS if b"\\" not in key else _decoded(text) in _RESERVED
        elif first in _OPEN:
            depth += 1
            if depth == 1:
                head, start, key_next = body[:token.end()], token.end(), True
        elif first in _CLOSE:
            depth -= 1
        if (depth == 1 and text == b",") or depth == 0:
            if not drop:
                kept.append(body[start:token.start()])
            start, key_next, drop = token.end(), True, False
            if depth == 0:
                break
    empty = all(not member.strip(_JSON_SPACE) for member in kept)
    return head + b",".join(kept) + b"}", empty


def _decoded(string: bytes) -> str:
    """A JSON string token's value, escapes resolved."""
    import json

    value: str = json.loads(string)
    return value
