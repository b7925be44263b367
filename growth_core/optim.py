"""The optimizer of a run, and its state carried across a growth step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["carry_optimizer_state", "make_optimizer"]


def make_optimizer(net: nn.Module, config: Any) -> torch.optim.Optimizer:
    """``config.optimizer`` ("adam" or "sgd") at ``config.lr`` over ``net``'s parameters (a
    :class:`~growth_core.train.TrainConfig`)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=config.lr)
    return torch.optim.SGD(net.parameters(), lr=config.lr)


def carry_optimizer_state(
    old_opt: torch.optim.Optimizer,
    old_net: nn.Module,
    new_opt: torch.optim.Optimizer,
    new_net: nn.Module,
    param_map: dict[str, str],
) -> None:
    """Give each surviving parameter of ``new_net`` the optimizer state its old self had.

    A parameter that grew (more neurons) keeps its old state in the leading slice and zeros in
    the new entries; parameters absent from ``param_map`` start with empty state.
    """
    old_params = dict(old_net.named_parameters())
    for name, p in new_net.named_parameters():
        old = old_params.get(param_map.get(name, ""))
        if old is None or old not in old_opt.state:
            continue
        state = {}
        for key, value in old_opt.state[old].items():
            if isinstance(value, Tensor) and value.shape == old.shape and old.shape != p.shape:
                grown = torch.zeros_like(p)
                grown[tuple(slice(0, s) for s in old.shape)] = value
                value = grown
            elif isinstance(value, Tensor):
                value = value.clone()
            state[key] = value
        new_opt.state[p] = state
