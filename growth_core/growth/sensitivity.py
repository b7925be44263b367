"""Sensitivity-based layer insertion (SensLI).

Herberg, Herzog, Köhne, Kreis, Schiela, "Sensitivity-Based Layer Insertion for Residual and
Feedforward Neural Networks", arXiv 2311.15995 (v1; revised as "SensLI").

Every place where a layer could go gets a *virtual* layer that is an exact identity:

- feedforward: after hidden layer ``i``, ``act(V h + c)`` with ``V = I``, ``c = 0``; exact when
  the activation is idempotent on its range (ReLU: ``relu(relu(z)) = relu(z)``);
- residual: before block ``p`` (and after the last), a block ``x + W2 act(W1 x + b1)`` with
  ``W1 = I``, ``b1 = 0``, ``W2 = 0``; exact for any activation.

The gradient of the loss in the virtual weight (``V``, resp. ``W2``) is the Lagrange multiplier
of the constraint "virtual layer = identity": how much the loss would fall, to first order, if
the layer were freed. One backward pass over the training data, with no update, scores every
position at once (the virtual layers are all identities, so inserting them together changes no
gradient; a test holds this). The position with the largest score wins. Bias gradients are
ignored, as in the paper.

Scores (:data:`SCORES`):

- ``"v1"``: mean over mini-batches ``b`` of ``||grad_W L_b||_F^2 / numel(W)`` (arXiv v1);
- ``"v2"``: ``||mean_b grad_W L_b||_F^2`` (the revised paper; the reference code's
  ``calculate_shadowprices_minibatch``).

The chosen layer keeps its identity / zero values and becomes trainable: the grown network
computes the same function as before the insertion.

Both scores are sums over mini-batches divided by their number, so the batches can be shared out
between processes (a :class:`~._reduce.Reducer`): each sums the gradients of its own, and the
sums and counts added up are those of all the batches.

Conv nets (a :class:`~growth_core.conv_spec.ConvSpec`) take the same path: every function here
accepts them, with the identity convolutions and blocks of :mod:`._conv_insertion` and the
scoring pass's FLOPs counted by ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..conv_spec import ConvSpec
from ..events import Change, GrowthEvent, LossFn
from ..flops import linear_shapes, parameter_count, pass_flops
from ..nets import Net, build
from ..spec import ArchitectureSpec
from . import _conv_insertion as conv
from ._reduce import LOCAL, Reducer

SCORES = ("v1", "v2")
SELECTIONS = ("max", "min", "random")
"""``"max"`` is the method; ``"min"`` and ``"random"`` are the paper's controls."""


@dataclass(frozen=True)
class Sensitivities:
    """Score per candidate position, and what computing them cost (this process: ``scores``
    and ``loss`` are those of every process's batches, ``flops`` its own pass)."""

    scores: dict[int, float]
    flops: int
    loss: float
    """Mean training loss over the scoring batches (a free by-product of the pass)."""

    def select(self, how: str = "max", *, rng: random.Random | None = None) -> int:
        if how not in SELECTIONS:
            raise ValueError(f"selection: unknown {how!r}; expected one of {SELECTIONS}")
        positions = sorted(self.scores)
        if how == "random":
            return (rng or random.Random()).choice(positions)
        pick = max if how == "max" else min
        return pick(positions, key=lambda p: self.scores[p])


# -- where layers can go --------------------------------------------------------------------------
def positions(spec: ArchitectureSpec | ConvSpec) -> list[int]:
    """Candidate positions: after each hidden layer (feedforward), before each block and after
    the last (residual); conv nets: after each convolution, or after each block (residual)."""
    if isinstance(spec, ConvSpec):
        return conv.positions(spec)
    spec.require_identity_insertion()
    if spec.residual:
        return list(range(spec.depth + 1))
    if spec.depth == 0:
        raise ValueError("widths: a feedforward net needs a hidden layer to insert after")
    return list(range(spec.depth))


def inserted_spec(spec: ArchitectureSpec | ConvSpec, position: int) -> ArchitectureSpec | ConvSpec:
    """The spec with one identity layer (or block) at ``position``."""
    if isinstance(spec, ConvSpec):
        return conv.inserted_spec(spec, position)
    if position not in positions(spec):
        raise ValueError(f"position: {position} is not one of {positions(spec)}")
    w = list(spec.widths)
    if spec.residual:
        return spec.with_widths(w[:position] + [spec.width] + w[position:])
    return spec.with_widths(w[: position + 1] + [w[position]] + w[position + 1 :])


# -- building networks with identity layers -----------------------------------------------------
def _grown_network(net: Net, new_spec: ArchitectureSpec, old_of_new: dict[int, int]) -> Change:
    """Build ``new_spec``, copy every old layer ``old_of_new[k] -> k`` (and the fixed ends), set
    the remaining layers to identities."""
    ref = next(net.parameters())
    new_net = build(new_spec).to(device=ref.device, dtype=ref.dtype)
    prefix = "blocks" if new_spec.residual else "hidden"
    param_map: dict[str, str] = {}
    for name, _ in new_net.named_parameters():
        head, _, rest = name.partition(".")
        if head != prefix:
            param_map[name] = name  # input / output layers
            continue
        idx, _, tail = rest.partition(".")
        if int(idx) in old_of_new:
            param_map[name] = f"{prefix}.{old_of_new[int(idx)]}.{tail}"
    old_params = dict(net.named_parameters())
    with torch.no_grad():
        for name, p in new_net.named_parameters():
            if name in param_map:
                p.copy_(old_params[param_map[name]])
        for k in range(new_spec.depth):
            if k not in old_of_new:
                _make_identity(new_net, k)
    return Change(new_net, param_map)


def _make_identity(net: Net, index: int) -> None:
    if net.spec.residual:
        block = net.blocks[index]
        nn.init.eye_(block.fc1.weight)
        nn.init.zeros_(block.fc1.bias)
        nn.init.zeros_(block.fc2.weight)
    else:
        layer = net.hidden[index]
        nn.init.eye_(layer.weight)
        nn.init.zeros_(layer.bias)


def _virtual_weight(net: Net, index: int) -> nn.Parameter:
    """The weight whose gradient is the layer's sensitivity: ``V`` (feedforward), ``W2``."""
    return net.blocks[index].fc2.weight if net.spec.residual else net.hidden[index].weight


def insert(net: Net, position: int) -> Change:
    """Grow ``net`` by one identity layer at ``position``: the atomic growth step.

    The new layer keeps its identity / zero values and is trainable; the result computes the
    same function as ``net``.
    """
    if isinstance(net.spec, ConvSpec):
        return conv.insert(net, position)
    spec = inserted_spec(net.spec, position)
    new = position if net.spec.residual else position + 1
    old_of_new = {k: k - (k > new) for k in range(spec.depth) if k != new}
    return _grown_network(net, spec, old_of_new)


def extended_network(net: Net) -> tuple[Net, dict[int, int]]:
    """``net`` with a virtual identity layer at every candidate position at once.

    Returns the extended network and, per position, the index of its virtual layer.
    """
    if isinstance(net.spec, ConvSpec):
        return conv.extended_network(net)
    spec = net.spec
    cands = positions(spec)
    if spec.residual:
        widths = []
        for w in spec.widths:
            widths += [spec.width, w]
        ext_spec = spec.with_widths([*widths, spec.width])
        old_of_new = {2 * i + 1: i for i in range(spec.depth)}
        virtual = {p: 2 * p for p in cands}
    else:
        ext_spec = spec.with_widths([w for w in spec.widths for _ in range(2)])
        old_of_new = {2 * i: i for i in range(spec.depth)}
        virtual = {p: 2 * p + 1 for p in cands}
    return _grown_network(net, ext_spec, old_of_new).net, virtual


# -- scores -------------------------------------------------------------------------------------
def sensitivities(
    net: Net,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    score: str = "v2",
    loss_fn: LossFn = F.cross_entropy,
    reducer: Reducer = LOCAL,
) -> Sensitivities:
    """Score every candidate position from one backward pass over ``batches``; no update.
    ``reducer``: the processes the batches are shared out between (``batches``: this one's)."""
    if score not in SCORES:
        raise ValueError(f"score: unknown {score!r}; expected one of {SCORES}")
    is_conv = isinstance(net.spec, ConvSpec)
    ext, virtual = extended_network(net)
    ext.requires_grad_(False)
    weight = conv.virtual_weight if is_conv else _virtual_weight
    weights = {p: weight(ext, k).requires_grad_(True) for p, k in virtual.items()}
    if not is_conv:
        trained = _trained_flags(ext, set(map(id, weights.values())))
        shapes = linear_shapes(ext.spec)

    grad_sum = {p: torch.zeros_like(w) for p, w in weights.items()}
    sq_norm_sum = dict.fromkeys(weights, 0.0)
    n_batches, loss_sum, flops = 0, 0.0, 0
    for x, y in batches:
        counter = FlopCounterMode(display=False) if is_conv else None
        with counter or nullcontext():
            loss = loss_fn(ext(x), y)
            grads = torch.autograd.grad(loss, list(weights.values()))
        for p, g in zip(weights, grads):
            grad_sum[p] += g
            sq_norm_sum[p] += float(g.square().sum()) / g.numel()
        n_batches += 1
        loss_sum += loss.item()
        flops += (
            counter.get_total_flops() if is_conv else pass_flops(shapes, len(x), trained=trained)
        )
    grad_sum = dict(zip(grad_sum, reducer.sum(list(grad_sum.values())), strict=True))
    n_batches, loss_sum, *sq_norms = reducer.sum_numbers(
        [n_batches, loss_sum, *sq_norm_sum.values()]
    )
    n_batches = int(n_batches)
    sq_norm_sum = dict(zip(sq_norm_sum, sq_norms, strict=True))
    if n_batches == 0:
        raise ValueError("batches: no data to score on")
    if score == "v1":
        scores = {p: s / n_batches for p, s in sq_norm_sum.items()}
    else:
        scores = {p: float((g / n_batches).square().sum()) for p, g in grad_sum.items()}
    return Sensitivities(scores, flops, loss_sum / n_batches)


def insertion_event(
    step: int, net: Net, grown: Change, sens: Sensitivities, position: int, **details
) -> GrowthEvent:
    """The record of inserting at ``position``: every candidate's score and the scoring FLOPs,
    plus the caller's ``details``."""
    return GrowthEvent(
        step=step,
        kind="layer",
        position=position,
        score=sens.scores[position],
        spec_before=net.spec,
        spec_after=grown.spec,
        params_before=parameter_count(net.spec),
        params_after=parameter_count(grown.spec),
        details={
            "scores": {str(p): s for p, s in sens.scores.items()},
            **details,
            "scoring_flops": sens.flops,
        },
    )


def _trained_flags(net: Net, trained_ids: set[int]) -> list[bool]:
    return [id(layer.weight) in trained_ids for layer in net.linear_layers()]


__all__ = [
    "SCORES",
    "SELECTIONS",
    "Sensitivities",
    "extended_network",
    "insert",
    "inserted_spec",
    "positions",
    "sensitivities",
]
