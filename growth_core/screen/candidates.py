"""Screening many candidate initializations into one pyarrow Table.

A :class:`Candidate` is an initializer at a depth and width (of an MLP, or of a conv net it is
given the stages of); :func:`screen_candidates` screens
each (:func:`~.cascade.screen`) and returns one row per candidate. A row is also available
alone (:func:`candidate_row`), so a distributed caller can screen one candidate per task and
join the rows with :func:`rows_table`. Extra per-candidate columns (zero-cost proxies, say) are
callables ``fn(candidate, data) -> number`` passed by name.

Example::

    candidates = [Candidate(Initializer("gaussian", s, 0.05), depth=30) for s in (0.5, 1.0, 2.0)]
    table = screen_candidates(candidates, digits(), ScreenBudget(epochs=10))
    write_table(table, "screen.parquet")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..conv_spec import ConvSpec
from ..data import Dataset
from ..init import Initializer
from ..io import atomic_write
from ..nets import Net, build
from ..spec import ACTIVATIONS, ArchitectureSpec
from .cascade import ScreenBudget, ScreenError, check_int, screen

#: The protocol's activation (Thurn et al. screen tanh networks).
ACTIVATION = "tanh"

#: The columns every screen table has, in order; extra columns follow.
SCREEN_SCHEMA = pa.schema(
    [
        # the candidate
        ("kind", pa.string()), ("sigma_w2", pa.float64()), ("sigma_b2", pa.float64()),
        ("depth", pa.int64()), ("width", pa.int64()), ("residual", pa.bool_()),
        ("activation", pa.string()), ("seed", pa.int64()), ("family", pa.string()),
        # the cascade's curve and its readouts
        ("kl", pa.list_(pa.float64())), ("curve", pa.list_(pa.float64())),
        ("reference_depth", pa.int64()), ("crossing_depth", pa.float64()),
        ("decay_depth", pa.float64()), ("score", pa.float64()),
        # what it cost
        ("flops", pa.int64()), ("seconds", pa.float64()), ("steps", pa.int64()),
    ]
)  # fmt: skip

#: ``fn(candidate, data)``: one extra number per candidate.
ExtraColumn = Callable[["Candidate", Dataset], float | int]


@dataclass(frozen=True)
class Candidate:
    """An initializer at a depth and width: a tanh MLP (or residual MLP) of ``depth`` hidden
    layers (blocks) of ``width`` units, ``None`` meaning the input's width, drawn with ``seed``.

    With ``conv``, a conv net instead: ``conv``'s stages deepened to ``depth`` convolutions (the
    last stage repeats its last convolution, a residual one its last block), with the
    candidate's activation; ``width`` and ``residual`` then come from ``conv``.
    """

    initializer: Initializer
    depth: int
    width: int | None = None
    residual: bool = False
    seed: int = 0
    activation: str = ACTIVATION
    """The screened network's activation: the paper's tanh, or the one the search trains."""
    conv: ConvSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.initializer, Initializer):
            raise ScreenError(
                f"candidate.initializer: expected an Initializer, "
                f"got {type(self.initializer).__name__}"
            )
        check_int("candidate.depth", self.depth, 2)
        if self.width is not None:
            check_int("candidate.width", self.width, 1)
        if not isinstance(self.residual, bool):
            raise ScreenError(f"candidate.residual: expected true or false, got {self.residual!r}")
        check_int("candidate.seed", self.seed, 0)
        if self.activation not in ACTIVATIONS:
            raise ScreenError(
                f"candidate.activation: expected one of {', '.join(ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )
        if self.conv is not None:
            self._check_conv()

    def _check_conv(self) -> None:
        if not isinstance(self.conv, ConvSpec):
            raise ScreenError(
                f"candidate.conv: expected a ConvSpec, got {type(self.conv).__name__}"
            )
        if self.initializer.needs_data:
            raise ScreenError(
                f"candidate.initializer: {self.initializer.kind!r} draws feedforward networks "
                "only, not conv nets"
            )
        if self.width is not None or self.residual:
            raise ScreenError(
                "candidate.width: a conv candidate's channels and form come from candidate.conv"
            )
        if self.depth < self.conv.depth:
            raise ScreenError(
                f"candidate.depth: {self.depth} convolutions, fewer than the "
                f"{self.conv.depth} of candidate.conv"
            )
        if self.conv.residual and self.depth % 2:
            raise ScreenError(
                f"candidate.depth: a residual conv net grows by blocks of two convolutions; "
                f"got {self.depth}"
            )

    @property
    def family(self) -> str:
        """``"cnn"`` for a conv candidate, else ``"mlp"`` (residual or not)."""
        return "mlp" if self.conv is None else self.conv.family

    def spec(self, input_dim: int, output_dim: int) -> ArchitectureSpec | ConvSpec:
        """The architecture this candidate screens on data of ``input_dim`` features."""
        if self.conv is not None:
            return self._conv_spec(input_dim, output_dim)
        width = self.width or input_dim
        widths = (width,) * self.depth
        if self.residual:
            return ArchitectureSpec(input_dim, output_dim, widths, self.activation, True, width)
        return ArchitectureSpec(input_dim, output_dim, widths, self.activation)

    def _conv_spec(self, input_dim: int, output_dim: int) -> ConvSpec:
        conv = self.conv
        if conv.input_dim != input_dim:
            raise ScreenError(
                f"candidate.conv.input_shape: {list(conv.input_shape)} is {conv.input_dim} "
                f"features, but the data has {input_dim}"
            )
        last = conv.stages[-1]
        repeat = last[-2:] if conv.residual else last[-1:]
        extra = (self.depth - conv.depth) // len(repeat)
        stages = (*conv.stages[:-1], last + repeat * extra)
        return replace(conv, output_dim=output_dim, stages=stages, activation=self.activation)

    def network(self, data: Dataset) -> Net:
        """The network the screen sees: ``build(spec)`` drawn by the initializer with ``seed``
        (a data-dependent initializer reads ``data``'s first training inputs, as the screen
        does)."""
        net = build(self.spec(data.input_dim, data.num_classes))
        return self.initializer.apply_on(net, seed=self.seed, inputs=data.x_train)


def candidate_row(
    candidate: Candidate,
    data: Dataset,
    budget: ScreenBudget | None = None,
    *,
    extra_columns: Mapping[str, ExtraColumn] | None = None,
) -> dict[str, Any]:
    """Screen one candidate; its row of the screen table as a dict."""
    if not isinstance(data, Dataset):
        raise ScreenError(f"data: expected a Dataset, got {type(data).__name__}")
    extra_columns = _check_extra_columns(extra_columns)
    spec = candidate.spec(data.input_dim, data.num_classes)
    result = screen(spec, candidate.initializer, data, budget, seed=candidate.seed)
    init = candidate.initializer
    if isinstance(spec, ConvSpec):
        width = max(spec.widths)
    else:
        width = spec.width if spec.residual else spec.widths[0]
    row: dict[str, Any] = {
        "kind": init.kind,
        "sigma_w2": float(init.sigma_w2),
        "sigma_b2": float(init.sigma_b2),
        "depth": candidate.depth,
        "width": width,
        "residual": spec.residual,
        "activation": candidate.activation,
        "seed": candidate.seed,
        "family": candidate.family,
        "kl": list(result.kl),
        "curve": list(result.curve),
        "reference_depth": result.reference_depth,
        "crossing_depth": result.crossing_depth,
        "decay_depth": result.decay_depth,
        "score": result.score,
        "flops": result.flops,
        "seconds": result.seconds,
        "steps": result.steps,
    }
    for name, column in extra_columns.items():
        row[name] = column(candidate, data)
    return row


def rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows of :func:`candidate_row` as a Table: :data:`SCREEN_SCHEMA`, then the extra columns
    (types inferred), which every row must share."""
    if not rows:
        raise ScreenError("rows: expected at least one row")
    fixed = SCREEN_SCHEMA.names
    extras = [name for name in rows[0] if name not in fixed]
    for i, row in enumerate(rows):
        missing = [name for name in (*fixed, *extras) if name not in row]
        unknown = [name for name in row if name not in fixed and name not in extras]
        if missing or unknown:
            what = f"missing column {missing[0]!r}" if missing else f"extra column {unknown[0]!r}"
            raise ScreenError(f"rows[{i}]: {what}, unlike rows[0]")
    arrays = [pa.array([row[f.name] for row in rows], type=f.type) for f in SCREEN_SCHEMA]
    arrays += [pa.array([row[name] for row in rows]) for name in extras]
    return pa.Table.from_arrays(arrays, names=[*fixed, *extras])


def screen_candidates(
    candidates: Sequence[Candidate],
    data: Dataset,
    budget: ScreenBudget | None = None,
    *,
    extra_columns: Mapping[str, ExtraColumn] | None = None,
) -> pa.Table:
    """Screen every candidate in turn; one row each (see :data:`SCREEN_SCHEMA`)."""
    if isinstance(candidates, Candidate) or not isinstance(candidates, Sequence):
        raise ScreenError(
            f"candidates: expected a list of Candidate, got {type(candidates).__name__}"
        )
    if not candidates:
        raise ScreenError("candidates: expected at least one candidate")
    for i, candidate in enumerate(candidates):
        if not isinstance(candidate, Candidate):
            raise ScreenError(
                f"candidates[{i}]: expected a Candidate, got {type(candidate).__name__}"
            )
    rows = [candidate_row(c, data, budget, extra_columns=extra_columns) for c in candidates]
    return rows_table(rows)


def write_table(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` to Parquet at ``path`` atomically (temporary file, then rename)."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _check_extra_columns(
    extra_columns: Mapping[str, ExtraColumn] | None,
) -> Mapping[str, ExtraColumn]:
    if extra_columns is None:
        return {}
    if not isinstance(extra_columns, Mapping):
        raise ScreenError(
            f"extra_columns: expected a mapping of name to callable, "
            f"got {type(extra_columns).__name__}"
        )
    for name, column in extra_columns.items():
        if not isinstance(name, str) or name in SCREEN_SCHEMA.names:
            raise ScreenError(
                f"extra_columns: {name!r} is not a new column name "
                f"(the screen's own are {', '.join(SCREEN_SCHEMA.names)})"
            )
        if not callable(column):
            raise ScreenError(f"extra_columns[{name!r}]: expected a callable, got {column!r}")
    return extra_columns
