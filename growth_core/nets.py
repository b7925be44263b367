"""Networks built from an :class:`~growth_core.spec.ArchitectureSpec`.

A network is always ``build(spec)`` plus a ``state_dict``; growth produces a new spec and a new
module, never mutates one in place. Parameter names are stable and positional
(``hidden.{i}``, ``blocks.{i}.fc1``, ...) so that weights can be mapped from one spec to the next.
A :class:`~growth_core.conv_spec.ConvSpec` builds one of the convolutional nets of
:mod:`growth_core.conv_nets`.
"""

from __future__ import annotations

from torch import Tensor, nn

from .activations import activation_fn
from .conv_nets import ConvNet, ResidualConvNet, build_conv
from .conv_spec import ConvSpec
from .families import Spec
from .spec import ArchitectureSpec


class MLP(nn.Module):
    """Feedforward: ``hidden.{i}`` are the hidden layers, ``out`` the output layer."""

    def __init__(self, spec: ArchitectureSpec) -> None:
        super().__init__()
        if spec.residual:
            raise ValueError("residual: MLP takes a feedforward spec; use build()")
        self.spec = spec
        self.act = activation_fn(spec.activation)
        dims = (spec.input_dim, *spec.widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], spec.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the post-activation output of every hidden layer, each ``(batch, width)``."""
        hidden = []
        for layer in self.hidden:
            x = self.act(layer(x))
            hidden.append(x)
        return self.out(x), hidden

    def linear_layers(self) -> list[nn.Linear]:
        """Every linear map in forward order."""
        return [*self.hidden, self.out]


class ResidualBlock(nn.Module):
    """``x + W2 act(W1 x + b1)``; ``fc2`` has no bias, as in the reference code."""

    def __init__(self, width: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.act = activation_fn(activation)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class ResidualMLP(nn.Module):
    """``inp`` (input projection + activation), ``blocks.{i}``, then ``out``."""

    def __init__(self, spec: ArchitectureSpec) -> None:
        super().__init__()
        if not spec.residual:
            raise ValueError("residual: ResidualMLP takes a residual spec; use build()")
        self.spec = spec
        self.act = activation_fn(spec.activation)
        self.inp = nn.Linear(spec.input_dim, spec.width)
        self.blocks = nn.ModuleList(
            ResidualBlock(spec.width, h, spec.activation) for h in spec.widths
        )
        self.out = nn.Linear(spec.width, spec.output_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.inp(x))
        for block in self.blocks:
            x = block(x)
        return self.out(x)

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the stream after the input layer and after every block, ``(batch, width)``."""
        x = self.act(self.inp(x))
        hidden = [x]
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        return self.out(x), hidden

    def linear_layers(self) -> list[nn.Linear]:
        layers: list[nn.Linear] = [self.inp]
        for block in self.blocks:
            layers += [block.fc1, block.fc2]
        return [*layers, self.out]


Net = MLP | ResidualMLP


def build(spec: Spec) -> Net | ConvNet | ResidualConvNet:
    """The network a spec describes, with PyTorch's default initialization."""
    if isinstance(spec, ConvSpec):
        return build_conv(spec)
    return ResidualMLP(spec) if spec.residual else MLP(spec)
