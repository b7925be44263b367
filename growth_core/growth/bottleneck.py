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

:func:`widen` makes the four into one decision, the only one in the library (the growth policy
calls it with its budget's caps): it declines when the best site's relative gain is below
``min_relative_gain``, so growth stops by itself once no bottleneck is worth a neuron. The new
neurons are appended after the old ones in both layers, so the trainer's optimizer-state carry
(leading slice) applies unchanged; ``param_map`` maps every name to itself.

>>> decision = widen(net, batches, TinyGrowth())
>>> if decision.change is not None:
...     net = decision.change.net  # decision.change.param_map carries the optimizer state
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .._checks import require_int, require_number
from ..conv_spec import ConvSpec
from ..events import Change, GrowthEvent, LossFn
from ..flops import forward_flops, parameter_count
from ..nets import Net
from ..spec import ArchitectureSpec
from ._line_search import LINE_SEARCH_GAMMAS, LINE_SEARCH_MAX_GAMMA, LineSearch
from ._proposal import NeuronProposal, NewNeurons, widened_spec
from ._reduce import LOCAL, Reducer
from ._selection import (
    GROMO_SINGULAR_VALUE_THRESHOLD,
    HELD_OUT_Z,
    HeldOutGain,
    NeuronSelection,
    SingularValueThreshold,
)
from ._sites import site_layers, sites
from ._statistics import (
    LOSS_REDUCTIONS,
    MOMENTS,
    BottleneckStatistics,
    InputCovariance,
    Moments,
    bottleneck_statistics,
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
#: The most loss evaluations a line search makes: the grid, 0, and the doublings.
LINE_SEARCH_EVALUATIONS = (
    len(LINE_SEARCH_GAMMAS)
    + 1
    + math.ceil(math.log2(LINE_SEARCH_MAX_GAMMA / max(LINE_SEARCH_GAMMAS)))
)


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
        return _relative_gain(self.gain, self.loss)


def bottlenecks(
    stats: BottleneckStatistics,
    selection: NeuronSelection | None = None,
    *,
    max_neurons: int | None = None,
) -> dict[int, SiteBottleneck]:
    """Solve TINY at every collected site; ``selection`` defaults to :class:`HeldOutGain`."""
    require_int("max_neurons", max_neurons, 1, optional=True)
    selection = HeldOutGain() if selection is None else selection
    activation = stats.spec.activation
    result = {}
    for s in stats.sites:
        _, decrease = optimal_update(stats.site(s).moments())
        gains = selection.gains(stats.site(s), activation)[:max_neurons]
        result[s] = SiteBottleneck(s, len(gains), gains, float(decrease), stats.loss)
    return result


# -- one decision ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WidthDecision:
    """What :func:`widen` decided: the change (``None`` when it declined), every site's score
    and what the decision cost."""

    change: Change | None
    site: int | None
    """The best-scoring site (``None`` when no site was open)."""
    neurons: int
    gamma: float
    scores: dict[int, float]
    """Relative first-order gain of every site scored, with its neurons capped."""
    counts: dict[int, int]
    """Per site, the neurons it could take under the caps and ``fits``."""
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

    def event(self, step: int, net: Net, **details: Any) -> GrowthEvent:
        """The record of this widening of ``net`` at ``step``, with the caller's ``details``."""
        if self.change is None or self.site is None:
            raise ValueError("change: the decision declined; there is no event to record")
        return GrowthEvent(
            step=step,
            kind="neurons",
            position=self.site,
            score=self.scores[self.site],
            spec_before=net.spec,
            spec_after=self.change.spec,
            params_before=parameter_count(net.spec),
            params_after=parameter_count(self.change.spec),
            details={
                **details,
                "neurons": self.neurons,
                "gamma": self.gamma,
                "scores": {str(s): v for s, v in self.scores.items()},
                "gains": self.gains,
                "caps": {str(s): c for s, c in self.counts.items()},
                "update_decrease": self.update_decrease,
                "loss": self.loss,
                "loss_after": self.loss_after,
                "statistics_flops": self.statistics_flops,
                "line_search_flops": self.line_search_flops,
                "scoring_flops": self.flops,
            },
        )


def _declined(loss: float = math.nan, **fields: Any) -> WidthDecision:
    base = {
        "change": None, "site": None, "neurons": 0, "gamma": 0.0, "scores": {}, "counts": {},
        "gains": [], "update_decrease": 0.0, "loss": loss, "loss_after": loss,
        "statistics_flops": 0, "line_search_flops": 0,
    }  # fmt: skip
    return WidthDecision(**{**base, **fields})


def _relative_gain(gain: float, loss: float) -> float:
    """First-order gain over the mean loss; at zero loss any gain is infinitely worth it."""
    if loss > 0:
        return gain / loss
    return math.inf if gain > 0 else 0.0


def widen(
    net: Net,
    batches: Iterable[tuple[Tensor, Tensor]],
    strategy: NeuronStrategy,
    *,
    selection: NeuronSelection | None = None,
    max_neurons: int | None = None,
    min_relative_gain: float = MIN_RELATIVE_GAIN,
    caps: dict[int, int] | None = None,
    fits: Callable[[ArchitectureSpec | ConvSpec, int], bool] | None = None,
    line_search_batches: Iterable[tuple[Tensor, Tensor]] | None = None,
    gammas: Sequence[float] = LINE_SEARCH_GAMMAS,
    max_gamma: float = LINE_SEARCH_MAX_GAMMA,
    loss_fn: LossFn = F.cross_entropy,
    reduction: str = "mean",
    ridge: float = 0.0,
    input_covariance: InputCovariance | None = None,
    covariance_flops: int = 0,
    reducer: Reducer = LOCAL,
) -> WidthDecision:
    """One width decision: widen the site with the largest relative first-order gain, or decline.

    Statistics over ``batches`` at every site (``caps``: only the sites it gives room for, at
    most that many neurons each), :func:`bottlenecks` with ``selection``, then each site's
    neurons are cut back until ``fits(grown_spec, cost)`` holds, ``cost`` being the statistics
    plus the most a line search may spend. It declines (``change`` is ``None``) when no site's
    gain reaches ``min_relative_gain`` times the loss (growth has stopped), or when the line
    search finds no amplitude that lowers the loss. Strategies that preserve the function
    (GradMax, random) skip the search and use amplitude 1. ``line_search_batches`` defaults to
    ``batches``; ``loss_fn`` reduces as ``reduction`` says; ``ridge`` shrinks ``S2`` when the
    neurons are fitted (:meth:`Moments.fitting_s2`); ``input_covariance`` is the first site's
    ``S2`` computed once, at a cost of ``covariance_flops`` not yet counted by anyone.

    Spread over the processes of ``reducer`` (``batches`` and ``line_search_batches``: this
    process's share), the statistics and the line search's losses are those of all the samples
    and every process decides alike; ``fits`` then reads the largest process's cost, and the
    decision's FLOPs are this process's own.

    A net built from a :class:`~growth_core.conv_spec.ConvSpec` grows channels the same way: its
    sites are those of :func:`._conv_widen.conv_sites`, ``strategy`` is a
    :class:`~._conv_strategies.ChannelStrategy`, ``selection`` GroMo's threshold (the default
    there), and ``change.net.spec`` is the grown spec.
    """
    require_number("min_relative_gain", min_relative_gain, 0.0)
    require_int("max_neurons", max_neurons, 1, optional=True)
    open_sites = None if caps is None else [s for s, c in caps.items() if c >= 1]
    if open_sites == []:
        return _declined()
    batches = list(batches)
    options = {"loss_fn": loss_fn, "reduction": reduction, "ridge": ridge, "reducer": reducer}
    if isinstance(net.spec, ConvSpec):
        stats, plan, propose = _conv_scoring(
            net, batches, strategy, open_sites, selection, max_neurons, input_covariance, options
        )
    else:
        stats = bottleneck_statistics(
            net, batches, sites=open_sites, input_covariance=input_covariance, **options
        )
        plan = bottlenecks(stats, selection, max_neurons=max_neurons)
        propose = partial(strategy.propose, stats)
    grown_spec = partial(widened_spec, net.spec)
    stats.flops += covariance_flops
    searched = [] if strategy.preserves_function else batches
    if searched and line_search_batches is not None:
        searched = list(line_search_batches)
    # what the budget checks read: the same on every process
    statistics_cost = reducer.most(stats.flops)
    n_search = reducer.most(sum(len(x) for x, _ in searched))
    counts = {}
    for s, p in plan.items():
        k = p.neurons if caps is None else min(p.neurons, caps[s])
        while (
            k > 0
            and fits is not None
            and not fits(
                grown := grown_spec(s, k),
                statistics_cost + LINE_SEARCH_EVALUATIONS * forward_flops(grown, n_search),
            )
        ):
            k -= 1
        counts[s] = k
    scores = {
        s: _relative_gain(float(p.gains[: counts[s]].sum()), stats.loss) for s, p in plan.items()
    }
    site = max(scores, key=scores.get)
    k, best = counts[site], plan[site]
    scored = {
        "site": site, "scores": scores, "counts": counts, "gains": best.gains[:k].tolist(),
        "update_decrease": best.update_decrease, "statistics_flops": stats.flops,
    }  # fmt: skip
    if k == 0 or scores[site] < min_relative_gain:
        return _declined(stats.loss, **scored)
    proposal = propose(site, k)
    gamma, loss_after, search_flops = 1.0, stats.loss, 0
    if not proposal.preserves_function:
        search = proposal.line_search(
            searched,
            gammas=gammas,
            max_gamma=max_gamma,
            loss_fn=loss_fn,
            reduction=reduction,
            reducer=reducer,
        )
        search_flops = search.flops
        if search.gamma == 0:
            return _declined(stats.loss, line_search_flops=search_flops, **scored)
        gamma, loss_after = search.gamma, search.losses[search.gamma]
    return WidthDecision(
        change=proposal.apply(gamma),
        neurons=k,
        gamma=gamma,
        loss=stats.loss,
        loss_after=loss_after,
        line_search_flops=search_flops,
        **scored,
    )


def _conv_scoring(net, batches, strategy, open_sites, selection, max_neurons, covariance, options):
    """:func:`widen`'s statistics and plan at a conv net's sites (:mod:`._conv_widen`)."""
    from ._conv_strategies import ChannelStrategy
    from ._conv_widen import ConvScoring, conv_selection

    if not isinstance(strategy, ChannelStrategy):
        raise ValueError(
            f"strategy: a conv net grows channels; expected a ChannelStrategy, got "
            f"{type(strategy).__name__}"
        )
    if covariance is not None:
        raise ValueError("input_covariance: a linear first site's; conv nets have none")
    rule = conv_selection(selection)
    scoring = ConvScoring(net, batches, open_sites, **options)
    stats = scoring.stats
    plan = {
        site: SiteBottleneck(site, len(gains), gains, float(decrease), stats.loss)
        for site, (gains, decrease) in scoring.plan(rule, max_neurons).items()
    }

    def propose(site: int, k: int):
        return strategy.propose(stats, scoring.position(site), k)

    return stats, plan, propose


__all__ = [
    "ACTIVATION_SLOPE_AT_ZERO",
    "GROMO_SINGULAR_VALUE_THRESHOLD",
    "HELD_OUT_Z",
    "LINE_SEARCH_EVALUATIONS",
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
    "WidthDecision",
    "bottleneck_statistics",
    "bottlenecks",
    "site_layers",
    "sites",
    "widen",
    "widened_spec",
]
