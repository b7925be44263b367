"""Mean-field signal propagation through deep random networks: the screen's ground truth.

A wide fully connected network with ``W_ij ~ N(0, sigma_w2 / fan_in)`` and ``b_i ~ N(0, sigma_b2)``
has Gaussian pre-activations whose variance ``q`` and whose correlation ``c`` between two inputs
follow deterministic maps, layer by layer (Poole et al. 2016, "Exponential expressivity in deep
neural networks through transient chaos"; Schoenholz et al. 2017, "Deep Information
Propagation"). With ``z, z1, z2 ~ N(0, 1)`` independent and ``E`` their expectation::

    length map        q_l = sigma_w2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b2
    correlation map   c_l = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*
                      u1 = sqrt(q*) z1,  u2 = sqrt(q*) (c_{l-1} z1 + sqrt(1 - c_{l-1}^2) z2)

    chi_1  = sigma_w2 E[phi'(sqrt(q*) z)^2]            slope of the correlation map at c = 1
    chi_c  = sigma_w2 E[phi'(u1) phi'(u2)] at c = c*    slope of the correlation map at c*
    xi_c^-1 = -log chi_c                                depth over which correlations converge
    xi_q^-1 = -log(chi_1 + sigma_w2 E[phi''(u) phi(u)]) depth over which q converges to q*

``chi_1 < 1`` is the ordered phase (``c* = 1``: all inputs become alike), ``chi_1 > 1`` the chaotic
phase (``c* < 1``: nearby inputs decorrelate); ``chi_1 = 1`` is the critical line, where ``xi_c``
diverges. Schoenholz et al. find networks trainable up to about ``6 xi_c`` layers.

Expectations are Gauss-Hermite sums for tanh (1D for ``q``, a 2D product rule for ``c``) and
closed forms for ReLU (the arc-cosine kernel, Cho & Saul 2009).

Where a quantity does not exist:

- ``xi_c``, ``xi_q`` and ``trainable_depth`` are ``inf`` where their ``chi`` is 1 (the fixed point
  is marginal and convergence is slower than exponential), e.g. ``xi_c`` on the critical line.
- ``q_star`` is ``inf`` where ``q_l`` grows without bound (ReLU with ``sigma_w2 > 2``, or
  ``sigma_w2 = 2`` and ``sigma_b2 > 0``), and raises ``ValueError`` for ReLU at
  ``(sigma_w2, sigma_b2) = (2, 0)``, where every ``q`` is a fixed point.
- ``c_star``, ``xi_c`` and ``trainable_depth`` raise ``ValueError`` unless ``0 < q* < inf``: at
  ``q* = 0`` (``sigma_b2 = 0`` in the ordered phase) every input collapses to zero and has no
  correlation; ``xi_q`` raises ``ValueError`` unless ``q*`` is finite.
  So ReLU's ``c*`` and ``xi_c`` exist only for ``sigma_w2 < 2`` and ``sigma_b2 > 0``, where
  ``c* = 1`` and ``xi_c = -1 / log(sigma_w2 / 2)``; its one critical point is ``(2, 0)``.

Every public function takes numbers or arrays for ``sigma_w2`` and ``sigma_b2`` (broadcast
together) and returns a float or an array of that shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._checks import require_number
from ._gaussian import (
    C_STAR_ATOL,
    MAX_BRACKET_STEPS,
    ROOT_RTOL,
    GaussianMoments,
    bisect,
    gaussian_moments,
)

#: Schoenholz et al. 2017, "Deep Information Propagation": random networks train up to about
#: 6 xi_c layers (their MNIST and CIFAR-10 trainability experiments).
TRAINABLE_DEPTH_FACTOR = 6.0


FloatOrArray = float | NDArray[np.float64]


def _check_variances(**variances: float) -> None:
    for name, value in variances.items():
        require_number(name, float(value), 0.0)


def _elementwise(scalar: Callable[..., float], *args: ArrayLike, activation: str) -> FloatOrArray:
    """Apply ``scalar(*floats, moments)`` over the broadcast ``args``; a float for scalars."""
    moments = gaussian_moments(activation)
    out = np.vectorize(lambda *xs: scalar(*xs, moments), otypes=[float])(*args)
    return float(out) if out.ndim == 0 else out


def _depth_scale(chi: float) -> float:
    """``-1 / log chi``: the depth over which a deviation shrinks by ``e`` when each layer
    multiplies it by ``chi``; ``inf`` at ``chi >= 1`` (only roundoff puts a stable fixed point
    above 1)."""
    if chi >= 1.0:
        return math.inf
    if chi <= 0.0:
        return 0.0
    return -1.0 / math.log(chi)


def _finite_q_star(
    sigma_w2: float, sigma_b2: float, moments: GaussianMoments, *, what: str
) -> float:
    _check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    q = moments.q_star(sigma_w2, sigma_b2)
    if math.isinf(q):
        raise ValueError(f"{what}: q* is infinite at {sigma_w2=}, {sigma_b2=} (q_l diverges)")
    return q


def _positive_q_star(
    sigma_w2: float, sigma_b2: float, moments: GaussianMoments, *, what: str
) -> float:
    q = _finite_q_star(sigma_w2, sigma_b2, moments, what=what)
    if q == 0.0:
        raise ValueError(
            f"{what}: q* = 0 at {sigma_w2=}, {sigma_b2=}: every input collapses to 0, so the "
            "correlation is undefined"
        )
    return q


def _q_star(sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
    _check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    return moments.q_star(sigma_w2, sigma_b2)


def _chi_1(sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
    _check_variances(sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    # ReLU's E[phi'^2] is 1/2 at every q, so chi_1 exists even where q* does not.
    q = 1.0 if moments.scale_free_derivative else moments.q_star(sigma_w2, sigma_b2)
    return sigma_w2 * moments.dphi_sq(q)


def _correlation_map(
    c: float, q: float, sigma_w2: float, sigma_b2: float, m: GaussianMoments
) -> float:
    return (sigma_w2 * m.phi_phi(q, c) + sigma_b2) / q


def _c_star(sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
    q = _positive_q_star(sigma_w2, sigma_b2, moments, what="c_star")
    return _c_star_at(q, sigma_w2, sigma_b2, moments)


def _c_star_at(q: float, sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
    if sigma_w2 * moments.dphi_sq(q) <= 1.0:
        return 1.0  # ordered or critical: c = 1 attracts

    def excess(c: float) -> float:  # (C(c) - c) / (1 - c): >= 0 at c = 0, 1 - chi_1 < 0 at c = 1
        return (_correlation_map(c, q, sigma_w2, sigma_b2, moments) - c) / (1.0 - c)

    return bisect(lambda c: excess(c) > 0.0, 0.0, 1.0, C_STAR_ATOL)


def _chi_c(sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
    q = _positive_q_star(sigma_w2, sigma_b2, moments, what="xi_c")
    c = _c_star_at(q, sigma_w2, sigma_b2, moments)
    if c == 1.0:
        return sigma_w2 * moments.dphi_sq(q)  # chi_c = chi_1 at c* = 1
    return sigma_w2 * moments.dphi_dphi(q, c)


def _xi_c(sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
    return _depth_scale(_chi_c(sigma_w2, sigma_b2, moments))


def _xi_q(sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
    q = _finite_q_star(sigma_w2, sigma_b2, moments, what="xi_q")
    return _depth_scale(sigma_w2 * (moments.dphi_sq(q) + moments.phi_d2phi(q)))


def _critical_sigma_w2(sigma_b2: float, moments: GaussianMoments) -> float:
    def ordered(sigma_w2: float) -> bool:
        return _chi_1(sigma_w2, sigma_b2, moments) <= 1.0

    _check_variances(sigma_b2=sigma_b2)
    lo, hi = 0.0, 1.0  # chi_1 = 0 at sigma_w2 = 0
    for _ in range(MAX_BRACKET_STEPS):
        if not ordered(hi):
            break
        lo, hi = hi, 2.0 * hi
    else:
        raise ValueError(f"critical_sigma_w2: chi_1 stays <= 1 up to sigma_w2 = {hi:g}")
    return bisect(ordered, lo, hi, ROOT_RTOL * hi)


def length_map(
    q: ArrayLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh"
) -> FloatOrArray:
    """One layer of the length map: ``q -> sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2``."""

    def scalar(q: float, sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
        _check_variances(q=q, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        return sigma_w2 * moments.phi_sq(q) + sigma_b2

    return _elementwise(scalar, q, sigma_w2, sigma_b2, activation=activation)


def correlation_map(
    c: ArrayLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh"
) -> FloatOrArray:
    """One layer of the correlation map at ``q = q*``:
    ``c -> (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*``. Needs ``0 < q* < inf``."""

    def scalar(c: float, sigma_w2: float, sigma_b2: float, moments: GaussianMoments) -> float:
        if not -1.0 <= c <= 1.0:
            raise ValueError(f"c: expected a correlation in [-1, 1], got {c}")
        q = _positive_q_star(sigma_w2, sigma_b2, moments, what="correlation_map")
        return _correlation_map(c, q, sigma_w2, sigma_b2, moments)

    return _elementwise(scalar, c, sigma_w2, sigma_b2, activation=activation)


def q_star(sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh") -> FloatOrArray:
    """The stable fixed point ``q*`` of ``q -> sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2``.

    tanh: 0 when ``sigma_b2 = 0`` and ``sigma_w2 <= 1``, else the positive root (bisection).
    ReLU: ``sigma_b2 / (1 - sigma_w2 / 2)`` for ``sigma_w2 < 2``, ``inf`` where ``q_l`` diverges,
    ``ValueError`` at ``(2, 0)``.
    """
    return _elementwise(_q_star, sigma_w2, sigma_b2, activation=activation)


def chi_1(sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh") -> FloatOrArray:
    """``chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]``: < 1 ordered, > 1 chaotic (ReLU: sigma_w2 / 2)."""
    return _elementwise(_chi_1, sigma_w2, sigma_b2, activation=activation)


def c_star(sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh") -> FloatOrArray:
    """The stable fixed point ``c*`` of the correlation map: 1 where ``chi_1 <= 1``, else the
    root in ``[0, 1)`` (bisection). Needs ``0 < q* < inf``."""
    return _elementwise(_c_star, sigma_w2, sigma_b2, activation=activation)


def xi_c(sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh") -> FloatOrArray:
    """Correlation depth scale ``xi_c = -1 / log chi_c``, ``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]``
    at ``(q*, c*)`` (``chi_c = chi_1`` when ``c* = 1``); ``inf`` on the critical line.
    Needs ``0 < q* < inf``."""
    return _elementwise(_xi_c, sigma_w2, sigma_b2, activation=activation)


def xi_q(sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh") -> FloatOrArray:
    """Length depth scale ``xi_q = -1 / log(chi_1 + sigma_w2 E[phi''(u) phi(u)])``, u ~ N(0, q*).

    The argument of the log is the slope of the length map at ``q*`` (by Stein's lemma,
    ``d/dq E[phi(sqrt(q) z)^2] = E[phi'(u)^2 + phi(u) phi''(u)]``). Needs a finite ``q*``.
    """
    return _elementwise(_xi_q, sigma_w2, sigma_b2, activation=activation)


def critical_sigma_w2(sigma_b2: ArrayLike, activation: str = "tanh") -> FloatOrArray:
    """The ``sigma_w2`` where ``chi_1 = 1`` (bisection): 1 for tanh at ``sigma_b2 = 0``, about
    1.76 at ``sigma_b2 = 0.05``; 2 for ReLU at every ``sigma_b2`` (where, for ``sigma_b2 > 0``,
    ``q*`` diverges)."""
    return _elementwise(_critical_sigma_w2, sigma_b2, activation=activation)


def trainable_depth(
    sigma_w2: ArrayLike, sigma_b2: ArrayLike, activation: str = "tanh"
) -> FloatOrArray:
    """``TRAINABLE_DEPTH_FACTOR * xi_c``: Schoenholz et al.'s bound on the trainable depth."""
    return TRAINABLE_DEPTH_FACTOR * xi_c(sigma_w2, sigma_b2, activation)
