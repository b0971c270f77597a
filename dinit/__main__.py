"""``python -m dinit``: the same as the ``dinit`` console script."""

from .entry import main

main()
