"""The training loop: steps, evaluation, FLOP accounting, growth hooks, history.

One :class:`Trainer` trains one network on one :class:`~growth_core.data.Dataset`. After every
optimizer step it asks its growth policy (if any) for a :class:`~growth_core.events.Decision`,
counts the FLOPs the decision's scoring cost and, when it holds a growth, applies it atomically:
swaps in the grown network, carries the optimizer state of every surviving parameter and records
the :class:`~growth_core.events.GrowthEvent`. The trainer is the only writer of its FLOPs.

Small hook points in the style of minGPT: ``trainer.add_callback("on_step_end", fn)``,
``"on_growth"`` and ``"on_eval"``, each called with the trainer. An optional ``penalty`` (e.g.
:class:`~growth_core.diversity.DecorrelationPenalty`) adds a term computed from the hidden layers'
outputs of the same forward pass to the training loss; without one the step is unchanged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import require_choice, require_int, require_number
from .data import Dataset
from .events import Decision, Growth, GrowthEvent, GrowthPolicy, LossFn
from .flops import parameter_count, train_step_flops
from .optim import carry_optimizer_state, make_optimizer
from .spec import ArchitectureSpec

OPTIMIZERS = ("sgd", "adam")
CALLBACK_EVENTS = ("on_step_end", "on_growth", "on_eval")
#: Logged steps wait, as detached tensors, until this many logit entries have gathered (or the
#: history is read); then one batched reduction gives all their losses and accuracies. A tiny
#: reduction right after an optimizer step runs on cold caches and costs about as much as a
#: hundred of them batched: per step it was 3% of a small MLP's step.
PENDING_ELEMENTS = 1 << 16


class TrainConfigError(ValueError):
    """A training setting with a bad value; the message names the field."""


class DivergedError(RuntimeError):
    """The loss became NaN or infinite: the run cannot go on (nothing it made is usable)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train: for ``steps`` optimizer steps or ``epochs`` passes over the training set
    (one of the two). ``batch_size=None`` trains full batch (the layer-insertion paper)."""

    steps: int | None = None
    epochs: int | None = None
    lr: float = 0.1
    optimizer: str = "sgd"
    batch_size: int | None = None
    eval_every: int = 0
    """Evaluate on the test set every this many steps (0: only at the end)."""
    log_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        fail = TrainConfigError
        if (self.steps is None) == (self.epochs is None):
            raise fail(f"steps: give steps or epochs, not both nor neither (epochs={self.epochs})")
        require_int("steps", self.steps, 0, optional=True, error=fail)
        require_int("epochs", self.epochs, 0, optional=True, error=fail)
        require_number("lr", self.lr, 0.0, strict=True, error=fail)
        require_choice("optimizer", self.optimizer, OPTIMIZERS, error=fail)
        require_int("batch_size", self.batch_size, 1, optional=True, error=fail)
        require_int("eval_every", self.eval_every, 0, error=fail)
        require_int("log_every", self.log_every, 1, error=fail)

    def steps_per_epoch(self, n_train: int, world_size: int = 1) -> int:
        """Steps of one pass over the largest of ``world_size`` shards of ``n_train`` samples:
        every rank takes the same number of steps."""
        shard = math.ceil(n_train / world_size)
        return 1 if self.batch_size is None else max(1, math.ceil(shard / self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Penalty(Protocol):
    """A term added to the training loss, computed from the hidden layers' outputs."""

    def __call__(self, hidden: list[Tensor]) -> Tensor:
        """The term, from ``forward_with_hidden``'s list of ``(batch, width)`` outputs."""

    def flops(self, spec: ArchitectureSpec, n: int) -> int:
        """Matrix-product FLOPs the term adds to a training step on ``n`` samples."""


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    events: list[GrowthEvent]
    net: nn.Module
    flops: int
    growth_flops: int

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]


class Trainer:
    """Trains ``net`` on ``data``; grows it when ``policy`` says so."""

    def __init__(
        self,
        net: nn.Module,
        data: Dataset,
        config: TrainConfig,
        *,
        policy: GrowthPolicy | None = None,
        loss_fn: LossFn = F.cross_entropy,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        shard: tuple[int, int] = (0, 1),
        eval_name: str = "test",
        penalty: Penalty | None = None,
    ) -> None:
        """``wrap`` (e.g. DDP) is applied to the network now and after every growth step; the
        wrapped module runs the training forward pass. ``shard = (rank, world_size)`` trains on
        every ``world_size``-th training sample from ``rank``; evaluation and growth scoring
        see the whole dataset (a policy spread over processes scores its share: ``Reducer``).
        ``eval_name`` names the held-out metrics (``"val"`` for a validation split).
        ``penalty`` is added to the loss of every training step (history key ``"penalty"``);
        it reads the hidden outputs, so it needs the unwrapped network and cannot be combined
        with ``wrap``. ``loss_fn(logits, labels)``, a mean over the batch, is the training loss
        and the one growth decisions score.

        The data moves to the network's device once: steps, evaluation, growth run there."""
        rank, world = shard
        if penalty is not None and wrap is not None:
            raise ValueError("penalty: needs the unwrapped network's hidden outputs; drop wrap")
        if not 0 <= rank < world:
            raise ValueError(f"shard: expected (rank, world_size), 0 <= rank < world_size: {shard}")
        self.net = net
        self.eval_name = eval_name
        self.data = data.to(next(net.parameters()).device)
        self.config = config
        self.policy = policy
        self.loss_fn = loss_fn
        self.penalty = penalty
        self.step = 0
        self.flops = 0
        """Cumulative training FLOPs, including what growth decisions cost."""
        self.growth_flops = 0
        self._history: list[dict[str, Any]] = []
        self._pending: list[tuple[dict[str, Any], Tensor, Tensor, Tensor]] = []
        self._pending_elements = 0
        self.events: list[GrowthEvent] = []
        self._callbacks: dict[str, list[Callable[[Trainer], None]]] = defaultdict(list)
        self._wrap = wrap
        x, y = self.data.x_train, self.data.y_train
        self._x_shard, self._y_shard = (x[rank::world], y[rank::world]) if world > 1 else (x, y)
        self._generator = torch.Generator().manual_seed(config.seed)
        self._order: Tensor | None = None
        self._cursor = 0
        self._decided_step = 0  # the last step the policy was asked about
        self._decide_pending = False  # resumed from a state saved before its step's decision
        self.steps_per_epoch = config.steps_per_epoch(data.n_train, world)
        self.total_steps = (
            config.steps if config.epochs is None else config.epochs * self.steps_per_epoch
        )
        """The run's length in optimizer steps (``epochs`` turned into steps)."""
        self.batch_size = min(config.batch_size or data.n_train, len(self._x_shard))
        self.optimizer = make_optimizer(net, config)
        self._on_architecture_change()

    # -- hooks ---------------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        if event not in CALLBACK_EVENTS:
            raise ValueError(f"event: unknown {event!r}; expected one of {CALLBACK_EVENTS}")
        self._callbacks[event].append(fn)

    def _fire(self, event: str) -> None:
        for fn in self._callbacks.get(event, ()):
            fn(self)

    # -- data ----------------------------------------------------------------------------------
    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next training batch: the whole set, or the next slice of a per-epoch shuffle."""
        x, y = self._x_shard, self._y_shard
        bs = self.config.batch_size
        if bs is None or bs >= len(x):
            return x, y
        if self._order is None or self._cursor + bs > len(x):
            self._order = torch.randperm(len(x), generator=self._generator)
            self._cursor = 0
        idx = self._order[self._cursor : self._cursor + bs]
        self._cursor += bs
        return x[idx], y[idx]

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimizer step on ``(x, y)``; returns the logits (detached)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.penalty is None:
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            total = loss
        else:
            logits, hidden = self.net.forward_with_hidden(x)
            loss = self.loss_fn(logits, y)
            term = self.penalty(hidden)
            total = loss + term
            self._last_penalty_t = term.detach()
        total.backward()
        self.optimizer.step()
        self.step += 1
        self.flops += self._step_flops(len(x))
        self._last_loss_t = loss.detach()
        return logits.detach()

    def _step_flops(self, n: int) -> int:
        flops = self._flops_cache.get(n)
        if flops is None:
            flops = train_step_flops(self.net.spec, n)
            if self.penalty is not None:
                flops += self.penalty.flops(self.net.spec, n)
            self._flops_cache[n] = flops
        return flops

    def fit(self) -> TrainResult:
        """Train for the configured steps (or epochs); evaluate at the end."""
        self.train_until(self.total_steps)
        self.evaluate()
        return TrainResult(self.history, self.events, self.net, self.flops, self.growth_flops)

    def train_until(self, step: int) -> None:
        """Train (logging, growing, evaluating every ``eval_every``) until ``step`` steps are
        done, at most ``total_steps``; no final evaluation. ``fit`` is this plus one."""
        cfg, total = self.config, self.total_steps
        step = min(step, total)
        if self._decide_pending:
            self._decide_pending = False
            self._decide()  # resumed from a state saved before this step's decision
        while self.step < step:
            x, y = self.next_batch()
            logits = self.train_step(x, y)
            if self.step % cfg.log_every == 0 or self.step == total:
                self._log(logits, y)
            self._fire("on_step_end")
            if self.policy is not None:
                self._decide()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < total:
                self.evaluate()

    def _decide(self) -> None:
        self._decided_step = self.step
        self.apply(self.policy.decide(self))

    # -- resuming ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All but the network (spec, weights) that continuing this run needs: counters,
        history, events, data order and position, optimizer and policy states. A ``Trainer``
        on the same network, data and config, given it by :meth:`load_state_dict`, trains on
        exactly as this one would have (saved before a step's decision, it makes it first)."""
        return {
            "step": self.step,
            "flops": self.flops,
            "growth_flops": self.growth_flops,
            "decide_pending": self.policy is not None and 0 < self.step != self._decided_step,
            "history": [dict(row) for row in self.history],
            "events": [e.to_dict() for e in self.events],
            "generator": self._generator.get_state(),
            "order": self._order,
            "cursor": self._cursor,
            "optimizer": self.optimizer.state_dict(),
            "policy": self.policy.state_dict() if self.policy is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (this trainer built on the network it was saved
        with)."""
        self.step, self.flops = state["step"], state["flops"]
        self.growth_flops = state["growth_flops"]
        self._decided_step = self.step
        self._decide_pending = state["decide_pending"]
        self._history = [dict(row) for row in state["history"]]
        self._pending, self._pending_elements = [], 0
        self.events = [GrowthEvent.from_dict(e) for e in state["events"]]
        self._generator.set_state(state["generator"])
        self._order, self._cursor = state["order"], state["cursor"]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.policy is not None:
            self.policy.load_state_dict(state["policy"])

    # -- history -------------------------------------------------------------------------------
    @property
    def history(self) -> list[dict[str, Any]]:
        """One row per logged step (``step, loss, accuracy, flops, params, depth, widths``) and
        per evaluation (``{eval_name}_loss``, ``{eval_name}_accuracy``)."""
        self._flush()
        return self._history

    def _row(self) -> dict[str, Any]:
        """A history row of the current step: what the network is and has cost so far."""
        return {
            "step": self.step,
            "flops": self.flops,
            "params": self._params,
            "depth": self.net.spec.depth,
            "widths": self._widths,
        }

    def _log(self, logits: Tensor, y: Tensor) -> None:
        row = self._row()
        self._history.append(row)
        self._pending.append((row, self._last_loss_t, logits, y))
        if self.penalty is not None:
            row["penalty"] = self._last_penalty_t
        self._pending_elements += logits.numel()
        if self._pending_elements >= PENDING_ELEMENTS:
            self._flush()

    def _flush(self) -> None:
        """Fill the pending rows' ``loss``, ``accuracy`` (and ``penalty``) in one reduction."""
        if not self._pending:
            return
        rows, losses, logits, labels = zip(*self._pending, strict=True)
        self._pending, self._pending_elements = [], 0
        if len({t.shape for t in logits}) == 1:
            correct = torch.eq(torch.stack(logits).argmax(-1), torch.stack(labels)).sum(-1)
        else:
            pairs = zip(logits, labels, strict=True)
            correct = torch.stack([torch.eq(z.argmax(-1), t).sum() for z, t in pairs])
        values = zip(rows, torch.stack(losses).tolist(), correct.tolist(), labels, strict=True)
        for row, loss, hits, y in values:
            if not math.isfinite(loss):
                raise DivergedError(
                    f"training loss {loss} at step {row['step']} (lr {self.config.lr:g}): "
                    "the run diverged"
                )
            row["loss"] = loss
            row["accuracy"] = hits / len(y)
            if "penalty" in row:
                row["penalty"] = float(row["penalty"])

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, split: str = "test", *, on: tuple[Tensor, Tensor] | None = None
    ) -> dict[str, float]:
        """Loss and accuracy on the held-out (``"test"``) or the training split, added to the
        history row of the current step as ``{eval_name}_loss`` / ``train_full_loss``. With
        ``on = (x, y)``, on those samples instead, named ``{split}_loss`` (a second held-out
        split: the final fit evaluates its validation and its test split)."""
        if on is not None:
            (x, y), name = on, split
        elif split == "test":
            x, y, name = self.data.x_test, self.data.y_test, self.eval_name
        else:
            x, y, name = self.data.x_train, self.data.y_train, "train_full"
        logits = self.net(x)
        metrics = {
            f"{name}_loss": self.loss_fn(logits, y).item(),
            f"{name}_accuracy": (logits.argmax(1) == y).float().mean().item(),
        }
        if not math.isfinite(metrics[f"{name}_loss"]):  # argmax of NaN logits still "scores"
            raise DivergedError(
                f"{name} loss {metrics[f'{name}_loss']} at step {self.step}: the network's "
                "outputs are not finite"
            )
        history = self.history
        if not history or history[-1]["step"] != self.step:
            history.append(self._row())
        history[-1].update(metrics)
        self._fire("on_eval")
        return metrics

    # -- growth --------------------------------------------------------------------------------
    def apply(self, decision: Decision) -> None:
        """Count what the decision's scoring cost and apply its growth, if any."""
        self.flops += decision.scoring_flops
        self.growth_flops += decision.scoring_flops
        if decision.growth is not None:
            self.apply_growth(decision.growth)

    def apply_growth(self, growth: Growth) -> None:
        """Swap in the grown network and carry the optimizer state; one atomic step."""
        old_net, old_opt = self.net, self.optimizer
        self.optimizer = make_optimizer(growth.net, self.config)
        carry_optimizer_state(old_opt, old_net, self.optimizer, growth.net, growth.param_map)
        self.net = growth.net
        self.events.append(growth.event)
        self._on_architecture_change()
        self._fire("on_growth")

    def _on_architecture_change(self) -> None:
        self.model = self._wrap(self.net) if self._wrap else self.net
        self._widths = list(self.net.spec.widths)  # shared by the history rows of this spec
        self._params = parameter_count(self.net.spec)
        self._flops_cache: dict[int, int] = {}
