"""When to grow: at fixed steps (the paper) or when training stalls (the revised paper)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

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


def trigger_from_dict(d: dict[str, Any]) -> Trigger:
    kinds = {"at_steps": AtSteps, "on_plateau": OnPlateau}
    kind = d.get("kind")
    if kind not in kinds:
        raise ValueError(f"kind: unknown trigger {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind](**{k: v for k, v in d.items() if k != "kind"})
