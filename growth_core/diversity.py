"""Neuron diversity: correlation between a layer's neurons, a decorrelation penalty, and the
re-initialization of redundant neurons.

Kovalenko, Kordík, Friedjungová, "Dynamic Neural Diversification: Path to Computationally
Sustainable Neural Networks", ICANN 2021, arXiv 2109.09612. A small network wastes capacity when
two hidden neurons compute nearly the same function of the input; the paper measures this by the
Pearson correlation of neuron outputs over a batch and reinforces diversity three ways: a penalty
on correlation during training, re-drawing neurons that became redundant, and a decorrelated
initialization (``Initializer("decorrelated")`` in :mod:`growth_core.init`).

For a layer's outputs ``h`` ``(n, width)`` over ``n`` samples:

- ``rho_ij = cov(h_i, h_j) / sqrt(var(h_i) var(h_j))`` (population moments over the batch); a
  constant neuron (zero variance: dead ReLU, saturated tanh) correlates with nothing;
- the layer's redundancy is ``mean_{i != j} |rho_ij|``; a pair with ``|rho_ij| > tau`` is
  redundant;
- the penalty is ``lambda * mean_{i != j} rho_ij^2``, summed over the hidden layers; it is
  differentiable and is added to the training loss by :class:`~growth_core.train.Trainer`
  (``penalty=DecorrelationPenalty(...)``).

Example::

    rho = layer_correlations(net, x)  # one LayerCorrelation per hidden layer
    trainer = Trainer(net, data, config, penalty=DecorrelationPenalty(strength=0.1))
    reinitialize_redundant(net, x, tau=0.9, seed=0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .spec import ArchitectureSpec

#: Variance floor in the correlation's denominator: keeps ``rho`` (and its gradient) finite for
#: constant neurons, which then correlate with nothing. Ours.
VARIANCE_EPS = 1e-8

#: ``|rho|`` above which a pair of neurons counts as redundant. Ours (the paper plots |rho| but
#: fixes no cut-off); 0.9 means one neuron explains 81% of the other's variance.
REDUNDANT_TAU = 0.9


def correlation(h: Tensor) -> Tensor:
    """Pearson correlation between the columns of ``h`` ``(n, width)``: ``(width, width)``.

    The diagonal is 1 except for constant columns, whose row and column are 0. Differentiable.
    """
    if h.ndim != 2:
        raise ValueError(f"h: expected a (batch, width) tensor, got shape {tuple(h.shape)}")
    if len(h) < 2:
        raise ValueError(f"h: a correlation needs at least 2 samples, got {len(h)}")
    centred = h - h.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / len(h)  # (width, width)
    var = torch.diagonal(cov)
    scale = torch.sqrt((var[:, None] + VARIANCE_EPS) * (var[None, :] + VARIANCE_EPS))
    return cov / scale


def off_diagonal(matrix: Tensor) -> Tensor:
    """The ``w (w - 1)`` entries of a square ``(w, w)`` matrix off its diagonal, flattened."""
    w = len(matrix)
    return matrix[~torch.eye(w, dtype=torch.bool, device=matrix.device)]


def mean_abs_correlation(rho: Tensor) -> float:
    """``mean_{i != j} |rho_ij|``; 0 for a layer of one neuron."""
    if len(rho) < 2:
        return 0.0
    return float(off_diagonal(rho).abs().mean())


def redundant_pairs(rho: Tensor, tau: float = REDUNDANT_TAU) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, with ``|rho_ij| > tau``, most correlated first."""
    _check_tau(tau)
    upper = torch.triu(rho.abs(), diagonal=1)
    i, j = torch.nonzero(upper > tau, as_tuple=True)
    order = torch.argsort(upper[i, j], descending=True)
    return [(int(i[k]), int(j[k])) for k in order]


def _check_tau(tau: float) -> None:
    if not (isinstance(tau, int | float) and 0 <= tau < 1):
        raise ValueError(f"tau: expected a number in [0, 1), got {tau!r}")


# -- per network -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerCorrelation:
    """What :func:`layer_correlations` measured of one hidden layer."""

    layer: int
    rho: Tensor
    """``(width, width)`` Pearson correlation of the layer's outputs."""
    mean_abs: float
    redundant: list[tuple[int, int]]


def hidden_outputs(net: nn.Module, x: Tensor) -> list[Tensor]:
    """The post-activation output of every hidden layer on ``x``, each ``(n, width)``."""
    if not hasattr(net, "forward_with_hidden"):
        raise TypeError(f"net: expected a network from nets.build, got {type(net).__name__}")
    _, hidden = net.forward_with_hidden(x)
    return hidden


@torch.no_grad()
def layer_correlations(
    net: nn.Module, x: Tensor, *, tau: float = REDUNDANT_TAU
) -> list[LayerCorrelation]:
    """Neuron correlation of every hidden layer (``forward_with_hidden`` order) on ``x``."""
    _check_tau(tau)
    result = []
    for i, h in enumerate(hidden_outputs(net, x)):
        rho = correlation(h.double())
        result.append(
            LayerCorrelation(i, rho, mean_abs_correlation(rho), redundant_pairs(rho, tau))
        )
    return result


# -- decorrelation during training -----------------------------------------------------------------
class DecorrelationPenalty:
    """``strength * mean_{i != j} rho_ij^2`` summed over hidden layers, for the training loss.

    ``layers`` picks hidden layers by index (``None``: all). The trainer calls it with the hidden
    outputs of the training forward pass, so it costs no extra forward pass; :meth:`flops` counts
    its matrix products (the ``(width, width)`` covariance, forward and backward).
    """

    def __init__(self, strength: float, *, layers: list[int] | None = None) -> None:
        if not (isinstance(strength, int | float) and math.isfinite(strength) and strength >= 0):
            raise ValueError(f"strength: expected a finite number >= 0, got {strength!r}")
        if layers is not None and (
            not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers)
        ):
            raise ValueError(f"layers: expected a non-empty list of layer indices, got {layers!r}")
        self.strength = float(strength)
        self.layers = None if layers is None else sorted(set(layers))

    def _chosen(self, count: int) -> list[int]:
        if self.layers is None:
            return list(range(count))
        bad = [i for i in self.layers if not 0 <= i < count]
        if bad:
            raise ValueError(f"layers: {bad} out of range; the network has {count} hidden layers")
        return self.layers

    def __call__(self, hidden: list[Tensor]) -> Tensor:
        total = hidden[0].new_zeros(())
        for i in self._chosen(len(hidden)):
            h = hidden[i]
            if h.shape[1] < 2:
                continue
            total = total + off_diagonal(correlation(h)).square().mean()
        return self.strength * total

    def flops(self, spec: ArchitectureSpec, n: int) -> int:
        """The covariance products of one training step on ``n`` samples: ``2 n w^2`` forward
        and twice that backward, per chosen layer."""
        widths = spec.hidden_widths
        return sum(3 * 2 * n * widths[i] ** 2 for i in self._chosen(len(widths)) if widths[i] > 1)

    def to_dict(self) -> dict:
        return {"strength": self.strength, "layers": self.layers}


# -- re-initializing redundant neurons -------------------------------------------------------------
@dataclass(frozen=True)
class Reinitialized:
    layer: int
    neuron: int
    partner: int
    rho: float


@torch.no_grad()
def reinitialize_redundant(
    net: nn.Module, x: Tensor, *, tau: float = REDUNDANT_TAU, seed: int = 0
) -> list[Reinitialized]:
    """Redraw one neuron of every redundant pair of a feedforward net's hidden layers, in place.

    For a pair ``(i, j)`` with ``|rho_ij| > tau`` on ``x``, neuron ``j``'s output is first folded
    into neuron ``i``'s fan-out: with the least-squares fit ``h_j ~ a h_i + c``, the fan-out layer
    gets ``W[:, i] += a W[:, j]`` and ``b += c W[:, j]``, so the function changes only by the
    part of ``h_j`` that ``h_i`` does not explain. Neuron ``j`` then gets a fresh fan-in row,
    drawn ``N(0, 1 / fan_in)`` with zero bias, and a zero fan-out column: it starts as a new,
    silent neuron. Each neuron is redrawn at most once per call, layers are treated bottom-up
    and re-measured after the layer below changed. Returns what was redrawn. Optimizer state of
    the touched rows is left as it is.
    """
    _check_tau(tau)
    spec = getattr(net, "spec", None)
    if spec is None or spec.residual:
        raise ValueError("net: reinitialize_redundant takes a feedforward network from nets.build")
    gen = torch.Generator().manual_seed(seed)
    layers = net.linear_layers()
    done: list[Reinitialized] = []
    for k in range(spec.depth):
        h = hidden_outputs(net, x)[k].double()  # (n, width)
        rho = correlation(h)
        fan_in, fan_out = layers[k], layers[k + 1]
        touched: set[int] = set()
        for i, j in redundant_pairs(rho, tau):
            if i in touched or j in touched:
                continue
            centred = h - h.mean(dim=0)
            a = float(
                (centred[:, i] @ centred[:, j]) / (centred[:, i].square().sum() + VARIANCE_EPS)
            )
            c = float(h[:, j].mean() - a * h[:, i].mean())
            w_j = fan_out.weight[:, j].clone()
            fan_out.weight[:, i] += a * w_j
            fan_out.bias += c * w_j
            fan_out.weight[:, j] = 0
            std = 1.0 / math.sqrt(fan_in.in_features)
            fan_in.weight[j] = (
                torch.randn(fan_in.in_features, generator=gen).to(fan_in.weight) * std
            )
            fan_in.bias[j] = 0
            touched.update((i, j))
            done.append(Reinitialized(k, j, i, float(rho[i, j])))
    return done
