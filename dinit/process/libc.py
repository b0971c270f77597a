"""glibc's functions, called through ``_ctypes``: ``libc.posix_spawn(...)`` is what
``ctypes.CDLL("libc.so.6", use_errno=True).posix_spawn(...)`` would be.

The few C types dinit passes are made from ``_ctypes`` as ``ctypes`` makes them: importing
``ctypes`` itself (with ``struct`` and ``types``) costs about 2 ms of every start of dinit, which
needs it before its first program starts (ARCHITECTURE.md, start-up).
"""

from __future__ import annotations

from _ctypes import FUNCFLAG_CDECL, FUNCFLAG_USE_ERRNO, RTLD_LOCAL, CFuncPtr, byref, dlopen, get_errno

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import Array, c_char, c_char_p, c_int, c_short
else:
    from _ctypes import Array, _SimpleCData

    class c_int(_SimpleCData):
        _type_ = "i"

    class c_short(_SimpleCData):
        _type_ = "h"

    class c_char(_SimpleCData):
        _type_ = "c"

    class c_char_p(_SimpleCData):
        _type_ = "z"

__all__ = ["Array", "byref", "c_char", "c_char_p", "c_int", "c_short", "get_errno", "libc"]


class _Function(CFuncPtr):
    """A function of libc returning ``int``, errno kept for :func:`get_errno`."""

    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _Library:
    """A shared library's functions, looked up when first asked for."""

    def __init__(self, name: str) -> None:
        self._handle = dlopen(name, RTLD_LOCAL)

    def __getattr__(self, name: str) -> _Function:
        function = _Function((name, self))  # type: ignore[arg-type]  # any object with a _handle
        setattr(self, name, function)
        return function


libc = _Library("libc.so.6")
