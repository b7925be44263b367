"""When to grow: at fixed steps (the paper), at fixed fractions of the run (a schedule that
holds whatever the run's length), or when training stalls (the revised paper)."""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from .._checks import require_int
from ..events import TrainingState


class Trigger(ABC):
    """Says whether now is a time to grow."""

    @abstractmethod
    def fires(self, state: TrainingState, last_growth_step: int) -> bool:
        """True when the network should grow after the current step."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AtSteps(Trigger):
    """Grow right after each of these optimizer steps (Herberg et al.: step 450 of 1850)."""

    steps: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(sorted(self.steps)))
        if any(s <= 0 for s in self.steps):
            raise ValueError(f"steps: expected positive step numbers, got {self.steps}")

    def fires(self, state: TrainingState, last_growth_step: int) -> bool:
        return state.step in self.steps

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "at_steps", "steps": list(self.steps)}


@dataclass(frozen=True)
class AtFractions(Trigger):
    """Grow right after the steps at these fractions of the run: ``round(f * total_steps)``
    (at least step 1). ``AtFractions.evenly(k, until)`` spreads ``k`` decisions over the first
    ``until`` of the run, as bench/tiny_growth.py times TINY's decisions."""

    fractions: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(sorted(self.fractions)))
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions: expected numbers in (0, 1], got {self.fractions}")

    @classmethod
    def evenly(cls, decisions: int, until: float = 1.0) -> AtFractions:
        require_int("decisions", decisions, 1)
        return cls(tuple(until * k / decisions for k in range(1, decisions + 1)))

    def steps(self, total_steps: int) -> frozenset[int]:
        return _fraction_steps(self.fractions, total_steps)

    def fires(self, state: TrainingState, last_growth_step: int) -> bool:
        return state.step in self.steps(state.total_steps)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "at_fractions", "fractions": list(self.fractions)}


@dataclass(frozen=True)
class OnPlateau(Trigger):
    """Grow when the loss stops falling: the relative decrease of the mean training loss over
    the last ``window`` steps against the ``window`` steps before falls below ``threshold``.

    Checked every ``window`` steps, never sooner than two windows after the last growth, so the
    loss a comparison sees was made by one architecture. Means over windows keep mini-batch
    noise out of the decision.
    """

    window: int = 50
    threshold: float = 0.01

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window: expected a positive integer, got {self.window}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold: expected a finite number, got {self.threshold}")

    def fires(self, state: TrainingState, last_growth_step: int) -> bool:
        w = self.window
        step = state.step
        if step % w or step - last_growth_step < 2 * w:
            return False
        losses = [row["loss"] for row in state.history[-2 * w :] if "loss" in row]
        if len(losses) < 2 * w:
            return False
        before, now = sum(losses[:w]) / w, sum(losses[w:]) / w
        return (before - now) / max(abs(before), 1e-12) < self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "on_plateau", "window": self.window, "threshold": self.threshold}


@functools.lru_cache(maxsize=64)
def _fraction_steps(fractions: tuple[float, ...], total_steps: int) -> frozenset[int]:
    return frozenset(max(1, round(f * total_steps)) for f in fractions)


def trigger_from_dict(d: dict[str, Any]) -> Trigger:
    kinds = {"at_steps": AtSteps, "at_fractions": AtFractions, "on_plateau": OnPlateau}
    kind = d.get("kind")
    if kind not in kinds:
        raise ValueError(f"kind: unknown trigger {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind](**{k: v for k, v in d.items() if k != "kind"})
