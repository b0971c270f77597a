"""dinit-log: the bundled logger for ``S/log/run`` (§15), an svlogd-compatible log directory writer.

It is a separate program (console script ``dinit-log``, ``dinit log``, ``python -m dinit.logtool``) that
runs in its own process, never in PID 1. Everything is in :mod:`dinit.logtool.main`, which imports only
small standard-library modules so that it starts fast and stays small, and which can also be run as a
plain file (``python -I -S .../dinit/logtool/main.py DIR``) when even ``site`` is too slow to import.
"""
