"""Width growth of convolutional networks: channels by expressivity bottlenecks (TINY), with
GradMax and random channels as controls. The conv counterpart of :mod:`.bottleneck`.

Verbockhaven, Rudkiewicz, Chevallier, Charpiat, TMLR 2024, arXiv 2405.19816 (the convolutional
case; GroMo's ``FullConv2dGrowingModule``); Evci et al., "GradMax", ICLR 2022.

A site is two consecutive ``nn.Conv2d`` of any network, with the ``nn.BatchNorm2d`` between them
if there is one (:class:`ConvSite`); nothing here needs a spec, so a network built from one
passes its layer ``i`` and ``i + 1``. One growth step, every part a public name:

1. statistics: :class:`ConvWidthStatistics` streams mini-batches and keeps, per site, the moments
   ``S, M, S2, M2, C`` of the unfolded patches as sums and sample counts (:class:`ConvMoments`);
2. the bottleneck: :func:`channel_bottleneck` solves TINY (``dW*``, ``N``, the SVD of
   ``S2^(-1/2) N``, each candidate channel's first-order gain ``act'(0) lambda_k^2``);
3. which kernels: a :class:`ChannelStrategy` gives ``k`` new channels their ``fan_in`` and
   ``fan_out`` kernels (:class:`NewChannels`);
4. how much: a :class:`ChannelProposal` previews the change at amplitude ``gamma`` without
   touching the network, searches ``gamma`` on the loss, and applies it: new ``nn.Conv2d`` /
   ``nn.BatchNorm2d`` modules (``grown_modules``) or a grown copy of the network (``apply``, a
   :class:`~growth_core.events.Change` whose ``param_map`` carries the optimizer state).

>>> site = ConvSite(net.conv1, net.conv2, "tanh", norm=net.bn1)
>>> stats = conv_width_statistics(net, [site], batches)
>>> proposal = ConvTinyGrowth().propose(stats, 0, channels=2)
>>> change = proposal.apply(proposal.line_search(batches).gamma)

How many channels a site takes and which site grows (the linear :func:`.bottleneck.widen`) are
left to the caller: the gains of :func:`channel_bottleneck` score them.
"""

from __future__ import annotations

from ._conv_proposal import ChannelProposal, NewChannels
from ._conv_site import ConvSite
from ._conv_statistics import (
    CONV_MOMENTS,
    ConvMoments,
    ConvSiteStatistics,
    ConvWidthStatistics,
    conv_width_statistics,
)
from ._conv_strategies import (
    CONV_STRATEGIES,
    ChannelStrategy,
    ConvGradMaxGrowth,
    ConvRandomGrowth,
    ConvSiteView,
    ConvTinyGrowth,
    ConvTinyWithUpdateGrowth,
)
from ._conv_tiny import ChannelBottleneck, channel_bottleneck

__all__ = [
    "CONV_MOMENTS",
    "CONV_STRATEGIES",
    "ChannelBottleneck",
    "ChannelProposal",
    "ChannelStrategy",
    "ConvGradMaxGrowth",
    "ConvMoments",
    "ConvRandomGrowth",
    "ConvSite",
    "ConvSiteStatistics",
    "ConvSiteView",
    "ConvTinyGrowth",
    "ConvTinyWithUpdateGrowth",
    "ConvWidthStatistics",
    "NewChannels",
    "channel_bottleneck",
    "conv_width_statistics",
]
