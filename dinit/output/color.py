"""Colours of prefix-form labels (§15, dock ``--stdout-prefix :color``).

A service's colour is chosen from its name alone, so it is the same on every run, every stage and
every machine, and a reader learns it. The escape codes are part of a stream's precomputed label
bytes: colouring costs nothing per line.
"""

from __future__ import annotations

import os

from ..config import Color

#: Foreground colours that read on dark and light terminals alike: no black, white or grey.
PALETTE = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)
RESET = b"\x1b[0m"


def colored(mode: Color, fd: int) -> bool:
    """Whether labels written to ``fd`` are coloured: ``auto`` only when it is a terminal."""
    if mode is Color.AUTO:
        return os.isatty(fd)
    return mode is Color.ALWAYS


def code(name: bytes) -> bytes:
    """The escape sequence that starts ``name``'s colour."""
    import binascii  # only with colours on: deciding whether they are costs start-up nothing

    return b"\x1b[%dm" % PALETTE[binascii.crc32(name) % len(PALETTE)]


def paint(name: bytes, text: bytes) -> bytes:
    """``text`` (a ``<name>/<stage>`` label) in the colour of service ``name``."""
    return code(name) + text + RESET
