"""Unit and property tests of hot reload's pure parts (§11): DINIT_WATCH parsing, the reconcile rule
:func:`decide`, the fingerprint (content, not inode) and the bounded debounce signature."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dinit.config import ConfigError, WatchMode, load
from dinit.lifecycle.reconcile import Action, Entry, Record, decide, fingerprint, signature
from dinit.service.discovery import Service


@pytest.mark.parametrize(("word", "mode"), [("on", WatchMode.ON), ("YES", WatchMode.ON), ("1", WatchMode.ON),
                                            ("true", WatchMode.ON), ("off", WatchMode.OFF),
                                            ("0", WatchMode.OFF), ("Poll", WatchMode.POLL),
                                            ("", WatchMode.OFF)])
def test_watch_words(word: str, mode: WatchMode) -> None:
    assert load({"DINIT_WATCH": word}).watch is mode


@given(st.floats(min_value=0.1, max_value=1e6))
def test_intervals_of_at_least_a_tenth_are_accepted(seconds: float) -> None:
    assert load({"DINIT_WATCH_INTERVAL": repr(seconds)}).watch_interval == seconds


@pytest.mark.parametrize("value", ["0.09", "0", "-1", "soon", "nan"])
def test_bad_intervals_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^invalid DINIT_WATCH_INTERVAL"):
        load({"DINIT_WATCH_INTERVAL": value})


def test_bad_watch_word() -> None:
    with pytest.raises(ConfigError, match=r"^invalid DINIT_WATCH 'inotify': accepted are off, on, poll"):
        load({"DINIT_WATCH": "inotify"})


SERVICE = Service(name="web", directory="/s/web", run="/s/web/run", argv=("/s/web/run",))


def entry(identity: tuple[int, int] = (1, 1), down: bool = False, runnable: bool = True) -> Entry:
    return Entry(identity, down, SERVICE if runnable else None, None if runnable else "run: missing", (), 0.0)


identities = st.tuples(st.integers(0, 3), st.integers(0, 3))


@given(identities, identities, st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.booleans())
def test_decide(known: tuple[int, int], seen: tuple[int, int], same_content: bool, live: bool,
                was_down: bool, down: bool, runnable: bool) -> None:
    """The §11 rule: identity, then the down file, then runnability; the fingerprint is computed only
    when the inode changed."""
    record = Record(identity=known, fingerprint=b"a", down=was_down)
    asked: list[bool] = []

    def content() -> bytes:
        asked.append(True)
        return b"a" if same_content else b"b"

    action = decide(record, entry(seen, down, runnable), live, content)
    assert bool(asked) == (seen != known)
    if seen != known and not same_content:
        assert action is Action.REPLACED
    elif live and down:
        assert action is Action.DOWN_ADDED
    elif live and not runnable:
        assert action is Action.REMOVED
    elif not live and was_down and not down:
        assert action is Action.DOWN_REMOVED
    else:
        assert action is None


@given(st.booleans(), st.booleans())
def test_decide_new_and_gone(live: bool, runnable: bool) -> None:
    assert decide(None, None, live, bytes) is (Action.REMOVED if live else None)
    assert decide(Record(), entry(runnable=runnable), live, bytes) is (
        Action.ADDED if runnable else Action.PENDING)


def test_fingerprint_is_content_not_inode(tmp_path: Path) -> None:
    first = tmp_path / "a"
    (first / "env").mkdir(parents=True)
    (first / "run").write_text("#!/bin/sh\nexec sleep 1\n")
    (first / "run").chmod(0o755)
    (first / "env" / "A").write_text("1\n")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    assert fingerprint(str(first)) == fingerprint(str(second))
    (second / "env" / "A").write_text("2\n")
    assert fingerprint(str(first)) != fingerprint(str(second))
    shutil.rmtree(second)
    shutil.copytree(first, second)
    (second / "run").chmod(0o644)
    assert fingerprint(str(first)) != fingerprint(str(second))


def test_signature_is_bounded_by_the_files_that_matter(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("x")
    before = signature(str(tmp_path))
    for index in range(100):
        (tmp_path / f"f{index}").touch()
    after = signature(str(tmp_path))
    assert len(after) == len(before) == 2  # the directory itself and run
    (tmp_path / "down").touch()
    assert len(signature(str(tmp_path))) == 3
