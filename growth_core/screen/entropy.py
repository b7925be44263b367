"""Relative entropy of a reconstruction, and the readouts of its curve over depth.

Thurn, Jefferson, Erdmenger 2024 ("Opening the Black Box: predicting the trainability of deep
neural networks with reconstruction entropy", arXiv 2406.12916) read an image and its
reconstruction as two distributions over pixels and measure how much the reconstruction from
layer ``l`` has lost by ``KL(original || reconstruction)``. Over depth the KL rises while layers
still carry the input and saturates where the input is lost; the depth at which it saturates
predicts the depth to which the network trains.

Three readouts of a curve: the reference's :func:`saturation_depth` (the last layer not within
0.5% of the final value), :func:`crossing_depth` (where the curve reaches 95% of its tail) and
:func:`decay_depth` (where a geometric approach to saturation, fitted by the curve's area, comes
within the same 0.5%). The validation in ``bench/screen_validation.py`` compares all three.

Curves here are indexed from 0: ``curve[i]`` belongs to the reconstruction from hidden
representation ``i`` (the output of the first hidden layer is ``i = 0``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Added to every probability so the logarithm is finite (the reference's ``off=1e-12``).
KL_OFFSET = 1e-12
#: The reference's saturation test ``np.isclose(value, final, rtol=0.005)``: a value within 0.5%
#: of the curve's final value (plus numpy's default 1e-8 absolute) counts as saturated.
SATURATION_RTOL = 0.005
SATURATION_ATOL = 1e-8
#: The crossing readout: the curve has saturated once it reaches this fraction of its tail level.
CROSSING_LEVEL = 0.95
#: The tail level is the median of the last ``1 / CROSSING_TAIL_FRACTION`` of the curve.
CROSSING_TAIL_FRACTION = 4


def pixel_distribution(images: Tensor) -> Tensor:
    """Each row of ``images`` (``(..., pixels)``) as a probability distribution over its pixels.

    Shift by the row's minimum, divide by the sum, add :data:`KL_OFFSET` and renormalize; a
    constant row becomes uniform. Invariant to positive scaling and to shifts of the row. (The
    reference adds the offset before dividing by the sum; adding it after makes the invariance to
    scaling exact, where the reference's breaks by about ``p log(scale)`` at the reconstruction's
    minimum pixel.) Returns a new tensor; ``images`` is never modified.
    """
    shifted = images - images.amin(dim=-1, keepdim=True)
    total = shifted.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(shifted, 1.0 / shifted.shape[-1])
    p = torch.where(total > 0, shifted / total.clamp_min(torch.finfo(shifted.dtype).tiny), uniform)
    p = p + KL_OFFSET
    return p / p.sum(dim=-1, keepdim=True)


def relative_entropy(original: Tensor, reconstruction: Tensor) -> Tensor:
    """``KL(p || q) = sum_i p_i log(p_i / q_i)`` per image, ``p`` and ``q`` the pixel
    distributions (:func:`pixel_distribution`) of the original and its reconstruction.

    ``original`` ``(..., pixels)`` broadcasts against ``reconstruction``; returns ``(...)``.
    Zero for identical images, invariant to positive scaling of either side.
    """
    if original.shape[-1] != reconstruction.shape[-1]:
        raise ValueError(
            f"reconstruction: {reconstruction.shape[-1]} pixels, "
            f"but the original has {original.shape[-1]}"
        )
    p, q = pixel_distribution(original), pixel_distribution(reconstruction)
    return (p * (p.log() - q.log())).sum(dim=-1)


def normalized_curve(kl: Tensor) -> Tensor:
    """The median over images of each image's KL curve divided by its deepest value.

    ``kl`` is ``(images, depths)``; returns ``(depths,)``, whose last entry is 1. The median of an
    even count is the mean of the two middle values, as the reference's ``np.median``.
    """
    deepest = kl[:, -1:].clamp_min(torch.finfo(kl.dtype).tiny)
    return median(kl / deepest)


def median(values: Tensor) -> Tensor:
    """The median over the first axis, averaging the two middle values of an even count
    (``torch.median`` takes the lower one)."""
    return torch.quantile(values, 0.5, dim=0)


def saturation_depth(curve: Tensor, *, rtol: float = SATURATION_RTOL) -> int:
    """The reference's predicted trainable depth.

    Scan back from the deepest entry for the first one not within ``rtol`` (relative) of the
    final value and return its index, as the reference's ``cutoff_det`` does: the 0-based index of
    the deepest unsaturated entry (the number of hidden layers before it). A curve saturated
    everywhere gives 0 (the reference returns the curve's length there).
    """
    final = curve[-1]
    unsaturated = (curve - final).abs() > SATURATION_ATOL + rtol * final.abs()
    indices = unsaturated.nonzero()
    return int(indices[-1]) if len(indices) else 0


def crossing_depth(curve: Tensor, *, level: float = CROSSING_LEVEL) -> float:
    """A readout robust to a noisy tail: where the curve first reaches ``level`` times its
    saturated value (the median of its last quarter), linearly interpolated between entries.

    On the same 0-based scale as :func:`saturation_depth`. A wobble of the tail by a few percent,
    which moves the reference readout from the true knee to the last layer that happens to stray
    beyond 0.5%, moves this one by a fraction of a layer.
    """
    tail = curve[-max(1, len(curve) // CROSSING_TAIL_FRACTION) :]
    threshold = level * float(median(tail))
    reached = (curve >= threshold).nonzero()
    first = int(reached[0]) if len(reached) else len(curve) - 1
    if first == 0:
        return 0.0
    below, above = float(curve[first - 1]), float(curve[first])
    return first - 1 + (threshold - below) / (above - below)


def decay_depth(curve: Tensor, *, rtol: float = SATURATION_RTOL) -> float:
    """Where the curve's approach to saturation comes within ``rtol`` of it, from its area.

    Near criticality the curve creeps towards its final value over more layers than the cascade
    has, and the reference readout then reads the last layer whose value strays beyond 0.5%:
    noise, or the cascade's end. This readout models the gap to saturation as geometric,
    ``g_i = 1 - curve[i] = g_0 r^i`` (the exponential loss of the input that mean-field theory
    predicts, with depth scale ``-1 / log r``), and fits ``r`` by the gap's area,
    ``sum_i g_i = g_0 / (1 - r)``, which noise in the tail barely moves. It returns the depth at
    which the fitted gap falls to ``rtol``: ``log(g_0 / rtol) / -log r``. On an exactly
    geometric curve this is the reference's readout, interpolated (a test holds them together);
    it has no constant of its own. (Not in the paper: it was added after the validation showed
    the reference readout running to the cascade's end near criticality; the reference rule
    stays as a row of the validation.)
    """
    gap = (curve[-1] - curve).clamp_min(0.0) / curve[-1].abs().clamp_min(SATURATION_ATOL)
    first, area = float(gap[0]), float(gap.sum())
    if first <= rtol or area <= first:
        return 0.0
    ratio = 1.0 - first / area
    return math.log(first / rtol) / -math.log(ratio)
