"""Backpropagation statistics for channel growth at conv sites, as a streaming object.

Per site (:class:`ConvSite`: ``fan_in`` conv, norm, activation, ``fan_out`` conv), over ``n``
samples (images), in the patches of :mod:`._conv_site` (Verbockhaven et al. 2024, the
convolutional case; GroMo's ``FullConv2dGrowingModule``):

- ``b`` ``(d, X)``: the patches of ``fan_out``'s input, one per output position ``x``;
- ``b2`` ``(d2, P)``: the patches of ``fan_in``'s input, one per position ``p`` of ``fan_in``'s
  output (= ``fan_out``'s input);
- ``v = -g`` ``(o, X)``: ``g`` the gradient of the summed loss in ``fan_out``'s output;
- ``bt_j`` ``(d2, X)``: ``b2`` read through ``fan_out`` at kernel offset ``j``: column ``x`` is
  the ``fan_in`` patch under offset ``j`` of output position ``x`` (zero in ``fan_out``'s
  padding). A new channel with kernels ``alpha`` (in ``fan_in``) and ``omega`` ``(o, kk)`` (in
  ``fan_out``) moves ``fan_out``'s output by ``act'(0) sum_j omega_j alpha^T bt_j`` to first
  order: the paper's tensor ``T``, applied.

The moments are sums over samples and positions, divided by the number of samples ``n`` (as in
GroMo; a sample is an image, so a loss decrease read from them is per image, as in the linear
case):

- ``tensor_s = sum b b^T / n`` ``(d, d)``, ``tensor_m = sum b v^T / n`` ``(d, o)``;
- ``tensor_s2 = sum_j sum bt_j bt_j^T / n`` ``(d2, d2)`` (GroMo's ``tensor_s_growth``);
- ``tensor_m2`` ``(d2, o * kk)``: column ``c * kk + j`` is ``sum bt_j v_c / n``;
- ``cross_covariance`` ``(kk, d2, d)``: ``[j] = sum bt_j b^T / n``;
- ``goal_covariance = sum v v^T / n`` ``(o, o)``;
- with a norm, ``patch_mean`` ``(d2,)`` and ``patch_moment`` ``(d2, d2)``: mean and second moment
  of one ``b2`` over samples and positions, the moments a new channel's norm starts from.

GroMo's ``tensor_m`` and ``tensor_m_prev`` hold ``+g``; these hold ``v = -g`` (the paper's sign,
as :mod:`._statistics`). Sums are float64, kept on the modules' device; samples alternate between
two folds as in :mod:`._statistics`. How they are computed: ``tensor_s2`` weighs each ``b2`` column
by how many (position, offset) pairs read it; ``tensor_m2`` and ``cross_covariance`` are the
weight gradient of ``fan_out``'s geometry with ``b2``, laid out as an image, as input, which is
``sum_x bt_j(x) (.)^T`` without building the ``kk`` times larger ``bt``. Spread over processes,
each streams its share of the samples and :meth:`ConvWidthStatistics.reduce` adds their sums, as
in the linear case.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_weight
from torch.utils.flop_counter import FlopCounterMode

from ..events import LossFn
from ._conv_site import ConvSite, padding, patches, reuse_counts
from ._reduce import LOCAL, Reducer, reduce_sites
from ._statistics import LOSS_REDUCTIONS, _fold_note, _fold_rows, ridge_shrunk

CONV_MOMENTS = (
    "tensor_s",
    "tensor_m",
    "tensor_s2",
    "tensor_m2",
    "cross_covariance",
    "goal_covariance",
)
NORM_MOMENTS = ("patch_mean", "patch_moment")


@dataclass(frozen=True)
class ConvMoments:
    """The means a conv site's maths reads (float64), over ``n`` samples."""

    tensor_s: Tensor
    tensor_m: Tensor
    tensor_s2: Tensor
    tensor_m2: Tensor
    cross_covariance: Tensor
    goal_covariance: Tensor
    n: int
    patch_mean: Tensor | None = None
    patch_moment: Tensor | None = None
    ridge: float = 0.0

    def fitting_s2(self) -> Tensor:
        """``S2`` shrunk by ``ridge``, as :meth:`Moments.fitting_s2` (0: the paper's)."""
        return ridge_shrunk(self.tensor_s2, self.ridge)


class ConvSiteStatistics:
    """Running sums of one conv site's moments, per fold."""

    def __init__(self, site: ConvSite, ridge: float = 0.0) -> None:
        self.site = site
        self.ridge = ridge
        self._sums: list[dict[str, Tensor]] = [{}, {}]
        self._counts = [0, 0]

    @property
    def n(self) -> int:
        return sum(self._counts)

    def update(self, x_in: Tensor, x_out: Tensor, v_goal: Tensor, *, offset: int) -> None:
        """Add one batch: ``x_in``, ``x_out`` the inputs of ``fan_in`` and ``fan_out``, ``v_goal``
        minus the gradient in ``fan_out``'s output, whose first sample is number ``offset``."""
        for fold in (0, 1):
            rows = _fold_rows(fold, offset)
            fold_in, fold_out, fold_goal = x_in[rows], x_out[rows], v_goal[rows]
            if len(fold_in) == 0:
                continue
            sums = self._sums[fold]
            for name, term in self._terms(fold_in, fold_out, fold_goal).items():
                term = term.to(torch.float64)
                sums[name] = sums[name] + term if name in sums else term
            self._counts[fold] += len(fold_in)

    def _terms(self, x_in: Tensor, x_out: Tensor, v_goal: Tensor) -> dict[str, Tensor]:
        fan_in, fan_out = self.site.fan_in, self.site.fan_out
        b2 = patches(x_in, fan_in)  # (n, d2, P)
        b = patches(x_out, fan_out)  # (n, d, X)
        n, d2, _ = b2.shape
        size, out_size = x_out.shape[2:], v_goal.shape[2:]
        image = b2.reshape(n, d2, *size)  # each fan_in patch where its output lands
        v = v_goal.flatten(2)  # (n, o, X)
        kk = self.site.kernel_positions
        reuse = reuse_counts(fan_out, tuple(size), b2)  # (P,)
        terms = {
            "tensor_s": torch.einsum("iax,ibx->ab", b, b),
            "tensor_m": torch.einsum("iax,icx->ac", b, v),
            "tensor_s2": torch.einsum("iap,ibp->ab", b2 * reuse, b2),
            "tensor_m2": _read_through(image, v_goal, fan_out).transpose(0, 1).reshape(d2, -1),
            "cross_covariance": _read_through(image, b.reshape(n, -1, *out_size), fan_out)
            .permute(2, 3, 1, 0)
            .reshape(kk, d2, -1),
            "goal_covariance": torch.einsum("icx,iex->ce", v, v),
        }
        if self.site.norm is not None:
            terms["patch_mean"] = b2.sum(dim=(0, 2))
            terms["patch_moment"] = torch.einsum("iap,ibp->ab", b2, b2)
            terms["patch_count"] = b2.new_tensor(float(b2.shape[0] * b2.shape[2]))
        return terms

    def moments(self, fold: int | None = None) -> ConvMoments:
        """Means over all samples (``fold=None``) or over one fold (0: even, 1: odd samples)."""
        folds = [f for f in ((0, 1) if fold is None else (fold,)) if self._counts[f]]
        n = sum(self._counts[f] for f in folds)
        if n == 0:
            raise ValueError("batches: no samples were accumulated" + _fold_note(fold))

        def total(name: str) -> Tensor:
            return sum(self._sums[f][name] for f in folds)

        means: dict[str, Any] = {name: total(name) / n for name in CONV_MOMENTS}
        if self.site.norm is not None:
            means |= {name: total(name) / total("patch_count") for name in NORM_MOMENTS}
        return ConvMoments(**means, n=n, ridge=self.ridge)


def _read_through(image: Tensor, signal: Tensor, conv: nn.Conv2d) -> Tensor:
    """``(c, a, kh, kw)``: ``sum_{i, x} signal[i, c, x] image[i, a, (x, offset)]``, the image
    read where ``conv`` reads at output position ``x`` and kernel offset ``(kh, kw)``: the
    gradient of ``conv``'s weight for input ``image`` and output gradient ``signal``."""
    kh, kw = conv.kernel_size
    size = (signal.shape[1], image.shape[1], kh, kw)
    return conv2d_weight(image, size, signal, conv.stride, padding(conv), conv.dilation)


class ConvWidthStatistics:
    """Streams mini-batches through ``net`` and accumulates every conv site's moments.

    >>> site = ConvSite(net.conv1, net.conv2, "relu", norm=net.bn1)
    >>> stats = ConvWidthStatistics(net, [site])
    >>> for x, y in batches:
    ...     stats.update(x, y)
    >>> stats.site(0).moments().tensor_s

    ``update`` runs one forward pass (in the mode ``net`` is in) and one backward pass that stops
    at the earliest ``fan_out`` output and computes no weight gradient. The network is not
    changed: buffers the forward pass updates (BatchNorm running statistics) are restored.
    ``flops`` counts all of it, moments included, with ``torch.utils.flop_counter``.
    """

    def __init__(
        self,
        net: nn.Module,
        sites: Sequence[ConvSite],
        *,
        loss_fn: LossFn = F.cross_entropy,
        reduction: str = "mean",
        ridge: float = 0.0,
    ) -> None:
        if reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"reduction: unknown {reduction!r}; expected one of {LOSS_REDUCTIONS}")
        if not (isinstance(ridge, int | float) and math.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge: expected a number >= 0, got {ridge!r}")
        if isinstance(sites, ConvSite):
            raise ValueError("sites: expected a sequence of ConvSite; put the one site in a list")
        sites = list(sites)
        if not sites or not all(isinstance(s, ConvSite) for s in sites):
            raise ValueError(f"sites: expected a non-empty sequence of ConvSite, got {sites!r}")
        known = {id(m) for m in net.modules()}
        for i, s in enumerate(sites):
            if any(id(m) not in known for m in (s.fan_in, s.fan_out, s.norm) if m is not None):
                raise ValueError(f"sites: site {i} has a module that is not part of net")
        self.net = net
        self.sites = sites
        self.loss_fn = loss_fn
        self.reduction = reduction
        self.n = 0
        self.flops = 0
        self._loss_sum = 0.0
        self._stats = [ConvSiteStatistics(s, float(ridge)) for s in sites]

    @property
    def loss(self) -> float:
        """Mean per-sample loss over the samples seen."""
        if self.n == 0:
            raise ValueError("batches: no samples were accumulated")
        return self._loss_sum / self.n

    def site(self, site: int) -> ConvSiteStatistics:
        if not (0 <= site < len(self._stats)):
            raise ValueError(f"site: {site} is not one of 0..{len(self._stats) - 1}")
        return self._stats[site]

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add one mini-batch."""
        if len(x) == 0:
            return
        with FlopCounterMode(display=False) as counter, _buffers_kept(self.net):
            loss_sum = self._update(x, y)
        self.n += len(x)
        self._loss_sum += loss_sum
        self.flops += counter.get_total_flops()

    def reduce(self, reducer: Reducer) -> None:
        """Add the other processes' sums and counts to these (each streamed its share of the
        samples): then every process holds the statistics of all of them. ``flops`` stays this
        process's own."""
        n, self._loss_sum = reduce_sites(reducer, self._stats, [self.n, self._loss_sum])
        self.n = int(n)

    def _update(self, x: Tensor, y: Tensor) -> float:
        inputs, outputs = self._forward_capturing(x)
        logits = outputs.pop("logits")
        loss = self.loss_fn(logits, y)
        if loss.ndim != 0:
            raise ValueError(
                f"loss_fn: expected a scalar (reduction {self.reduction!r}), got shape "
                f"{tuple(loss.shape)}"
            )
        loss_sum = loss * len(logits) if self.reduction == "mean" else loss
        grads = torch.autograd.grad(loss_sum, [outputs[id(s.fan_out)] for s in self.sites])
        with torch.no_grad():
            for i, (s, g) in enumerate(zip(self.sites, grads, strict=True)):
                x_in, x_out = inputs[id(s.fan_in)], inputs[id(s.fan_out)]
                if outputs[id(s.fan_in)].shape[1:] != x_out.shape[1:]:
                    raise ValueError(
                        f"sites: site {i}'s fan_out reads {tuple(x_out.shape[1:])}, fan_in "
                        f"makes {tuple(outputs[id(s.fan_in)].shape[1:])}; fan_out must read "
                        "fan_in's channels position by position (no pooling between)"
                    )
                self._stats[i].update(x_in, x_out, -g, offset=self.n)
        return float(loss_sum.detach())

    def _forward_capturing(self, x: Tensor) -> tuple[dict[int, Tensor], dict[Any, Tensor]]:
        """Each site conv's input and output, keyed by ``id(module)``; the logits."""
        inputs: dict[int, Tensor] = {}
        outputs: dict[Any, Tensor] = {}

        def record(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            if id(module) in inputs:
                raise ValueError(f"sites: {module!r} is called more than once per forward pass")
            inputs[id(module)] = args[0].detach()
            outputs[id(module)] = output

        convs = {id(m): m for s in self.sites for m in (s.fan_in, s.fan_out)}
        handles = [m.register_forward_hook(record) for m in convs.values()]
        try:
            with torch.enable_grad():
                # An input that requires grad keeps every activation in the graph even when the
                # weights are frozen; autograd.grad only follows the paths it needs.
                x = x.detach().requires_grad_(x.is_floating_point())
                outputs["logits"] = self.net(x)
        finally:
            for h in handles:
                h.remove()
        return inputs, outputs


@contextmanager
def _buffers_kept(net: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``net`` (BatchNorm running statistics) on exit."""
    saved = [(b, b.clone()) for b in net.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def conv_width_statistics(
    net: nn.Module,
    sites: Sequence[ConvSite],
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    reducer: Reducer = LOCAL,
    **options: Any,
) -> ConvWidthStatistics:
    """Accumulate every conv site's moments over ``batches`` (one pass, no update), added up
    over the processes of ``reducer`` (:meth:`ConvWidthStatistics.reduce`); ``options`` are
    :class:`ConvWidthStatistics`'s (``loss_fn``, ``reduction``, ``ridge``)."""
    stats = ConvWidthStatistics(net, sites, **options)
    for x, y in batches:
        stats.update(x, y)
    stats.reduce(reducer)
    if stats.n == 0:
        raise ValueError("batches: no data to compute statistics on")
    return stats
