"""Why a program ended, as dinit's exit code sees it (§5.3, §9).

An :class:`Outcome` carries both codes dinit may exit with: the summary of §5.3 (0, 1 or 3) and the
status to propagate under ``DINIT_EXIT_CODE=propagate`` (the program's own status, 128+N for a
signal). The first recorded outcome decides dinit's exit code; named constructors keep the reasoning
in one place instead of pairs of ints spread through the supervisor.
"""

from __future__ import annotations

import errno
import os

from .signals import NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from ..lean import NamedTuple


EXIT_OK, EXIT_ERROR, EXIT_FAILURE = 0, 1, 3

#: Statuses a shell (and Docker) gives when a command cannot be run, used when propagating.
_SHELL_STATUS = {errno.ENOENT: 127, errno.EACCES: 126, errno.ENOEXEC: 126}


class Outcome(NamedTuple):
    """The two candidate exit codes of one reason for stopping."""

    summary: int
    status: int

    @classmethod
    def ok(cls) -> Outcome:
        """A stop signal, a ``dinit shutdown``, or nothing at all to run."""
        return cls(EXIT_OK, EXIT_OK)

    @classmethod
    def error(cls) -> Outcome:
        """A configuration error, a broken service directory, an internal error."""
        return cls(EXIT_ERROR, EXIT_ERROR)

    @classmethod
    def exec_failure(cls, error: OSError, command: bool) -> Outcome:
        """A program could not be started; dinit's own command propagates what a shell would."""
        status = _SHELL_STATUS.get(error.errno or 0, EXIT_ERROR) if command else EXIT_ERROR
        return cls(EXIT_ERROR, status)

    @classmethod
    def of_status(cls, status: int, signalled: set[int] | frozenset[int] = frozenset()) -> Outcome:
        """A program's wait status: exit 0, or death by a signal dinit sent, is no failure."""
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            return cls(EXIT_OK if code == 0 else EXIT_FAILURE, code)
        signum = os.WTERMSIG(status)
        return cls(EXIT_OK if signum in signalled else EXIT_FAILURE, 128 + signum)


def describe(status: int) -> str:
    """``status 3`` or ``signal 9``: the words of dinit's "finished with" lines (§7)."""
    if os.WIFEXITED(status):
        return f"status {os.WEXITSTATUS(status)}"
    return f"signal {os.WTERMSIG(status)}"


def explain(status: int) -> str:
    """``exited with status 0`` or ``died of signal 9 (SIGKILL)``: the teardown cause (§5.2)."""
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    signum = os.WTERMSIG(status)
    return f"died of signal {signum} ({signal_name(signum)})"


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 40`` for one without a name (real-time signals)."""
    try:
        return NAMES[signum]
    except KeyError:
        return f"signal {signum}"
