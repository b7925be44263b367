"""The cascade-reconstruction screen of convolutional networks (Thurn et al., revised version).

The screen of :mod:`.cascade`, for a :class:`~growth_core.conv_spec.ConvSpec`: the untrained net
is frozen, and one decoder per hidden map learns to map it back to the map before it (the input
image for the first). As in the authors' code for their CNN experiments, a decoder is a 3x3
*transposed* convolution followed by tanh: the adjoint geometry of the layer it undoes, so a
stride-2 layer's decoder has stride 2 and brings the map back to the finer resolution (a 2x2 max
pool before a layer is undone the same way: there is no pooled-index decoder), cropped to the
earlier map's size. The hidden maps are those of ``forward_with_hidden``: after every
convolution of a plain net, after every basic block of a residual one (one decoder per block,
where the authors' ResNet decoders are two transposed convolutions: one keeps every decoder one
layer deep, as in the MLP screen). Chaining decoders reconstructs the input from every depth;
the relative entropy of each reconstruction, over depth, is read as for MLPs.

Batched as the MLP screen is: decoders of one geometry (a stage's run of equal convolutions)
are one grouped transposed convolution, all of them one autograd graph whose loss is the sum
of each decoder's mean squared error (so each decoder gets exactly its own gradient), stepped
by one fused Adam.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..conv_spec import ConvSpec
from ..flops import forward_flops

#: Every decoder's kernel, as the layers the screen's nets are built of.
KERNEL = 3


@dataclass(frozen=True)
class Geometry:
    """A decoder: a ``c_in x height x width`` map back to ``c_out x out_height x out_width``,
    upsampling by ``stride``; ``pooled`` when a 2x2 max pool (not a strided layer) shrank it."""

    c_in: int
    height: int
    width: int
    c_out: int
    out_height: int
    out_width: int
    stride: int
    pooled: bool = False

    @property
    def key(self) -> tuple[int | bool, ...]:
        """Decoders with equal keys batch as one grouped convolution."""
        return (self.c_in, self.height, self.width, self.c_out, self.out_height, self.out_width,
                self.pooled)  # fmt: skip

    @property
    def macs(self) -> int:
        """Multiply-adds of the transposed convolution on one map, as ``torch.utils.flop_counter``
        counts a transposed convolution: every input position times the whole kernel."""
        return self.c_in * self.c_out * KERNEL * KERNEL * self.height * self.width


def geometries(spec: ConvSpec) -> list[Geometry]:
    """Decoder ``i`` of the cascade of ``spec``'s hidden maps, in ``forward_with_hidden`` order."""
    shapes = spec.layer_shapes()
    pooled = [s.pool_before for s in shapes]
    maps = [(s.c_out, s.height, s.width) for s in shapes]
    if spec.residual:  # a block's output is its second convolution's; its first may pool
        maps, pooled = maps[1::2], pooled[::2]
    previous = [spec.input_shape, *maps[:-1]]
    out = []
    for (c, h, w), (c_prev, h_prev, w_prev), pool in zip(maps, previous, pooled):
        stride = 1 if (h, w) == (h_prev, w_prev) else 2
        out.append(Geometry(c, h, w, c_prev, h_prev, w_prev, stride, pool))
    return out


def screen_flops(spec: ConvSpec, trained_samples: int, eval_images: int) -> int:
    """FLOPs of a conv screen, counted as :mod:`torch.utils.flop_counter` counts them, with one
    exception: torch counts the weight gradient of a *grouped* transposed convolution once per
    group too often (its backward formula ignores the groups), so decoders batched in groups are
    counted as what they compute, the sum of their ungrouped counts (a test holds the two
    together: ``batched=False`` runs every decoder alone and torch counts it exactly).

    Training, per sample: the frozen forward pass, then each decoder's forward and its weight
    gradient (its input is frozen: no input gradient). Evaluation: the forward pass, then the
    cascade, which applies decoder ``i`` to the ``L - i`` chains that start at it or deeper.
    """
    macs = [g.macs for g in geometries(spec)]
    layers = len(macs)
    train = trained_samples * (forward_flops(spec, 1) + 2 * 2 * sum(macs))
    chains = sum((layers - i) * m for i, m in enumerate(macs))
    evaluate = eval_images * (forward_flops(spec, 1) + 2 * chains)
    return train + evaluate


class ConvDecoders(nn.Module):
    """Every decoder of a conv cascade; decoder ``i`` maps hidden map ``i`` to map ``i - 1``
    (the input image for ``i = 0``).

    Decoders of one :class:`Geometry` share a group: ``weights[g]`` holds them stacked as one
    grouped transposed convolution ``(members * c_in, c_out, 3, 3)``. A decoder's output is
    ``scale * tanh(z)``, its scale fixed from its targets on the first batch (the largest
    magnitude, at least 1), as in the MLP screen.
    """

    def __init__(self, spec: ConvSpec, *, generator: torch.Generator, batched: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.geometry = geometries(spec)
        keys = [g.key if batched else i for i, g in enumerate(self.geometry)]
        self.members = [[i for i, k in enumerate(keys) if k == key] for key in dict.fromkeys(keys)]
        self.group_of = {i: (gi, j) for gi, ms in enumerate(self.members) for j, i in enumerate(ms)}
        drawn = [_draw(g, generator) for g in self.geometry]  # the same draws, batched or not
        self.weights = nn.ParameterList(
            nn.Parameter(torch.cat([drawn[i][0] for i in ms])) for ms in self.members
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.cat([drawn[i][1] for i in ms])) for ms in self.members
        )
        self.register_buffer("scale", torch.ones(len(self.geometry)))
        self.scaled = False

    def stream(self, hidden: list[Tensor]) -> list[Tensor]:
        """The hidden maps as the decoders read them (as they come)."""
        return hidden

    def set_scales(self, x: Tensor, hidden: list[Tensor]) -> None:
        """Fix each decoder's output scale from its target on one batch: the input ``x`` for
        decoder 0, hidden map ``i - 1`` for decoder ``i``."""
        targets = [self._image(x), *hidden[:-1]]
        self.scale.copy_(torch.stack([t.abs().max() for t in targets]).clamp_min(1.0))
        self.scaled = True

    def write_gradients(self, x: Tensor, hidden: list[Tensor]) -> None:
        """Write into every ``.grad`` the gradient of the sum of each decoder's mean squared
        error on one batch (one graph for all decoders; their inputs are frozen)."""
        targets = [self._image(x), *hidden[:-1]]
        with torch.enable_grad():
            loss = x.new_zeros(())
            for g, members in enumerate(self.members):
                inputs = torch.cat([hidden[i] for i in members], dim=1)
                outputs = self._group(g, inputs).split(self.geometry[members[0]].c_out, dim=1)
                for i, out in zip(members, outputs):
                    loss = loss + F.mse_loss(out, targets[i])
            grads = torch.autograd.grad(loss, list(self.parameters()))
        for parameter, grad in zip(self.parameters(), grads):
            parameter.grad = grad

    def decode(self, index: int, chains: Tensor) -> Tensor:
        """Decoder ``index`` on every chain of ``chains`` ``(chains, images, c, h, w)``."""
        g, j = self.group_of[index]
        geo = self.geometry[index]
        weight = self.weights[g][j * geo.c_in : (j + 1) * geo.c_in]
        bias = self.biases[g][j * geo.c_out : (j + 1) * geo.c_out]
        flat = chains.reshape(-1, *chains.shape[2:])
        out = self._transposed(flat, weight, bias, geo, groups=1)
        out = self.scale[index] * out.tanh()
        return out.reshape(*chains.shape[:2], *out.shape[1:])

    def reconstruct(self, hidden: list[Tensor]) -> Tensor:
        """The cascade from every hidden map back to the input: ``(layers, images, input_dim)``,
        entry ``i`` from map ``i``; one call per decoder, over every chain through it."""
        chains = hidden[-1].unsqueeze(0)
        for index in range(len(hidden) - 1, 0, -1):
            chains = torch.cat([self.decode(index, chains), hidden[index - 1].unsqueeze(0)])
        images = self.decode(0, chains).flip(0)
        return images.reshape(*images.shape[:2], -1)

    def _group(self, g: int, inputs: Tensor) -> Tensor:
        members = self.members[g]
        geo = self.geometry[members[0]]
        out = self._transposed(inputs, self.weights[g], self.biases[g], geo, groups=len(members))
        scale = self.scale[members].repeat_interleave(geo.c_out).view(1, -1, 1, 1)
        return scale * out.tanh()

    @staticmethod
    def _transposed(x: Tensor, weight: Tensor, bias: Tensor, geo: Geometry, groups: int) -> Tensor:
        """The transposed convolution of ``geo``, cropped to the earlier map: stride 1 keeps
        the size (padding 1); stride 2 gives ``2h + 1`` rows (padding 0), of which those that
        line up with the downsampling's windows are kept: from row 0 under a pool (output row
        ``j`` pooled rows ``2j, 2j + 1``), from row 1 under a strided layer (its padding of 1:
        output row ``j`` read rows ``2j - 1 .. 2j + 1``)."""
        if geo.stride == 1:
            return F.conv_transpose2d(x, weight, bias, padding=1, groups=groups)
        out = F.conv_transpose2d(x, weight, bias, stride=2, groups=groups)
        top = 0 if geo.pooled else 1
        return out[:, :, top : top + geo.out_height, top : top + geo.out_width]

    def _image(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), *self.spec.input_shape)


def _draw(geo: Geometry, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One decoder's weight and bias as ``nn.ConvTranspose2d`` draws them by default: uniform
    within ``1 / sqrt(fan_in)``, its fan-in being the weight's dim 1 times the kernel."""
    bound = 1.0 / (geo.c_out * KERNEL * KERNEL) ** 0.5
    weight = torch.empty(geo.c_in, geo.c_out, KERNEL, KERNEL).uniform_(
        -bound, bound, generator=generator
    )
    bias = torch.empty(geo.c_out).uniform_(-bound, bound, generator=generator)
    return weight, bias
