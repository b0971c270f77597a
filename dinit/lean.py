"""Lean run-time stand-ins for :class:`typing.NamedTuple`, :class:`enum.Enum`,
:func:`contextlib.suppress` and :func:`functools.cache` (of a function without arguments), the
standard helpers dinit's start path uses.

Importing ``typing``, ``enum``, ``contextlib`` or ``functools`` pulls in ``re``, ``collections`` and
``types``: together over 15 ms on this project's machine, most of the 20 ms dinit may take from its
start to its first service's ``run`` (bench/startup.py, ARCHITECTURE.md "Start-up"). Modules import
the real classes for type checkers and these at run time::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from ..lean import NamedTuple

so mypy checks every use against the standard library's definitions, and what runs is the subset
below with the same behaviour: a named tuple is a tuple subclass with the fields, defaults,
keyword/positional constructor, ``_fields``, ``_replace``, ``_asdict`` and repr of
``typing.NamedTuple``; an enum member is the one instance per name with ``name`` and ``value``,
the class iterates over its members in definition order and looks them up by value
(``Policy("adopt")``). Nothing else of the two is supported (tests/test_lean.py compares both with
the standard library's).
"""

from __future__ import annotations

import itertools
from _operator import itemgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType
    from typing import Any, ClassVar, Self, TypeVar

    T = TypeVar("T")


class _NamedTupleType(type):
    """Turns the annotated names of a class body into the fields of a tuple subclass."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _NamedTupleType:
        if bases == (tuple,):  # NamedTuple itself
            return super().__new__(mcs, name, bases, namespace)
        fields = tuple(namespace.get("__annotations__", {}))
        defaults = {field: namespace.pop(field) for field in fields if field in namespace}
        if any(field.startswith("_") for field in fields):
            raise TypeError(f"{name}: field names cannot start with an underscore")
        for before, field in itertools.pairwise(fields):
            if before in defaults and field not in defaults:
                raise TypeError(f"{name}: non-default field {field!r} follows a default field")
        namespace.update(__slots__=(), _fields=fields, _field_defaults=defaults)
        for index, field in enumerate(fields):
            namespace[field] = property(itemgetter(index), doc=f"Alias for field number {index}")
        return super().__new__(mcs, name, bases, namespace)


class NamedTuple(tuple, metaclass=_NamedTupleType):  # type: ignore[type-arg]
    """Base of a named tuple class (see the module's docstring)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _field_defaults: ClassVar[dict[str, Any]] = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments but {len(args)} were given")
        values = list(args)
        for field in fields[len(args):]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in cls._field_defaults:
                values.append(cls._field_defaults[field])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument: {field!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
        return tuple.__new__(cls, values)

    def _replace(self, **changes: Any) -> Self:
        unknown = changes.keys() - set(self._fields)
        if unknown:
            raise ValueError(f"got unexpected field names: {sorted(unknown)!r}")
        values = [changes.get(field, value) for field, value in zip(self._fields, self, strict=True)]
        return tuple.__new__(type(self), values)

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    def __repr__(self) -> str:
        members = ", ".join(f"{field}={value!r}" for field, value in zip(self._fields, self, strict=True))
        return f"{type(self).__name__}({members})"

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)


class _EnumType(type):
    """Turns the public constants of a class body into its members."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _EnumType:
        members = {key: value for key, value in namespace.items()
                   if not key.startswith("_") and not callable(value)
                   and not isinstance(value, (classmethod, staticmethod, property))}
        for key in members:
            del namespace[key]
        namespace.setdefault("__slots__", ())
        cls = super().__new__(mcs, name, bases, namespace)
        by_value: dict[Any, Any] = {}
        for key, value in members.items():
            member = by_value.get(value)
            if member is None:  # a second name for a value is an alias of the first, as in enum
                member = object.__new__(cls)  # type: ignore[arg-type]
                object.__setattr__(member, "_name", key)
                object.__setattr__(member, "_value", value)
                by_value[value] = member
            type.__setattr__(cls, key, member)
        type.__setattr__(cls, "_by_value", by_value)
        return cls

    def __iter__(cls) -> Iterator[Any]:
        return iter(cls._by_value.values())  # type: ignore[attr-defined]

    def __len__(cls) -> int:
        return len(cls._by_value)  # type: ignore[attr-defined]

    def __call__(cls, value: Any) -> Any:
        try:
            return cls._by_value[value]  # type: ignore[attr-defined]
        except (KeyError, TypeError):
            raise ValueError(f"{value!r} is not a valid {cls.__name__}") from None

    def __setattr__(cls, key: str, value: Any) -> None:
        raise AttributeError(f"cannot reassign {cls.__name__}.{key}")


class Enum(metaclass=_EnumType):
    """Base of an enumeration (see the module's docstring)."""

    __slots__ = ("_name", "_value")
    _name: str
    _value: Any

    @property
    def name(self) -> str:
        return self._name

    @property
    def value(self) -> Any:
        return self._value

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"cannot set {key!r} of {self!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name}: {self._value!r}>"

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self._name}"

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return type(self), (self._value,)


class suppress:
    """``with suppress(OSError): ...``: like :func:`contextlib.suppress`."""

    __slots__ = ("_exceptions",)

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self._exceptions = exceptions

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        return kind is not None and issubclass(kind, self._exceptions)


def once(make: Callable[[], T]) -> Callable[[], T]:
    """``make()`` the first time, the same value after: ``functools.cache`` for no arguments."""
    made: list[T] = []

    def get() -> T:
        if not made:
            made.append(make())
        return made[0]

    get.__doc__ = make.__doc__
    return get
