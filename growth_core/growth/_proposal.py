"""Previewing a width change at any amplitude, searching the amplitude, then applying it.

GroMo's ``extended_forward`` / ``apply_change`` split: the change is evaluated through
``torch.func.functional_call`` on a skeleton of the grown architecture, so a line search never
writes to the network it starts from; ``apply`` builds a new module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from ..events import Change, LossFn
from ..flops import forward_flops
from ..nets import Net, activation_fn, build
from ..spec import ArchitectureSpec
from ._sites import site_layers
from ._statistics import LOSS_REDUCTIONS

#: Amplitudes the line search tries (and 0, no change): 2^-12 ... 2^2. Ours; at ``gamma = 1``
#: the change moves the pre-activations by the least-squares fit of ``V_goal``, a full step.
LINE_SEARCH_GAMMAS = tuple(2.0**k for k in range(-12, 3))

#: While the largest amplitude tried is the best, the search doubles it, up to this. Ours.
LINE_SEARCH_MAX_GAMMA = 2.0**10


@dataclass(frozen=True)
class NewNeurons:
    """A strategy's change at amplitude 1 (float64)."""

    fan_in: Tensor
    """``(k, d2)``: rows appended to the fan-in layer, weights then bias."""
    fan_out: Tensor
    """``(o, k)``: columns appended to the fan-out layer."""
    weight_update: Tensor | None = None
    """``(o, d)``: added to the fan-out layer's ``[W | b]``; ``None`` leaves it as it is."""


@dataclass(frozen=True)
class LineSearch:
    gamma: float
    """The amplitude with the lowest loss; 0 when no amplitude lowers it."""
    losses: dict[float, float]
    """Mean per-sample loss at every amplitude tried (0 included)."""
    flops: int


def widened_spec(spec: ArchitectureSpec, site: int, neurons: int) -> ArchitectureSpec:
    widths = list(spec.widths)
    widths[site] += neurons
    return spec.with_widths(widths)


class NeuronProposal:
    """A change at one site that can be previewed at any amplitude ``gamma`` and then applied.

    At amplitude ``gamma`` the fan-out layer's ``[W | b]`` becomes ``[W | b] + gamma dW`` and the
    new neurons get fan-in ``sqrt(gamma) alpha`` and fan-out ``sqrt(gamma) omega``, so the
    pre-activations move by ``gamma (dW b + act'(0) sum_k omega_k alpha_k^T b2) + o(gamma)``.
    Previewing (``forward``, ``loss``, ``line_search``) never writes to ``net``; ``apply`` builds
    a new module.
    """

    def __init__(self, net: Net, site: int, neurons: NewNeurons) -> None:
        self.net = net
        self.site = site
        self.neurons = neurons
        self.spec = widened_spec(net.spec, site, len(neurons.fan_in))
        self._fan_in, self._fan_out = site_layers(net.spec, site)
        ref = next(net.parameters())
        self._device, self._dtype = ref.device, ref.dtype
        self._skeleton: Net | None = None

    @property
    def preserves_function(self) -> bool:
        """Whether every amplitude computes the old function (then there is nothing to search)."""
        if self.neurons.weight_update is not None:
            return False
        silent_in = (
            not self.neurons.fan_in.any()
            and float(activation_fn(self.net.spec.activation)(torch.zeros(()))) == 0
        )
        return silent_in or not self.neurons.fan_out.any()

    def parameters(self, gamma: float) -> dict[str, Tensor]:
        """Every parameter of the grown network at amplitude ``gamma`` (new tensors)."""
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma: expected a finite number >= 0, got {gamma!r}")
        params = {k: p.detach() for k, p in self.net.named_parameters()}
        new = self.neurons
        root = math.sqrt(gamma)
        cast = {"device": self._device, "dtype": self._dtype}
        fan_in = (root * new.fan_in).to(**cast)
        w_in, b_in = f"{self._fan_in}.weight", f"{self._fan_in}.bias"
        params[w_in] = torch.cat([params[w_in], fan_in[:, :-1]], dim=0)
        params[b_in] = torch.cat([params[b_in], fan_in[:, -1]])
        w_out, b_out = f"{self._fan_out}.weight", f"{self._fan_out}.bias"
        weight = params[w_out]
        if new.weight_update is not None:
            update = (gamma * new.weight_update).to(**cast)
            weight = weight + update[:, : weight.shape[1]]
            if b_out in params:
                params[b_out] = params[b_out] + update[:, -1]
        params[w_out] = torch.cat([weight, (root * new.fan_out).to(**cast)], dim=1)
        return params

    @torch.no_grad()
    def forward(self, x: Tensor, gamma: float) -> Tensor:
        """The grown network's output at amplitude ``gamma``, without building it."""
        if self._skeleton is None:
            self._skeleton = build(self.spec).to(device=self._device, dtype=self._dtype)
        return functional_call(self._skeleton, self.parameters(gamma), (x,))

    def loss(
        self,
        batches: Iterable[tuple[Tensor, Tensor]],
        gamma: float,
        *,
        loss_fn: LossFn = F.cross_entropy,
        reduction: str = "mean",
    ) -> tuple[float, int]:
        """Mean per-sample loss at amplitude ``gamma`` and the samples it saw."""
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"reduction: unknown {reduction!r}; expected one of {LOSS_REDUCTIONS}")
        total, n = 0.0, 0
        for x, y in batches:
            loss = float(loss_fn(self.forward(x, gamma), y))
            total += loss * len(x) if reduction == "mean" else loss
            n += len(x)
        if n == 0:
            raise ValueError("batches: no data for the line search")
        return total / n, n

    def line_search(
        self,
        batches: Sequence[tuple[Tensor, Tensor]],
        *,
        gammas: Sequence[float] = LINE_SEARCH_GAMMAS,
        max_gamma: float = LINE_SEARCH_MAX_GAMMA,
        loss_fn: LossFn = F.cross_entropy,
        reduction: str = "mean",
    ) -> LineSearch:
        """Try every amplitude in ``gammas`` (and 0) on ``batches``, then keep doubling the largest
        while it is the best and at most ``max_gamma``; nothing is committed."""
        if not gammas or any(not (math.isfinite(g) and g > 0) for g in gammas):
            raise ValueError(f"gammas: expected positive finite amplitudes, got {list(gammas)}")
        losses, n = {}, 0

        def evaluate(g: float) -> None:
            nonlocal n
            losses[g], n = self.loss(batches, g, loss_fn=loss_fn, reduction=reduction)

        for g in (0.0, *sorted(gammas)):
            evaluate(g)
        while (top := max(losses)) == self._best(losses) and 2 * top <= max_gamma:
            evaluate(2 * top)
        best = self._best(losses)
        return LineSearch(best, losses, len(losses) * forward_flops(self.spec, n))

    @staticmethod
    def _best(losses: dict[float, float]) -> float:
        """The amplitude with the lowest loss, the smallest on ties."""
        return min(losses, key=lambda g: (losses[g], g))

    def apply(self, gamma: float) -> Change:
        """The grown network at amplitude ``gamma``: a new module; ``net`` is left as it was."""
        params = self.parameters(gamma)
        net = build(self.spec).to(device=self._device, dtype=self._dtype)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(params[name])
        return Change(net, {name: name for name in params})
