"""Where neurons can go: a *site* is a hidden layer that can receive new neurons, with the
layer that gets new rows (fan-in) and the one that gets new columns (fan-out). In a conv net
a site is a convolution whose output channels can grow (:mod:`._conv_widen`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..conv_spec import ConvSpec
from ..spec import ArchitectureSpec


def sites(spec: ArchitectureSpec | ConvSpec) -> list[int]:
    """Hidden layers that can receive neurons: every hidden layer (feedforward) or every block's
    hidden layer (residual). Conv nets: every convolution followed by one that reads its map
    position by position, no pooling between (plain), or each basic block's ``conv1``
    (residual: its inner channels); by index in ``spec.widths``."""
    if isinstance(spec, ConvSpec):
        if spec.residual:
            return list(range(0, spec.depth, 2))
        shapes = spec.layer_shapes()
        return [i for i in range(spec.depth - 1) if not shapes[i + 1].pool_before]
    if spec.depth == 0:
        raise ValueError("widths: a network needs a hidden layer to grow in width")
    return list(range(spec.depth))


def site_layers(spec: ArchitectureSpec, site: int) -> tuple[str, str]:
    """Module names of the site's fan-in layer (new rows) and fan-out layer (new columns)."""
    if site not in sites(spec):
        raise ValueError(f"site: {site} is not one of {sites(spec)}")
    if spec.residual:
        return f"blocks.{site}.fc1", f"blocks.{site}.fc2"
    fan_out = f"hidden.{site + 1}" if site + 1 < spec.depth else "out"
    return f"hidden.{site}", fan_out


def fan_out_index(spec: ArchitectureSpec, site: int) -> int:
    """Position of the site's fan-out layer among ``net.linear_layers()``."""
    return 2 + 2 * site if spec.residual else site + 1


def check_sites(spec: ArchitectureSpec, chosen: Sequence[int] | None) -> list[int]:
    valid = sites(spec)
    if chosen is None:
        return valid
    chosen = sorted(set(chosen))
    bad = [s for s in chosen if s not in valid]
    if bad or not chosen:
        raise ValueError(f"sites: expected a non-empty subset of {valid}, got {list(chosen)}")
    return chosen
