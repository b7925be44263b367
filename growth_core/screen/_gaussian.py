"""Gaussian expectations of an activation, the mean-field maps' building blocks: Gauss-Hermite
sums for tanh (1D, and a 2D product rule for correlations) and closed forms for ReLU (the
arc-cosine kernel, Cho & Saul 2009)."""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.typing import NDArray

#: Relative (q*, critical sigma_w2) and absolute (c*) tolerance of the bisections.
ROOT_RTOL = 1e-12
C_STAR_ATOL = 1e-12
#: Bracket searches give up after this many halvings or doublings.
MAX_BRACKET_STEPS = 200

#: Gauss-Hermite nodes for 1D expectations (numpy's hermegauss overflows beyond about 350).
QUAD_ORDER_1D = 301
#: Gauss-Hermite nodes per axis for the 2D expectations of the correlation map. Against rules of
#: 1500 and 700 nodes, tanh's q*, chi_1, xi_c and xi_q are within 1e-6 relative for
#: sigma_w2 <= 4 and 1e-4 for sigma_w2 <= 8, 1e-2 at sigma_w2 = 16 (q* about 13): tanh(sqrt(q) z)
#: sharpens as q grows.
QUAD_ORDER_2D = 151

#: Activations with a mean-field theory here.
MEAN_FIELD_ACTIVATIONS = ("tanh", "relu")


def bisect(below: Callable[[float], bool], lo: float, hi: float, tol: float) -> float:
    """The root in ``[lo, hi]`` of a function known only by ``below(x)``: x lies left of it."""
    while hi - lo > tol:
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if below(mid) else (lo, mid)
    return (lo + hi) / 2.0


@functools.cache
def _gauss_hermite(order: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Nodes ``z`` and weights ``w`` with ``E[f(z)] ~ sum_i w_i f(z_i)`` for ``z ~ N(0, 1)``."""
    nodes, weights = hermegauss(order)
    return nodes, weights / math.sqrt(2.0 * math.pi)


class GaussianMoments(ABC):
    """Gaussian moments of one activation; ``u ~ N(0, q)``, ``(u1, u2)`` with correlation ``c``."""

    #: ``E[phi'(u)^2]`` does not depend on ``q`` (positively homogeneous activations).
    scale_free_derivative: bool = False

    @abstractmethod
    def phi_sq(self, q: float) -> float:
        """``E[phi(u)^2]``."""

    @abstractmethod
    def dphi_sq(self, q: float) -> float:
        """``E[phi'(u)^2]``."""

    @abstractmethod
    def phi_d2phi(self, q: float) -> float:
        """``E[phi(u) phi''(u)]``."""

    @abstractmethod
    def phi_phi(self, q: float, c: float) -> float:
        """``E[phi(u1) phi(u2)]``."""

    @abstractmethod
    def dphi_dphi(self, q: float, c: float) -> float:
        """``E[phi'(u1) phi'(u2)]``."""

    @abstractmethod
    def q_star(self, sigma_w2: float, sigma_b2: float) -> float:
        """The stable fixed point of the length map (see the module docstring for edge cases)."""


class _Sigmoidal(GaussianMoments):
    """An odd activation with ``|phi| <= 1`` and ``phi(x) / x`` decreasing in ``|x|`` (tanh).

    Then ``(sigma_w2 E[phi(u)^2] + sigma_b2) / q`` decreases in ``q``, so the length map has one
    stable fixed point, found by bisection on ``log q``.
    """

    def __init__(
        self,
        phi: Callable[[NDArray[np.float64]], NDArray[np.float64]],
        dphi: Callable[[NDArray[np.float64]], NDArray[np.float64]],
        d2phi: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    ) -> None:
        self.phi, self.dphi, self.d2phi = phi, dphi, d2phi

    def _mean(self, f: Callable[[NDArray[np.float64]], NDArray[np.float64]], q: float) -> float:
        z, w = _gauss_hermite(QUAD_ORDER_1D)
        return float(w @ f(math.sqrt(q) * z))

    def _mean_pair(
        self, f: Callable[[NDArray[np.float64]], NDArray[np.float64]], q: float, c: float
    ) -> float:
        z, w = _gauss_hermite(QUAD_ORDER_2D)
        z1, z2 = z[:, None], z[None, :]
        u1 = math.sqrt(q) * z1  # (n, 1)
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(1.0 - c * c, 0.0)) * z2)  # (n, n)
        return float(w @ (f(u1) * f(u2)) @ w)

    def phi_sq(self, q: float) -> float:
        return self._mean(lambda u: self.phi(u) ** 2, q)

    def dphi_sq(self, q: float) -> float:
        return self._mean(lambda u: self.dphi(u) ** 2, q)

    def phi_d2phi(self, q: float) -> float:
        return self._mean(lambda u: self.phi(u) * self.d2phi(u), q)

    def phi_phi(self, q: float, c: float) -> float:
        return self._mean_pair(self.phi, q, c)

    def dphi_dphi(self, q: float, c: float) -> float:
        return self._mean_pair(self.dphi, q, c)

    def q_star(self, sigma_w2: float, sigma_b2: float) -> float:
        def excess(q: float) -> float:  # length map over q, minus 1: > 0 below q*, < 0 above
            return (sigma_w2 * self.phi_sq(q) + sigma_b2) / q - 1.0

        slope_at_zero = sigma_w2 * float(self.dphi(np.zeros(1))[0]) ** 2
        if sigma_b2 == 0.0 and slope_at_zero <= 1.0:
            return 0.0  # q = 0 is the only fixed point, and it attracts
        hi = sigma_w2 + sigma_b2  # the length map never exceeds this since |phi| <= 1
        lo = hi / 2.0
        for _ in range(MAX_BRACKET_STEPS):
            if excess(lo) > 0.0:
                break
            lo /= 2.0
        else:
            raise ValueError(f"q_star: no fixed point above {lo:g} for {sigma_w2=}, {sigma_b2=}")
        log_q = bisect(lambda t: excess(math.exp(t)) > 0.0, math.log(lo), math.log(hi), ROOT_RTOL)
        return math.exp(log_q)


class _Relu(GaussianMoments):
    """ReLU in closed form; with ``theta = arccos c`` (Cho & Saul 2009):

    ``E[phi(u1) phi(u2)] = q (sin theta + (pi - theta) c) / (2 pi)``,
    ``E[phi'(u1) phi'(u2)] = (pi - theta) / (2 pi)``, ``E[phi^2] = q / 2``, ``E[phi'^2] = 1 / 2``.
    """

    scale_free_derivative = True

    def phi_sq(self, q: float) -> float:
        return q / 2.0

    def dphi_sq(self, q: float) -> float:
        return 0.5

    def phi_d2phi(self, q: float) -> float:
        return 0.0  # phi'' vanishes off 0, and phi(0) = 0

    def phi_phi(self, q: float, c: float) -> float:
        theta = math.acos(min(max(c, -1.0), 1.0))
        return q * (math.sin(theta) + (math.pi - theta) * c) / (2.0 * math.pi)

    def dphi_dphi(self, q: float, c: float) -> float:
        theta = math.acos(min(max(c, -1.0), 1.0))
        return (math.pi - theta) / (2.0 * math.pi)

    def q_star(self, sigma_w2: float, sigma_b2: float) -> float:
        # The length map is affine: q -> sigma_w2 q / 2 + sigma_b2.
        if sigma_w2 < 2.0:
            return sigma_b2 / (1.0 - sigma_w2 / 2.0)
        if sigma_w2 == 2.0 and sigma_b2 == 0.0:
            raise ValueError("q_star: for relu at sigma_w2 = 2, sigma_b2 = 0 every q is fixed")
        return math.inf


_MOMENTS: dict[str, GaussianMoments] = {
    "tanh": _Sigmoidal(
        np.tanh,
        lambda u: 1.0 - np.tanh(u) ** 2,
        lambda u: -2.0 * np.tanh(u) * (1.0 - np.tanh(u) ** 2),
    ),
    "relu": _Relu(),
}


def gaussian_moments(activation: str) -> GaussianMoments:
    if activation not in _MOMENTS:
        expected = ", ".join(MEAN_FIELD_ACTIVATIONS)
        raise ValueError(f"activation: unknown {activation!r}; expected one of {expected}")
    return _MOMENTS[activation]
