"""The linear algebra of TINY (Verbockhaven, Rudkiewicz, Chevallier, Charpiat, TMLR 2024,
arXiv 2405.19816), on the moments of :mod:`._statistics` (rows are samples, float64).

- Best update of the fan-out layer ``[W | b]``: ``dW* = (S^+ M)^T`` ``(o, d)``, the least-squares
  fit of ``V_goal`` by ``dW B`` in the metric ``S`` (a one-layer natural-gradient step). Its
  first-order loss decrease is ``tr(M dW*) = tr(M^T S^+ M) >= 0``: ``L(W + g dW*) = L - g tr(M dW*)
  + o(g)``.
- The bottleneck: ``V_proj = V_goal - B dW*^T`` is what no change of ``W`` produces; its
  correlation with the fan-in layer's input is ``N = B2^T V_proj / n = M2 - C dW*^T`` ``(d2, o)``.
- New neurons: the SVD ``S2^(-1/2) N = sum_k lambda_k u_k v_k^T`` gives fan-in
  ``alpha_k = sqrt(lambda_k) S2^(-1/2) u_k`` (a row ``[weights | bias]`` of the fan-in layer) and
  fan-out ``omega_k = sqrt(lambda_k) v_k`` (a column of the fan-out layer).
  ``sum_{k<=K} alpha_k omega_k^T`` is the best rank-K least-squares fit of ``V_proj`` by an
  affine map of the fan-in layer's input (reduced-rank regression), and the ``sqrt(lambda)``
  split gives both sides the same norm.
- Gain: added with amplitude ``sqrt(g)`` on each side, neuron ``k`` moves the pre-activations by
  ``g act'(0) omega_k alpha_k^T b2 + o(g)``; measured against the bottleneck ``V_proj`` this is
  ``g act'(0) alpha_k^T N omega_k = g act'(0) lambda_k^2``, the paper's first-order improvement
  of the new neurons (GroMo's ``new_neurons_fo_improvement``). Its first-order change of the
  loss itself is ``-g act'(0) alpha_k^T M2 omega_k``, which also counts the part of ``V_goal``
  that ``dW*`` could reach.

TINY's expansion assumes ``act(0) = 0`` (ReLU, tanh, GELU, ...); with sigmoid the new neurons
also shift the output by ``sqrt(g) act(0) omega_k``, which only the line search sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._statistics import Moments

#: ``act'(0)`` as TINY's first-order gain uses it: the right derivative at 0 (ReLU: 1), the values
#: of GroMo's ``known_activations_zero_plus_gradient``.
ACTIVATION_SLOPE_AT_ZERO = {
    "relu": 1.0,
    "leaky_relu": 1.0,
    "tanh": 1.0,
    "sigmoid": 0.25,
    "gelu": 0.5,
    "identity": 1.0,
}


def optimal_update(moments: Moments) -> tuple[Tensor, Tensor]:
    """``dW* = (S^+ M)^T`` ``(o, d)`` and its first-order decrease ``tr(M dW*)`` (a scalar), of
    a linear or a conv site's moments (:class:`~._conv_statistics.ConvMoments` alike)."""
    delta = (torch.linalg.pinv(moments.tensor_s, hermitian=True) @ moments.tensor_m).T
    return delta, torch.trace(moments.tensor_m @ delta)


def projected_goal(moments: Moments, delta: Tensor) -> Tensor:
    """``N = B2^T (V_goal - B dW^T) / n = M2 - C dW^T`` ``(d2, o)``."""
    return moments.tensor_m2 - moments.cross_covariance @ delta.T


def inverse_sqrt(matrix: Tensor) -> Tensor:
    """``A^(-1/2)`` of a symmetric positive semi-definite ``A``, on its numerical range.

    Eigenvalues below ``size * eps * max`` (the cut-off of ``torch.linalg.pinv``) count as zero:
    directions the inputs never take get no weight.
    """
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    cutoff = len(matrix) * torch.finfo(matrix.dtype).eps * eigenvalues.abs().max()
    keep = eigenvalues > cutoff
    vectors = vectors[:, keep]
    return (vectors * eigenvalues[keep].rsqrt()) @ vectors.T


@dataclass(frozen=True)
class Directions:
    """Every candidate neuron of a site, by decreasing ``lambda``."""

    fan_in: Tensor
    """``(K, d2)``: row ``k`` is ``alpha_k``, weights then bias."""
    fan_out: Tensor
    """``(o, K)``: column ``k`` is ``omega_k``."""
    singular_values: Tensor
    """``(K,)``: ``lambda_k``, decreasing."""


def neuron_directions(tensor_s2: Tensor, tensor_n: Tensor) -> Directions:
    """The SVD of ``S2^(-1/2) N`` turned into fan-in / fan-out weights (all ``min(d2, o)``)."""
    s2_inv_sqrt = inverse_sqrt(tensor_s2)
    u, lam, vt = torch.linalg.svd(s2_inv_sqrt @ tensor_n, full_matrices=False)
    root = lam.sqrt()
    fan_in = root[:, None] * (s2_inv_sqrt @ u).T
    fan_out = vt.T * root
    return Directions(fan_in, fan_out, lam)


def projected_goal_covariance(moments: Moments, delta: Tensor) -> Tensor:
    """``V_proj^T V_proj / n = V_goal^T V_goal / n - M^T dW^T - dW M + dW S dW^T`` ``(o, o)``."""
    cross = delta @ moments.tensor_m
    return moments.goal_covariance - cross - cross.T + delta @ moments.tensor_s @ delta.T


def neuron_gains(singular_values: Tensor, activation: str) -> Tensor:
    """First-order loss decrease per unit amplitude of each neuron: ``act'(0) lambda_k^2``."""
    return ACTIVATION_SLOPE_AT_ZERO[activation] * singular_values.square()
