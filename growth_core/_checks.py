"""The checks every boundary of growth_core makes: each failure names the field and what was
expected, and raises the error type of the layer that checks (``error``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NoReturn


def fail(name: str, expected: str, value: Any, *, error: type[Exception] = ValueError) -> NoReturn:
    raise error(f"{name}: expected {expected}, got {value!r}")


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def require_int(
    name: str,
    value: Any,
    minimum: int,
    *,
    optional: bool = False,
    error: type[Exception] = ValueError,
) -> Any:
    """``value`` if it is an integer ``>= minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return value
    if not is_int(value) or value < minimum:
        fail(
            name, f"an integer >= {minimum}" + (" or null" if optional else ""), value, error=error
        )
    return value


def require_number(
    name: str,
    value: Any,
    minimum: float,
    *,
    strict: bool = False,
    optional: bool = False,
    error: type[Exception] = ValueError,
) -> Any:
    """``value`` if it is a finite number ``>= minimum`` (``> minimum`` when ``strict``)."""
    if optional and value is None:
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        sign = ">" if strict else ">="
        fail(name, f"a finite number {sign} {minimum}", value, error=error)
    return value


def require_choice(
    name: str, value: Any, choices: Sequence[Any], *, error: type[Exception] = ValueError
) -> Any:
    if value not in choices:
        fail(name, f"one of {', '.join(map(str, choices))}", value, error=error)
    return value
