"""Named ways to give new neurons their weights: TINY, TINY with the update, GradMax, random.

Every strategy answers one question (:meth:`NeuronStrategy.new_neurons`): given a site's moments
and layers and the number ``k`` of neurons to add, what are their fan-in and fan-out weights, and
is the existing fan-out layer updated too? The number ``k`` is decided beforehand from TINY's
statistics (:mod:`._selection`) for every strategy, so strategies differ only in the weights.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..nets import activation_fn
from ..spec import SpecError
from ._proposal import NeuronProposal, NewNeurons
from ._sites import site_layers
from ._statistics import BottleneckStatistics, Moments
from ._tiny import neuron_directions, optimal_update, projected_goal


@dataclass(frozen=True)
class SiteView:
    """What a strategy sees of one site."""

    moments: Moments
    fan_in: nn.Linear
    fan_out: nn.Linear
    activation: str


class NeuronStrategy(ABC):
    """Gives ``k`` new neurons of a site their fan-in and fan-out weights."""

    name: ClassVar[str]
    """The name settings use for the strategy."""
    preserves_function: ClassVar[bool] = False
    """Whether the new neurons leave the function unchanged (then no line search runs)."""

    @abstractmethod
    def new_neurons(self, site: SiteView, k: int) -> NewNeurons:
        """The change for ``k`` neurons at amplitude 1."""

    def propose(self, stats: BottleneckStatistics, site: int, neurons: int) -> NeuronProposal:
        """This strategy's ``neurons`` new neurons at ``site``, ready to preview and apply."""
        if isinstance(neurons, bool) or not isinstance(neurons, int) or neurons < 1:
            raise ValueError(f"neurons: expected a positive integer, got {neurons!r}")
        modules = dict(stats.net.named_modules())
        fan_in, fan_out = (modules[m] for m in site_layers(stats.spec, site))
        view = SiteView(stats.site(site).moments(), fan_in, fan_out, stats.spec.activation)
        return NeuronProposal(stats.net, site, self.new_neurons(view, neurons))


def _tiny_solution(moments: Moments, k: int) -> tuple[Tensor, NewNeurons]:
    """``dW*`` and the top-``k`` neurons of the SVD of ``S2^(-1/2) N``."""
    delta, _ = optimal_update(moments)
    cand = neuron_directions(moments.fitting_s2(), projected_goal(moments, delta))
    return delta, NewNeurons(cand.fan_in[:k], cand.fan_out[:, :k])


class TinyGrowth(NeuronStrategy):
    """The paper's TINY: the top-``k`` neurons of the SVD of ``S2^(-1/2) N``.

    ``N`` is the bottleneck left after the best update ``dW*`` of the existing fan-out layer,
    which is used for this projection only and not applied (training does that part).
    """

    name = "tiny"

    def new_neurons(self, site: SiteView, k: int) -> NewNeurons:
        return _tiny_solution(site.moments, k)[1]


class TinyWithUpdateGrowth(NeuronStrategy):
    """TINY's neurons and the update ``dW*`` of the existing fan-out layer, applied together."""

    name = "tiny_update"

    def new_neurons(self, site: SiteView, k: int) -> NewNeurons:
        delta, neurons = _tiny_solution(site.moments, k)
        return replace(neurons, weight_update=delta)


class GradMaxGrowth(NeuronStrategy):
    """GradMax (Evci et al. 2022): zero fan-in; fan-out along the top-``k`` right singular
    vectors of the gradient correlation ``M2 = B2^T V_goal / n`` (no whitening, no projection),
    which maximizes the gradient norm the new fan-in receives.

    The function is preserved (the new neurons output ``act(0) = 0``). Each new fan-out column
    gets the mean column norm of the existing fan-out weights, or norm 1 when they are all zero
    (a residual block just inserted): the singular vectors fix only the directions (ours). The
    zero fan-in learns only if autograd's ``act'(0)`` is non-zero, so ReLU (PyTorch's
    ``relu'(0) = 0``) and sigmoid (``act(0) != 0``) are refused.
    """

    name = "gradmax"
    preserves_function = True

    def new_neurons(self, site: SiteView, k: int) -> NewNeurons:
        _require_gradmax_activation(site.activation)
        _, _, vt = torch.linalg.svd(site.moments.tensor_m2, full_matrices=False)
        if k > len(vt):
            raise ValueError(f"neurons: GradMax has {len(vt)} directions at this site, asked {k}")
        scale = float(site.fan_out.weight.detach().norm(dim=0).mean()) or 1.0
        fan_out = vt[:k].T * scale
        fan_in = fan_out.new_zeros(k, site.fan_in.in_features + 1)
        return NewNeurons(fan_in, fan_out)


def _require_gradmax_activation(activation: str) -> None:
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    value = activation_fn(activation)(z)
    (slope,) = torch.autograd.grad(value, z)
    if value.item() != 0 or slope.item() == 0:
        raise SpecError(
            f"activation: GradMax needs act(0) = 0 and a non-zero autograd act'(0), so that its "
            f"zero fan-in preserves the function and still learns; {activation!r} has "
            f"act(0) = {value.item():g}, act'(0) = {slope.item():g}"
        )


class RandomGrowth(NeuronStrategy):
    """Random neurons: Kaiming fan-in ``N(0, gain^2 / fan_in)`` with the activation's gain, zero
    bias, zero fan-out; the function is preserved. ``seed`` fixes the draws of successive calls."""

    name = "random"
    preserves_function = True

    def __init__(self, *, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def new_neurons(self, site: SiteView, k: int) -> NewNeurons:
        d_in = site.fan_in.in_features
        std = _kaiming_gain(site.activation) / math.sqrt(d_in)
        weights = torch.randn(k, d_in, generator=self.generator, dtype=torch.float64) * std
        fan_in = torch.cat([weights, weights.new_zeros(k, 1)], dim=1)
        return NewNeurons(fan_in, fan_in.new_zeros(site.fan_out.out_features, k))


#: Every strategy by its settings name.
STRATEGIES: dict[str, type[NeuronStrategy]] = {
    cls.name: cls for cls in (TinyGrowth, TinyWithUpdateGrowth, GradMaxGrowth, RandomGrowth)
}


def _kaiming_gain(activation: str) -> float:
    if activation == "gelu":
        return nn.init.calculate_gain("relu")
    return nn.init.calculate_gain("linear" if activation == "identity" else activation)
