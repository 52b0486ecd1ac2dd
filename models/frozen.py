"""Frozen, slotted dataclasses built as fast as plain ones.

``@dataclass(frozen=True, slots=True)`` makes ``__init__`` set each field with
``object.__setattr__`` (frozen classes refuse ``self.x = x``), about 120 ns a
field: an eight-field event cost 1.1 us to build against 0.2 us unfrozen, and
the core builds an event, a reason or two and now and then a decision per
record. :func:`quick_init` gives the class an ``__init__`` that sets each slot
through its descriptor instead: the same signature and defaults, the same
frozen instances, about half the cost.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """``cls`` (a frozen, slotted dataclass) with an ``__init__`` that writes its slots directly.

    A class with a default factory, ``__post_init__``, a keyword-only field or a field left out
    of ``__init__`` keeps the one dataclasses wrote.

    >>> @quick_init
    ... @dataclasses.dataclass(frozen=True, slots=True)
    ... class P:
    ...     x: int
    ...     y: str = "b"
    >>> P(1), P(x=2, y="c")
    (P(x=1, y='b'), P(x=2, y='c'))
    >>> P(1).x = 3
    Traceback (most recent call last):
    dataclasses.FrozenInstanceError: cannot assign to field 'x'
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if (hasattr(cls, "__post_init__") or "__slots__" not in cls.__dict__
            or any(not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING for f in fields)):
        return cls
    env: dict[str, Any] = {}
    params, body = [], []
    for i, f in enumerate(fields):
        env[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        body.append(f"    _set{i}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"]), env)  # noqa: S102 - field names only
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)
    return cls
