"""The architecture as plain data.

An :class:`ArchitectureSpec` is everything needed to rebuild a network (with ``nets.build``):
it travels with every checkpoint and every growth event, serializes to JSON, and is validated
at construction so a bad value is reported by the name of its field.

Convolutional networks have a spec of their own, :class:`~growth_core.conv_spec.ConvSpec`, whose
JSON carries ``"family": "cnn"``; :func:`growth_core.families.spec_from_json` reads either kind
(an MLP spec's JSON has no ``family`` key, as it always had).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ._checks import require_int

#: Activations a spec may name.
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "identity")

#: Activations ``a`` with ``a(a(z)) = a(z)``: a virtual identity layer placed after them leaves
#: the feedforward network's function unchanged (Herberg et al. 2023, Sec. 3.1).
IDEMPOTENT_ACTIVATIONS = ("relu", "identity")


class SpecError(ValueError):
    """An architecture spec with a bad field; the message names the field."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """A multilayer perceptron, feedforward or residual.

    Feedforward: ``input_dim -> widths[0] -> ... -> widths[-1] -> output_dim``, an activation
    after every hidden layer.

    Residual: an input projection ``input_dim -> width``, then one block
    ``x + W2 act(W1 x + b1)`` per entry of ``widths`` (``widths[i]`` is the hidden width of block
    ``i``), then an output layer ``width -> output_dim``.
    """

    input_dim: int
    output_dim: int
    widths: tuple[int, ...]
    activation: str = "relu"
    residual: bool = False
    width: int | None = field(default=None)
    """Residual nets only: the width of the stream the blocks add to."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        _require_positive_int("input_dim", self.input_dim)
        _require_positive_int("output_dim", self.output_dim)
        for i, w in enumerate(self.widths):
            _require_positive_int(f"widths[{i}]", w)
        if self.activation not in ACTIVATIONS:
            raise SpecError(
                f"activation: unknown {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        if not isinstance(self.residual, bool):
            raise SpecError(f"residual: expected true or false, got {self.residual!r}")
        if self.residual:
            if self.width is None:
                raise SpecError("width: a residual spec needs the stream width")
            _require_positive_int("width", self.width)
        elif self.width is not None:
            raise SpecError("width: only residual specs have a stream width; leave it out")

    # -- derived -----------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Hidden layers (feedforward) or blocks (residual)."""
        return len(self.widths)

    @property
    def hidden_widths(self) -> list[int]:
        """Widths of the hidden representations ``forward_with_hidden`` returns: every hidden
        layer (feedforward), or the stream after the input layer and after every block."""
        if self.residual:
            return [self.width] * (self.depth + 1)
        return list(self.widths)

    @property
    def supports_identity_insertion(self) -> bool:
        """Whether a layer can be inserted without changing the function."""
        return self.residual or self.activation in IDEMPOTENT_ACTIVATIONS

    def require_identity_insertion(self) -> None:
        if not self.supports_identity_insertion:
            raise SpecError(
                f"activation: {self.activation!r} is not idempotent, so a feedforward net admits "
                f"no identity layer insertion; use one of {', '.join(IDEMPOTENT_ACTIVATIONS)} "
                "or a residual net"
            )

    def describe(self) -> str:
        """A compact name for logs and tables: ``2-5-5-2 relu`` or ``res 2-[3]x2-2 tanh``."""
        if self.residual:
            stream = f"[{self.width}]x{self.depth}"
            return f"res {self.input_dim}-{stream}-{self.output_dim} {self.activation}"
        dims = (self.input_dim, *self.widths, self.output_dim)
        return "-".join(map(str, dims)) + f" {self.activation}"

    def with_widths(self, widths: tuple[int, ...] | list[int]) -> ArchitectureSpec:
        return replace(self, widths=tuple(widths))

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        if not self.residual:
            d.pop("width")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchitectureSpec:
        if not isinstance(d, dict):
            raise SpecError(f"spec: expected a JSON object, got {type(d).__name__}")
        if "family" in d:
            raise SpecError(
                f"family: {d['family']!r} is not an MLP spec (which has no family); "
                "read it with growth_core.families.spec_from_dict"
            )
        known = {"input_dim", "output_dim", "widths", "activation", "residual", "width"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"{unknown[0]}: unknown field; expected {', '.join(sorted(known))}")
        missing = [k for k in ("input_dim", "output_dim", "widths") if k not in d]
        if missing:
            raise SpecError(f"{missing[0]}: missing")
        if not isinstance(d["widths"], list | tuple):
            raise SpecError(f"widths: expected a list of integers, got {d['widths']!r}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ArchitectureSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec: not valid JSON ({e})") from e
        return cls.from_dict(d)


def _require_positive_int(name: str, value: Any) -> None:
    require_int(name, value, 1, error=SpecError)
