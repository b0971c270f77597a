"""Unit and property tests of ``dinit.config.load``: parsing of every ``DINIT_*`` variable (§1, §9).

Booleans and log levels are case-insensitive (``warning`` = ``warn``); seconds are non-negative finite
numbers (``0.5`` allowed); an empty variable means its default; anything else raises ``ConfigError``
whose one-line message names the variable, the bad value and what is accepted.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dinit.config import Config, ConfigError, FinishMode, Policy, load, log_level_from

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
LEVEL_WORDS = {"none": "none", "error": "error", "warn": "warning", "warning": "warning",
               "info": "info", "debug": "debug"}
POLICIES = {"terminate": Policy.TERMINATE, "adopt": Policy.ADOPT, "ignore": Policy.IGNORE}
SECONDS_VARIABLES = ("DINIT_KILL_TIMEOUT", "DINIT_TIMEOUT")
CHOICES = {
    "DINIT_JSON_STDOUT": (*TRUE_WORDS, *FALSE_WORDS),
    "DINIT_LOG_LEVEL": ("none", "error", "warn", "info", "debug"),
    "DINIT_REPARENTING_POLICY": tuple(POLICIES),
    "DINIT_FINISH": ("runit", "stop"),
}


@st.composite
def any_case(draw: st.DrawFn, words: tuple[str, ...]) -> str:
    """One of ``words`` with every letter's case chosen independently."""
    word = draw(st.sampled_from(words))
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(char.upper() if flip else char.lower() for char, flip in zip(word, flips, strict=True))


def _error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        load(environ)
    return str(raised.value)


def _names_value(message: str, value: str) -> bool:
    """The bad value appears in the message, verbatim or quoted (escaped when unprintable)."""
    return value in message or repr(value) in message


# -- defaults --------------------------------------------------------------------------------------


def test_defaults() -> None:
    """§1: with no variable set every default holds (and §9's are unset)."""
    config = load({})
    assert config.directory == "/etc/service"
    assert config.json_stdout is True
    assert config.log_level == "warning"
    assert config.policy is Policy.TERMINATE
    assert config.kill_timeout == 30
    assert config.timeout is None
    assert config.exit_code is None
    assert config.finish is FinishMode.RUNIT


@pytest.mark.parametrize("variable", ["DINIT_DIR", "DINIT_JSON_STDOUT", "DINIT_LOG_LEVEL",
                                      "DINIT_REPARENTING_POLICY", "DINIT_KILL_TIMEOUT",
                                      "DINIT_TIMEOUT", "DINIT_EXIT_CODE", "DINIT_FINISH"])
def test_empty_means_default(variable: str) -> None:
    """§1: an empty variable means its default, it is never an error; blanks alone count as empty
    (surrounding blanks are ignored in every value, so ``" info "`` is ``info``)."""
    assert load({variable: ""}) == load({})
    assert load({variable: " \t "}) == load({})


def test_unrelated_variables_ignored() -> None:
    """§1: only the DINIT_* variables dinit knows are read; others (even DINIT_-prefixed) change nothing."""
    assert load({"DINIT_UNKNOWN": "x", "PATH": "/bin", "JSON_STDOUT": "0"}) == Config()


# -- booleans --------------------------------------------------------------------------------------


@given(any_case(TRUE_WORDS))
def test_true_words_any_case(value: str) -> None:
    """§1: ``1 true yes on`` in any case turn JSON stdout on."""
    assert load({"DINIT_JSON_STDOUT": value}).json_stdout is True


@given(any_case(FALSE_WORDS))
def test_false_words_any_case(value: str) -> None:
    """§1: ``0 false no off`` in any case turn JSON stdout off."""
    assert load({"DINIT_JSON_STDOUT": value}).json_stdout is False


# -- log levels ------------------------------------------------------------------------------------


@given(any_case(tuple(LEVEL_WORDS)))
def test_levels_any_case(value: str) -> None:
    """§1: ``none error warn info debug`` in any case; ``warning`` is the same level as ``warn``."""
    assert load({"DINIT_LOG_LEVEL": value}).log_level == LEVEL_WORDS[value.lower()]


def test_warning_is_warn() -> None:
    """§1: ``warning`` = ``warn``, and both are the default."""
    assert load({"DINIT_LOG_LEVEL": "warning"}) == load({"DINIT_LOG_LEVEL": "warn"}) == load({})


@pytest.mark.parametrize(("environ", "level"), [
    ({}, "warning"), ({"DINIT_LOG_LEVEL": ""}, "warning"), ({"DINIT_LOG_LEVEL": "Info"}, "info"),
    ({"DINIT_LOG_LEVEL": "none", "DINIT_KILL_TIMEOUT": "bad"}, "none"),
    ({"DINIT_LOG_LEVEL": "verbose"}, "warning"), ({"DINIT_LOG_LEVEL": "5"}, "warning"),
])
def test_log_level_from(environ: dict[str, str], level: str) -> None:
    """§1/§7: the level used to report a configuration error is the configured one when valid (even
    if another variable is bad), else the default ``warning``, so the error about an invalid
    DINIT_LOG_LEVEL itself can still be printed."""
    assert log_level_from(environ) == level


# -- reparenting policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "policy"), list(POLICIES.items()))
def test_policies(value: str, policy: Policy) -> None:
    """§1: ``terminate adopt ignore`` are the accepted policies."""
    assert load({"DINIT_REPARENTING_POLICY": value}).policy is policy


# -- finish ----------------------------------------------------------------------------------------


@given(any_case(("runit", "stop")))
def test_finish_modes_any_case(value: str) -> None:
    """§2: ``DINIT_FINISH=stop`` gives ``finish`` its older tozd meaning, ``runit`` (the default) runit's."""
    assert load({"DINIT_FINISH": f" {value} "}).finish is FinishMode(value.lower())


# -- invalid choices -------------------------------------------------------------------------------


@given(variable=st.sampled_from(sorted(CHOICES)), value=st.text(min_size=1))
def test_invalid_choice_rejected(variable: str, value: str) -> None:
    """§1: any other non-blank value is a ConfigError naming the variable, the value and every
    accepted word, on one line. (Surrounding blanks around an accepted word are not pinned.)"""
    accepted = CHOICES[variable] + (("warning",) if variable == "DINIT_LOG_LEVEL" else ())
    assume(value.strip() and value.strip().lower() not in accepted)
    message = _error({variable: value})
    assert variable in message
    assert _names_value(message, value)
    assert "\n" not in message
    assert "accepted" in message
    for word in CHOICES[variable]:
        assert word in message


@pytest.mark.parametrize(("variable", "value"), [
    ("DINIT_JSON_STDOUT", "2"), ("DINIT_JSON_STDOUT", "y"), ("DINIT_JSON_STDOUT", "truee"),
    ("DINIT_JSON_STDOUT", "enabled"), ("DINIT_LOG_LEVEL", "verbose"), ("DINIT_LOG_LEVEL", "warnings"),
    ("DINIT_LOG_LEVEL", "trace"), ("DINIT_LOG_LEVEL", "3"), ("DINIT_REPARENTING_POLICY", "kill"),
    ("DINIT_REPARENTING_POLICY", "adopted"), ("DINIT_REPARENTING_POLICY", "none"),
    ("DINIT_FINISH", "terminate"), ("DINIT_FINISH", "runsv"), ("DINIT_FINISH", "1"),
])
def test_invalid_choice_examples(variable: str, value: str) -> None:
    """§1: near misses are rejected with the variable and the quoted value named."""
    message = _error({variable: value})
    assert message.startswith(f"invalid {variable} ")
    assert f"'{value}'" in message


# -- seconds ---------------------------------------------------------------------------------------

finite_non_negative = st.floats(min_value=0, allow_nan=False, allow_infinity=False)


@given(variable=st.sampled_from(SECONDS_VARIABLES), seconds=finite_non_negative)
def test_seconds_accept_non_negative_numbers(variable: str, seconds: float) -> None:
    """§1: any non-negative finite number, written as Python writes floats (``0.5``, ``1e-05``)."""
    config = load({variable: repr(seconds)})
    field = "kill_timeout" if variable == "DINIT_KILL_TIMEOUT" else "timeout"
    assert getattr(config, field) == seconds


@given(variable=st.sampled_from(SECONDS_VARIABLES), seconds=st.integers(min_value=0, max_value=10**9))
def test_seconds_accept_integers(variable: str, seconds: int) -> None:
    """§1: whole numbers of seconds."""
    config = load({variable: str(seconds)})
    field = "kill_timeout" if variable == "DINIT_KILL_TIMEOUT" else "timeout"
    assert getattr(config, field) == seconds


@pytest.mark.parametrize(("value", "seconds"), [("0.5", 0.5), ("0", 0.0), ("30", 30.0), (".25", 0.25),
                                                 ("2.", 2.0), ("1e1", 10.0), ("007", 7.0)])
def test_seconds_spellings(value: str, seconds: float) -> None:
    """§1: the usual decimal spellings (``0.5`` explicitly allowed)."""
    assert load({"DINIT_KILL_TIMEOUT": value}).kill_timeout == seconds
    assert load({"DINIT_TIMEOUT": value}).timeout == seconds


def _rejected_seconds(variable: str, value: str) -> None:
    message = _error({variable: value})
    assert variable in message
    assert _names_value(message, value)
    assert "\n" not in message
    assert "non-negative number of seconds" in message


@given(variable=st.sampled_from(SECONDS_VARIABLES),
       seconds=st.floats(max_value=0, exclude_max=True, allow_nan=False, allow_infinity=False))
def test_seconds_reject_negative(variable: str, seconds: float) -> None:
    """§1: a negative number is rejected."""
    _rejected_seconds(variable, repr(seconds))


@pytest.mark.parametrize("variable", SECONDS_VARIABLES)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1", "-0.5",
                                   "1s", "30sec", "1,5", "abc", "0x10", "1/2", "--1", "one",
                                   "1_0", "+1", "\u0663", "1e", "."])
def test_seconds_reject_examples(variable: str, value: str) -> None:
    """§1: not-a-number, infinite, negative and non-numeric spellings are rejected."""
    _rejected_seconds(variable, value)


def _is_accepted_number(value: str) -> bool:
    """What Python's ``float`` reads as a finite number, minus a sign, ``_`` separators and
    non-ASCII digits."""
    text = value.strip()
    if not text.isascii() or "_" in text or text[:1] in ("+", "-"):
        return False
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@given(variable=st.sampled_from(SECONDS_VARIABLES), value=st.text(min_size=1))
def test_seconds_reject_everything_else(variable: str, value: str) -> None:
    """§1: arbitrary text that is not a non-negative finite number is a ConfigError."""
    assume(value.strip() and not _is_accepted_number(value))  # blanks only mean the default
    _rejected_seconds(variable, value)


# -- DINIT_DIR -------------------------------------------------------------------------------------


def test_relative_directory_resolved_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """§1: a relative DINIT_DIR is resolved against the working directory at start."""
    monkeypatch.chdir(tmp_path)
    config = load({"DINIT_DIR": "some/services"})
    assert config.directory == os.path.join(str(tmp_path), "some", "services")
    assert load({"DINIT_DIR": "."}).directory == str(tmp_path)


def test_absolute_directory_kept() -> None:
    """§1: an absolute DINIT_DIR is used as given."""
    assert load({"DINIT_DIR": "/srv/services"}).directory == "/srv/services"


# -- several variables -----------------------------------------------------------------------------


@given(json=any_case((*TRUE_WORDS, *FALSE_WORDS)), level=any_case(tuple(LEVEL_WORDS)),
       policy=st.sampled_from(tuple(POLICIES)), seconds=finite_non_negative)
def test_all_variables_together(json: str, level: str, policy: str, seconds: float) -> None:
    """§1: variables are independent: each one's value lands in its own field."""
    config = load({"DINIT_JSON_STDOUT": json, "DINIT_LOG_LEVEL": level,
                   "DINIT_REPARENTING_POLICY": policy, "DINIT_KILL_TIMEOUT": repr(seconds)})
    assert config.json_stdout is (json.lower() in TRUE_WORDS)
    assert config.log_level == LEVEL_WORDS[level.lower()]
    assert config.policy is POLICIES[policy]
    assert config.kill_timeout == seconds


def test_one_invalid_among_valid() -> None:
    """§1: one bad variable fails the whole configuration, and the message names that one."""
    message = _error({"DINIT_JSON_STDOUT": "yes", "DINIT_LOG_LEVEL": "info",
                      "DINIT_KILL_TIMEOUT": "soon"})
    assert "DINIT_KILL_TIMEOUT" in message
    assert "soon" in message


@pytest.mark.parametrize(("variable", "too_small", "accepted"), [
    ("DINIT_KILL_TIMEOUT", "-1", "a non-negative number of seconds"),
    ("DINIT_STOP_DELAY", "-1", "a non-negative number of seconds"),
    ("DINIT_WATCH_INTERVAL", "0", "a number of seconds of at least 0.1"),
    ("DINIT_CHECK_INTERVAL", "0", "a positive number of seconds"),
    ("DINIT_CHECK_TIMEOUT", "0", "a positive number of seconds"),
    ("DINIT_WEBHOOK_TIMEOUT", "0", "a positive number of seconds"),
])
def test_a_word_and_a_number_out_of_range_are_told_the_same_range(variable: str, too_small: str,
                                                                  accepted: str) -> None:
    """The error says what the variable accepts, whichever way the value is wrong (README)."""
    from dinit.readiness import settings

    for value in ("soon", too_small):
        with pytest.raises(ConfigError) as error:  # whichever of the two reads the variable raises
            load({variable: value})
            settings.load({variable: value})
        assert str(error.value) == f"invalid {variable} {value!r}: accepted is {accepted}"
