"""Width growth by expressivity bottlenecks (TINY), with GradMax and random neurons as controls.

Verbockhaven, Rudkiewicz, Chevallier, Charpiat, "Growing Tiny Networks: Spotting Expressivity
Bottlenecks and Fixing Them Optimally", TMLR 2024, arXiv 2405.19816 (the authors' library is
GroMo). Evci, van Merriënboer, Unterthiner, Vladymyrov, Pedregosa, "GradMax: Growing Neural
Networks using Gradient Information", ICLR 2022.

One growth step, every part of it a public name:

1. statistics: :class:`BottleneckStatistics` streams mini-batches and keeps, per site (a hidden
   layer that can widen), the moments ``S, M, S2, M2, C`` as sums and sample counts;
2. where and how many: :func:`bottlenecks` solves TINY at every site (``dW*``, ``N``, the SVD of
   ``S2^(-1/2) N``), a :class:`NeuronSelection` rule picks the neurons worth adding (capped) and
   estimates their gain, ``act'(0) sum_k lambda_k^2`` (the paper's first-order improvement, see
   :mod:`._tiny`) or its held-out counterpart; the gain relative to the loss scores the site;
3. which weights: a :class:`NeuronStrategy` gives the new neurons their fan-in and fan-out;
4. how much: a :class:`NeuronProposal` previews the change at amplitude ``gamma`` without touching
   the network (``W + gamma dW``, new fan-in ``sqrt(gamma) alpha``, new fan-out
   ``sqrt(gamma) omega``, so the function changes linearly in ``gamma`` to first order), a line
   search on the loss picks ``gamma``, and ``apply`` builds the grown network.

:func:`grow_neurons` does the four in one call and returns ``None`` when the best site's
relative gain is below ``min_relative_gain``: growth stops by itself once no bottleneck is worth
a neuron. The new neurons are appended after the old ones in both layers, so the trainer's
optimizer-state carry (leading slice) applies unchanged; ``param_map`` maps every name to itself.

>>> grown = grow_neurons(net, batches, TinyGrowth())
>>> if grown is not None:
...     net = grown.net  # grown.param_map carries the optimizer state
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..nets import Net
from ..spec import ArchitectureSpec
from ._proposal import (
    LINE_SEARCH_GAMMAS,
    LINE_SEARCH_MAX_GAMMA,
    LineSearch,
    NeuronProposal,
    NewNeurons,
    Widening,
    widened_spec,
)
from ._selection import (
    GROMO_SINGULAR_VALUE_THRESHOLD,
    HELD_OUT_Z,
    HeldOutGain,
    NeuronSelection,
    SingularValueThreshold,
)
from ._statistics import (
    LOSS_REDUCTIONS,
    MOMENTS,
    BottleneckStatistics,
    InputCovariance,
    LossFn,
    Moments,
    bottleneck_statistics,
    site_layers,
    sites,
)
from ._strategies import (
    GradMaxGrowth,
    NeuronStrategy,
    RandomGrowth,
    SiteView,
    TinyGrowth,
    TinyWithUpdateGrowth,
)
from ._tiny import ACTIVATION_SLOPE_AT_ZERO, optimal_update

#: Grow only while the best site's first-order gain is at least this fraction of the loss. Ours.
MIN_RELATIVE_GAIN = 1e-3


# -- where and how many ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteBottleneck:
    """TINY at one site: the neurons worth adding and what they gain to first order."""

    site: int
    neurons: int
    gains: Tensor
    """``(neurons,)``: each kept neuron's first-order gain per unit amplitude, as the selection
    rule estimates it (fitted ``act'(0) lambda_k^2``, or measured on held-out samples)."""
    update_decrease: float
    """``tr(M dW*)``: the first-order decrease of the best update of the existing fan-out layer."""
    loss: float

    @property
    def gain(self) -> float:
        return float(self.gains.sum())

    @property
    def relative_gain(self) -> float:
        """The site's score: first-order gain of the new neurons over the mean loss."""
        if self.loss > 0:
            return self.gain / self.loss
        return math.inf if self.gain > 0 else 0.0


def bottlenecks(
    stats: BottleneckStatistics,
    selection: NeuronSelection | None = None,
    *,
    max_neurons: int | None = None,
) -> dict[int, SiteBottleneck]:
    """Solve TINY at every collected site; ``selection`` defaults to :class:`HeldOutGain`."""
    _check_max_neurons(max_neurons)
    selection = HeldOutGain() if selection is None else selection
    activation = stats.spec.activation
    result = {}
    for s in stats.sites:
        _, decrease = optimal_update(stats.site(s).moments())
        gains = selection.gains(stats.site(s), activation)[:max_neurons]
        result[s] = SiteBottleneck(s, len(gains), gains, float(decrease), stats.loss)
    return result


def _check_max_neurons(max_neurons: int | None) -> None:
    if max_neurons is not None and (
        isinstance(max_neurons, bool) or not isinstance(max_neurons, int) or max_neurons < 1
    ):
        raise ValueError(f"max_neurons: expected a positive integer or None, got {max_neurons!r}")


# -- one call --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeuronAddition:
    """The result of :func:`grow_neurons`."""

    spec: ArchitectureSpec
    net: Net
    param_map: dict[str, str]
    site: int
    neurons: int
    gamma: float
    scores: dict[int, float]
    """Relative first-order gain of every site scored."""
    gains: list[float]
    """Each new neuron's first-order gain, as the selection rule estimates it."""
    update_decrease: float
    loss: float
    """Mean per-sample loss before the change (statistics batches)."""
    loss_after: float
    """Previewed loss at ``gamma`` on the line-search batches (``loss`` if no search ran)."""
    statistics_flops: int
    line_search_flops: int

    @property
    def flops(self) -> int:
        """What the decision cost in matrix products over samples. The algebra on the moments
        (pseudo-inverse, eigh, SVD; sizes ``d2 x o``, independent of ``n``) is not counted."""
        return self.statistics_flops + self.line_search_flops

    def details(self) -> dict[str, Any]:
        """JSON-ready figures for a :class:`~growth_core.growth.base.GrowthEvent`."""
        return {
            "neurons": self.neurons,
            "gamma": self.gamma,
            "scores": {str(s): v for s, v in self.scores.items()},
            "gains": self.gains,
            "update_decrease": self.update_decrease,
            "loss": self.loss,
            "loss_after": self.loss_after,
            "statistics_flops": self.statistics_flops,
            "line_search_flops": self.line_search_flops,
        }


def grow_neurons(
    net: Net,
    batches: Iterable[tuple[Tensor, Tensor]],
    strategy: NeuronStrategy,
    *,
    selection: NeuronSelection | None = None,
    max_neurons: int | None = None,
    min_relative_gain: float = MIN_RELATIVE_GAIN,
    sites: Sequence[int] | None = None,
    line_search_batches: Iterable[tuple[Tensor, Tensor]] | None = None,
    gammas: Sequence[float] = LINE_SEARCH_GAMMAS,
    max_gamma: float = LINE_SEARCH_MAX_GAMMA,
    loss_fn: LossFn = F.cross_entropy,
    reduction: str = "mean",
    ridge: float = 0.0,
) -> NeuronAddition | None:
    """Widen the site with the largest relative first-order gain, or return ``None``.

    ``None`` when no site's gain reaches ``min_relative_gain`` times the loss (growth has
    stopped), or when the line search finds no amplitude that lowers the loss. Strategies that
    preserve the function (GradMax, random) skip the search and use amplitude 1.
    ``line_search_batches`` defaults to ``batches``; ``loss_fn`` reduces as ``reduction`` says;
    ``ridge`` shrinks ``S2`` when the neurons are fitted (:meth:`Moments.fitting_s2`).
    """
    if not (math.isfinite(min_relative_gain) and min_relative_gain >= 0):
        raise ValueError(f"min_relative_gain: expected a number >= 0, got {min_relative_gain!r}")
    batches = list(batches)
    stats = bottleneck_statistics(
        net, batches, sites=sites, loss_fn=loss_fn, reduction=reduction, ridge=ridge
    )
    plan = bottlenecks(stats, selection, max_neurons=max_neurons)
    best = max(plan.values(), key=lambda b: b.relative_gain)
    if best.neurons == 0 or best.relative_gain < min_relative_gain:
        return None
    proposal = strategy.propose(stats, best.site, best.neurons)
    gamma, loss_after, search_flops = 1.0, stats.loss, 0
    if not proposal.preserves_function:
        ls_batches = batches if line_search_batches is None else list(line_search_batches)
        search = proposal.line_search(
            ls_batches, gammas=gammas, max_gamma=max_gamma, loss_fn=loss_fn, reduction=reduction
        )
        if search.gamma == 0:
            return None
        gamma, loss_after, search_flops = search.gamma, search.losses[search.gamma], search.flops
    grown = proposal.apply(gamma)
    return NeuronAddition(
        spec=grown.spec,
        net=grown.net,
        param_map=grown.param_map,
        site=best.site,
        neurons=best.neurons,
        gamma=gamma,
        scores={s: b.relative_gain for s, b in plan.items()},
        gains=best.gains.tolist(),
        update_decrease=best.update_decrease,
        loss=stats.loss,
        loss_after=loss_after,
        statistics_flops=stats.flops,
        line_search_flops=search_flops,
    )


__all__ = [
    "ACTIVATION_SLOPE_AT_ZERO",
    "GROMO_SINGULAR_VALUE_THRESHOLD",
    "HELD_OUT_Z",
    "LINE_SEARCH_GAMMAS",
    "LINE_SEARCH_MAX_GAMMA",
    "LOSS_REDUCTIONS",
    "MIN_RELATIVE_GAIN",
    "MOMENTS",
    "BottleneckStatistics",
    "GradMaxGrowth",
    "HeldOutGain",
    "InputCovariance",
    "LineSearch",
    "Moments",
    "NeuronAddition",
    "NeuronProposal",
    "NeuronSelection",
    "NeuronStrategy",
    "NewNeurons",
    "RandomGrowth",
    "SingularValueThreshold",
    "SiteBottleneck",
    "SiteView",
    "TinyGrowth",
    "TinyWithUpdateGrowth",
    "Widening",
    "bottleneck_statistics",
    "bottlenecks",
    "grow_neurons",
    "site_layers",
    "sites",
    "widened_spec",
]
