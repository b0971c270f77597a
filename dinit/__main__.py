"""``python -m dinit``: the same as the ``dinit`` console script."""

from .cli import main

main()
