"""Where channels can go: two consecutive convolutions and the channels between them.

A *conv site* is a ``fan_in`` convolution ``C_in -> C_mid``, optionally a ``BatchNorm2d`` on its
output, an elementwise activation, then a ``fan_out`` convolution ``C_mid -> C_out`` that reads
that activation position by position (no pooling or resizing between). Growing the site adds
``K`` output channels to ``fan_in`` (and to the norm) and ``K`` input channels to ``fan_out``.

Patches (the unfolding TINY's convolutional case is written in, Verbockhaven et al. 2024):
``F.unfold`` lays a convolution's input out as one column per output position, the rows ordered
like ``weight.reshape(out_channels, -1)`` (channel, then kernel row, then kernel column), so a
convolution is the matrix product ``weight.reshape(out, -1) @ patches`` (+ bias, a row of ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._tiny import ACTIVATION_SLOPE_AT_ZERO


@dataclass(frozen=True, eq=False)
class ConvSite:
    """Two consecutive convolutions of a network whose middle channels can grow."""

    fan_in: nn.Conv2d
    """Gets new output channels (new kernels ``alpha``)."""
    fan_out: nn.Conv2d
    """Gets new input channels (new kernels ``omega``)."""
    activation: str
    """The activation between them, by name (a key of ``ACTIVATION_SLOPE_AT_ZERO``)."""
    norm: nn.BatchNorm2d | None = None
    """The ``BatchNorm2d`` on ``fan_in``'s output, before the activation, if any."""

    def __post_init__(self) -> None:
        for field in ("fan_in", "fan_out"):
            conv = getattr(self, field)
            if not isinstance(conv, nn.Conv2d):
                raise ValueError(f"{field}: expected an nn.Conv2d, got {type(conv).__name__}")
            if conv.groups != 1 or conv.padding_mode != "zeros":
                raise ValueError(
                    f"{field}: expected groups=1 and padding_mode='zeros', got "
                    f"groups={conv.groups}, padding_mode={conv.padding_mode!r}"
                )
            padding(conv)  # refuses an asymmetric 'same'
        if self.fan_out.in_channels != self.fan_in.out_channels:
            raise ValueError(
                f"fan_out: expected {self.fan_in.out_channels} input channels (fan_in's outputs), "
                f"got {self.fan_out.in_channels}"
            )
        if self.activation not in ACTIVATION_SLOPE_AT_ZERO:
            raise ValueError(
                f"activation: unknown {self.activation!r}; expected one of "
                f"{sorted(ACTIVATION_SLOPE_AT_ZERO)}"
            )
        norm = self.norm
        if norm is not None and not (
            isinstance(norm, nn.BatchNorm2d)
            and norm.affine
            and norm.num_features == self.fan_in.out_channels
        ):
            raise ValueError(
                f"norm: expected an affine nn.BatchNorm2d over {self.fan_in.out_channels} "
                f"channels, got {norm!r}"
            )

    @property
    def fan_in_features(self) -> int:
        """``d2``: the length of one patch of ``fan_in``'s input, with the row of ones."""
        return _features(self.fan_in)

    @property
    def fan_out_features(self) -> int:
        """``d``: the length of one patch of ``fan_out``'s input, with the row of ones."""
        return _features(self.fan_out)

    @property
    def kernel_positions(self) -> int:
        """``kh * kw`` of ``fan_out``: the offsets at which a new channel is read."""
        kh, kw = self.fan_out.kernel_size
        return kh * kw


def _features(conv: nn.Conv2d) -> int:
    kh, kw = conv.kernel_size
    return conv.in_channels * kh * kw + (conv.bias is not None)


def padding(conv: nn.Conv2d) -> tuple[int, int]:
    """``conv``'s padding as two integers (``'valid'`` is 0, an odd-sized ``'same'`` its half)."""
    if not isinstance(conv.padding, str):
        return tuple(conv.padding)
    if conv.padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    if any(t % 2 for t in total):
        raise ValueError(
            f"padding: 'same' with kernel {conv.kernel_size} and dilation {conv.dilation} pads "
            "one side more than the other; give explicit padding"
        )
    return (total[0] // 2, total[1] // 2)


def geometry(conv: nn.Conv2d) -> dict[str, tuple[int, int]]:
    """The keyword arguments ``F.unfold`` / ``F.fold`` need to read patches as ``conv`` does."""
    return {
        "kernel_size": conv.kernel_size,
        "dilation": conv.dilation,
        "padding": padding(conv),
        "stride": conv.stride,
    }


def patches(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``(n, d, positions)``: ``conv``'s input ``x`` ``(n, c, h, w)`` unfolded, with a row of
    ones when ``conv`` has a bias, so that ``conv(x) = [W | b] @ patches``."""
    b = F.unfold(x, **geometry(conv))
    if conv.bias is None:
        return b
    return torch.cat([b, b.new_ones(len(b), 1, b.shape[2])], dim=1)


def reuse_counts(conv: nn.Conv2d, size: tuple[int, int], like: Tensor) -> Tensor:
    """``(h * w,)``: at each position of an ``(h, w)`` input, how many (output position, kernel
    offset) pairs of ``conv`` read it (fewer at the borders when there is no padding)."""
    ones = like.new_ones(1, 1, *size)
    return F.fold(F.unfold(ones, **geometry(conv)), size, **geometry(conv)).flatten()
