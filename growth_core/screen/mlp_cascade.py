"""The cascade screen's decoders for MLPs (see :mod:`.cascade`): one ``tanh(h W + b)`` per
hidden representation, stacked into one tensor so a step is one batched product forward and one
for the weight gradients, with the gradients written out by hand into buffers allocated once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..flops import forward_flops
from ..spec import ArchitectureSpec


def screen_flops(spec: ArchitectureSpec, trained_samples: int, eval_images: int) -> int:
    """:func:`.cascade.screen_flops` of an MLP, from the shapes of its stream and decoders."""
    stream, input_decoder = stream_shape(spec)
    layers, width = stream
    decoder_macs = input_decoder + (layers - 1) * width * width
    train = trained_samples * (forward_flops(spec, 1) + 2 * 2 * decoder_macs)
    chain_macs = layers * input_decoder + (layers - 1) * layers // 2 * width * width
    evaluate = eval_images * (forward_flops(spec, 1) + 2 * chain_macs)
    return train + evaluate


def stream_shape(spec: ArchitectureSpec) -> tuple[tuple[int, int], int]:
    """``((representations, width), width * input_dim)``: the hidden stream the decoders read
    and the multiply-adds of the decoder back to the input."""
    widths = spec.hidden_widths
    return (len(widths), widths[0]), widths[0] * spec.input_dim


class MLPDecoders(nn.Module):
    """Decoder ``i`` maps hidden representation ``i`` to ``i - 1`` (the input for ``i = 0``).

    ``weight[j]``, ``bias[j]`` are decoder ``j + 1`` (``width -> width``); ``input_weight``,
    ``input_bias`` decoder 0 (``width -> input_dim``). A decoder's output is
    ``scale * tanh(h W + b)``: the scale (the largest magnitude of its target on the first batch,
    at least 1) lets tanh reach targets outside ``[-1, 1]`` (standardized inputs, a residual
    stream) and is 1 for a tanh network on inputs in ``[-1, 1]``, the reference's setting.
    """

    def __init__(self, spec: ArchitectureSpec, *, generator: torch.Generator) -> None:
        super().__init__()
        (layers, width), _ = stream_shape(spec)
        self.weight = nn.Parameter(_uniform((layers - 1, width, width), width, generator))
        self.bias = nn.Parameter(_uniform((layers - 1, 1, width), width, generator))
        self.input_weight = nn.Parameter(_uniform((width, spec.input_dim), width, generator))
        self.input_bias = nn.Parameter(_uniform((spec.input_dim,), width, generator))
        self.register_buffer("scale", torch.ones(layers - 1, 1, 1))
        self.register_buffer("input_scale", torch.ones(()))
        for parameter in self.parameters():
            parameter.grad = torch.zeros_like(parameter)  # written in place by write_gradients()
        self.scaled = False

    def stream(self, hidden: list[Tensor]) -> Tensor:
        """The hidden representations as the decoders read them: ``(layers, batch, width)``."""
        return torch.stack(hidden)

    def set_scales(self, x: Tensor, hidden: Tensor) -> None:
        """Fix each decoder's output scale from its targets ``x`` ``(batch, input_dim)`` and
        ``hidden[:-1]`` ``(layers - 1, batch, width)``."""
        self.input_scale.copy_(x.abs().max().clamp_min(1.0))
        self.scale.copy_(hidden[:-1].abs().amax(dim=(1, 2), keepdim=True).clamp_min(1.0))
        self.scaled = True

    @torch.no_grad()
    def write_gradients(self, x: Tensor, hidden: Tensor) -> None:
        """Write into every ``.grad`` the gradient of the sum over decoders of each one's mean
        squared error on one batch: ``x`` ``(batch, input_dim)``, ``hidden``
        ``(layers, batch, width)``.

        For a decoder ``y = s tanh(z)``, ``z = h W + b``, with target ``t`` and loss
        ``mean((y - t)^2)`` over its ``n`` outputs: ``dz = (1 - tanh(z)^2) (y - t) 2 s / n``,
        ``dW = h^T dz``, ``db = sum_batch dz``. Written out rather than left to autograd so the
        weight gradient, the largest tensor of a step, lands in a buffer allocated once (a fresh
        one per step costs as much time as the product that fills it).
        """
        batch, width = hidden.shape[1:]
        inputs, targets = hidden[1:], hidden[:-1]  # (layers - 1, batch, width)
        tanh = torch.baddbmm(self.bias, inputs, self.weight).tanh_()
        dz = _tanh_mse_dz(tanh, self.scale, targets, n=batch * width)
        torch.bmm(inputs.transpose(1, 2), dz, out=self.weight.grad)
        torch.sum(dz, dim=1, keepdim=True, out=self.bias.grad)

        tanh = torch.addmm(self.input_bias, hidden[0], self.input_weight).tanh_()
        dz = _tanh_mse_dz(tanh, self.input_scale, x, n=x.numel())  # (batch, input_dim)
        torch.mm(hidden[0].T, dz, out=self.input_weight.grad)
        torch.sum(dz, dim=0, out=self.input_bias.grad)

    def decode(self, index: int, chains: Tensor) -> Tensor:
        """Apply decoder ``index`` to every chain of ``chains`` ``(chains, images, width)``."""
        flat = chains.reshape(-1, chains.shape[-1])
        if index == 0:
            weight, bias, scale = self.input_weight, self.input_bias, self.input_scale
        else:
            j = index - 1
            weight, bias, scale = self.weight[j], self.bias[j, 0], self.scale[j]
        out = scale * torch.addmm(bias, flat, weight).tanh_()
        return out.reshape(*chains.shape[:-1], -1)

    def reconstruct(self, hidden: Tensor) -> Tensor:
        """The cascade: from every representation of ``hidden`` ``(layers, images, width)`` back
        to the input; returns ``(layers, images, input_dim)``, entry ``i`` from representation
        ``i``. One batched product per decoder, over every chain that passes through it."""
        chains = hidden[-1:]  # (chains, images, width), deepest first
        for index in range(len(hidden) - 1, 0, -1):
            chains = torch.cat([self.decode(index, chains), hidden[index - 1 : index]])
        return self.decode(0, chains).flip(0)


def _tanh_mse_dz(tanh: Tensor, scale: Tensor, target: Tensor, *, n: int) -> Tensor:
    """``d mean((s tanh(z) - t)^2) / dz`` over ``n`` outputs; overwrites ``tanh``."""
    error = torch.mul(tanh, scale).sub_(target)
    return tanh.square_().neg_().add_(1.0).mul_(error).mul_(scale * (2.0 / n))


def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> Tensor:
    """``nn.Linear``'s default draw, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as the reference's
    decoders are initialized."""
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)
