"""Previewing new channels of a conv site at any amplitude, then applying them to real modules.

At amplitude ``gamma``: ``fan_in`` gets ``k`` output channels with kernels ``sqrt(gamma) alpha``,
the norm (if any) ``k`` channels that start as the identity (see :mod:`._conv_tiny`), ``fan_out``
gets ``k`` input channels with kernels ``sqrt(gamma) omega``, and its ``[W | b]`` becomes
``[W | b] + gamma dW`` when the strategy updates it. New channels come after the old ones in
every tensor, so the optimizer-state carry of ``growth_core.optim`` (leading slice, zeros for the
new entries) applies unchanged and ``param_map`` maps every name to itself.

The preview runs ``net`` through ``torch.func.functional_call`` with the grown tensors and copies
of every buffer, so a line search, even in training mode, writes nothing to ``net``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..conv_spec import ConvSpec
from ..events import Change
from ..nets import activation_fn
from ._conv_site import ConvSite
from ._line_search import AmplitudeSearch


@dataclass(frozen=True)
class NewChannels:
    """A strategy's change at amplitude 1 (float64), in the modules' shapes."""

    fan_in_weight: Tensor
    """``(k, C_in, kh, kw)``: appended to ``fan_in.weight``."""
    fan_in_bias: Tensor | None
    """``(k,)``: appended to ``fan_in.bias`` (``None`` when ``fan_in`` has no bias)."""
    fan_out_weight: Tensor
    """``(C_out, k, kh, kw)``: appended to ``fan_out.weight`` along its input channels."""
    weight_update: Tensor | None = None
    """``(C_out, C_mid, kh, kw)``: added to ``fan_out.weight``; ``None`` leaves it as it is."""
    bias_update: Tensor | None = None
    """``(C_out,)``: added to ``fan_out.bias`` with ``weight_update``."""
    mean: Tensor | None = None
    """``(k,)``: mean of each new channel's ``fan_in`` output, for the norm (with a norm)."""
    variance: Tensor | None = None
    """``(k,)``: its biased variance over samples and positions."""

    @classmethod
    def from_matrices(
        cls, site: ConvSite, fan_in: Tensor, fan_out: Tensor, update: Tensor | None = None
    ) -> NewChannels:
        """From TINY's flat layout: ``fan_in`` ``(k, d2)`` (weights, then bias if ``fan_in`` has
        one), ``fan_out`` ``(o * kk, k)`` (rows ``c * kk + j``), ``update`` ``(o, d)``."""
        k = len(fan_in)
        c_in, (kh, kw) = site.fan_in.in_channels, site.fan_in.kernel_size
        has_bias = site.fan_in.bias is not None
        weight = fan_in[:, : c_in * kh * kw].reshape(k, c_in, kh, kw)
        o, (kh2, kw2) = site.fan_out.out_channels, site.fan_out.kernel_size
        omega = fan_out.reshape(o, kh2, kw2, k).permute(0, 3, 1, 2)
        weight_update = bias_update = None
        if update is not None:
            c_mid = site.fan_out.in_channels
            weight_update = update[:, : c_mid * kh2 * kw2].reshape(o, c_mid, kh2, kw2)
            bias_update = update[:, -1] if site.fan_out.bias is not None else None
        return cls(weight, fan_in[:, -1] if has_bias else None, omega, weight_update, bias_update)

    def fan_in_matrix(self) -> Tensor:
        """``(k, d2)``: the ``fan_in`` rows, weights then bias."""
        rows = self.fan_in_weight.flatten(1)
        if self.fan_in_bias is None:
            return rows
        return torch.cat([rows, self.fan_in_bias[:, None]], dim=1)


class ChannelProposal(AmplitudeSearch):
    """New channels at one conv site of ``net``, previewed at any amplitude and then applied.

    ``grown_modules(gamma)`` are the site's modules with the channels added (new modules);
    ``apply(gamma)`` is a copy of ``net`` with them in place; ``forward``, ``loss`` and
    ``line_search`` preview without building either. ``net`` is never written to.
    """

    def __init__(self, net: nn.Module, site: ConvSite, channels: NewChannels) -> None:
        names = {id(m): name for name, m in net.named_modules()}
        modules = {"fan_in": site.fan_in, "norm": site.norm, "fan_out": site.fan_out}
        if any(m is not None and id(m) not in names for m in modules.values()):
            raise ValueError("site: a module of the site is not part of net")
        _check_shapes(site, channels)
        self.net = net
        self.site = site
        self.channels = channels
        self.names = {k: names[id(m)] for k, m in modules.items() if m is not None}
        self._flops_per_sample: int | None = None

    @property
    def k(self) -> int:
        return len(self.channels.fan_in_weight)

    @property
    def preserves_function(self) -> bool:
        """Whether every amplitude computes the old function (then there is nothing to search):
        no update and a silent fan-in (zero kernels, ``act(0) = 0``) or a zero fan-out."""
        new = self.channels
        if new.weight_update is not None:
            return False
        silent_in = (
            not new.fan_in_matrix().any()
            and float(activation_fn(self.site.activation)(torch.zeros(()))) == 0
        )
        return silent_in or not new.fan_out_weight.any()

    def grown_modules(self, gamma: float) -> dict[str, nn.Module]:
        """The site's modules at amplitude ``gamma`` (new modules), by their names in ``net``."""
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma: expected a finite number >= 0, got {gamma!r}")
        root, new, site = math.sqrt(gamma), self.channels, self.site
        fan_in = copy.deepcopy(site.fan_in)
        fan_in.out_channels += self.k
        _extend(fan_in, "weight", root * new.fan_in_weight)
        if fan_in.bias is not None:
            _extend(fan_in, "bias", root * new.fan_in_bias)
        grown = {self.names["fan_in"]: fan_in}
        if site.norm is not None:
            norm = copy.deepcopy(site.norm)
            norm.num_features += self.k
            mean, variance = root * new.mean, gamma * new.variance
            _extend(norm, "weight", (variance + norm.eps).sqrt())
            _extend(norm, "bias", mean)
            if norm.running_mean is not None:
                _extend(norm, "running_mean", mean)
                _extend(norm, "running_var", variance)
            grown[self.names["norm"]] = norm
        fan_out = copy.deepcopy(site.fan_out)
        fan_out.in_channels += self.k
        if new.weight_update is not None:
            _shift(fan_out, "weight", gamma * new.weight_update)
            if fan_out.bias is not None:
                _shift(fan_out, "bias", gamma * new.bias_update)
        _extend(fan_out, "weight", root * new.fan_out_weight, dim=1)
        grown[self.names["fan_out"]] = fan_out
        return grown

    def state(self, gamma: float) -> dict[str, Tensor]:
        """Every parameter and buffer of the grown network at amplitude ``gamma``; buffers are
        copies, so that a training-mode forward updates no running statistics of ``net``."""
        state = {k: p.detach() for k, p in self.net.named_parameters()}
        state |= {k: b.clone() for k, b in self.net.named_buffers()}
        for name, module in self.grown_modules(gamma).items():
            state |= {f"{name}.{k}": p.detach() for k, p in module.named_parameters()}
            state |= {f"{name}.{k}": b for k, b in module.named_buffers()}
        return state

    @torch.no_grad()
    def forward(self, x: Tensor, gamma: float) -> Tensor:
        """The grown network's output at amplitude ``gamma``, in the mode ``net`` is in."""
        if self._flops_per_sample is not None or len(x) == 0:
            return functional_call(self.net, self.state(gamma), (x,))
        with FlopCounterMode(display=False) as counter:
            out = functional_call(self.net, self.state(gamma), (x,))
        self._flops_per_sample = counter.get_total_flops() // len(x)
        return out

    def forward_flops(self, n: int) -> int:
        """Counted by ``torch.utils.flop_counter`` on the first preview (the counted operations
        are linear in the batch size, so per sample is exact for inputs of that size)."""
        if self._flops_per_sample is None:
            raise ValueError("forward_flops: no preview has run yet to count it on")
        return n * self._flops_per_sample

    def apply(self, gamma: float) -> Change:
        """A copy of ``net`` with the site grown at amplitude ``gamma``; ``net`` is left as it
        was. Every parameter continues the one of the same name (new channels appended)."""
        grown = self.grown_modules(gamma)
        net = copy.deepcopy(self.net)
        for name, module in grown.items():
            net.set_submodule(name, module)
        if isinstance(getattr(net, "spec", None), ConvSpec):  # a net of growth_core: its spec too
            net.spec = net.spec.with_widths(
                [layer.conv.out_channels for layer in net.conv_layers()]
            )
        return Change(net, {name: name for name, _ in net.named_parameters()})


def _extend(module: nn.Module, name: str, new: Tensor, *, dim: int = 0) -> None:
    """Append ``new`` to ``module.name`` along ``dim`` (a parameter stays a parameter)."""
    old = getattr(module, name)
    value = torch.cat([old.detach(), new.to(old)], dim=dim)
    if isinstance(old, nn.Parameter):
        value = nn.Parameter(value, requires_grad=old.requires_grad)
    setattr(module, name, value)


def _shift(module: nn.Module, name: str, update: Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(old.detach() + update.to(old), old.requires_grad))


def _check_shapes(site: ConvSite, new: NewChannels) -> None:
    k = len(new.fan_in_weight)
    c_in, c_mid, o = site.fan_in.in_channels, site.fan_out.in_channels, site.fan_out.out_channels
    expected = {
        "fan_in_weight": (k, c_in, *site.fan_in.kernel_size),
        "fan_in_bias": (k,) if site.fan_in.bias is not None else None,
        "fan_out_weight": (o, k, *site.fan_out.kernel_size),
    }
    if new.weight_update is not None:
        expected["weight_update"] = (o, c_mid, *site.fan_out.kernel_size)
        expected["bias_update"] = (o,) if site.fan_out.bias is not None else None
    if site.norm is not None:
        expected |= {"mean": (k,), "variance": (k,)}
    for name, shape in expected.items():
        value = getattr(new, name)
        got = None if value is None else tuple(value.shape)
        if got != shape:
            raise ValueError(f"channels.{name}: expected shape {shape}, got {got}")
    if k < 1:
        raise ValueError("channels: expected at least one new channel")
