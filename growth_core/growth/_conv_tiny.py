"""TINY for channels: the linear algebra of :mod:`._tiny` on a conv site's moments
(:mod:`._conv_statistics`; Verbockhaven et al. 2024, the convolutional case).

- Best update of ``fan_out``'s ``[W | b]`` ``(o, d)``: ``dW* = (S^+ M)^T``, the least-squares
  fit of ``v`` by ``dW b`` over samples and positions; first-order decrease ``tr(M dW*)``.
- The bottleneck: ``v_proj = v - dW* b``, what no change of ``fan_out``'s kernels produces; its
  correlation with the patches a new channel would bring is
  ``N = M2 - [C_j dW*^T]_j`` ``(d2, o * kk)``: column ``c * kk + j`` is
  ``sum bt_j v_proj_c / n``.
- New channels: the SVD ``S2^(-1/2) N = sum_k lambda_k u_k w_k^T`` gives ``fan_in`` kernels
  ``alpha_k = sqrt(lambda_k) S2^(-1/2) u_k`` ``(d2,)`` and ``fan_out`` kernels
  ``omega_k = sqrt(lambda_k) w_k`` ``(o * kk,)``, reshaped to ``(o, kh, kw)``. Channel ``k``
  added at amplitude ``sqrt(g)`` on both sides moves ``fan_out``'s output by
  ``g act'(0) sum_j omega_kj alpha_k^T bt_j``; against ``v_proj`` that is
  ``g act'(0) alpha_k^T N omega_k = g act'(0) lambda_k^2``, the first-order gain (GroMo's
  ``new_neurons_fo_improvement``).

**The metric.** The exact squared norm of the channels' contribution couples the kernel
offsets: ``|sum_j Theta_j^T bt_j|^2`` (``Theta_j = sum_k alpha_k omega_kj^T``) has cross terms
``bt_j bt_j'^T``. ``S2`` (GroMo's ``tensor_s_growth``, and what is fitted here) keeps
``sum_j bt_j bt_j^T`` for every offset; with the offsets' blocks equal (away from borders) that is
the Cauchy-Schwarz bound ``kk sum_j |Theta_j^T bt_j|^2`` of the exact term. So amplitude 1 is at
most the best step along the fitted channels (the best is about ``kk`` when the patches under
different offsets are uncorrelated); the line search finds it. With a 1x1 ``fan_out`` the two
agree: the linear case.

**A new channel's BatchNorm.** Between ``fan_in`` and the activation, a norm would rescale the
new channel and break the expansion above. Each new channel's norm starts as the identity on that
channel: running mean ``mu_k`` and variance ``var_k`` are the mean and (biased) variance of the
channel's ``fan_in`` output over samples and positions (from ``patch_mean``, ``patch_moment``),
weight ``sqrt(var_k + eps)``, bias ``mu_k``. In eval mode the norm is then exactly the identity on
the new channel; in training mode exactly so on a batch of all the statistics' samples (its mean
and variance are ``mu_k``, ``var_k``), approximately on other batches. GroMo previews the new
channels through an identity norm too, but grows the norm with weight 1, bias 0, mean 0,
variance 1, which in training mode rescales the channel to unit variance: a jump this avoids.

**Conventions, as the linear code's.** ``dW*`` uses the pseudo-inverse of ``S`` (the least-norm
update; GroMo's ``linalg.solve`` returns another one when ``S`` is singular, with the same
``S dW*^T``, decrease and ``N``); ``S2^(-1/2)`` drops eigenvalues below ``pinv``'s relative
cut-off (GroMo: below 1e-6); ``ridge`` shrinks ``S2`` (0, GroMo's, by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._conv_statistics import ConvMoments
from ._tiny import Directions, neuron_directions, neuron_gains, optimal_update


def conv_projected_goal(moments: ConvMoments, delta: Tensor) -> Tensor:
    """``N = M2 - [C_j dW^T]_j`` ``(d2, o * kk)``, columns ``c * kk + j``."""
    d2 = len(moments.tensor_s2)
    moved = torch.einsum("jae,ce->acj", moments.cross_covariance, delta)  # (d2, o, kk)
    return moments.tensor_m2 - moved.reshape(d2, -1)


@dataclass(frozen=True)
class ChannelBottleneck:
    """TINY at one conv site: the best update of ``fan_out``, the bottleneck it leaves, and
    every candidate channel by decreasing ``lambda``."""

    delta: Tensor
    """``(o, d)``: ``dW*``, ``fan_out``'s ``[W | b]`` flattened like its patches."""
    update_decrease: float
    """``tr(M dW*)``: the first-order decrease of the best update."""
    tensor_n: Tensor
    """``(d2, o * kk)``: the bottleneck ``N``."""
    directions: Directions
    """``fan_in`` ``(K, d2)``, ``fan_out`` ``(o * kk, K)``, ``singular_values`` ``(K,)``."""
    gains: Tensor
    """``(K,)``: each candidate's first-order gain per unit amplitude, ``act'(0) lambda_k^2``."""

    @property
    def gain(self) -> float:
        return float(self.gains.sum())


def channel_bottleneck(moments: ConvMoments, activation: str) -> ChannelBottleneck:
    """Solve TINY at a conv site (all ``min(d2, o * kk)`` candidates)."""
    delta, decrease = optimal_update(moments)  # the linear formula: S and M are fan_out's
    tensor_n = conv_projected_goal(moments, delta)
    directions = neuron_directions(moments.fitting_s2(), tensor_n)
    gains = neuron_gains(directions.singular_values, activation)
    return ChannelBottleneck(delta, float(decrease), tensor_n, directions, gains)


def channel_moments(moments: ConvMoments, fan_in: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and biased variance ``(k,)`` of ``alpha_k^T b2`` over samples and positions, for
    ``fan_in`` rows ``alpha_k`` ``(k, d2)``: what each new channel's norm starts from."""
    if moments.patch_mean is None or moments.patch_moment is None:
        raise ValueError("site: the statistics were collected without a norm at this site")
    alpha = fan_in.to(moments.patch_moment)
    mean = alpha @ moments.patch_mean
    second = torch.einsum("ka,ab,kb->k", alpha, moments.patch_moment, alpha)
    return mean, (second - mean.square()).clamp(min=0)
