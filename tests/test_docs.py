"""Every section citation in the code, tests and docs resolves to a heading of docs/behaviour.md.

Docstrings and comments cite behaviour as section-sign references (one section or a subsection, also
ranges and lists). Those citations are only useful if the reader can look them up, so this
test fails as soon as one names a section that docs/behaviour.md has no heading for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "behaviour.md"
#: The section sign, spelled as a code point so this file's own examples are not taken for citations.
SIGN = "\N{SECTION SIGN}"
_NUMBER = r"\d+(?:\.\d+)*"
#: A citation, or a range (en dash, em dash or hyphen; the end may omit the sign): "§1-§9", "§4.1-4.6".
_CITATION = re.compile(rf"{SIGN}({_NUMBER})(?:\s*[\u2013\u2014-]\s*{SIGN}?({_NUMBER}))?")
_HEADING = re.compile(rf"^#{{1,6}}\s+{SIGN}({_NUMBER})(?=\s|$)", re.MULTILINE)


def cited_files() -> list[Path]:
    """Where citations live: the package, the tests, the benchmarks and the project's documents."""
    files = [*ROOT.glob("dinit/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py")]
    files += [ROOT / name for name in ("README.md", "ARCHITECTURE.md", "CHANGELOG.md")]
    return sorted(path for path in [*files, REFERENCE] if path.is_file())


def _key(section: str) -> tuple[int, ...]:
    return tuple(int(part) for part in section.split("."))


def _expand(start: str, end: str | None) -> Iterator[str]:
    """The sections a citation names; a range names both ends and, at one level, everything between."""
    yield start
    if end is None:
        return
    first, last = _key(start), _key(end)
    if len(first) == len(last) and first[:-1] == last[:-1] and first[-1] < last[-1]:
        prefix = ".".join(str(part) for part in first[:-1])
        for number in range(first[-1] + 1, last[-1]):
            yield f"{prefix}.{number}" if prefix else str(number)
    yield end


def citations(text: str) -> list[str]:
    """The section numbers ``text`` cites, in order, ranges expanded."""
    return [section for match in _CITATION.finditer(text) for section in _expand(*match.groups())]


def headings(text: str) -> list[str]:
    """The section numbers of the Markdown headings of ``text``."""
    return _HEADING.findall(text)


def unresolved() -> tuple[set[str], list[str]]:
    """Every section cited anywhere, and ``file:line: §N`` for each that has no heading."""
    known = set(headings(REFERENCE.read_text(encoding="utf-8")))
    cited: set[str] = set()
    missing: list[str] = []
    for path in cited_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for section in citations(line):
                cited.add(section)
                if section not in known:
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {SIGN}{section}")
    return cited, missing


def test_every_citation_resolves() -> None:
    """Each cited section has a heading in docs/behaviour.md, and the scan did find the citations."""
    cited, missing = unresolved()
    assert {"1", "5.3", "6.2", "9"} <= cited, sorted(cited, key=_key)
    assert not missing, "\n".join(missing)


def test_reference_has_every_section_once() -> None:
    """§1 to §17 and their subsections are headings, each exactly once, in order."""
    found = headings(REFERENCE.read_text(encoding="utf-8"))
    expected = [str(n) for n in range(1, 18)]
    expected[3:4] = ["4", *(f"4.{n}" for n in range(1, 7))]
    expected[10:11] = ["5", *(f"5.{n}" for n in range(1, 4))]
    expected[14:15] = ["6", *(f"6.{n}" for n in range(1, 4))]
    assert found == expected


def test_readme_links_the_reference() -> None:
    """Readers of the README find the reference its citations point to."""
    head = (ROOT / "README.md").read_text(encoding="utf-8")[:3000]
    assert "(docs/behaviour.md)" in head


def test_citation_forms() -> None:
    """Single sections, subsections, lists, ranges (with or without the second sign) and prose around them."""
    s = SIGN
    assert citations(f"see {s}5.3's table, and {s}4.5, {s}5.1.") == ["5.3", "4.5", "5.1"]
    assert citations(f"{s}1\u2013{s}4 then {s}10-12") == ["1", "2", "3", "4", "10", "11", "12"]
    assert citations(f"({s}4.1\u20134.3; {s}9 with {s}4)") == ["4.1", "4.2", "4.3", "9", "4"]
    assert citations(f"{s}4.6\u2013{s}5.2 and {s}6 - {s}6.2") == ["4.6", "5.2", "6", "6.2"]
    assert citations("section 5.3, 128+N, 1-2") == []
    assert headings(f"## {s}5.2 Teardown\n### {s}5.3\n{s}7 in prose\n##{s}8 no space\n") == ["5.2", "5.3"]


_SECTIONS = st.lists(st.integers(0, 99), min_size=1, max_size=3).map(lambda parts: ".".join(map(str, parts)))
_PROSE = st.text(st.characters(blacklist_characters=SIGN + "0123456789.-\u2013\u2014"), max_size=12)


@given(st.lists(st.tuples(_SECTIONS, _PROSE), min_size=1, max_size=6))
def test_citations_in_any_prose(items: list[tuple[str, str]]) -> None:
    """Whatever prose separates them, every cited section is found, once, in order."""
    text = "".join(f"{SIGN}{section} {prose}" for section, prose in items)
    assert citations(text) == [section for section, _ in items]
