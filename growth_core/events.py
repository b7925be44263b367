"""What every growth method shares: the proposed change, the decision, the event, the policy.

A policy sees a :class:`TrainingState` (the step, the network, the data, the training settings,
the history), never the trainer itself, and answers each step with a :class:`Decision`: a
:class:`Growth` to apply or none, and the FLOPs its scoring passes cost either way. The trainer
applies the growth and is the only one that counts FLOPs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn

from .families import Spec, spec_from_dict

if TYPE_CHECKING:
    from .data import Dataset

LossFn = Callable[[Tensor, Tensor], Tensor]


class TrainingState(Protocol):
    """What a growth policy may read of a training run."""

    step: int
    """Optimizer steps taken."""
    net: nn.Module
    data: Dataset
    loss_fn: LossFn
    batch_size: int
    """The training mini-batch (the training set's size when training full batch)."""
    total_steps: int
    flops: int
    """Training FLOPs counted so far, growth decisions included."""

    @property
    def history(self) -> Sequence[dict[str, Any]]:
        """One row per logged step (``step``, ``loss``, ...)."""


@dataclass(frozen=True)
class Change:
    """A grown network and, per parameter name, the old parameter it continues (new parameters
    are absent), so that optimizer state can follow the weights."""

    net: nn.Module
    param_map: dict[str, str]

    @property
    def spec(self) -> Spec:
        return self.net.spec


@dataclass(frozen=True)
class GrowthEvent:
    """One growth step, as the trainer keeps it and the tracker logs it."""

    step: int
    kind: str
    """``"layer"`` (a layer or block inserted) or ``"neurons"`` (a layer widened)."""
    position: int
    score: float
    spec_before: Spec
    spec_after: Spec
    params_before: int
    params_after: int
    details: dict[str, Any] = field(default_factory=dict)
    """Method-specific figures: every candidate's score, the FLOPs the decision cost, ..."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind,
            "position": self.position,
            "score": self.score,
            "spec_before": self.spec_before.to_dict(),
            "spec_after": self.spec_after.to_dict(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GrowthEvent:
        return cls(
            **{
                **d,
                "spec_before": spec_from_dict(d["spec_before"]),
                "spec_after": spec_from_dict(d["spec_after"]),
            }
        )


@dataclass(frozen=True)
class Growth:
    """A decided change and its record, ready for the trainer to apply atomically."""

    change: Change
    event: GrowthEvent

    @property
    def net(self) -> nn.Module:
        return self.change.net

    @property
    def param_map(self) -> dict[str, str]:
        return self.change.param_map


@dataclass(frozen=True)
class Decision:
    """A policy's answer after one step: the growth to apply (or ``None``) and the FLOPs its
    scoring passes cost, which the trainer counts whether or not anything grows."""

    growth: Growth | None = None
    scoring_flops: int = 0


#: Nothing to do and nothing spent: the answer on most steps.
NO_DECISION = Decision()


class GrowthPolicy(ABC):
    """Decides, after each optimizer step, whether and how the network grows."""

    @abstractmethod
    def decide(self, state: TrainingState) -> Decision:
        """Called after every optimizer step; must not change ``state``."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to decide as this policy would have (random states,
        counters); a policy with none returns ``{}``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back :meth:`state_dict`'s state (a policy with none ignores it)."""
        del state
