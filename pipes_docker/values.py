"""``@frozen``: ``@dataclass(frozen=True)`` at a quarter of its cost to a fresh process.

Every seam in pipes-docker returns a small frozen value (STYLE: value objects at boundaries), and
a Dagster step is a fresh process that imports them all before its run. Python 3.11 compiles
each method a dataclass generates when the class is made, six for a frozen one, about 0.45 ms a
class: the two dozen a run imports cost ~11 ms, half of importing the client. ``@frozen`` has
only ``__init__`` generated; equality, hashing, ``repr`` and immutability come from shared
functions that read the class's fields, and behave as a frozen dataclass's do:

- equal (and hashed) by the fields that take part in comparison, only to the same class;
- shown as ``Name(field=value, ...)`` with the fields that take part in ``repr``;
- a field is set once, by ``__init__``, and never again; no other attribute is set, nothing is
  deleted (:class:`dataclasses.FrozenInstanceError` either way).

The class is a dataclass (``dataclasses.fields``, ``replace`` and ``field()`` work), and type
checkers see a frozen one. A method the class defines itself (its own ``__repr__``) is kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError
from typing import Any, TypeVar, dataclass_transform

__all__ = ["frozen"]

T = TypeVar("T", bound=type)


def _compared(obj: Any) -> tuple[Any, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj) if f.compare)


def _eq(self: Any, other: object) -> object:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self: Any) -> int:
    return hash(_compared(self))


def _repr(self: Any) -> str:
    fields = dataclasses.fields(self)
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields if f.repr)
    return f"{type(self).__qualname__}({shown})"


def _set_once(self: Any, name: str, value: object) -> None:
    if name in self.__dict__ or name not in type(self).__dataclass_fields__:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _no_delete(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


_SHARED = {
    "__eq__": _eq,
    "__hash__": _hash,
    "__repr__": _repr,
    "__setattr__": _set_once,
    "__delattr__": _no_delete,
}


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: T) -> T:
    """Make ``cls`` a frozen dataclass (see the module's docstring)."""
    dataclasses.dataclass(cls, repr=False, eq=False)  # makes cls one, in place
    for name, method in _SHARED.items():
        if name not in cls.__dict__:
            setattr(cls, name, method)
    return cls
