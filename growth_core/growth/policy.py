"""One growth policy for depth and width, under a parameter or FLOP budget.

Depth is sensitivity-based layer insertion (:mod:`.sensitivity`, Herberg et al. 2023): an
identity layer where the loss is most sensitive to freeing one. Width is neuron addition at
expressivity bottlenecks (:mod:`.bottleneck`, Verbockhaven et al. 2024) with a named strategy.
Whenever the trigger fires the policy makes one *decision*: it tries the kinds in ``order``
(by default width first, then depth), and the first that proposes a change within budget is
applied. Width first reads as: widen while some layer has a bottleneck that new neurons fix
significantly; once none has, insert a layer. A kind declines when its limits or the budget
leave no room, or (width) when no site's first-order gain reaches ``min_relative_gain``.

Budgets (:class:`Budget`), checked before the scoring pass and again on the proposed change:

- ``max_params``: the grown network's parameter count;
- ``max_flops``: the whole run's training FLOPs as the trainer counts them (steps plus scoring
  passes): a change is made only if the FLOPs spent so far, plus the decision's scoring pass,
  plus the remaining steps at the grown size stay within it. A width step adds only as many
  neurons as fit.

Cost is counted: an applied growth carries every scoring pass of its decision
(``Growth.scoring_flops``); a decision that grows nothing still ran its passes, and the policy
adds them to the trainer's ``flops`` and ``growth_flops`` itself.

The settings are plain data: ``DepthWidthPolicy.from_dict(policy.to_dict())`` rebuilds the
policy (:meth:`DepthWidthPolicy.to_dict` documents the layout), which is how a pipeline
configures it::

    policy = DepthWidthPolicy(
        trigger=AtSteps((500, 1000, 1500)),
        width=WidthGrowth(strategy="tiny", max_neurons=16),
        depth=DepthGrowth(max_depth=4),
        budget=Budget(max_flops=10**12),
    )
    Trainer(net, data, config, policy=policy).fit()
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..flops import forward_flops, parameter_count, train_step_flops
from ..spec import ArchitectureSpec
from . import sensitivity
from .base import Growth, GrowthEvent, GrowthPolicy
from .bottleneck import (
    GROMO_SINGULAR_VALUE_THRESHOLD,
    HELD_OUT_Z,
    LINE_SEARCH_GAMMAS,
    LINE_SEARCH_MAX_GAMMA,
    MIN_RELATIVE_GAIN,
    BottleneckStatistics,
    GradMaxGrowth,
    HeldOutGain,
    InputCovariance,
    NeuronSelection,
    NeuronStrategy,
    RandomGrowth,
    SingularValueThreshold,
    TinyGrowth,
    TinyWithUpdateGrowth,
    bottlenecks,
    sites,
    widened_spec,
)
from .triggers import Trigger, trigger_from_dict

if TYPE_CHECKING:
    from ..train import Trainer

#: Width strategies by name (:mod:`.bottleneck`).
WIDTH_STRATEGIES = ("tiny", "tiny_update", "gradmax", "random")
#: Strategies whose new neurons leave the function unchanged: no line search.
FUNCTION_PRESERVING = ("gradmax", "random")
#: The most loss evaluations a line search makes: the grid, 0, and the doublings.
LINE_SEARCH_EVALUATIONS = (
    len(LINE_SEARCH_GAMMAS)
    + 1
    + math.ceil(math.log2(LINE_SEARCH_MAX_GAMMA / max(LINE_SEARCH_GAMMAS)))
)
#: Neuron selection rules by name: the held-out test (ours) or GroMo's singular-value threshold.
WIDTH_SELECTIONS = ("held_out", "singular_value")
ORDERS = ("width_first", "depth_first")
#: How each decision's statistics samples are drawn: afresh, or once for the whole run.
SAMPLE_DRAWS = ("fresh", "fixed")

#: Samples the bottleneck statistics read per decision: the TINY paper's MNIST setting (10k).
STATISTICS_SAMPLES = 10_000
#: Mini-batch of the scoring passes. The statistics do not depend on it (sums and counts); it
#: bounds memory only.
SCORING_BATCH = 1000


class PolicyError(ValueError):
    """A policy setting with a bad value; the message names the field."""


def _fail(name: str, expected: str, value: Any) -> None:
    raise PolicyError(f"{name}: expected {expected}, got {value!r}")


def _int(name: str, value: Any, minimum: int, *, optional: bool = True) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, f"an integer >= {minimum}" + (" or null" if optional else ""), value)


def _number(name: str, value: Any, minimum: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < minimum:
        _fail(name, f"a finite number >= {minimum}", value)


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WidthGrowth:
    """How layers widen: :func:`~.bottleneck.bottlenecks` picks the site and the number of
    neurons, ``strategy`` gives them their weights, a line search their amplitude.

    ``selection`` ``"held_out"`` keeps neurons whose gain is significant at ``z`` standard errors
    on held-out samples; ``"singular_value"`` keeps ``lambda_k >= threshold`` (GroMo). Each step
    adds at most ``max_neurons``, and no hidden layer grows beyond ``max_width``.
    ``line_search_samples=None`` searches the amplitude on the statistics samples.
    ``samples``: ``"fresh"`` draws the statistics (and line-search) samples anew at every
    decision; ``"fixed"`` draws them once for the run, which lets a feedforward net's first site
    reuse its input covariance (:class:`~.bottleneck.InputCovariance`, computed and counted
    once): on MNIST that is most of a decision's FLOPs.
    """

    strategy: str = "tiny"
    selection: str = "held_out"
    z: float = HELD_OUT_Z
    threshold: float = GROMO_SINGULAR_VALUE_THRESHOLD
    max_neurons: int | None = None
    max_width: int | None = None
    min_relative_gain: float = MIN_RELATIVE_GAIN
    statistics_samples: int = STATISTICS_SAMPLES
    line_search_samples: int | None = None
    ridge: float = 0.0
    """Shrinkage of ``S2`` towards its mean eigenvalue when neurons are fitted
    (:meth:`~.bottleneck.Moments.fitting_s2`); 0 is the paper's TINY."""
    samples: str = "fresh"

    def __post_init__(self) -> None:
        if self.strategy not in WIDTH_STRATEGIES:
            _fail("width.strategy", f"one of {', '.join(WIDTH_STRATEGIES)}", self.strategy)
        if self.selection not in WIDTH_SELECTIONS:
            _fail("width.selection", f"one of {', '.join(WIDTH_SELECTIONS)}", self.selection)
        _number("width.z", self.z, 0.0)
        _number("width.threshold", self.threshold, 0.0)
        _int("width.max_neurons", self.max_neurons, 1)
        _int("width.max_width", self.max_width, 1)
        _number("width.min_relative_gain", self.min_relative_gain, 0.0)
        _int("width.statistics_samples", self.statistics_samples, 2, optional=False)
        _int("width.line_search_samples", self.line_search_samples, 1)
        _number("width.ridge", self.ridge, 0.0)
        if self.samples not in SAMPLE_DRAWS:
            _fail("width.samples", f"one of {', '.join(SAMPLE_DRAWS)}", self.samples)

    def neuron_selection(self) -> NeuronSelection:
        if self.selection == "held_out":
            return HeldOutGain(self.z)
        return SingularValueThreshold(self.threshold)

    def neuron_strategy(self, seed: int) -> NeuronStrategy:
        if self.strategy == "random":
            return RandomGrowth(seed=seed)
        return {"tiny": TinyGrowth, "tiny_update": TinyWithUpdateGrowth, "gradmax": GradMaxGrowth}[
            self.strategy
        ]()


@dataclass(frozen=True)
class DepthGrowth:
    """How layers are inserted: ``score`` and ``selection`` as in :mod:`.sensitivity`, at most
    ``max_depth`` hidden layers (blocks); the scores read ``score_samples`` training samples
    (``None``: the whole set). ``fresh_optimizer`` / ``lr_factor``: the paper's restart."""

    score: str = "v2"
    selection: str = "max"
    max_depth: int | None = None
    score_samples: int | None = None
    fresh_optimizer: bool = False
    lr_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.score not in sensitivity.SCORES:
            _fail("depth.score", f"one of {', '.join(sensitivity.SCORES)}", self.score)
        if self.selection not in sensitivity.SELECTIONS:
            _fail("depth.selection", f"one of {', '.join(sensitivity.SELECTIONS)}", self.selection)
        _int("depth.max_depth", self.max_depth, 1)
        _int("depth.score_samples", self.score_samples, 1)
        if not isinstance(self.fresh_optimizer, bool):
            _fail("depth.fresh_optimizer", "true or false", self.fresh_optimizer)
        _number("depth.lr_factor", self.lr_factor, 0.0)


@dataclass(frozen=True)
class Budget:
    """Limits every growth step respects (``None``: no limit); see the module docstring."""

    max_params: int | None = None
    max_flops: int | None = None

    def __post_init__(self) -> None:
        _int("budget.max_params", self.max_params, 1)
        _int("budget.max_flops", self.max_flops, 1)


_SECTIONS = {"width": WidthGrowth, "depth": DepthGrowth, "budget": Budget}


def _section_from_dict(name: str, d: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(d, dict):
        _fail(name, "a table of settings", d)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise PolicyError(
            f"{name}.{unknown[0]}: unknown setting; expected {', '.join(sorted(known))}"
        )
    return cls(**d)


@dataclass
class _Draw:
    """One draw of a width decision's samples; ``uncounted_flops``: the cost of computing
    ``covariance``, until a decision has counted it."""

    data: Any
    batches: list[tuple[Tensor, Tensor]]
    searched: list[tuple[Tensor, Tensor]]
    covariance: InputCovariance | None = None
    uncounted_flops: int = 0

    def __post_init__(self) -> None:
        if self.covariance is not None:
            self.uncounted_flops = self.covariance.flops


# -- the policy ------------------------------------------------------------------------------------
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
        order: str = "width_first",
        budget: Budget | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(trigger, Trigger):
            _fail("trigger", "a Trigger (AtSteps, OnPlateau)", trigger)
        if width is not None and not isinstance(width, WidthGrowth):
            _fail("width", "WidthGrowth settings or None", width)
        if depth is not None and not isinstance(depth, DepthGrowth):
            _fail("depth", "DepthGrowth settings or None", depth)
        if width is None and depth is None:
            raise PolicyError("width: a policy needs width or depth growth (both are off)")
        if order not in ORDERS:
            _fail("order", f"one of {', '.join(ORDERS)}", order)
        _int("seed", seed, 0, optional=False)
        self.trigger = trigger
        self.width = width
        self.depth = depth
        self.order = order
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

    # -- serialization ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"trigger", "width", "depth", "order", "budget", "seed"}``: ``trigger`` as
        :meth:`Trigger.to_dict` writes it (``{"kind": "at_steps", "steps": [...]}`` or
        ``{"kind": "on_plateau", "window", "threshold"}``); ``width`` and ``depth`` the fields of
        :class:`WidthGrowth` / :class:`DepthGrowth`, or ``None`` when off; ``budget`` the fields
        of :class:`Budget`."""
        return {
            "trigger": self.trigger.to_dict(),
            "width": asdict(self.width) if self.width else None,
            "depth": asdict(self.depth) if self.depth else None,
            "order": self.order,
            "budget": asdict(self.budget),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DepthWidthPolicy:
        if not isinstance(d, dict):
            _fail("policy", "a table of settings", d)
        known = {"trigger", "width", "depth", "order", "budget", "seed"}
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
            name: None if d.get(name) is None else _section_from_dict(name, d[name])
            for name in ("width", "depth", "budget")
        }
        return cls(
            trigger,
            **sections,
            order=d.get("order", "width_first"),
            seed=d.get("seed", 0),
        )

    # -- deciding --------------------------------------------------------------------------------
    def propose(self, trainer: Trainer) -> Growth | None:
        if not self._checked:  # fail on the first step, not at the first decision
            if self.depth is not None:
                trainer.net.spec.require_identity_insertion()
            self._checked = True
        if not self.trigger.fires(trainer, self._last_decision_step):
            return None
        self._last_decision_step = trainer.step
        self.decisions += 1
        kinds = [self._propose_width, self._propose_depth]
        if self.order == "depth_first":
            kinds.reverse()
        spent = 0
        for propose in kinds:
            growth, flops = propose(trainer)
            spent += flops
            if growth is not None:
                growth.scoring_flops = spent
                return growth
        trainer.flops += spent  # nothing to apply: count the scoring passes here
        trainer.growth_flops += spent
        return None

    def _remaining_steps(self, trainer: Trainer) -> int:
        return max(trainer.config.steps - trainer.step, 0)

    def _batch_size(self, trainer: Trainer) -> int:
        return trainer.config.batch_size or len(trainer.data.x_train)

    def _projected_flops(self, trainer: Trainer, spec: ArchitectureSpec, scoring: int) -> int:
        """The run's FLOPs if ``spec`` trained the remaining steps after a ``scoring`` pass."""
        steps = self._remaining_steps(trainer)
        return trainer.flops + scoring + steps * train_step_flops(spec, self._batch_size(trainer))

    def _fits(self, trainer: Trainer, spec: ArchitectureSpec, scoring: int) -> bool:
        b = self.budget
        if b.max_params is not None and parameter_count(spec) > b.max_params:
            return False
        return b.max_flops is None or self._projected_flops(trainer, spec, scoring) <= b.max_flops

    def _samples(self, trainer: Trainer, n: int | None) -> list[tuple[Tensor, Tensor]]:
        """``n`` training samples drawn afresh (``None``: all, in order), in scoring batches."""
        x, y = trainer.data.x_train, trainer.data.y_train
        if n is not None and n < len(x):
            idx = torch.randperm(len(x), generator=self._generator)[:n]
            x, y = x[idx], y[idx]
        return [
            (x[i : i + SCORING_BATCH], y[i : i + SCORING_BATCH])
            for i in range(0, len(x), SCORING_BATCH)
        ]

    # -- width -------------------------------------------------------------------------------------
    def _width_samples(self, trainer: Trainer) -> _Draw:
        """This decision's samples: drawn afresh, or the run's one draw (``samples="fixed"``)."""
        w = self.width
        if w.samples == "fixed" and self._fixed is not None and self._fixed.data is trainer.data:
            return self._fixed
        batches = self._samples(trainer, w.statistics_samples)
        searched = [] if w.strategy in FUNCTION_PRESERVING else batches
        if searched and w.line_search_samples is not None:
            searched = self._samples(trainer, w.line_search_samples)
        if w.samples == "fresh":
            return _Draw(trainer.data, batches, searched)
        covariance = None if trainer.net.spec.residual else InputCovariance(batches)
        self._fixed = _Draw(trainer.data, batches, searched, covariance)
        return self._fixed

    def _neuron_caps(self, trainer: Trainer, scoring: int) -> dict[int, int]:
        """Per site, the most neurons one step may add under the limits and the budget."""
        w, b = self.width, self.budget
        spec = trainer.net.spec
        bs, steps = self._batch_size(trainer), self._remaining_steps(trainer)
        params, step_flops = parameter_count(spec), train_step_flops(spec, bs)
        caps = {}
        for s in sites(spec):
            cap = w.max_neurons or 10**9
            if w.max_width is not None:
                cap = min(cap, w.max_width - spec.widths[s])
            one = widened_spec(spec, s, 1)
            if b.max_params is not None:
                cap = min(cap, (b.max_params - params) // (parameter_count(one) - params))
            if b.max_flops is not None:
                slack = b.max_flops - self._projected_flops(trainer, spec, scoring)
                per_neuron = steps * (train_step_flops(one, bs) - step_flops)
                cap = min(
                    cap, slack // per_neuron if per_neuron > 0 else (10**9 if slack >= 0 else 0)
                )
            caps[s] = max(int(cap), 0)
        return caps

    def _propose_width(self, trainer: Trainer) -> tuple[Growth | None, int]:
        w = self.width
        if w is None:
            return None, 0
        net = trainer.net
        draw = self._width_samples(trainer)
        batches, searched, covariance = draw.batches, draw.searched, draw.covariance
        n_search = sum(len(x) for x, _ in searched)
        # Before scoring: the sites that could take a neuron after a statistics pass over all
        # sites (an upper bound of its cost, so a declined decision also stays within budget).
        whole = BottleneckStatistics(net, input_covariance=covariance)
        estimate = draw.uncounted_flops + sum(whole.flops_per_batch(len(x)) for x, _ in batches)
        caps = self._neuron_caps(trainer, estimate)
        open_sites = [s for s, c in caps.items() if c >= 1]
        if not open_sites:
            return None, 0
        stats = BottleneckStatistics(
            net, sites=open_sites, ridge=w.ridge, input_covariance=covariance
        )
        for x, y in batches:
            stats.update(x, y)
        stats.flops += draw.uncounted_flops  # the input covariance, at its first decision
        draw.uncounted_flops = 0
        plan = bottlenecks(stats, w.neuron_selection(), max_neurons=w.max_neurons)
        # After scoring: as many of each site's neurons as fit with the line search's cost too.
        counts = {}
        for s, p in plan.items():
            k = min(p.neurons, caps[s])
            while k > 0 and not self._fits(
                trainer,
                grown := widened_spec(net.spec, s, k),
                stats.flops + LINE_SEARCH_EVALUATIONS * forward_flops(grown, n_search),
            ):
                k -= 1
            counts[s] = k
        gains = {s: float(p.gains[: counts[s]].sum()) for s, p in plan.items()}
        scores = {s: g / stats.loss if stats.loss > 0 else 0.0 for s, g in gains.items()}
        site = max(scores, key=scores.get)
        k = counts[site]
        if k == 0 or scores[site] < w.min_relative_gain:
            return None, stats.flops
        proposal = self._strategy.propose(stats, site, k)
        gamma, loss_after, search_flops = 1.0, stats.loss, 0
        if not proposal.preserves_function:
            search = proposal.line_search(searched)
            search_flops = search.flops
            if search.gamma == 0:
                return None, stats.flops + search_flops
            gamma, loss_after = search.gamma, search.losses[search.gamma]
        grown = proposal.apply(gamma)
        cost = stats.flops + search_flops
        event = GrowthEvent(
            step=trainer.step,
            kind="neurons",
            position=site,
            score=scores[site],
            spec_before=net.spec,
            spec_after=grown.spec,
            params_before=parameter_count(net.spec),
            params_after=parameter_count(grown.spec),
            details={
                "strategy": w.strategy,
                "selection": w.selection,
                "neurons": k,
                "gamma": gamma,
                "scores": {str(s): v for s, v in scores.items()},
                "gains": plan[site].gains[:k].tolist(),
                "caps": {str(s): c for s, c in counts.items()},
                "update_decrease": plan[site].update_decrease,
                "loss": stats.loss,
                "loss_after": loss_after,
                "statistics_flops": stats.flops,
                "line_search_flops": search_flops,
                "scoring_flops": cost,
            },
        )
        return Growth(grown.net, event, grown.param_map, scoring_flops=cost), cost

    # -- depth -------------------------------------------------------------------------------------
    def _propose_depth(self, trainer: Trainer) -> tuple[Growth | None, int]:
        d = self.depth
        net = trainer.net
        if d is None or (d.max_depth is not None and net.spec.depth >= d.max_depth):
            return None, 0
        batches = self._samples(trainer, d.score_samples)
        ext_spec = sensitivity.extended_network(net)[0].spec
        estimate = sum(train_step_flops(ext_spec, len(x)) for x, _ in batches)  # an upper bound
        allowed = [
            p
            for p in sensitivity.positions(net.spec)
            if self._fits(trainer, sensitivity.inserted_spec(net.spec, p), estimate)
        ]
        if not allowed:
            return None, 0
        sens = sensitivity.sensitivities(net, batches, score=d.score)
        scores = {p: sens.scores[p] for p in allowed}
        position = sensitivity.Sensitivities(scores, sens.flops, sens.loss).select(
            d.selection, rng=self._rng
        )
        grown = sensitivity.insert(net, position)
        event = sensitivity.insertion_event(
            trainer.step, net, grown, sens, position,
            allowed=allowed, score_kind=d.score, selection=d.selection,
        )  # fmt: skip
        growth = Growth(
            grown.net,
            event,
            grown.param_map,
            scoring_flops=sens.flops,
            fresh_optimizer=d.fresh_optimizer,
            lr_factor=d.lr_factor,
        )
        return growth, sens.flops
