"""Which signal does what to dinit (§8, and §17 for command mode without services)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal  # signal without its enums (lean.py: start-up)


#: Signals that tear the container down.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
#: Signals passed on to every running ``S/run`` (§8).
FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM)
#: Signals a process gets only from its own faults: never caught or forwarded, so a fault in dinit
#: itself is not turned into a loop of handler calls.
_FAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP,
                     signal.SIGSYS})
_UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})
#: Every signal name (``SIGIOT`` too) and its number: what :class:`signal.Signals` knows, without it.
NUMBERS = {name: number for name, number in vars(signal).items()
           if name.startswith("SIG") and not name.startswith("SIG_") and name.isupper()}
#: The name of each number: of several (``SIGABRT``/``SIGIOT``) the first in order, as in ``Signals``.
NAMES = {number: name for name, number in sorted(NUMBERS.items(), reverse=True)}


def catchable() -> frozenset[int]:
    """Every signal dinit may catch (not SIGKILL/SIGSTOP, nor the fault signals)."""
    return frozenset(signal.valid_signals()) - _UNCATCHABLE - _FAULTS


def ignorable() -> frozenset[int]:
    """Every signal whose disposition dinit may set: ignoring even the fault signals means one sent
    with ``kill`` does not end dinit (§8); a real fault in dinit still kills it."""
    return frozenset(signal.valid_signals()) - _UNCATCHABLE


def transparent_forwarded() -> frozenset[int]:
    """Command mode without services passes on every catchable signal as it is, like tini (§17):
    all but SIGCHLD, which is dinit's own reaping signal."""
    return catchable() - {signal.SIGCHLD}
