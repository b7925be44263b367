"""The conv half of a width decision (:func:`.bottleneck.widen`): where channels can go in a net
built from a :class:`~growth_core.conv_spec.ConvSpec`, and TINY's plan at each of those sites.

Site ``i`` is convolution ``i`` (``spec.widths[i]``), whose output channels grow, with its
successor as ``fan_out``:

- plain nets: every layer followed by a layer that reads its map position by position, i.e.
  with no pooling between them (a strided successor is fine: it reads the map directly);
- residual nets: each basic block's ``conv1`` (its inner channels), ``conv2`` reading them. A
  block's output channels are tied to its shortcut and to the next block, and do not grow here.
  GroMo's ResNets grow the same inner channels.

How many channels a site takes: GroMo's rule, every singular value ``lambda_k >=`` the
threshold (:class:`~._selection.SingularValueThreshold`), scored by ``act'(0) lambda_k^2``. The
held-out test of the linear sites (:class:`~._selection.HeldOutGain`) is not built for conv
sites: its standard error needs the goal's covariance across kernel offsets.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._conv_site import ConvSite
from ._conv_statistics import ConvWidthStatistics, conv_width_statistics
from ._conv_tiny import channel_bottleneck
from ._selection import NeuronSelection, SingularValueThreshold
from ._sites import sites


def conv_sites(net: nn.Module) -> dict[int, ConvSite]:
    """Every site of ``net`` (built from a ``ConvSpec``; :func:`._sites.sites`) as a
    :class:`ConvSite`, by the index of its ``fan_in`` layer."""
    spec, layers = net.spec, net.conv_layers()
    norm = {i: layer.bn for i, layer in enumerate(layers)}
    return {
        i: ConvSite(layers[i].conv, layers[i + 1].conv, spec.activation, norm[i])
        for i in sites(spec)
    }


def conv_selection(selection: NeuronSelection | None) -> SingularValueThreshold:
    """The rule conv sites take: ``None`` is GroMo's threshold; the held-out test is refused."""
    if selection is None:
        return SingularValueThreshold()
    if not isinstance(selection, SingularValueThreshold):
        raise ValueError(
            f"selection: conv sites take SingularValueThreshold (GroMo's rule), got "
            f"{type(selection).__name__}; the held-out test is built for linear sites only"
        )
    return selection


class ConvScoring:
    """Statistics at a conv net's open sites and TINY's plan there, keyed by layer index."""

    def __init__(self, net: nn.Module, batches: list, open_sites: list[int] | None, **options: Any):
        every = conv_sites(net)
        unknown = sorted(set(open_sites or ()) - set(every))
        if unknown:
            raise ValueError(f"caps: {unknown[0]} is not a conv site of the net ({sorted(every)})")
        self.layers = sorted(every) if open_sites is None else sorted(open_sites)
        self.stats: ConvWidthStatistics = conv_width_statistics(
            net, [every[i] for i in self.layers], batches, **options
        )

    def position(self, site: int) -> int:
        """The site's index in :attr:`stats` (what a channel strategy's ``propose`` takes)."""
        return self.layers.index(site)

    def plan(self, selection: SingularValueThreshold, max_neurons: int | None) -> dict:
        """Per site: the channels' gains (``lambda_k >= threshold``, at most ``max_neurons``) and
        the first-order decrease of ``fan_out``'s best update."""
        result = {}
        for j, site in enumerate(self.layers):
            conv = self.stats.sites[j]
            solved = channel_bottleneck(self.stats.site(j).moments(), conv.activation)
            kept = int((solved.directions.singular_values >= selection.threshold).sum())
            result[site] = (solved.gains[:kept][:max_neurons], solved.update_decrease)
        return result
