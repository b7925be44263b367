"""Built-in datasets, offline and deterministic for a seed: the layer-insertion paper's two
spirals, scikit-learn's digits, MNIST-1D generated locally, a teacher network, white noise."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import numpy as np
import torch

from .._checks import is_int, require_number
from .dataset import (
    DataError,
    Dataset,
    check_int,
    n_test_rows,
    shuffle_split,
    standardization,
    standardized,
)

# The two spirals of Herberg, Herzog, Köhne, Kreis, Schiela 2023 (arXiv 2311.15995), reference
# code github.com/mathemml/SensLI, spirals_data_new.py: 300 points per class, starting radius
# 0.5, one turn, shuffled and split 450 train / 150 test.
SPIRALS_PER_CLASS = 300
SPIRALS_R0 = 0.5
SPIRALS_TURNS = 1.0
SPIRALS_N_TEST = 150

#: Ten digit classes, for scikit-learn's digits and for mnist1d.
DIGIT_CLASSES = 10

#: scikit-learn's digits are 8x8 grey images: ``(channels, height, width)``.
DIGITS_SHAPE = (1, 8, 8)


def _spiral_arm(sign: float, n: int, r0: float, turns: float) -> torch.Tensor:
    """Points ``i = 0..n-1`` of one arm: ``phi = 2 pi turns i / n``, ``r = r0 + turns i / n``,
    ``(x, y) = sign * r * (cos phi, sin phi)``. Returns ``(n, 2)`` float64."""
    i = torch.arange(n, dtype=torch.float64)
    phi = i * (2 * math.pi * turns / n)
    r = r0 + i * (turns / n)
    return sign * torch.stack((r * torch.cos(phi), r * torch.sin(phi)), dim=1)


def spirals(
    *,
    n_per_class: int = SPIRALS_PER_CLASS,
    r0: float = SPIRALS_R0,
    turns: float = SPIRALS_TURNS,
    n_test: int = SPIRALS_N_TEST,
    seed: int = 0,
) -> Dataset:
    """Two interleaved spirals, the benchmark of the layer-insertion paper (Herberg et al. 2023).

    Class 0 is the arm with sign -1, class 1 the arm with sign +1 (see :func:`_spiral_arm`).
    A smaller ``r0`` brings the arms closer at the centre, more ``turns`` wind them further:
    both make the task harder. The points are shuffled with ``seed`` and the last ``n_test``
    form the test split.
    """
    check_int("n_per_class", n_per_class, 1)
    r0 = float(require_number("r0", r0, 0.0, strict=False, error=DataError))
    turns = float(require_number("turns", turns, 0.0, strict=True, error=DataError))
    if not is_int(n_test) or not 1 <= n_test <= 2 * n_per_class - 1:
        raise DataError(f"n_test: expected an int in [1, {2 * n_per_class - 1}], got {n_test!r}")
    check_int("seed", seed, 0)
    points = torch.cat(
        [_spiral_arm(-1.0, n_per_class, r0, turns), _spiral_arm(1.0, n_per_class, r0, turns)]
    )
    labels = torch.cat([torch.zeros(n_per_class), torch.ones(n_per_class)]).long()
    return Dataset("spirals", *shuffle_split(points.float(), labels, n_test, seed), num_classes=2)


def digits(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, 64 features, 10 classes; shipped
    with scikit-learn, so offline), split with ``seed`` and standardized with train statistics.
    Each row is one grey image, ``shape`` ``(1, 8, 8)``."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    check_int("seed", seed, 0)
    bunch = load_digits()
    x = torch.from_numpy(bunch.data.astype(np.float32))
    y = torch.from_numpy(bunch.target.astype(np.int64))
    x_train, y_train, x_test, y_test = shuffle_split(
        x, y, n_test_rows(len(y), test_fraction, "digits"), seed
    )
    preprocess = standardization(x_train)
    x_train, x_test = standardized(x_train, x_test)
    return Dataset(
        "digits",
        x_train,
        y_train,
        x_test,
        y_test,
        DIGIT_CLASSES,
        preprocess=preprocess,
        shape=DIGITS_SHAPE,
    )


@contextlib.contextmanager
def _global_rngs_preserved() -> Iterator[None]:
    """Restore Python's and NumPy's global generators on exit: mnist1d seeds them."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def mnist1d(*, n_samples: int = 4000, seed: int = 0) -> Dataset:
    """MNIST-1D (Greydanus 2020): 40-point 1-d signals of the ten digits, generated locally.

    Uses ``mnist1d.data.make_dataset`` with the package's default arguments except
    ``num_samples`` and ``seed``; never ``get_dataset``, which downloads a pickle. The package's
    own train/test split is kept (80/20) and the features are standardized with the train
    statistics. ``n_samples`` is rounded down to a multiple of ten (equal classes).
    """
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: keep it lazy

    check_int("n_samples", n_samples, DIGIT_CLASSES)
    check_int("seed", seed, 0)
    args = get_dataset_args(as_dict=True) | {"num_samples": n_samples, "seed": seed}
    with _global_rngs_preserved():
        raw = make_dataset(SimpleNamespace(**args))
    x_train = torch.from_numpy(raw["x"].astype(np.float32))
    preprocess = standardization(x_train)
    x_train, x_test = standardized(x_train, torch.from_numpy(raw["x_test"].astype(np.float32)))
    y_train = torch.from_numpy(raw["y"].astype(np.int64))
    y_test = torch.from_numpy(raw["y_test"].astype(np.int64))
    return Dataset(
        "mnist1d", x_train, y_train, x_test, y_test, DIGIT_CLASSES, preprocess=preprocess
    )


def _teacher_logits(x: torch.Tensor, widths: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """A random tanh MLP through ``widths`` (input first, logits last), without biases.

    ``W ~ N(0, 1 / fan_in)`` keeps every pre-activation of order one, so tanh works in its
    nonlinear range and the labels are not a linear function of the input.
    """
    h = x
    for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        weight = torch.randn(fan_in, fan_out, generator=gen) / math.sqrt(fan_in)
        h = h @ weight
        if layer < len(widths) - 2:
            h = torch.tanh(h)
    return h  # (n, num_classes)


def teacher(
    *,
    input_dim: int = 10,
    hidden: Sequence[int] = (32,),
    num_classes: int = 4,
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
) -> Dataset:
    """A student-teacher task: Gaussian inputs ``x ~ N(0, I)`` labelled by the argmax of a random
    tanh network with hidden widths ``hidden``. The labels are a noiseless function of the
    input, so whatever a student gets wrong is missing capacity or training, never label noise.
    Classes need not be balanced."""
    check_int("input_dim", input_dim, 1)
    check_int("num_classes", num_classes, 2)
    check_int("n_train", n_train, 1)
    check_int("n_test", n_test, 1)
    check_int("seed", seed, 0)
    hidden = tuple(hidden)
    for i, width in enumerate(hidden):
        check_int(f"hidden[{i}]", width, 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, input_dim, generator=gen)
    y = _teacher_logits(x, (input_dim, *hidden, num_classes), gen).argmax(dim=1)
    return Dataset("teacher", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes)


def white_noise(
    *,
    input_dim: int = 10,
    num_classes: int = 2,
    n_train: int = 1000,
    n_test: int = 250,
    seed: int = 0,
) -> Dataset:
    """Gaussian inputs with uniformly random labels: a pure memorization task. Nothing carries
    over to the test split (expected accuracy ``1 / num_classes``), so train accuracy measures
    raw capacity."""
    check_int("input_dim", input_dim, 1)
    check_int("num_classes", num_classes, 2)
    check_int("n_train", n_train, 1)
    check_int("n_test", n_test, 1)
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, input_dim, generator=gen)
    y = torch.randint(0, num_classes, (n_train + n_test,), generator=gen)
    return Dataset("noise", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes)
