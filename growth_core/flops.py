"""Exact FLOP counts of the networks' linear maps.

Counted as ``torch.utils.flop_counter.FlopCounterMode`` counts them, so the two agree exactly
(a test holds this): a matrix product of ``(n, a) @ (a, b)`` costs ``2 n a b``; bias additions,
activations and the loss are not counted. A training step of a linear layer costs its forward
product, the product for the weight gradient when the weight is trained, and the product for the
input gradient when anything upstream needs one.

Convolutional nets (a :class:`~growth_core.conv_spec.ConvSpec`) are counted the same way: a
convolution ``c_in -> c_out`` with a ``k x k`` window putting out an ``h x w`` map costs
``2 n c_in k^2 c_out h w`` (its multiply-adds, twice), as ``FlopCounterMode`` counts
``aten.convolution``; its weight gradient and its input gradient cost as much again each. The
linear head is counted as above. Not counted, as ``FlopCounterMode`` does not count them: conv
biases, batch norm, activations, max pooling, global average pooling, the residual sums and the
loss.
"""

from __future__ import annotations

from collections.abc import Sequence

from .conv_spec import ConvSpec, LayerShape
from .spec import ArchitectureSpec


def linear_shapes(spec: ArchitectureSpec) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of every linear map of ``build(spec)``, in forward order."""
    if spec.residual:
        shapes = [(spec.input_dim, spec.width)]
        for h in spec.widths:
            shapes += [(spec.width, h), (h, spec.width)]
        return [*shapes, (spec.width, spec.output_dim)]
    dims = (spec.input_dim, *spec.widths, spec.output_dim)
    return list(zip(dims[:-1], dims[1:]))


def pass_flops(
    shapes: Sequence[tuple[int, int]],
    n: int,
    *,
    trained: Sequence[bool] | None = None,
    backward: bool = True,
) -> int:
    """FLOPs of one forward (and backward) pass over ``n`` samples.

    ``trained[k]`` says whether layer ``k``'s weight gets a gradient (all by default); a layer
    needs an input gradient when some layer before it is trained.
    """
    trained = [True] * len(shapes) if trained is None else list(trained)
    if len(trained) != len(shapes):
        raise ValueError("trained: one flag per linear layer")
    total = 0
    upstream_trained = False
    for (a, b), train_w in zip(shapes, trained):
        mm = 2 * n * a * b
        total += mm
        if backward:
            total += mm * (int(train_w) + int(upstream_trained))
        upstream_trained = upstream_trained or train_w
    return total


def train_step_flops(spec: ArchitectureSpec | ConvSpec, n: int) -> int:
    """Forward + backward of one training step on a batch of ``n``, every parameter trained."""
    if isinstance(spec, ConvSpec):
        # every map's weight gradient; its input gradient unless it reads the network's input
        return n * sum(f * (2 if first else 3) for f, first in _conv_net_maps(spec))
    return pass_flops(linear_shapes(spec), n)


def forward_flops(spec: ArchitectureSpec | ConvSpec, n: int) -> int:
    if isinstance(spec, ConvSpec):
        return n * sum(f for f, _ in _conv_net_maps(spec))
    return pass_flops(linear_shapes(spec), n, backward=False)


def conv_flops(shape: LayerShape) -> int:
    """Forward FLOPs of one convolution on one example: ``2 c_in k^2 c_out h w``."""
    return 2 * shape.c_in * shape.kernel**2 * shape.c_out * shape.height * shape.width


def _conv_net_maps(spec: ConvSpec) -> list[tuple[int, bool]]:
    """Every convolution and the head of ``build(spec)``: its forward FLOPs on one example and
    whether it reads the network's input (and so computes no input gradient).

    Residual nets have no stem: the first block's ``conv1`` and shortcut both read the input.
    """
    layers = spec.layer_shapes()
    maps = [(conv_flops(s), i == 0) for i, s in enumerate(layers)]
    if spec.residual:
        maps += [
            (conv_flops(s), k == 0) for k, s in enumerate(spec.shortcut_shapes()) if s is not None
        ]
    return [*maps, (2 * spec.out_channels * spec.output_dim, False)]


def _conv_parameter_count(spec: ConvSpec) -> int:
    """Weights of every convolution, each with a bias or, with batch norm, the norm's scale and
    shift (its running statistics are buffers); then the head's weight and bias."""
    convs = list(spec.layer_shapes())
    if spec.residual:
        convs += [s for s in spec.shortcut_shapes() if s is not None]
    per_channel = 2 if spec.batch_norm else 1
    weights = sum(s.c_in * s.kernel**2 * s.c_out + per_channel * s.c_out for s in convs)
    return weights + (spec.out_channels + 1) * spec.output_dim


def parameter_count(spec: ArchitectureSpec | ConvSpec) -> int:
    """Parameters of ``build(spec)``, without building it (residual ``fc2`` has no bias)."""
    if isinstance(spec, ConvSpec):
        return _conv_parameter_count(spec)
    shapes = linear_shapes(spec)
    biases = sum(b for _, b in shapes)
    if spec.residual:
        biases -= spec.width * spec.depth
    return sum(a * b for a, b in shapes) + biases
