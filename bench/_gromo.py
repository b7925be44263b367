"""GroMo 0.1.0 as a peer: one growth step of any of its containers (``GrowingMLP``, ``VGG``), as
its tutorials make it, shared by bench/tiny_growth.py and bench/conv_growth.py."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from growth_core.data import Dataset
from growth_core.growth.bottleneck import LINE_SEARCH_GAMMAS, LINE_SEARCH_MAX_GAMMA


def growth_step(
    model,
    data: Dataset,
    gen: torch.Generator,
    *,
    statistics_samples: int,
    line_search_samples: int | None,
    as_input=lambda x: x,
):
    """GroMo's protocol: statistics with a sum-reduced loss on ``statistics_samples`` drawn
    with ``gen``, TINY's updates (no delta), the best layer by first-order improvement, then the
    amplitude by the same line search as ours (on the first ``line_search_samples`` of them) and
    ``apply_change``. ``as_input`` shapes a batch for the model (images for a conv net).
    Returns ``(layer, neurons, gamma)``, or ``None`` when it declined."""
    idx = torch.randperm(data.n_train, generator=gen)[:statistics_samples]
    x, y = as_input(data.x_train[idx]), data.y_train[idx]
    batches = [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, len(x), 1000)]
    n_search = min(line_search_samples or len(x), len(x))
    searched = [(x[i : i + 1000], y[i : i + 1000]) for i in range(0, n_search, 1000)]
    model.init_computation()
    for xb, yb in batches:
        model.zero_grad()
        F.cross_entropy(model(xb), yb, reduction="sum").backward()
        model.update_computation()
    model.compute_optimal_updates(compute_delta=False)
    model.reset_computation()
    model.zero_grad()
    site = model.select_best_update()
    layer = model.currently_updated_layer
    if layer.eigenvalues_extension is None or len(layer.eigenvalues_extension) == 0:
        model.currently_updated_layer.delete_update()
        return None
    neurons = len(layer.eigenvalues_extension)

    def loss(gamma: float) -> float:
        model.set_scaling_factor(math.sqrt(gamma))  # GroMo scales each side: gamma = factor^2
        with torch.no_grad():
            total = sum(
                F.cross_entropy(model.extended_forward(xb), yb, reduction="sum").item()
                for xb, yb in searched
            )
        return total / n_search

    losses = {g: loss(g) for g in (0.0, *LINE_SEARCH_GAMMAS)}
    while (top := max(losses)) == min(losses, key=losses.get) and 2 * top <= LINE_SEARCH_MAX_GAMMA:
        losses[2 * top] = loss(2 * top)
    gamma = min(losses, key=lambda g: (losses[g], g))
    if gamma == 0:
        model.currently_updated_layer.delete_update()
        model.currently_updated_layer_index = None
        return None
    model.set_scaling_factor(math.sqrt(gamma))
    model.apply_change()
    _reshape_conv_statistics(model)
    return site, neurons, gamma


def _reshape_conv_statistics(model) -> None:
    """GroMo 0.1.0 sizes a conv layer's ``S`` and ``M`` after its input grew as
    ``(in_channels + bias) * k * k`` rows, not ``in_channels * k * k + bias`` (its
    ``Conv2dGrowingModule.layer_in_extension``), so the next statistics pass fails on its own
    assertion; the shape is left to the first update instead (no effect on linear layers)."""
    from gromo.modules.conv2d_growing_module import Conv2dGrowingModule

    for module in model.modules():
        if isinstance(module, Conv2dGrowingModule):
            for statistic in (module._tensor_s, module.tensor_m):
                if statistic is not None:
                    statistic._shape = None
