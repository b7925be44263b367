"""Convolutional networks built from a :class:`~growth_core.conv_spec.ConvSpec`.

Like the MLPs of :mod:`growth_core.nets`: ``build(spec)`` plus a ``state_dict``, with stable,
positional parameter names so growth can map weights from one spec to the next. Every 3x3
convolution is a :class:`ConvLayer` (``conv``, and ``bn`` when the spec has batch norm);
:meth:`ConvNet.conv_layers` lists them in forward order, so layer ``i`` is ``widths[i]`` of the
spec and layer ``i + 1`` its successor.

Datasets hold flat features ``(batch, channels * height * width)``; the nets take those or
images ``(batch, channels, height, width)`` alike.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .activations import activation_fn
from .conv_spec import ConvSpec, LayerShape


class ConvLayer(nn.Module):
    """One convolution (padding ``kernel // 2``), then batch norm when the spec has it: ``bn`` is
    a ``BatchNorm2d`` of the layer's own channels, or ``None``. The convolution has a bias only
    without batch norm, whose shift makes a bias redundant."""

    def __init__(self, shape: LayerShape, batch_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            shape.c_in,
            shape.c_out,
            shape.kernel,
            stride=shape.stride,
            padding=shape.kernel // 2,
            bias=not batch_norm,
        )
        self.bn = nn.BatchNorm2d(shape.c_out) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.bn is None else self.bn(x)


def as_images(x: Tensor, spec: ConvSpec) -> Tensor:
    """``x`` as ``(batch, channels, height, width)``: flat rows are reshaped (row-major, as
    images are flattened), images are checked against ``spec.input_shape``."""
    if x.ndim == 2 and x.shape[1] == spec.input_dim:
        return x.reshape(x.shape[0], *spec.input_shape)
    if x.ndim == 4 and tuple(x.shape[1:]) == spec.input_shape:
        return x
    c, h, w = spec.input_shape
    raise ValueError(
        f"input: expected (batch, {spec.input_dim}) or (batch, {c}, {h}, {w}), got {tuple(x.shape)}"
    )


class ConvNet(nn.Module):
    """Plain: ``layers.{i}`` are the 3x3 convolutions, each followed by the activation (and a
    2x2 max pool before the first layer of a stage when the spec downsamples by pooling); then
    global average pooling and ``out``, the linear head."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__()
        if spec.residual:
            raise ValueError("residual: ConvNet takes a plain spec; use build()")
        self.spec = spec
        self.act = activation_fn(spec.activation)
        shapes = spec.layer_shapes()
        self.layers = nn.ModuleList(ConvLayer(s, spec.batch_norm) for s in shapes)
        self._pool_before = tuple(s.pool_before for s in shapes)
        self.out = nn.Linear(spec.out_channels, spec.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_hidden(x)[0]

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the post-activation map of every convolution, each
        ``(batch, channels, height, width)``."""
        x = as_images(x, self.spec)
        hidden = []
        for layer, pool in zip(self.layers, self._pool_before):
            if pool:
                x = F.max_pool2d(x, 2)
            x = self.act(layer(x))
            hidden.append(x)
        return self.out(x.mean(dim=(2, 3))), hidden

    def conv_layers(self) -> list[ConvLayer]:
        """Every 3x3 convolution in forward order (layer ``i`` has ``spec.widths[i]`` channels)."""
        return list(self.layers)


class BasicBlock(nn.Module):
    """``shortcut(x) + conv2(act(conv1(x)))``, after a 2x2 max pool when ``pool_before``;
    ``shortcut`` is a 1x1 :class:`ConvLayer`, or ``None`` for the identity."""

    def __init__(
        self,
        conv1: LayerShape,
        conv2: LayerShape,
        shortcut: LayerShape | None,
        activation: str,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.act = activation_fn(activation)
        self.pool_before = conv1.pool_before
        self.conv1 = ConvLayer(conv1, batch_norm)
        self.conv2 = ConvLayer(conv2, batch_norm)
        self.shortcut = None if shortcut is None else ConvLayer(shortcut, batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool_before:
            x = F.max_pool2d(x, 2)
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + self.conv2(self.act(self.conv1(x)))


class ResidualConvNet(nn.Module):
    """Residual: ``blocks.{k}`` are the basic blocks, then global average pooling of the last
    block's output and ``out``, the linear head."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__()
        if not spec.residual:
            raise ValueError("residual: ResidualConvNet takes a residual spec; use build()")
        self.spec = spec
        shapes = spec.layer_shapes()
        self.blocks = nn.ModuleList(
            BasicBlock(conv1, conv2, shortcut, spec.activation, spec.batch_norm)
            for conv1, conv2, shortcut in zip(shapes[::2], shapes[1::2], spec.shortcut_shapes())
        )
        self.out = nn.Linear(spec.out_channels, spec.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_hidden(x)[0]

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the output of every block, each ``(batch, channels, height, width)``."""
        x = as_images(x, self.spec)
        hidden = []
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        return self.out(x.mean(dim=(2, 3))), hidden

    def conv_layers(self) -> list[ConvLayer]:
        """Every 3x3 convolution in forward order, ``conv1`` and ``conv2`` of each block (layer
        ``i`` has ``spec.widths[i]`` channels); the shortcuts are not among them."""
        return [layer for block in self.blocks for layer in (block.conv1, block.conv2)]


def build_conv(spec: ConvSpec) -> ConvNet | ResidualConvNet:
    """The network a conv spec describes, with PyTorch's default initialization."""
    return ResidualConvNet(spec) if spec.residual else ConvNet(spec)
