"""``python -m dinit.logtool``: the same as the ``dinit-log`` console script."""

from .main import main

main()
