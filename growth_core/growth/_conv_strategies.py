"""Named ways to give new channels their kernels: TINY, TINY with the update, GradMax, random.

The conv counterparts of :mod:`._strategies`, under the same settings names. Every strategy
answers one question (:meth:`ChannelStrategy.new_channels`): given a conv site's moments and
modules and the number ``k`` of channels to add, what are their ``fan_in`` and ``fan_out``
kernels, and is ``fan_out`` updated too? With a norm at the site, :meth:`ChannelStrategy.propose`
adds each new channel's mean and variance, which its norm starts from (see :mod:`._conv_tiny`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from ._conv_proposal import ChannelProposal, NewChannels
from ._conv_site import ConvSite
from ._conv_statistics import ConvMoments, ConvWidthStatistics
from ._conv_tiny import channel_bottleneck, channel_moments
from ._strategies import _kaiming_gain, _require_gradmax_activation


@dataclass(frozen=True)
class ConvSiteView:
    """What a strategy sees of one conv site."""

    moments: ConvMoments
    site: ConvSite


class ChannelStrategy(ABC):
    """Gives ``k`` new channels of a conv site their ``fan_in`` and ``fan_out`` kernels."""

    name: ClassVar[str]
    """The name settings use for the strategy (as its linear counterpart's)."""
    preserves_function: ClassVar[bool] = False
    """Whether the new channels leave the function unchanged (then no line search runs)."""

    @abstractmethod
    def new_channels(self, view: ConvSiteView, k: int) -> NewChannels:
        """The change for ``k`` channels at amplitude 1."""

    def propose(self, stats: ConvWidthStatistics, site: int, channels: int) -> ChannelProposal:
        """This strategy's ``channels`` new channels at ``site``, ready to preview and apply."""
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels: expected a positive integer, got {channels!r}")
        view = ConvSiteView(stats.site(site).moments(), stats.sites[site])
        new = self.new_channels(view, channels)
        if view.site.norm is not None:
            mean, variance = channel_moments(view.moments, new.fan_in_matrix())
            new = replace(new, mean=mean, variance=variance)
        return ChannelProposal(stats.net, view.site, new)


def _tiny_channels(view: ConvSiteView, k: int, *, with_update: bool) -> NewChannels:
    solved = channel_bottleneck(view.moments, view.site.activation)
    available = len(solved.directions.singular_values)
    if k > available:
        raise ValueError(f"channels: TINY has {available} directions at this site, asked {k}")
    fan_in, fan_out = solved.directions.fan_in[:k], solved.directions.fan_out[:, :k]
    update = solved.delta if with_update else None
    return NewChannels.from_matrices(view.site, fan_in, fan_out, update)


class ConvTinyGrowth(ChannelStrategy):
    """The paper's TINY: the top-``k`` channels of the SVD of ``S2^(-1/2) N``; ``dW*`` is used
    for the projection only and not applied."""

    name = "tiny"

    def new_channels(self, view: ConvSiteView, k: int) -> NewChannels:
        return _tiny_channels(view, k, with_update=False)


class ConvTinyWithUpdateGrowth(ChannelStrategy):
    """TINY's channels and the update ``dW*`` of ``fan_out``'s kernels, applied together."""

    name = "tiny_update"

    def new_channels(self, view: ConvSiteView, k: int) -> NewChannels:
        return _tiny_channels(view, k, with_update=True)


class ConvGradMaxGrowth(ChannelStrategy):
    """GradMax (Evci et al. 2022) for channels: zero ``fan_in`` kernels; ``fan_out`` kernels
    along the top-``k`` right singular vectors of ``M2`` ``(d2, o * kk)`` (no whitening, no
    projection; GroMo's GradMax options), which maximizes the gradient norm the new ``fan_in``
    kernels receive.

    The function is preserved. Each new ``fan_out`` kernel gets the mean norm of the existing
    ones (per input channel; norm 1 if they are all zero), as the linear GradMax (ours). The zero
    kernels learn only if autograd's ``act'(0)`` is non-zero, so ReLU and sigmoid are refused.
    """

    name = "gradmax"
    preserves_function = True

    def new_channels(self, view: ConvSiteView, k: int) -> NewChannels:
        site = view.site
        _require_gradmax_activation(site.activation)
        _, _, vt = torch.linalg.svd(view.moments.tensor_m2, full_matrices=False)
        if k > len(vt):
            raise ValueError(f"channels: GradMax has {len(vt)} directions at this site, asked {k}")
        existing = site.fan_out.weight.detach().transpose(0, 1).flatten(1)  # (C_mid, o kh kw)
        scale = float(existing.norm(dim=1).mean()) or 1.0
        fan_out = vt[:k].T * scale
        fan_in = fan_out.new_zeros(k, site.fan_in_features)
        return NewChannels.from_matrices(site, fan_in, fan_out)


class ConvRandomGrowth(ChannelStrategy):
    """Random channels: Kaiming ``fan_in`` kernels ``N(0, gain^2 / (C_in kh kw))`` with the
    activation's gain, zero bias, zero ``fan_out`` kernels; the function is preserved. ``seed``
    fixes the draws of successive calls (drawn on the CPU, then moved to the modules' device)."""

    name = "random"
    preserves_function = True

    def __init__(self, *, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def new_channels(self, view: ConvSiteView, k: int) -> NewChannels:
        fan_in, fan_out = view.site.fan_in, view.site.fan_out
        shape = (k, fan_in.in_channels, *fan_in.kernel_size)
        std = _kaiming_gain(view.site.activation) / math.sqrt(math.prod(shape[1:]))
        weight = torch.randn(shape, generator=self.generator, dtype=torch.float64) * std
        bias = weight.new_zeros(k) if fan_in.bias is not None else None
        omega = weight.new_zeros(fan_out.out_channels, k, *fan_out.kernel_size)
        return NewChannels(weight, bias, omega)


#: Every channel strategy by its settings name.
CONV_STRATEGIES: dict[str, type[ChannelStrategy]] = {
    cls.name: cls
    for cls in (ConvTinyGrowth, ConvTinyWithUpdateGrowth, ConvGradMaxGrowth, ConvRandomGrowth)
}
