"""Test driver: the real dinit (``dinit.cli.main``) whose set-up after the first spawn (hot reload,
then the control server) fails, as a bug there would: ``python failing_set_up.py [dinit arguments]``.
"""

from __future__ import annotations

from dinit import cli
from dinit.lifecycle import reconcile


def _broken(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("set-up after the start failed")


reconcile.Reconciler.__init__ = _broken  # type: ignore[assignment, method-assign]
cli.main()
