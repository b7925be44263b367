"""Backpropagation statistics for width growth, as a streaming object.

A *site* is a hidden layer that can receive new neurons: hidden layer ``i`` of a feedforward net
(fan-in layer ``hidden.i``, fan-out layer ``hidden.{i+1}`` or ``out``), or the hidden layer of
residual block ``i`` (fan-in ``blocks.i.fc1``, fan-out ``blocks.i.fc2``).

Per site, over ``n`` samples, with rows as samples (Verbockhaven et al. 2024, Sec. 3):

- ``B``: the fan-out layer's input, with a column of ones when that layer has a bias ``(n, d)``;
- ``B2``: the fan-in layer's input, with a column of ones ``(n, d2)``;
- ``V_goal = -G``, ``G`` the per-sample gradient of the loss in the fan-out layer's
  pre-activation ``(n, o)``;

and the moments

- ``tensor_s = B^T B / n`` ``(d, d)``, ``tensor_m = B^T V_goal / n`` ``(d, o)``,
- ``tensor_s2 = B2^T B2 / n`` ``(d2, d2)``, ``tensor_m2 = B2^T V_goal / n`` ``(d2, o)``,
- ``cross_covariance = B2^T B / n`` ``(d2, d)``,
- ``goal_covariance = V_goal^T V_goal / n`` ``(o, o)`` (for the noise level of a held-out gain).

GroMo's names: ``tensor_s``, ``tensor_s_growth`` (= ``tensor_s2``), ``cross_covariance``,
``covariance_loss_gradient`` (= ``goal_covariance``); its ``tensor_m`` and ``tensor_m_prev``
hold ``+G`` where these hold ``V_goal = -G``, the paper's sign, so that ``dW* = (S^+ M)^T`` is
a descent step.

**Sums and sample counts.** Every moment is kept as a sum over samples plus a count and read as
a mean, so it does not depend on how the data is cut into mini-batches. ``G`` is the gradient of
the *sum* of per-sample losses: with ``reduction="mean"`` (PyTorch's default) the batch loss is
multiplied by the batch size before differentiating, so a sample weighs the same in a batch of
10 as in a batch of 1000. Sums are accumulated in float64.

**Two folds.** Samples alternate between fold 0 and fold 1 by their position in the stream
(even, odd), whatever the batch boundaries, so a held-out check can fit on one half and test
on the other at no extra cost; the full statistics are the two folds added.

**The input covariance.** The first site of a feedforward net has the network's input as ``B2``,
so its ``tensor_s2`` depends on the data only, and on MNIST (``d2 = 785``) it is most of a
statistics pass (``2 n d2^2`` of it). A policy that reads the same samples at every decision
computes it once (:class:`InputCovariance`) and hands it to each pass, which then skips that
product and does not count it. Not in TINY or GroMo (both recompute it): ours, and exact.

**Samples spread over processes.** Sums and counts add up: each process streams its share and
:meth:`BottleneckStatistics.reduce` (or :class:`InputCovariance`'s ``reducer``) adds them up
over the processes; a share starting at an even position keeps every sample's fold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..events import LossFn
from ..flops import linear_shapes, pass_flops
from ..nets import Net
from ..spec import ArchitectureSpec
from ._reduce import LOCAL, Reducer, reduce_sites
from ._sites import check_sites, fan_out_index, site_layers

LOSS_REDUCTIONS = ("mean", "sum")
"""How the user's ``loss_fn`` reduces over the batch; the statistics undo it either way."""

MOMENTS = ("tensor_s", "tensor_m", "tensor_s2", "tensor_m2", "cross_covariance", "goal_covariance")


# -- one site --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Moments:
    """The means a site's maths reads (float64), over ``n`` samples."""

    tensor_s: Tensor
    tensor_m: Tensor
    tensor_s2: Tensor
    tensor_m2: Tensor
    cross_covariance: Tensor
    goal_covariance: Tensor
    n: int
    ridge: float = 0.0
    """Shrinkage of ``S2`` when new neurons are fitted (see :meth:`fitting_s2`)."""

    def fitting_s2(self) -> Tensor:
        """``S2 + ridge * (tr S2 / d2) I``: the metric the new neurons are fitted in.

        TINY's ``S2^(-1/2)`` whitens the fan-in layer's input; a direction the inputs barely
        take gets a weight ``1 / sqrt(eigenvalue)``, so estimated from ``n`` samples it mostly
        fits noise (the first layer on MNIST: 785 inputs, many near-constant pixels). Shrinking
        ``S2`` towards its mean eigenvalue is ridge regularization of the reduced-rank fit
        (reduced-rank ridge regression, Mukherjee and Zhu 2011); ``ridge = 0`` is the paper's.
        Not in TINY: ours.
        """
        return ridge_shrunk(self.tensor_s2, self.ridge)


def ridge_shrunk(matrix: Tensor, ridge: float) -> Tensor:
    """``A + ridge * (tr A / d) I``, on ``A``'s device (see :meth:`Moments.fitting_s2`)."""
    if ridge == 0:
        return matrix
    shift = ridge * torch.trace(matrix) / len(matrix)
    return matrix + shift * torch.eye(len(matrix), dtype=matrix.dtype, device=matrix.device)


class SiteStatistics:
    """Running sums of one site's moments, per fold; ``ridge`` goes to :class:`Moments`.

    ``known_s2``: the fold sums of ``B2^T B2`` and their counts, computed beforehand over the same
    samples in the same order (:class:`InputCovariance`); ``update`` then skips that product.
    """

    def __init__(self, ridge: float = 0.0, known_s2: InputCovariance | None = None) -> None:
        self.ridge = ridge
        self.known_s2 = known_s2
        self._sums: list[dict[str, Tensor]] = [{}, {}]
        self._counts = [0, 0]

    @property
    def n(self) -> int:
        return sum(self._counts)

    def update(self, b: Tensor, v_goal: Tensor, b2: Tensor, *, offset: int) -> None:
        """Add one batch: ``b`` ``(n, d)``, ``v_goal`` ``(n, o)``, ``b2`` ``(n, d2)``, whose first
        row is sample number ``offset`` of the stream."""
        for fold in (0, 1):
            rows = _fold_rows(fold, offset)
            bf, vf, b2f = b[rows], v_goal[rows], b2[rows]
            if len(bf) == 0:
                continue
            terms = {
                "tensor_s": bf.T @ bf,
                "tensor_m": bf.T @ vf,
                "tensor_m2": b2f.T @ vf,
                "cross_covariance": b2f.T @ bf,
                "goal_covariance": vf.T @ vf,
            }
            if self.known_s2 is None:
                terms["tensor_s2"] = b2f.T @ b2f
            sums = self._sums[fold]
            for name, term in terms.items():
                term = term.to(torch.float64)
                sums[name] = sums[name] + term if name in sums else term
            self._counts[fold] += len(bf)

    def moments(self, fold: int | None = None) -> Moments:
        """Means over all samples (``fold=None``) or over one fold (0: even, 1: odd samples)."""
        folds = (0, 1) if fold is None else (fold,)
        n = sum(self._counts[f] for f in folds)
        if n == 0:
            raise ValueError("batches: no samples were accumulated" + _fold_note(fold))
        sums = self._sums
        if self.known_s2 is not None:
            if self.known_s2.counts != self._counts:
                raise ValueError(
                    f"input_covariance: computed on {self.known_s2.counts} samples per fold, "
                    f"the statistics read {self._counts}; it must see the same batches"
                )
            sums = [s | {"tensor_s2": k} for s, k in zip(sums, self.known_s2.sums, strict=True)]
        means = {}
        for name in MOMENTS:
            total = sum(sums[f][name] for f in folds if self._counts[f])
            means[name] = total / n
        return Moments(**means, n=n, ridge=self.ridge)


def _fold_rows(fold: int, offset: int) -> slice:
    """The rows of a batch that belong to ``fold`` when its first row is sample ``offset``."""
    return slice((fold - offset) % 2, None, 2)


def _fold_note(fold: int | None) -> str:
    return "" if fold is None else f" in fold {fold} (it needs at least {fold + 1} samples)"


class InputCovariance:
    """``B2^T B2`` of the network's input (with a column of ones) over ``batches``, per fold:
    the first feedforward site's ``tensor_s2``, which depends on the data only.

    Pass it to every :class:`BottleneckStatistics` that streams the same batches in the same
    order; ``flops`` is its one-time cost. A pass over other data is refused when it is read
    (sample counts and the sum of the inputs are compared).
    """

    def __init__(
        self, batches: Iterable[tuple[Tensor, Tensor]], *, reducer: Reducer = LOCAL
    ) -> None:
        """``reducer``: the processes sharing the samples (``flops`` stays this one's)."""
        self.counts = [0, 0]
        self.flops = 0
        self.input_sum = 0.0
        self.sums: list[Tensor] = []
        for x, _ in batches:
            b2, offset, d2 = _with_ones(x.detach(), True), self.n, x.shape[1] + 1
            if not self.sums:
                self.sums = [x.new_zeros(d2, d2, dtype=torch.float64) for _ in (0, 1)]
            for fold in (0, 1):
                rows = b2[_fold_rows(fold, offset)]
                self.sums[fold] += (rows.T @ rows).to(torch.float64)  # as SiteStatistics sums
                self.counts[fold] += len(rows)
            self.flops += 2 * len(x) * d2 * d2
            self.input_sum += float(x.detach().to(torch.float64).sum())
        self.sums = reducer.sum(self.sums)
        *counts, self.input_sum = reducer.sum_numbers([*self.counts, self.input_sum])
        self.counts = [int(c) for c in counts]
        if self.n == 0:
            raise ValueError("batches: no data to compute the input covariance on")

    @property
    def n(self) -> int:
        return sum(self.counts)


# -- the whole network -----------------------------------------------------------------------------
class BottleneckStatistics:
    """Streams mini-batches through ``net`` and accumulates every site's moments.

    >>> stats = BottleneckStatistics(net)
    >>> for x, y in batches:
    ...     stats.update(x, y)
    >>> stats.site(0).moments().tensor_s

    ``update`` runs one forward pass and one backward pass that stops at the earliest fan-out
    layer and computes no weight gradient; ``flops`` counts it exactly as ``flops.py`` counts
    matrix products (forward, input gradients of the layers after the earliest fan-out layer,
    and the six moment products per site). The network is not changed.
    """

    def __init__(
        self,
        net: Net,
        *,
        sites: Sequence[int] | None = None,
        loss_fn: LossFn = F.cross_entropy,
        reduction: str = "mean",
        ridge: float = 0.0,
        input_covariance: InputCovariance | None = None,
    ) -> None:
        """``ridge``: shrinkage of ``S2`` when neurons are fitted (:meth:`Moments.fitting_s2`);
        ``input_covariance``: the first site's ``tensor_s2``, computed once over the same
        batches (a feedforward net only; see the module docstring)."""
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"reduction: unknown {reduction!r}; expected one of {LOSS_REDUCTIONS}")
        if not (isinstance(ridge, int | float) and math.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge: expected a number >= 0, got {ridge!r}")
        self.net = net
        self.spec: ArchitectureSpec = net.spec
        self.sites = check_sites(self.spec, sites)
        self.loss_fn = loss_fn
        self.reduction = reduction
        self.n = 0
        self.flops = 0
        self._loss_sum = 0.0
        if input_covariance is not None:
            if self.spec.residual:
                raise ValueError(
                    "input_covariance: a residual net's first site does not read the input"
                )
            if input_covariance.sums[0].shape[0] != self.spec.input_dim + 1:
                raise ValueError(
                    f"input_covariance: computed for {input_covariance.sums[0].shape[0] - 1} "
                    f"inputs, the network has {self.spec.input_dim}"
                )
        self.input_covariance = input_covariance if 0 in self.sites else None
        self._input_sum = 0.0
        self._site_stats = {
            s: SiteStatistics(float(ridge), self.input_covariance if s == 0 else None)
            for s in self.sites
        }
        modules = dict(net.named_modules())
        self._layers = {s: tuple(modules[m] for m in site_layers(self.spec, s)) for s in self.sites}
        self._first_fan_out = min(fan_out_index(self.spec, s) for s in self.sites)

    @property
    def loss(self) -> float:
        """Mean per-sample loss over the samples seen (the first-order gains are relative to it)."""
        if self.n == 0:
            raise ValueError("batches: no samples were accumulated")
        return self._loss_sum / self.n

    def site(self, site: int) -> SiteStatistics:
        if site not in self._site_stats:
            raise ValueError(f"site: {site} is not one of the collected sites {self.sites}")
        cov = self.input_covariance
        if (
            site == 0
            and cov is not None
            and not math.isclose(self._input_sum, cov.input_sum, rel_tol=1e-9, abs_tol=1e-6)
        ):
            raise ValueError(
                "input_covariance: computed on other samples than these statistics "
                "(the sums of the inputs differ); it must see the same batches"
            )
        return self._site_stats[site]

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add one mini-batch."""
        if x.ndim != 2 or x.shape[1] != self.spec.input_dim:
            raise ValueError(
                f"x: expected shape (batch, {self.spec.input_dim}), got {tuple(x.shape)}"
            )
        if len(x) == 0:
            return
        logits, inputs, outputs = self._forward_capturing(x)
        loss_sum = self._sum_loss(logits, y)
        fan_outs = [self._layers[s][1] for s in self.sites]
        grads = torch.autograd.grad(loss_sum, [outputs[id(m)] for m in fan_outs])
        with torch.no_grad():
            for s, g in zip(self.sites, grads, strict=True):
                fan_in, fan_out = self._layers[s]
                b = _with_ones(inputs[id(fan_out)], fan_out.bias is not None)
                b2 = _with_ones(inputs[id(fan_in)], True)
                self._site_stats[s].update(b, -g, b2, offset=self.n)
        self.n += len(x)
        if self.input_covariance is not None:
            self._input_sum += float(x.detach().to(torch.float64).sum())
        self._loss_sum += float(loss_sum.detach())
        self.flops += self.flops_per_batch(len(x))

    def flops_per_batch(self, n: int) -> int:
        shapes = linear_shapes(self.spec)
        total = pass_flops(shapes, n, backward=False)
        total += sum(2 * n * a * b for a, b in shapes[self._first_fan_out + 1 :])
        for s in self.sites:
            fan_in, fan_out = self._layers[s]
            d = fan_out.in_features + (fan_out.bias is not None)
            d2, o = fan_in.in_features + 1, fan_out.out_features
            known = s == 0 and self.input_covariance is not None
            total += 2 * n * (d * d + d * o + (0 if known else d2 * d2) + d2 * o + d2 * d + o * o)
        return total

    def reduce(self, reducer: Reducer) -> None:
        """Add the other processes' sums and counts (each streamed its share) to these: then
        every process holds the statistics of all the samples; ``flops`` stays its own."""
        sites = [self._site_stats[s] for s in self.sites]
        n, self._loss_sum, self._input_sum = reduce_sites(
            reducer, sites, [self.n, self._loss_sum, self._input_sum]
        )
        self.n = int(n)

    def _forward_capturing(self, x: Tensor) -> tuple[Tensor, dict[int, Tensor], dict[int, Tensor]]:
        """Logits, and each site layer's input and output, keyed by ``id(module)``."""
        inputs: dict[int, Tensor] = {}
        outputs: dict[int, Tensor] = {}

        def record(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            inputs[id(module)] = args[0].detach()
            outputs[id(module)] = output

        wanted = {id(m): m for pair in self._layers.values() for m in pair}
        handles = [m.register_forward_hook(record) for m in wanted.values()]
        try:
            with torch.enable_grad():
                # An input that requires grad keeps every activation in the graph even when the
                # weights are frozen; autograd.grad below only follows the paths it needs.
                logits = self.net(x.detach().requires_grad_(True))
        finally:
            for h in handles:
                h.remove()
        return logits, inputs, outputs

    def _sum_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        loss = self.loss_fn(logits, y)
        if loss.ndim != 0:
            raise ValueError(
                f"loss_fn: expected a scalar (reduction {self.reduction!r}), got shape "
                f"{tuple(loss.shape)}"
            )
        return loss * len(logits) if self.reduction == "mean" else loss


def _with_ones(t: Tensor, bias: bool) -> Tensor:
    """``t`` ``(n, d)`` with a column of ones appended when the layer has a bias."""
    return torch.cat([t, t.new_ones(len(t), 1)], dim=1) if bias else t


def bottleneck_statistics(
    net: Net,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    reducer: Reducer = LOCAL,
    **options: Any,
) -> BottleneckStatistics:
    """Accumulate every site's moments over ``batches`` (one pass, no update), added up over
    the processes of ``reducer`` (:meth:`BottleneckStatistics.reduce`); ``options`` are
    :class:`BottleneckStatistics`'s (``sites``, ``loss_fn``, ``reduction``, ``ridge``, ...)."""
    stats = BottleneckStatistics(net, **options)
    for x, y in batches:
        stats.update(x, y)
    stats.reduce(reducer)
    if stats.n == 0:
        raise ValueError("batches: no data to compute statistics on")
    return stats
