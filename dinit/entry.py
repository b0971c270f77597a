"""The ``dinit`` command: a first argument that is a subcommand word selects client mode (§12)
before anything of the init is imported, so ``dinit status`` answers in a few tens of ms;
``dinit log`` is the bundled logger (§15); everything else is the init (``cli``).
``dinit -- status`` runs a program named ``status``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn


#: Subcommand word -> module whose ``main(args)`` runs it (each imports only what it needs).
CLIENTS = {word: "dinit.control.commands" for word in (
    "status", "list", "start", "stop", "restart", "signal", "submit", "reload", "shutdown", "pid",
    "version", "check", "events")}


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``dinit`` console script and ``python -m dinit``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["log"]:  # ``dinit log ...`` is dinit-log (§15), a program of its own
        from .logtool.main import main as log_main

        log_main(args[1:])
    if args and args[0] in CLIENTS:
        import importlib

        importlib.import_module(CLIENTS[args[0]]).main(args)
    from .cli import main as init

    init(args)
