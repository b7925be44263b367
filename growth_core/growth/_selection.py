"""Which of a site's candidate neurons to keep, and what they gain: named rules.

The candidates are the singular pairs of ``S2^(-1/2) N`` (see :mod:`._tiny`), by decreasing
``lambda_k``; a rule keeps a leading run of them. Every strategy adds the number the rule picks,
so strategies differ only in the weights they give the new neurons.

Why a rule must know ``n``: ``S2^(-1/2) N`` is estimated from ``n`` samples. Even when no neuron
can lower the expected loss, its singular values are of order ``sqrt((d2 + o) / n)`` times the
size of ``V_proj``, because the SVD picks the directions in which the sampling noise happens to
be largest. A fixed threshold on ``lambda`` (GroMo's) therefore keeps noise neurons when ``n`` is
small or ``d2`` large, the first layer on MNIST (``d2 = 785``) above all.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ._statistics import SiteStatistics
from ._tiny import (
    ACTIVATION_SLOPE_AT_ZERO,
    neuron_directions,
    neuron_gains,
    optimal_update,
    projected_goal,
    projected_goal_covariance,
)

#: GroMo's default ``statistical_threshold`` on ``lambda_k`` (``compute_optimal_updates``).
GROMO_SINGULAR_VALUE_THRESHOLD = 1e-3

#: One-sided z of the held-out test: a neuron is kept when its held-out gain exceeds this many
#: standard errors, so a pure-noise candidate passes with probability about 2.3%. Ours.
HELD_OUT_Z = 2.0


class NeuronSelection(ABC):
    """Decides which candidate neurons of one site are worth adding, and what each gains."""

    @abstractmethod
    def gains(self, stats: SiteStatistics, activation: str) -> Tensor:
        """First-order gain of each neuron worth adding, leading candidates first (float64).

        Its length is the number of neurons to add; its sum scores the site.
        """


class SingularValueThreshold(NeuronSelection):
    """Keep every ``lambda_k >= threshold``, scored by its fitted gain ``act'(0) lambda_k^2``:
    GroMo's rule.

    The threshold is absolute and does not depend on the number of samples, and the fitted gain
    includes the noise the SVD picks up, so both the count and the score grow with
    ``(d2 + o) / n`` (see the module docstring). Unlike GroMo, no neuron is kept when no
    ``lambda_k`` reaches the threshold.
    """

    def __init__(self, threshold: float = GROMO_SINGULAR_VALUE_THRESHOLD) -> None:
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold: expected a finite number >= 0, got {threshold!r}")
        self.threshold = threshold

    def gains(self, stats: SiteStatistics, activation: str) -> Tensor:
        moments = stats.moments()
        delta, _ = optimal_update(moments)
        cand = neuron_directions(moments.fitting_s2(), projected_goal(moments, delta))
        lam = cand.singular_values
        return neuron_gains(lam[lam >= self.threshold], activation)


class HeldOutGain(NeuronSelection):
    """Keep the leading neurons whose first-order gain is significant on samples they were not
    fitted on, scored by that held-out gain.

    ``dW*`` and the candidates are fitted on fold 0 (the even samples of the stream); candidate
    ``k``'s gain is then measured on fold 1,
    ``g_k = act'(0) alpha_k^T N_1 omega_k = act'(0) mean_i (alpha_k^T b2_i)(omega_k^T v_i)``
    (``N_1``, ``v_i`` from fold 1 and fold 0's ``dW*``): given fold 0, an unbiased estimate of
    what the direction gains, where the fitted ``act'(0) lambda_k^2`` is biased upwards by the
    noise. With no real gain, ``b2`` and ``v`` are uncorrelated and the standard error of
    ``g_k`` is ``act'(0) sqrt(alpha_k^T S2_1 alpha_k * omega_k^T Sigma_1 omega_k / n_1)``
    (``Sigma_1 = V_proj^T V_proj / n_1``, independence approximation). The leading run of
    candidates with ``g_k > z * se_k`` is kept. The neurons themselves are then computed from
    all samples (better estimates of the same directions), so the held-out gains are
    conservative scores. No extra pass: the folds are the two halves of the statistics already
    collected.
    """

    def __init__(self, z: float = HELD_OUT_Z) -> None:
        if not (math.isfinite(z) and z >= 0):
            raise ValueError(f"z: expected a finite number >= 0, got {z!r}")
        self.z = z

    def gains(self, stats: SiteStatistics, activation: str) -> Tensor:
        fit, check = stats.moments(0), stats.moments(1)
        delta, _ = optimal_update(fit)
        cand = neuron_directions(fit.fitting_s2(), projected_goal(fit, delta))
        alpha, omega = cand.fan_in, cand.fan_out.T  # (K, d2), (K, o)
        slope = ACTIVATION_SLOPE_AT_ZERO[activation]
        held = slope * torch.einsum("kd,do,ko->k", alpha, projected_goal(check, delta), omega)
        var_in = torch.einsum("kd,de,ke->k", alpha, check.tensor_s2, alpha)
        var_out = torch.einsum("ko,op,kp->k", omega, projected_goal_covariance(check, delta), omega)
        se = slope * (var_in.clamp(min=0) * var_out.clamp(min=0) / check.n).sqrt()
        holds = (cand.singular_values > 0) & (held > self.z * se)
        failures = (~holds).nonzero()
        return held[: int(failures[0]) if len(failures) else len(held)]
