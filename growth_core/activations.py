"""The elementwise functions a spec's ``activation`` names, shared by every family of net."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "leaky_relu": F.leaky_relu,
    "identity": lambda z: z,
}


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    """The elementwise function a spec's ``activation`` names."""
    return _ACTIVATIONS[name]
