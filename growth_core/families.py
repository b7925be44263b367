"""The families of architecture a spec may describe, and reading any of them back.

An MLP (feedforward or residual) is an :class:`~growth_core.spec.ArchitectureSpec`, whose JSON
has no ``family`` key; a convolutional net is a :class:`~growth_core.conv_spec.ConvSpec`, whose
JSON says ``"family": "cnn"``. Code that reads a spec it did not write (a checkpoint, a growth
event, a logged artifact) reads it with :func:`spec_from_json` and gets the right class.
"""

from __future__ import annotations

import json
from typing import Any

from .conv_spec import CNN_FAMILY, ConvSpec
from .spec import ArchitectureSpec, SpecError

#: Any architecture spec ``nets.build`` takes.
Spec = ArchitectureSpec | ConvSpec


def spec_from_dict(d: dict[str, Any]) -> Spec:
    """A :class:`ConvSpec` when ``d["family"]`` is ``"cnn"``, an :class:`ArchitectureSpec` when
    ``d`` has no ``family``."""
    if not isinstance(d, dict):
        raise SpecError(f"spec: expected a JSON object, got {type(d).__name__}")
    if "family" not in d:
        return ArchitectureSpec.from_dict(d)
    if d["family"] == CNN_FAMILY:
        return ConvSpec.from_dict(d)
    raise SpecError(
        f"family: unknown {d['family']!r}; expected {CNN_FAMILY!r}, or no family for an MLP"
    )


def spec_from_json(text: str) -> Spec:
    """:func:`spec_from_dict` of a JSON text."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"spec: not valid JSON ({e})") from e
    return spec_from_dict(d)
