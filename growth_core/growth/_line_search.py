"""Searching the amplitude of a previewed width change, whatever grows (neurons or channels).

A proposal previews the grown network at amplitude ``gamma`` without touching the network it
starts from (GroMo's ``extended_forward`` / ``apply_change`` split); the search below tries a
grid of amplitudes on the loss and keeps the best, at a counted cost. Spread over processes
(a :class:`~._reduce.Reducer`), each previews its share of the samples and the losses are the
sums of all of them over all their counts, so every process keeps the same amplitude.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..events import LossFn
from ._reduce import LOCAL, Reducer
from ._statistics import LOSS_REDUCTIONS

#: Amplitudes the line search tries (and 0, no change): 2^-12 ... 2^2. Ours; at ``gamma = 1``
#: the change moves the pre-activations by the least-squares fit of ``V_goal``, a full step.
LINE_SEARCH_GAMMAS = tuple(2.0**k for k in range(-12, 3))

#: While the largest amplitude tried is the best, the search doubles it, up to this. Ours.
LINE_SEARCH_MAX_GAMMA = 2.0**10


@dataclass(frozen=True)
class LineSearch:
    gamma: float
    """The amplitude with the lowest loss; 0 when no amplitude lowers it."""
    losses: dict[float, float]
    """Mean per-sample loss at every amplitude tried (0 included)."""
    flops: int
    """This process's: its previews of its share of the samples."""


class AmplitudeSearch(ABC):
    """A change previewed at any amplitude ``gamma``; ``gamma = 0`` is the network as it is."""

    @abstractmethod
    def forward(self, x: Tensor, gamma: float) -> Tensor:
        """The grown network's output at amplitude ``gamma``, without building it."""

    @abstractmethod
    def forward_flops(self, n: int) -> int:
        """FLOPs of one previewed forward pass over ``n`` samples."""

    def loss(
        self,
        batches: Iterable[tuple[Tensor, Tensor]],
        gamma: float,
        *,
        loss_fn: LossFn = F.cross_entropy,
        reduction: str = "mean",
        reducer: Reducer = LOCAL,
    ) -> tuple[float, int]:
        """Mean per-sample loss at amplitude ``gamma`` over the samples of every process of
        ``reducer``, and the samples this process saw."""
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"reduction: unknown {reduction!r}; expected one of {LOSS_REDUCTIONS}")
        total, n = 0.0, 0
        for x, y in batches:
            loss = float(loss_fn(self.forward(x, gamma), y))
            total += loss * len(x) if reduction == "mean" else loss
            n += len(x)
        total, n_all = reducer.sum_numbers([total, n])
        if n_all == 0:
            raise ValueError("batches: no data for the line search")
        return total / n_all, n

    def line_search(
        self,
        batches: Sequence[tuple[Tensor, Tensor]],
        *,
        gammas: Sequence[float] = LINE_SEARCH_GAMMAS,
        max_gamma: float = LINE_SEARCH_MAX_GAMMA,
        loss_fn: LossFn = F.cross_entropy,
        reduction: str = "mean",
        reducer: Reducer = LOCAL,
    ) -> LineSearch:
        """Try every amplitude in ``gammas`` (and 0) on ``batches``, then keep doubling the largest
        while it is the best and at most ``max_gamma``; nothing is committed. ``reducer``: the
        processes the samples are spread over (``batches``: this one's share)."""
        if not gammas or any(not (math.isfinite(g) and g > 0) for g in gammas):
            raise ValueError(f"gammas: expected positive finite amplitudes, got {list(gammas)}")
        losses, n = {}, 0

        def evaluate(g: float) -> None:
            nonlocal n
            losses[g], n = self.loss(
                batches, g, loss_fn=loss_fn, reduction=reduction, reducer=reducer
            )

        for g in (0.0, *sorted(gammas)):
            evaluate(g)
        while (top := max(losses)) == self._best(losses) and 2 * top <= max_gamma:
            evaluate(2 * top)
        best = self._best(losses)
        return LineSearch(best, losses, len(losses) * self.forward_flops(n))

    @staticmethod
    def _best(losses: dict[float, float]) -> float:
        """The amplitude with the lowest loss, the smallest on ties."""
        return min(losses, key=lambda g: (losses[g], g))
