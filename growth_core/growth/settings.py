"""The growth policy's settings, as plain data: how layers widen, how layers are inserted, and
the budget every growth step respects (with the arithmetic that checks it).

Each section is a frozen dataclass validated at construction; a bad value raises
:class:`PolicyError` naming the field (``width.ridge: expected ...``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

from .._checks import fail, require_choice, require_int, require_number
from ..events import TrainingState
from ..flops import parameter_count, train_step_flops
from ..spec import ArchitectureSpec
from . import sensitivity
from ._conv_strategies import CONV_STRATEGIES, ChannelStrategy, ConvRandomGrowth
from ._proposal import widened_spec
from ._selection import (
    GROMO_SINGULAR_VALUE_THRESHOLD,
    HELD_OUT_Z,
    HeldOutGain,
    NeuronSelection,
    SingularValueThreshold,
)
from ._sites import sites
from ._strategies import STRATEGIES, NeuronStrategy, RandomGrowth
from .bottleneck import MIN_RELATIVE_GAIN

#: Width strategies by name (:mod:`._strategies`).
WIDTH_STRATEGIES = tuple(STRATEGIES)
#: Neuron selection rules by name: the held-out test (ours) or GroMo's singular-value threshold.
WIDTH_SELECTIONS = ("held_out", "singular_value")
#: How each decision's statistics samples are drawn: afresh, or once for the whole run.
SAMPLE_DRAWS = ("fresh", "fixed")
#: Samples the bottleneck statistics read per decision: the TINY paper's MNIST setting (10k).
STATISTICS_SAMPLES = 10_000
#: The most neurons a step may add when nothing else caps it.
UNCAPPED = 10**9


class PolicyError(ValueError):
    """A policy setting with a bad value; the message names the field."""


_int = partial(require_int, optional=True, error=PolicyError)
_number = partial(require_number, error=PolicyError)
_choice = partial(require_choice, error=PolicyError)


@dataclass(frozen=True)
class WidthGrowth:
    """How layers widen: :func:`~.bottleneck.widen` picks the site and the number of neurons,
    ``strategy`` (a name of :data:`WIDTH_STRATEGIES` or a
    :class:`~.bottleneck.NeuronStrategy`) gives them their weights, a line search their
    amplitude.

    ``selection`` ``"held_out"`` keeps neurons whose gain is significant at ``z`` standard errors
    on held-out samples; ``"singular_value"`` keeps ``lambda_k >= threshold`` (GroMo). Each step
    adds at most ``max_neurons``, and no hidden layer grows beyond ``max_width``.
    ``line_search_samples=None`` searches the amplitude on the statistics samples.
    ``samples``: ``"fresh"`` draws the statistics (and line-search) samples anew at every
    decision; ``"fixed"`` draws them once for the run, which lets a feedforward net's first site
    reuse its input covariance (:class:`~.bottleneck.InputCovariance`, computed and counted
    once): on MNIST that is most of a decision's FLOPs.
    """

    strategy: str | NeuronStrategy = "tiny"
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
        if not isinstance(self.strategy, NeuronStrategy):
            _choice("width.strategy", self.strategy, WIDTH_STRATEGIES)
        _choice("width.selection", self.selection, WIDTH_SELECTIONS)
        _number("width.z", self.z, 0.0)
        _number("width.threshold", self.threshold, 0.0)
        _int("width.max_neurons", self.max_neurons, 1)
        _int("width.max_width", self.max_width, 1)
        _number("width.min_relative_gain", self.min_relative_gain, 0.0)
        _int("width.statistics_samples", self.statistics_samples, 2, optional=False)
        _int("width.line_search_samples", self.line_search_samples, 1)
        _number("width.ridge", self.ridge, 0.0)
        _choice("width.samples", self.samples, SAMPLE_DRAWS)

    @property
    def strategy_name(self) -> str:
        return self.strategy if isinstance(self.strategy, str) else self.strategy.name

    def neuron_selection(self) -> NeuronSelection:
        if self.selection == "held_out":
            return HeldOutGain(self.z)
        return SingularValueThreshold(self.threshold)

    def neuron_strategy(self, seed: int) -> NeuronStrategy:
        """The strategy object: the one given, or a new one by name (random neurons seeded)."""
        if isinstance(self.strategy, NeuronStrategy):
            return self.strategy
        cls = STRATEGIES[self.strategy]
        return RandomGrowth(seed=seed) if cls is RandomGrowth else cls()

    def channel_strategy(self, seed: int) -> ChannelStrategy:
        """The conv counterpart of :meth:`neuron_strategy`, by the same name; a conv net's
        channels take ``selection="singular_value"`` (GroMo's threshold), the held-out test
        being built for linear sites only."""
        if not isinstance(self.strategy, str):
            raise PolicyError("width.strategy: a conv net takes a strategy by name")
        if self.selection != "singular_value":
            raise PolicyError(
                f"width.selection: a conv net's channels take 'singular_value' (GroMo's "
                f"threshold), got {self.selection!r}; the held-out test is for MLPs only"
            )
        cls = CONV_STRATEGIES[self.strategy]
        return ConvRandomGrowth(seed=seed) if cls is ConvRandomGrowth else cls()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "strategy": self.strategy_name}


@dataclass(frozen=True)
class DepthGrowth:
    """How layers are inserted: ``score`` and ``selection`` as in :mod:`.sensitivity`, at most
    ``max_depth`` hidden layers (blocks; convolutions for a conv net). The scores read
    ``score_batches`` mini-batches of the training batch size, from the start of the training
    set (``None``: one pass over it), as the paper's reference code does."""

    score: str = "v2"
    selection: str = "max"
    max_depth: int | None = None
    score_batches: int | None = None

    def __post_init__(self) -> None:
        _choice("depth.score", self.score, sensitivity.SCORES)
        _choice("depth.selection", self.selection, sensitivity.SELECTIONS)
        _int("depth.max_depth", self.max_depth, 1)
        _int("depth.score_batches", self.score_batches, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """Limits every growth step respects (``None``: no limit).

    - ``max_params``: the grown network's parameter count;
    - ``max_flops``: the whole run's training FLOPs as the trainer counts them (steps plus
      scoring passes): a change is made only if the FLOPs spent so far, plus the decision's
      scoring pass, plus the remaining steps at the grown size stay within it.
    """

    max_params: int | None = None
    max_flops: int | None = None

    def __post_init__(self) -> None:
        _int("budget.max_params", self.max_params, 1)
        _int("budget.max_flops", self.max_flops, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def projected_flops(self, state: TrainingState, spec: ArchitectureSpec, scoring: int) -> int:
        """The run's FLOPs if ``spec`` trained the remaining steps after a ``scoring`` pass."""
        steps = max(state.total_steps - state.step, 0)
        return state.flops + scoring + steps * train_step_flops(spec, state.batch_size)

    def fits(self, state: TrainingState, spec: ArchitectureSpec, scoring: int) -> bool:
        """Whether growing to ``spec`` after a ``scoring`` pass stays within every limit."""
        if self.max_params is not None and parameter_count(spec) > self.max_params:
            return False
        return (
            self.max_flops is None or self.projected_flops(state, spec, scoring) <= self.max_flops
        )

    def neuron_caps(self, state: TrainingState, width: WidthGrowth, scoring: int) -> dict[int, int]:
        """Per site, the most neurons one step may add under ``width``'s limits and the budget,
        after a ``scoring`` pass."""
        spec = state.net.spec
        bs, steps = state.batch_size, max(state.total_steps - state.step, 0)
        params, step_flops = parameter_count(spec), train_step_flops(spec, bs)
        caps = {}
        for s in sites(spec):
            cap = width.max_neurons or UNCAPPED
            if width.max_width is not None:
                cap = min(cap, width.max_width - spec.widths[s])
            one = widened_spec(spec, s, 1)
            if self.max_params is not None:
                cap = min(cap, (self.max_params - params) // (parameter_count(one) - params))
            if self.max_flops is not None:
                slack = self.max_flops - self.projected_flops(state, spec, scoring)
                per_neuron = steps * (train_step_flops(one, bs) - step_flops)
                if per_neuron > 0:
                    cap = min(cap, slack // per_neuron)
                elif slack < 0:
                    cap = 0
            caps[s] = max(int(cap), 0)
        return caps


SECTIONS = {"width": WidthGrowth, "depth": DepthGrowth, "budget": Budget}


def section_from_dict(name: str, d: Any) -> Any:
    """The settings section ``name`` from its dict; unknown keys are refused by name."""
    cls = SECTIONS[name]
    if not isinstance(d, dict):
        fail(name, "a table of settings", d, error=PolicyError)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise PolicyError(
            f"{name}.{unknown[0]}: unknown setting; expected {', '.join(sorted(known))}"
        )
    return cls(**d)
