"""Zero-cost proxies: what a network says about its own trainability before any training.

The baselines the cascade screen is held against, each a number read off the network at
initialization from at most one mini-batch, higher meaning "more trainable" as its authors use
it:

- ``params``: the number of parameters (:func:`~growth_core.flops.parameter_count`).
- :func:`gradient_norm`: the Euclidean norm of the gradient of the mean cross-entropy on one
  batch, over every parameter.
- :func:`naswot`: Mellor, Turner, Storkey, Crowley 2021 ("Neural Architecture Search without
  Training"). Each input ``i`` of a batch gets a binary code ``c_i`` over the network's
  ``N_A`` units, 1 where the unit's pre-activation is positive; the kernel
  ``K[i, j] = N_A - hamming(c_i, c_j)`` is large off the diagonal when inputs are hard to tell
  apart, and the score is ``log det K``.
- :func:`log_synflow`: Tanaka, Kunin, Yamins, Ganguli 2020 ("Pruning neural networks without any
  data by iteratively conserving synaptic flow"). On the linearized network (every weight
  replaced by its magnitude, activations and biases removed) with an all-ones input,
  ``R = 1^T |W_n| ... |W_1| 1``, and the score is ``sum_theta theta dR/dtheta`` over the
  weights; returned as its natural log, since over depth it spans hundreds of decades.

A conv net's units are its channels at every position (NASWOT's codes); its synaptic flow runs
the linearized convolutions on an all-ones image (a 2x2 max pool of non-negative maps kept as it
is, global average pooling before the head), as Tanaka et al. score their VGGs and ResNets.

Each takes a network (``Net`` or a conv net) and, where it needs data, a batch.
:func:`proxy_columns` wraps them as ``extra_columns`` of :func:`~.candidates.screen_candidates`,
scoring the very network the screen sees.

Example::

    table = screen_candidates(candidates, digits(), budget, extra_columns=proxy_columns())
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..conv_nets import ConvNet, ResidualConvNet, as_images
from ..data import Dataset
from ..flops import parameter_count
from ..nets import MLP, Net, ResidualMLP
from .candidates import Candidate, ExtraColumn
from .cascade import ScreenError, check_int, stream_generator

#: Mellor et al. score each network on one mini-batch of 128 inputs.
PROXY_BATCH = 128


def gradient_norm(net: Net, x: Tensor, y: Tensor) -> float:
    """``||d mean CE(net(x), y) / d theta||_2`` over every parameter, at the current weights.

    The network's ``.grad`` fields are left as they were.
    """
    parameters = [p for p in net.parameters()]
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, parameters)
    return float(torch.sqrt(sum(g.double().square().sum() for g in grads)))


@torch.no_grad()
def activation_codes(net: Net, x: Tensor) -> Tensor:
    """Which units are active (pre-activation ``> 0``) for each input: ``(batch, units)`` bool.

    The units are every hidden layer's of an MLP; a residual MLP's input layer's and every
    block's first layer's (the only places its activation acts); every convolution's channels at
    every position of a plain conv net, every block's first convolution's of a residual one.
    """
    if isinstance(net, ConvNet | ResidualConvNet):
        return _conv_codes(net, x)
    codes = []
    if isinstance(net, MLP):
        for layer in net.hidden:
            pre = layer(x)
            codes.append(pre > 0)
            x = net.act(pre)
    elif isinstance(net, ResidualMLP):
        pre = net.inp(x)
        codes.append(pre > 0)
        x = net.act(pre)
        for block in net.blocks:
            pre = block.fc1(x)
            codes.append(pre > 0)
            x = x + block.fc2(block.act(pre))
    else:
        raise ScreenError(f"net: expected an MLP or a ResidualMLP, got {type(net).__name__}")
    return torch.cat(codes, dim=1)


def _conv_codes(net: ConvNet | ResidualConvNet, x: Tensor) -> Tensor:
    x, codes = as_images(x, net.spec), []
    if isinstance(net, ConvNet):
        for layer, pool in zip(net.layers, net._pool_before, strict=True):
            pre = layer(F.max_pool2d(x, 2) if pool else x)
            codes.append((pre > 0).flatten(1))
            x = net.act(pre)
    else:
        for block in net.blocks:
            x = F.max_pool2d(x, 2) if block.pool_before else x
            pre = block.conv1(x)
            codes.append((pre > 0).flatten(1))
            skip = x if block.shortcut is None else block.shortcut(x)
            x = skip + block.conv2(block.act(pre))
    return torch.cat(codes, dim=1)


def naswot_kernel(codes: Tensor) -> Tensor:
    """``K[i, j] = N_A - hamming(c_i, c_j)`` of binary codes ``(batch, N_A)``: the units on which
    inputs ``i`` and ``j`` agree, ``c c^T + (1 - c)(1 - c)^T``. ``(batch, batch)`` float64."""
    c = codes.double()
    return c @ c.T + (1.0 - c) @ (1.0 - c).T


def naswot(net: Net, x: Tensor) -> float:
    """Mellor et al.'s score ``log det K`` of the codes of the batch ``x`` (see
    :func:`naswot_kernel`); ``-inf`` when ``K`` is singular, as when two inputs share a code."""
    if len(x) < 1:
        raise ScreenError("x: expected at least one input")
    kernel = naswot_kernel(activation_codes(net, x))
    if int(torch.linalg.matrix_rank(kernel)) < len(kernel):
        return -math.inf
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf


def log_synflow(net: Net) -> float:
    """``log sum_W W dR/dW`` with ``R = 1^T |W_n| ... |W_1| 1`` on the linearized network.

    Computed in float64 with the propagated vector renormalized after every layer by a constant
    (which divides ``R`` and every ``dR/dW`` alike), so it neither overflows nor underflows at
    any depth. For an MLP ``R`` is linear in each layer's weights, so the score is exactly
    ``(hidden layers + 1) R``; a residual MLP's paths along the skip connections count too.
    """
    if isinstance(net, ConvNet | ResidualConvNet):
        return _conv_log_synflow(net)
    if isinstance(net, MLP):
        maps = [[layer.weight] for layer in net.hidden]
        skips = [False] * len(maps)
    elif isinstance(net, ResidualMLP):
        maps = [[net.inp.weight]] + [[b.fc1.weight, b.fc2.weight] for b in net.blocks]
        skips = [False] + [True] * len(net.blocks)
    else:
        raise ScreenError(f"net: expected an MLP or a ResidualMLP, got {type(net).__name__}")
    maps.append([net.out.weight])
    skips.append(False)

    weights = [w.detach().double().abs().requires_grad_() for ws in maps for w in ws]
    v = torch.ones(net.spec.input_dim, dtype=torch.float64)
    log_scale, k = 0.0, 0
    for ws, skip in zip(maps, skips, strict=True):
        u = v
        for _ in ws:
            u = weights[k] @ u  # weight (fan_out, fan_in)
            k += 1
        v = v + u if skip else u
        norm = float(v.detach().sum())  # every entry >= 0
        if norm == 0.0:
            return -math.inf  # no path carries flow
        v = v / norm
        log_scale += math.log(norm)
    grads = torch.autograd.grad(v.sum(), weights)
    flow = sum(float((w.detach() * g).sum()) for w, g in zip(weights, grads, strict=True))
    return math.log(flow) + log_scale if flow > 0 else -math.inf


def _conv_log_synflow(net: ConvNet | ResidualConvNet) -> float:
    """:func:`log_synflow` of a conv net: every convolution (and shortcut) with ``|W|``, no bias,
    no activation or batch norm, on an all-ones image; the map renormalized by its sum after
    every layer (block); global average pooling, then ``|W_out|``."""
    convs = [c.conv for c in net.conv_layers()]
    if isinstance(net, ResidualConvNet):
        convs += [b.shortcut.conv for b in net.blocks if b.shortcut is not None]
    convs.append(net.out)
    weights = {id(m): m.weight.detach().double().abs().requires_grad_() for m in convs}

    def conv(layer, v: Tensor) -> Tensor:
        c = layer.conv
        return F.conv2d(v, weights[id(c)], stride=c.stride, padding=c.padding)

    v = torch.ones(1, *net.spec.input_shape, dtype=torch.float64)
    log_scale = 0.0
    if isinstance(net, ConvNet):
        steps = [
            (lambda v, layer=layer, pool=pool: conv(layer, F.max_pool2d(v, 2) if pool else v))
            for layer, pool in zip(net.layers, net._pool_before, strict=True)
        ]
    else:

        def block_step(v: Tensor, block) -> Tensor:
            v = F.max_pool2d(v, 2) if block.pool_before else v
            skip = v if block.shortcut is None else conv(block.shortcut, v)
            return skip + conv(block.conv2, conv(block.conv1, v))

        steps = [lambda v, block=block: block_step(v, block) for block in net.blocks]
    for step in steps:
        v = step(v)
        norm = float(v.detach().sum())
        if norm == 0.0:
            return -math.inf
        v = v / norm
        log_scale += math.log(norm)
    r = (v.mean(dim=(2, 3)) @ weights[id(net.out)].T).sum()
    flow = sum(
        float((w.detach() * g).sum())
        for w, g in zip(weights.values(), torch.autograd.grad(r, list(weights.values())))
    )
    return math.log(flow) + log_scale if flow > 0 else -math.inf


def proxy_batch(data: Dataset, size: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` training samples (all of them if fewer) drawn without replacement with ``seed``."""
    check_int("size", size, 1)
    order = torch.randperm(data.n_train, generator=stream_generator(seed, stream=4))[:size]
    return data.x_train[order], data.y_train[order]


def proxy_columns(*, batch_size: int = PROXY_BATCH) -> dict[str, ExtraColumn]:
    """The four proxies as ``extra_columns`` of :func:`~.candidates.screen_candidates`.

    Each scores ``candidate.network(data)`` (the network the screen
    sees) on ``batch_size`` training samples drawn with the candidate's seed.
    """
    check_int("batch_size", batch_size, 1)

    def network(candidate: Candidate, data: Dataset) -> Net:
        if not isinstance(data, Dataset):
            raise ScreenError(f"data: expected a Dataset, got {type(data).__name__}")
        return candidate.network(data)

    def batch(candidate: Candidate, data: Dataset) -> tuple[Tensor, Tensor]:
        return proxy_batch(data, batch_size, seed=candidate.seed)

    return {
        "params": lambda c, d: float(parameter_count(network(c, d).spec)),
        "grad_norm": lambda c, d: gradient_norm(network(c, d), *batch(c, d)),
        "naswot": lambda c, d: naswot(network(c, d), batch(c, d)[0]),
        "log_synflow": lambda c, d: log_synflow(network(c, d)),
    }
