"""One growth policy for depth and width, under a parameter or FLOP budget.

Depth is sensitivity-based layer insertion (:mod:`.sensitivity`, Herberg et al. 2023): an
identity layer where the loss is most sensitive to freeing one. Width is neuron addition at
expressivity bottlenecks (:func:`.bottleneck.widen`, Verbockhaven et al. 2024) with a named
strategy. Whenever the trigger fires the policy makes one *decision*: width first, then depth,
and the first kind that proposes a change within budget is applied. Width first reads as: widen
while some layer has a bottleneck that new neurons fix significantly; once none has, insert a
layer. A kind declines when its limits or the budget (:class:`~.settings.Budget`, checked before
the scoring pass and again on the proposed change) leave no room, or (width) when no site's
first-order gain reaches ``min_relative_gain``. With ``width=None`` it is SensLI alone; with
``depth=None``, TINY alone.

Cost is counted: the :class:`~growth_core.events.Decision` carries every scoring pass of the
decision, applied or declined, and the trainer counts it.

Spread over processes (DDP): :meth:`DepthWidthPolicy.decide_now` with a
:class:`~._reduce.Reducer`, on every process in lockstep. Each draws the same samples (the same
seeded generator) and scores its share of them; the statistics, losses and sensitivities are
added up over the processes before they are read, so the decision is the one a single process
would take on all the samples (up to the order of the float additions) and every process takes
it alike. The budget checks read the largest process's scoring cost; each process's decision
counts its own passes. One exception to "the same decision": batch norm in training mode
normalizes by the scoring batch, and a process's batches are cut from its share, not from the
whole draw, so a conv net with batch norm decides as one process would with other batches.

The settings are plain data: ``DepthWidthPolicy.from_dict(policy.to_dict())`` rebuilds the
policy (:meth:`DepthWidthPolicy.to_dict` documents the layout), which is how a pipeline
configures it::

    policy = DepthWidthPolicy(
        AtSteps((500, 1000, 1500)),
        width=WidthGrowth(strategy="tiny", max_neurons=16),
        depth=DepthGrowth(max_depth=4),
        budget=Budget(max_flops=10**12),
    )
    Trainer(net, data, config, policy=policy).fit()
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import fail, require_int
from ..conv_spec import ConvSpec
from ..events import NO_DECISION, Decision, Growth, GrowthPolicy, TrainingState
from ..flops import train_step_flops
from ..spec import ArchitectureSpec
from . import sensitivity
from ._conv_statistics import conv_width_statistics
from ._conv_widen import conv_sites
from ._reduce import LOCAL, Reducer
from ._sites import sites
from .bottleneck import BottleneckStatistics, InputCovariance, widen
from .settings import Budget, DepthGrowth, PolicyError, WidthGrowth, section_from_dict
from .triggers import Trigger, trigger_from_dict

#: Mini-batch of the width statistics passes. The statistics do not depend on it (sums and
#: counts); it bounds memory only.
SCORING_BATCH = 1000

Batches = list[tuple[Tensor, Tensor]]


@dataclass
class _Draw:
    """One draw of a width decision's samples; ``uncounted_flops``: the cost of computing
    ``covariance``, until a decision has counted it."""

    data: Any
    batches: Batches
    searched: Batches | None
    covariance: InputCovariance | None = None
    uncounted_flops: int = 0

    def __post_init__(self) -> None:
        if self.covariance is not None:
            self.uncounted_flops = self.covariance.flops


class DepthWidthPolicy(GrowthPolicy):
    """Grows a network in depth and width when ``trigger`` fires; see the module docstring.

    ``width=None`` or ``depth=None`` switches that kind off. ``seed`` fixes the scoring samples,
    random neurons and the random-position control.
    """

    def __init__(
        self,
        trigger: Trigger,
        *,
        width: WidthGrowth | None = None,
        depth: DepthGrowth | None = None,
        budget: Budget | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(trigger, Trigger):
            fail("trigger", "a Trigger (AtSteps, OnPlateau)", trigger, error=PolicyError)
        if width is not None and not isinstance(width, WidthGrowth):
            fail("width", "WidthGrowth settings or None", width, error=PolicyError)
        if depth is not None and not isinstance(depth, DepthGrowth):
            fail("depth", "DepthGrowth settings or None", depth, error=PolicyError)
        if width is None and depth is None:
            raise PolicyError("width: a policy needs width or depth growth (both are off)")
        require_int("seed", seed, 0, error=PolicyError)
        self.trigger = trigger
        self.width = width
        self.depth = depth
        self.budget = budget or Budget()
        self.seed = seed
        self.decisions = 0
        """Decisions made (trigger firings), whether or not they grew the network."""
        self._strategy = width.neuron_strategy(seed) if width else None
        self._generator = torch.Generator().manual_seed(seed)
        self._rng = random.Random(seed)
        self._last_decision_step = 0
        self._checked = False
        self._fixed: _Draw | None = None
        """With ``width.samples == "fixed"``: the run's one draw."""
        self._fixed_from: torch.Tensor | None = None
        """The sample generator's state the fixed draw was made from (a resumed run redraws it)."""

    # -- serialization ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"trigger", "width", "depth", "budget", "seed"}``: ``trigger`` as
        :meth:`Trigger.to_dict` writes it (``{"kind": "at_steps", "steps": [...]}`` or
        ``{"kind": "on_plateau", "window", "threshold"}``); ``width`` and ``depth`` the fields of
        :class:`WidthGrowth` / :class:`DepthGrowth` (a strategy by its name), or ``None`` when
        off; ``budget`` the fields of :class:`Budget`."""
        return {
            "trigger": self.trigger.to_dict(),
            "width": self.width.to_dict() if self.width else None,
            "depth": self.depth.to_dict() if self.depth else None,
            "budget": self.budget.to_dict(),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DepthWidthPolicy:
        if not isinstance(d, dict):
            fail("policy", "a table of settings", d, error=PolicyError)
        known = {"trigger", "width", "depth", "budget", "seed"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PolicyError(f"{unknown[0]}: unknown setting; expected {', '.join(sorted(known))}")
        if "trigger" not in d:
            raise PolicyError("trigger: missing")
        try:
            trigger = trigger_from_dict(d["trigger"])
        except (TypeError, ValueError, AttributeError) as err:
            raise PolicyError(f"trigger: {err}") from err
        sections = {
            name: None if d.get(name) is None else section_from_dict(name, d[name])
            for name in ("width", "depth", "budget")
        }
        return cls(trigger, **sections, seed=d.get("seed", 0))

    # -- resuming --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Counters and random states: a policy built with the same settings and given this
        decides as this one would have, after a restart (the fixed draw is made again from the
        generator state it came from, not stored)."""
        strategy = getattr(self._strategy, "generator", None)
        return {
            "decisions": self.decisions,
            "last_decision_step": self._last_decision_step,
            "checked": self._checked,
            "generator": self._generator.get_state(),
            "rng": self._rng.getstate(),
            "fixed_from": self._fixed_from,
            "strategy_generator": strategy.get_state() if strategy is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decisions = state["decisions"]
        self._last_decision_step = state["last_decision_step"]
        self._checked = state["checked"]
        self._generator.set_state(state["generator"])
        self._rng.setstate(state["rng"])
        self._fixed, self._fixed_from = None, state["fixed_from"]
        if state["strategy_generator"] is not None:
            self._strategy.generator.set_state(state["strategy_generator"])

    # -- deciding --------------------------------------------------------------------------------
    def decide(self, state: TrainingState) -> Decision:
        return self.decide_now(state) if self.due(state) else NO_DECISION

    def due(self, state: TrainingState) -> bool:
        """Whether the trigger fires after this step (the first call checks the network)."""
        self._check_once(state.net.spec)  # fail on the first step, not at the first decision
        return self.trigger.fires(state, self._last_decision_step)

    def decide_now(self, state: TrainingState, reducer: Reducer = LOCAL) -> Decision:
        """One decision at this step, the trigger not asked: under DDP every process calls it
        when rank 0's trigger fired, with ``reducer`` adding up the processes' statistics."""
        self._check_once(state.net.spec)
        self._last_decision_step = state.step
        self.decisions += 1
        width = self._decide_width(state, reducer)
        if width.growth is not None:
            return width
        depth = self._decide_depth(state, reducer)
        return Decision(depth.growth, width.scoring_flops + depth.scoring_flops)

    def _check_once(self, spec: ArchitectureSpec | ConvSpec) -> None:
        if not self._checked:
            self._check(spec)
            self._checked = True

    def _check(self, spec: ArchitectureSpec | ConvSpec) -> None:
        """What the network's family allows: an identity layer to insert (depth), sites to
        widen, with the conv strategy of the same name for a conv net (width)."""
        if self.depth is not None:
            try:
                sensitivity.positions(spec)
            except ValueError as err:
                raise PolicyError(f"depth: {err}") from err
        if not isinstance(spec, ConvSpec) or self.width is None:
            return
        if not sites(spec):
            raise PolicyError(
                f"width: {spec.describe()} has no two convolutions in a row (no pooling between) "
                "whose channels could grow"
            )
        linear = self._strategy
        self._strategy = self.width.channel_strategy(self.seed)
        if hasattr(linear, "generator") and hasattr(self._strategy, "generator"):
            self._strategy.generator.set_state(linear.generator.get_state())  # a resumed run's

    def _samples(self, state: TrainingState, n: int | None, reducer: Reducer) -> Batches:
        """This process's share of ``n`` training samples drawn afresh (``None``: all, in
        order), in scoring batches. Every process draws the same ``n``; the shares start at
        even positions, so each sample keeps its fold."""
        x, y = state.data.x_train, state.data.y_train
        if n is not None and n < len(x):
            idx = torch.randperm(len(x), generator=self._generator)[:n]
            x, y = x[idx], y[idx]
        share = reducer.share(len(x), 2)
        x, y = x[share], y[share]
        return [
            (x[i : i + SCORING_BATCH], y[i : i + SCORING_BATCH])
            for i in range(0, len(x), SCORING_BATCH)
        ]

    # -- width -------------------------------------------------------------------------------------
    def _width_samples(self, state: TrainingState, reducer: Reducer) -> _Draw:
        """This decision's samples (this process's share): drawn afresh, or the run's one draw
        (``samples="fixed"``)."""
        w = self.width
        if w.samples == "fixed" and self._fixed is not None and self._fixed.data is state.data:
            return self._fixed
        if w.samples == "fixed" and self._fixed is None and self._fixed_from is not None:
            return self._redraw_fixed(state, reducer)
        total = min(w.statistics_samples, len(state.data.x_train))
        if min(s.stop - s.start for s in reducer.shares(total, 2)) < 2:
            raise PolicyError(
                f"width.statistics_samples: {total} samples shared out between "
                f"{reducer.world} processes leave one of them fewer than 2 (one of each fold)"
            )
        if w.samples == "fixed":
            self._fixed_from = self._generator.get_state()
        batches = self._samples(state, w.statistics_samples, reducer)
        searched = None
        if not self._strategy.preserves_function and w.line_search_samples is not None:
            searched = self._samples(state, w.line_search_samples, reducer)
        if w.samples == "fresh":
            return _Draw(state.data, batches, searched)
        spec = state.net.spec
        linear = not (spec.residual or isinstance(spec, ConvSpec))
        covariance = InputCovariance(batches, reducer=reducer) if linear else None
        self._fixed = _Draw(state.data, batches, searched, covariance)
        return self._fixed

    def _redraw_fixed(self, state: TrainingState, reducer: Reducer) -> _Draw:
        """A resumed run's fixed draw: made again from the generator state it first came from
        (its cost was counted before the restart), the generator then back where it was."""
        now = self._generator.get_state()
        self._generator.set_state(self._fixed_from)
        self._fixed_from = None  # _width_samples records it again as it draws
        draw = self._width_samples(state, reducer)
        draw.uncounted_flops = 0
        self._generator.set_state(now)
        return draw

    def _decide_width(self, state: TrainingState, reducer: Reducer) -> Decision:
        w = self.width
        if w is None:
            return NO_DECISION
        net, budget = state.net, self.budget
        draw = self._width_samples(state, reducer)
        # Before scoring: the sites that could take a neuron after a statistics pass over all
        # sites (an upper bound of its cost, so a declined decision also stays within budget),
        # on the process with the largest share.
        estimate = reducer.most(draw.uncounted_flops + _statistics_flops(net, draw))
        caps = budget.neuron_caps(state, w, estimate)
        decision = widen(
            net,
            draw.batches,
            self._strategy,
            selection=w.neuron_selection(),
            max_neurons=w.max_neurons,
            min_relative_gain=w.min_relative_gain,
            caps=caps,
            fits=lambda spec, cost: budget.fits(state, spec, cost),
            line_search_batches=draw.searched,
            loss_fn=state.loss_fn,
            ridge=w.ridge,
            input_covariance=draw.covariance,
            covariance_flops=draw.uncounted_flops,
            reducer=reducer,
        )
        if decision.statistics_flops:
            draw.uncounted_flops = 0  # counted by this decision
        if decision.change is None:
            return Decision(None, decision.flops)
        event = decision.event(state.step, net, strategy=w.strategy_name, selection=w.selection)
        return Decision(Growth(decision.change, event), decision.flops)

    # -- depth -------------------------------------------------------------------------------------
    def _depth_batches(self, state: TrainingState, reducer: Reducer) -> Batches:
        """This process's share of the first ``score_batches`` training mini-batches (``None``:
        the whole set), in order."""
        x, y = state.data.x_train, state.data.y_train
        bs, n_batches = state.batch_size, self.depth.score_batches
        n = len(x) if n_batches is None else min(len(x), n_batches * bs)
        batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)]
        return batches[reducer.share(len(batches))]

    def _decide_depth(self, state: TrainingState, reducer: Reducer) -> Decision:
        d, net = self.depth, state.net
        if d is None or (d.max_depth is not None and net.spec.depth >= d.max_depth):
            return NO_DECISION
        batches = self._depth_batches(state, reducer)
        ext_spec = sensitivity.extended_network(net)[0].spec
        # an upper bound, on the process with the most batches
        estimate = reducer.most(sum(train_step_flops(ext_spec, len(x)) for x, _ in batches))
        allowed = []
        for p in sensitivity.positions(net.spec):
            grown = sensitivity.inserted_spec(net.spec, p)  # a residual conv block is 2 layers
            if d.max_depth is not None and grown.depth > d.max_depth:
                continue
            if self.budget.fits(state, grown, estimate):
                allowed.append(p)
        if not allowed:
            return NO_DECISION
        sens = sensitivity.sensitivities(
            net, batches, score=d.score, loss_fn=state.loss_fn, reducer=reducer
        )
        scores = {p: sens.scores[p] for p in allowed}
        position = sensitivity.Sensitivities(scores, sens.flops, sens.loss).select(
            d.selection, rng=self._rng
        )
        grown = sensitivity.insert(net, position)
        event = sensitivity.insertion_event(
            state.step, net, grown, sens, position,
            allowed=allowed, score_kind=d.score, selection=d.selection,
        )  # fmt: skip
        return Decision(Growth(grown, event), sens.flops)


def _statistics_flops(net, draw: _Draw) -> int:
    """What a width statistics pass over every site costs on ``draw``'s batches: computed for
    MLPs; for conv nets counted (``torch.utils.flop_counter``) on one sample, times the samples
    (every counted operation is linear in the batch)."""
    if isinstance(net.spec, ConvSpec):
        x, y = draw.batches[0]
        one = conv_width_statistics(net, list(conv_sites(net).values()), [(x[:1], y[:1])])
        return one.flops * sum(len(x) for x, _ in draw.batches)
    whole = BottleneckStatistics(net, input_covariance=draw.covariance)
    return sum(whole.flops_per_batch(len(x)) for x, _ in draw.batches)
