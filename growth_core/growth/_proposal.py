"""Previewing new neurons at any amplitude, then applying them.

GroMo's ``extended_forward`` / ``apply_change`` split: the change is evaluated through
``torch.func.functional_call`` on a skeleton of the grown architecture, so a line search
(:mod:`._line_search`) never writes to the network it starts from; ``apply`` builds a new module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call

from ..events import Change
from ..families import Spec
from ..flops import forward_flops
from ..nets import Net, activation_fn, build
from ._line_search import AmplitudeSearch
from ._sites import site_layers


@dataclass(frozen=True)
class NewNeurons:
    """A strategy's change at amplitude 1 (float64)."""

    fan_in: Tensor
    """``(k, d2)``: rows appended to the fan-in layer, weights then bias."""
    fan_out: Tensor
    """``(o, k)``: columns appended to the fan-out layer."""
    weight_update: Tensor | None = None
    """``(o, d)``: added to the fan-out layer's ``[W | b]``; ``None`` leaves it as it is."""


def widened_spec(spec: Spec, site: int, neurons: int) -> Spec:
    """``spec`` with ``neurons`` more in hidden layer (or channels in convolution) ``site``."""
    widths = list(spec.widths)
    widths[site] += neurons
    return spec.with_widths(widths)


class NeuronProposal(AmplitudeSearch):
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

    def forward_flops(self, n: int) -> int:
        return forward_flops(self.spec, n)

    def apply(self, gamma: float) -> Change:
        """The grown network at amplitude ``gamma``: a new module; ``net`` is left as it was."""
        params = self.parameters(gamma)
        net = build(self.spec).to(device=self._device, dtype=self._dtype)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(params[name])
        return Change(net, {name: name for name in params})
