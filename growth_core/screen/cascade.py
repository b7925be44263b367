"""The cascade-reconstruction trainability screen (Thurn, Jefferson, Erdmenger 2024).

An untrained network is frozen. One decoder per hidden representation, ``tanh(h_l W_l + b_l)``,
learns to map representation ``l`` back to representation ``l - 1`` (the input for ``l = 0``)
with Adam and the MSE (a conv net's decoders are transposed convolutions: :mod:`.conv_cascade`).
Chaining decoders ``l, l - 1, ..., 0`` reconstructs the input from layer ``l``; the relative
entropy of that reconstruction, read over depth, says how deep the input survives, and so how
deep the network can be trained (see :mod:`.entropy`).

The decoders are independent given the frozen activations, so they train together: their
weights are one stacked tensor ``(layers - 1, width, width)``; a step is one batched product
forward and one for the weight gradients (plus one of each for the decoder back to the input,
whose shape differs), and one fused Adam steps all of them. Summing the decoders' mean squared
errors gives each decoder exactly the gradient of its own loss, so this is the reference's one
optimizer per decoder, fused. Activations are streamed: a step holds one batch's
representations, never the dataset's. Hidden representations are those of
``forward_with_hidden``: every hidden layer of an MLP; a residual MLP's stream after its input
layer and after every block.

Example::

    spec = ArchitectureSpec(64, 10, (64,) * 30, activation="tanh")
    result = screen(spec, Initializer("gaussian", 1.0, 0.05), digits(), ScreenBudget(epochs=20))
    result.decay_depth, result.reference_depth, result.curve, result.flops
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from .._checks import require_int
from ..conv_spec import ConvSpec
from ..data import Dataset
from ..init import Initializer, orthonormal
from ..nets import Net, build
from ..spec import ArchitectureSpec
from . import conv_cascade, mlp_cascade
from .entropy import (
    crossing_depth,
    decay_depth,
    median,
    normalized_curve,
    relative_entropy,
    saturation_depth,
)

#: The reference trains every decoder with ``torch.optim.Adam`` at its default learning rate.
LEARNING_RATE = 1e-3
#: The reference's batch size (MNIST: one epoch is 938 steps of 64).
BATCH_SIZE = 64
#: Evaluation images are reconstructed this many at a time (bounds the cascade's memory).
EVAL_CHUNK = 256


class ScreenError(ValueError):
    """Bad input to the screen; the message names the argument or field."""


@dataclass(frozen=True)
class ScreenBudget:
    """How much the screen may spend.

    ``epochs`` passes over the training data in batches of ``batch_size`` (the last batch of an
    epoch may be smaller), stopped after ``max_steps`` optimizer steps if given; the curve is read
    from the first ``eval_images`` evaluation images.
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = BATCH_SIZE
    eval_images: int = 1000

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_images"):
            check_int(f"budget.{name}", getattr(self, name), 1)
        if self.max_steps is not None:
            check_int("budget.max_steps", self.max_steps, 1)


@dataclass(frozen=True)
class ScreenResult:
    """What the screen measured of one network.

    ``kl[i]`` is the median over evaluation images of the relative entropy of the reconstruction
    from hidden representation ``i`` (``forward_with_hidden`` order); ``curve[i]`` is the median of
    each image's KL divided by its deepest value. ``reference_depth`` is the reference's readout
    (:func:`~.entropy.saturation_depth`), ``crossing_depth`` and ``decay_depth`` the
    noise-robust ones (:func:`~.entropy.crossing_depth`, :func:`~.entropy.decay_depth`);
    ``score`` is ``decay_depth`` as a fraction of the network's depth (higher is more trainable),
    the readout that validates best (``bench/screen_validation.py``). ``flops`` counts every
    matrix product the screen ran, as ``torch.utils.flop_counter`` counts them; ``seconds`` is
    wall time.
    """

    kl: tuple[float, ...]
    curve: tuple[float, ...]
    reference_depth: int
    crossing_depth: float
    decay_depth: float
    score: float
    flops: int
    seconds: float
    steps: int


def screen(
    spec: ArchitectureSpec | ConvSpec,
    initializer: Initializer,
    data: Dataset | Tensor,
    budget: ScreenBudget | None = None,
    *,
    seed: int = 0,
) -> ScreenResult:
    """Screen ``build(spec)`` initialized by ``initializer`` with ``seed``.

    ``data`` is a :class:`~growth_core.data.Dataset` (decoders train on ``x_train``, the curve is
    read on ``x_test``) or one ``(n, input_dim)`` tensor used for both (a conv net reads its rows
    as images of ``spec.input_shape``). An MLP's hidden layers must share one width (a residual
    net's stream always does); the first may change the width, as a random projection of a wide
    input. A conv net's maps may differ in channels and resolution (:mod:`.conv_cascade`).
    """
    start = time.perf_counter()
    budget = ScreenBudget() if budget is None else budget
    x_train, x_eval = _check_inputs(spec, initializer, data, budget, seed)
    x_eval = x_eval[: budget.eval_images]

    net = initializer.apply_on(build(spec), seed=seed, inputs=x_train)
    net = net.requires_grad_(False).eval()
    generator = stream_generator(seed, stream=1)
    if isinstance(spec, ConvSpec):
        decoders = conv_cascade.ConvDecoders(spec, generator=generator)
    else:
        decoders = mlp_cascade.MLPDecoders(spec, generator=generator)
    steps, samples = _train(net, decoders, x_train, budget, stream_generator(seed, stream=2))
    kl = _cascade_kl(net, decoders, x_eval)  # (images, depths)

    curve = normalized_curve(kl)
    decay = decay_depth(curve)
    return ScreenResult(
        kl=tuple(median(kl).tolist()),
        curve=tuple(curve.tolist()),
        reference_depth=saturation_depth(curve),
        crossing_depth=crossing_depth(curve),
        decay_depth=decay,
        score=decay / len(curve) if isinstance(spec, ConvSpec) else decay / spec.depth,
        flops=screen_flops(spec, samples, len(x_eval)),
        seconds=time.perf_counter() - start,
        steps=steps,
    )


def random_projection(data: Dataset, width: int, *, seed: int = 0) -> Dataset:
    """``data`` with its features mapped to ``width`` by one fixed random matrix.

    The matrix has orthonormal columns (a Haar-random ``(input_dim, width)`` frame) scaled by
    ``sqrt(input_dim / width)``, so an input keeps its squared norm on average. Screening a
    ``width``-wide network on the projected data stands in for a network as wide as a wide input
    at ``(width / input_dim)^2`` of the cost (MNIST, 784 -> 256: about a ninth). Preferred to a
    first layer that narrows the input: one epoch does not train a decoder from 256 random tanh
    features back to 784 pixels well, and the curve then starts near saturation.
    """
    if not isinstance(data, Dataset):
        raise ScreenError(f"data: expected a Dataset, got {type(data).__name__}")
    check_int("width", width, 1)
    check_int("seed", seed, 0)
    if width > data.input_dim:
        raise ScreenError(f"width: {width} is wider than the data's {data.input_dim} features")
    columns = orthonormal(data.input_dim, width, stream_generator(seed, stream=3))
    frame = columns * math.sqrt(data.input_dim / width)  # (input_dim, width)
    return Dataset(
        f"{data.name}-projected-{width}",
        data.x_train @ frame,
        data.y_train,
        data.x_test @ frame,
        data.y_test,
        data.num_classes,
    )


def screen_flops(spec: ArchitectureSpec | ConvSpec, trained_samples: int, eval_images: int) -> int:
    """FLOPs of a screen that trained on ``trained_samples`` samples (over all steps) and read
    the curve on ``eval_images`` images, counted as :mod:`growth_core.flops` counts them.

    Training, per sample: the frozen forward pass, then each decoder's forward product and its
    weight-gradient product (the decoders' inputs are frozen: no input gradient). Evaluation: the
    forward pass, then the cascade, which applies the decoder of representation ``i`` to the
    ``L - i`` chains that start at it or deeper.
    """
    family = conv_cascade if isinstance(spec, ConvSpec) else mlp_cascade
    return family.screen_flops(spec, trained_samples, eval_images)


# -- training and reading ----------------------------------------------------------------------


@torch.no_grad()
def _train(
    net: Net,
    decoders: mlp_cascade.MLPDecoders | conv_cascade.ConvDecoders,
    x: Tensor,
    budget: ScreenBudget,
    generator: torch.Generator,
) -> tuple[int, int]:
    """Train every decoder on the frozen net's activations; returns (steps, samples seen)."""
    optimizer = torch.optim.Adam(decoders.parameters(), lr=LEARNING_RATE, fused=True)
    steps = samples = 0
    for batch in _batches(x, budget, generator):
        _, hidden = net.forward_with_hidden(batch)
        stream = decoders.stream(hidden)
        if not decoders.scaled:
            decoders.set_scales(batch, stream)
        decoders.write_gradients(batch, stream)
        optimizer.step()
        steps, samples = steps + 1, samples + len(batch)
    return steps, samples


def _batches(x: Tensor, budget: ScreenBudget, generator: torch.Generator) -> Iterator[Tensor]:
    """Shuffled batches, epoch after epoch, until the epochs or ``max_steps`` run out."""
    steps = 0
    for _ in range(budget.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), budget.batch_size):
            if steps == budget.max_steps:
                return
            yield x[order[start : start + budget.batch_size]]
            steps += 1


@torch.inference_mode()
def _cascade_kl(
    net: Net, decoders: mlp_cascade.MLPDecoders | conv_cascade.ConvDecoders, x: Tensor
) -> Tensor:
    """The relative entropy of every image's reconstruction from every depth, ``(images, L)``."""
    parts = []
    for chunk in x.split(EVAL_CHUNK):
        _, hidden = net.forward_with_hidden(chunk)
        reconstruction = decoders.reconstruct(decoders.stream(hidden))  # (L, chunk, input_dim)
        parts.append(relative_entropy(chunk, reconstruction).T)
    return torch.cat(parts)


# -- shapes and checks -------------------------------------------------------------------------


def stream_generator(seed: int, *, stream: int) -> torch.Generator:
    """A generator for one use of ``seed`` (decoders, shuffling), independent of the stream
    ``Initializer.apply`` draws the network from with the same seed."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _check_inputs(
    spec: ArchitectureSpec | ConvSpec,
    initializer: Initializer,
    data: Dataset | Tensor,
    budget: ScreenBudget,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Validate every argument of :func:`screen`; returns (training inputs, evaluation inputs)."""
    if not isinstance(spec, ArchitectureSpec | ConvSpec):
        raise ScreenError(
            f"spec: expected an ArchitectureSpec or a ConvSpec, got {type(spec).__name__}"
        )
    if not isinstance(initializer, Initializer):
        raise ScreenError(f"initializer: expected an Initializer, got {type(initializer).__name__}")
    if not isinstance(budget, ScreenBudget):
        raise ScreenError(f"budget: expected a ScreenBudget, got {type(budget).__name__}")
    check_int("seed", seed, 0)
    if isinstance(spec, ConvSpec):
        if len(conv_cascade.geometries(spec)) < 2:
            raise ScreenError("spec.stages: a cascade needs at least two hidden maps")
    elif not spec.residual and len(set(spec.widths)) > 1:
        raise ScreenError(
            f"spec.widths: the screen stacks one decoder per layer and needs equal hidden widths, "
            f"got {list(spec.widths)}"
        )
    elif mlp_cascade.stream_shape(spec)[0][0] < 2:
        raise ScreenError("spec.widths: a cascade needs at least two hidden layers")
    if isinstance(data, Dataset):
        pairs = (("data.x_train", data.x_train), ("data.x_test", data.x_test))
    elif isinstance(data, Tensor):
        pairs = (("data", data), ("data", data))
    else:
        raise ScreenError(f"data: expected a Dataset or a tensor, got {type(data).__name__}")
    for name, x in pairs:
        _check_features(name, x, spec.input_dim)
    return pairs[0][1], pairs[1][1]


def _check_features(name: str, x: Tensor, input_dim: int) -> None:
    if x.dtype != torch.float32 or x.ndim != 2:
        raise ScreenError(
            f"{name}: expected a 2-d float32 tensor (n, {input_dim}), "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ScreenError(f"{name}: no rows")
    if x.shape[1] != input_dim:
        raise ScreenError(f"{name}: {x.shape[1]} features, but spec.input_dim is {input_dim}")
    low, high = torch.aminmax(x)  # NaN propagates; no mask as large as x
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ScreenError(f"{name}: holds NaN or infinite values")


#: A whole-number argument check that raises :class:`ScreenError`.
check_int = partial(require_int, error=ScreenError)
