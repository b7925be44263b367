"""Convolutional networks as plain data.

A :class:`ConvSpec` is to an image classifier what :class:`~growth_core.spec.ArchitectureSpec`
is to a multilayer perceptron: everything ``nets.build`` needs, validated at construction (a bad
value is reported by the name of its field) and serialized to JSON with ``"family": "cnn"``, so
that :func:`~growth_core.families.spec_from_dict` can tell it from an MLP spec.

Example::

    spec = ConvSpec((1, 8, 8), 10, stages=((8, 8), (16, 16)), batch_norm=True)
    spec.describe()  # 'cnn 1x8x8-8-8-pool-16-16-10 relu bn'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from ._checks import require_int
from .spec import ACTIVATIONS, SpecError

#: The ``family`` key of a convolutional spec's JSON (an MLP spec has none).
CNN_FAMILY = "cnn"

#: Between two stages: a 2x2 max pool of stride 2, or a stride of 2 in the next stage's first
#: convolution (and in its 1x1 shortcut, for residual nets).
DOWNSAMPLING = ("pool", "stride")

#: Every convolution of a stage is 3x3 with a padding of 1 ("same" at stride 1).
KERNEL = 3


@dataclass(frozen=True)
class LayerShape:
    """One convolution of ``build(spec)``: ``c_in -> c_out`` channels, a ``kernel x kernel``
    window with padding ``kernel // 2``, its ``stride``, and the ``height x width`` map it puts
    out; ``pool_before`` says a 2x2 max pool comes right before it."""

    c_in: int
    c_out: int
    stride: int
    height: int
    width: int
    pool_before: bool = False
    kernel: int = KERNEL


@dataclass(frozen=True)
class ConvSpec:
    """A convolutional image classifier, plain or residual.

    The input is ``input_shape = (channels, height, width)``. Stage ``s`` is a run of 3x3
    convolutions (padding 1) at one resolution; between two stages the map is halved, by a 2x2
    max pool (``downsample="pool"``) or by a stride of 2 in the next stage's first convolution
    (``downsample="stride"``). Every convolution is followed by batch norm when ``batch_norm``
    (and then has no bias: the norm's shift makes it redundant). The last map is averaged over
    its positions (global average pooling) and a linear head maps its channels to
    ``output_dim`` logits.

    Plain (``residual=False``): ``stages[s][j]`` is the channel count of convolution ``j`` of
    stage ``s``, each followed by the activation.

    Residual (``residual=True``): a stage is a run of basic blocks, and its tuple holds their
    channels in pairs: ``(inner_1, out_1, inner_2, out_2, ...)``. Block ``k`` maps its input
    ``x`` (``c`` channels) to ``shortcut(x) + conv2(act(conv1(x)))``, where ``conv1`` is
    ``c -> inner_k``, ``conv2`` is ``inner_k -> out_k`` and ``shortcut`` is the identity when
    ``c == out_k`` and the block keeps the resolution, else a 1x1 convolution ``c -> out_k``
    (stride 2 where ``conv1`` has it; with batch norm when ``batch_norm``). As in the residual
    MLP, nothing is applied after the sum, so a block whose ``conv2`` is zero is the identity.
    A stride-downsampling block strides in ``conv1`` and in its shortcut; a pool comes before
    the block, on both paths.

    Either way, convolution ``i`` of the network is entry ``i`` of :attr:`widths`, the stages
    read in order; :meth:`layer_shapes` gives each one's geometry.
    """

    family: ClassVar[str] = CNN_FAMILY

    input_shape: tuple[int, int, int]
    output_dim: int
    stages: tuple[tuple[int, ...], ...]
    downsample: str = "pool"
    activation: str = "relu"
    batch_norm: bool = False
    residual: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", _input_shape(self.input_shape))
        _require_positive_int("output_dim", self.output_dim)
        object.__setattr__(self, "stages", _stages(self.stages))
        if self.downsample not in DOWNSAMPLING:
            raise SpecError(
                f"downsample: unknown {self.downsample!r}; expected one of "
                f"{', '.join(DOWNSAMPLING)}"
            )
        if self.activation not in ACTIVATIONS:
            raise SpecError(
                f"activation: unknown {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}"
            )
        for name in ("batch_norm", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if self.residual:
            for s, stage in enumerate(self.stages):
                if len(stage) % 2:
                    raise SpecError(
                        f"stages[{s}]: a residual stage holds (inner, out) channel pairs, one "
                        f"pair per basic block; got {len(stage)} entries"
                    )
        self.layer_shapes()  # a pool that would shrink a map below 1x1 fails here

    # -- derived -----------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        """Features of one flattened input, ``channels * height * width``."""
        return math.prod(self.input_shape)

    @property
    def widths(self) -> tuple[int, ...]:
        """The channel count of every 3x3 convolution, in forward order."""
        return tuple(c for stage in self.stages for c in stage)

    @property
    def depth(self) -> int:
        """The number of 3x3 convolutions (twice the number of blocks, for residual nets)."""
        return len(self.widths)

    @property
    def out_channels(self) -> int:
        """Channels of the last map: the head's fan-in after global average pooling."""
        return self.stages[-1][-1]

    def layer_shapes(self) -> tuple[LayerShape, ...]:
        """The geometry of every 3x3 convolution, in forward order (one per :attr:`widths`)."""
        c, h, w = self.input_shape
        shapes = []
        for s, stage in enumerate(self.stages):
            pool = s > 0 and self.downsample == "pool"
            if pool:
                if h < 2 or w < 2:
                    raise SpecError(
                        f"stages[{s}]: the 2x2 max pool before it meets a {h}x{w} map; use fewer "
                        "stages or downsample='stride'"
                    )
                h, w = h // 2, w // 2
            for j, c_out in enumerate(stage):
                stride = 2 if s > 0 and j == 0 and self.downsample == "stride" else 1
                h, w = _strided(h, stride), _strided(w, stride)
                shapes.append(LayerShape(c, c_out, stride, h, w, pool_before=pool and j == 0))
                c = c_out
        return tuple(shapes)

    def shortcut_shapes(self) -> tuple[LayerShape | None, ...]:
        """Residual nets: per block, its 1x1 shortcut convolution, or ``None`` for the identity."""
        if not self.residual:
            raise SpecError("residual: only residual specs have shortcuts")
        layers = self.layer_shapes()
        shortcuts: list[LayerShape | None] = []
        for conv1, conv2 in zip(layers[::2], layers[1::2]):
            if conv1.c_in == conv2.c_out and conv1.stride == 1:
                shortcuts.append(None)
            else:
                shortcuts.append(
                    LayerShape(
                        conv1.c_in,
                        conv2.c_out,
                        conv1.stride,
                        conv2.height,
                        conv2.width,
                        pool_before=conv1.pool_before,
                        kernel=1,
                    )
                )
        return tuple(shortcuts)

    def describe(self) -> str:
        """A compact name for logs and tables: ``cnn 1x8x8-8-8-pool-16-10 relu`` or, residual,
        ``res cnn 1x8x8-(8,8)-stride-(16,16)-10 relu bn`` (a block as its (inner, out) pair)."""
        parts = ["x".join(map(str, self.input_shape))]
        for s, stage in enumerate(self.stages):
            if s > 0:
                parts.append(self.downsample)
            if self.residual:
                parts += [f"({a},{b})" for a, b in zip(stage[::2], stage[1::2])]
            else:
                parts += map(str, stage)
        parts.append(str(self.output_dim))
        prefix = "res cnn" if self.residual else "cnn"
        suffix = " bn" if self.batch_norm else ""
        return f"{prefix} {'-'.join(parts)} {self.activation}{suffix}"

    def with_stages(self, stages: tuple[tuple[int, ...], ...] | list[list[int]]) -> ConvSpec:
        return replace(self, stages=stages)

    def with_widths(self, widths: tuple[int, ...] | list[int]) -> ConvSpec:
        """The same stages with every convolution's channels replaced, in :attr:`widths` order."""
        widths = list(widths)
        if len(widths) != self.depth:
            raise SpecError(f"widths: expected {self.depth} channel counts, got {len(widths)}")
        stages, start = [], 0
        for stage in self.stages:
            stages.append(tuple(widths[start : start + len(stage)]))
            start += len(stage)
        return self.with_stages(tuple(stages))

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "family": CNN_FAMILY,
            "input_shape": list(self.input_shape),
            "output_dim": self.output_dim,
            "stages": [list(stage) for stage in self.stages],
            "downsample": self.downsample,
            "activation": self.activation,
            "batch_norm": self.batch_norm,
            "residual": self.residual,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvSpec:
        if not isinstance(d, dict):
            raise SpecError(f"spec: expected a JSON object, got {type(d).__name__}")
        known = {"family", *(f.name for f in fields(cls))}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"{unknown[0]}: unknown field; expected {', '.join(sorted(known))}")
        if d.get("family", CNN_FAMILY) != CNN_FAMILY:
            raise SpecError(f"family: expected {CNN_FAMILY!r}, got {d['family']!r}")
        missing = [k for k in ("input_shape", "output_dim", "stages") if k not in d]
        if missing:
            raise SpecError(f"{missing[0]}: missing")
        return cls(**{k: v for k, v in d.items() if k != "family"})

    @classmethod
    def from_json(cls, text: str) -> ConvSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec: not valid JSON ({e})") from e
        return cls.from_dict(d)


def _require_positive_int(name: str, value: Any) -> None:
    require_int(name, value, 1, error=SpecError)


def _strided(size: int, stride: int) -> int:
    """The output size of a convolution with padding ``kernel // 2`` (3x3 or 1x1)."""
    return (size - 1) // stride + 1


def _input_shape(value: Any) -> tuple[int, int, int]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise SpecError(f"input_shape: expected (channels, height, width), got {value!r}")
    for i, n in enumerate(value):
        _require_positive_int(f"input_shape[{i}]", n)
    return tuple(value)  # type: ignore[return-value]


def _stages(value: Any) -> tuple[tuple[int, ...], ...]:
    if not isinstance(value, list | tuple) or not value:
        raise SpecError(
            f"stages: expected a non-empty list of stages, each a list of channel counts; "
            f"got {value!r}"
        )
    stages = []
    for s, stage in enumerate(value):
        if not isinstance(stage, list | tuple) or not stage:
            raise SpecError(
                f"stages[{s}]: expected a non-empty list of channel counts, got {stage!r}"
            )
        for j, channels in enumerate(stage):
            _require_positive_int(f"stages[{s}][{j}]", channels)
        stages.append(tuple(stage))
    return tuple(stages)
