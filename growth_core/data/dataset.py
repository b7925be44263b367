"""The dataset every part of growth_core trains on: four validated tensors.

Every dataset is a :class:`Dataset`: train and test features ``(n, d)`` float32 with int64
labels, validated once when it is built, so the trainer, the growth scores and the screen never
meet a ragged, NaN-laden or mislabelled input. Images keep their rows flat too; their ``shape``
says how a convolutional net reads a row back as ``(channels, height, width)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

from .._checks import is_int, require_int


class DataError(ValueError):
    """Bad dataset input; the message names the file, column or field and what was expected."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification task as four tensors.

    ``x_train`` ``(n_train, d)`` and ``x_test`` ``(n_test, d)`` are float32, finite and
    contiguous; ``y_train`` ``(n_train,)`` and ``y_test`` ``(n_test,)`` are int64 in
    ``[0, num_classes)``. Both splits are non-empty. Construction checks all of it and raises
    :class:`DataError` naming the offending field.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    preprocess: tuple[torch.Tensor, torch.Tensor] | None = None
    """How the features were made from the raw ones, ``x = (raw - shift) / scale`` per feature,
    as ``(shift, scale)``; ``None``: used as read. A served model applies it to raw inputs."""
    shape: tuple[int, int, int] | None = None
    """Images: a row's features are a ``(channels, height, width)`` image flattened row-major,
    ``channels * height * width == d``; ``None``: a flat vector of features."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"name: expected a non-empty string, got {self.name!r}")
        if not is_int(self.num_classes) or self.num_classes < 2:
            raise DataError(f"num_classes: expected an int >= 2, got {self.num_classes!r}")
        _check_split("train", self.x_train, self.y_train, self.num_classes)
        _check_split("test", self.x_test, self.y_test, self.num_classes)
        if self.x_test.shape[1] != self.x_train.shape[1]:
            raise DataError(
                f"x_test: {self.x_test.shape[1]} features, but x_train has {self.x_train.shape[1]}"
            )
        if self.shape is not None:
            object.__setattr__(self, "shape", _image_shape(self.shape, self.input_dim))
        for field in ("x_train", "y_train", "x_test", "y_test"):
            object.__setattr__(self, field, getattr(self, field).contiguous())

    @property
    def input_dim(self) -> int:
        """The number of features ``d``."""
        return self.x_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.x_test.shape[0]

    def to(self, device: torch.device | str) -> Dataset:
        """The same splits on ``device`` (this dataset itself when they are there already), as a
        trainer holds them next to its network; ``preprocess`` stays as read, for serving."""
        moved = {f: getattr(self, f).to(device) for f in ("x_train", "y_train", "x_test", "y_test")}
        if all(t is getattr(self, f) for f, t in moved.items()):
            return self
        return replace(self, **moved)

    def __repr__(self) -> str:
        shape = "" if self.shape is None else f", shape={self.shape}"
        return (
            f"Dataset({self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"input_dim={self.input_dim}{shape}, num_classes={self.num_classes})"
        )


def image_shape(shape: Any) -> tuple[int, int, int]:
    """``shape`` as a tuple if it is three positive integers ``(channels, height, width)``."""
    if not isinstance(shape, list | tuple) or len(shape) != 3:
        raise DataError(f"shape: expected (channels, height, width), got {shape!r}")
    for i, n in enumerate(shape):
        check_int(f"shape[{i}]", n, 1)
    return tuple(shape)  # type: ignore[return-value]


def _image_shape(shape: Any, input_dim: int) -> tuple[int, int, int]:
    """``shape`` as a tuple if it is three positive integers whose product is ``input_dim``."""
    shape = image_shape(shape)
    if math.prod(shape) != input_dim:
        raise DataError(
            f"shape: {shape} holds {math.prod(shape)} values, but a row has {input_dim} features"
        )
    return shape


def _check_split(split: str, x: Any, y: Any, num_classes: int) -> None:
    """Check one split's features and labels; errors name ``x_<split>`` or ``y_<split>``."""
    x_field, y_field = f"x_{split}", f"y_{split}"
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.ndim != 2:
        raise DataError(f"{x_field}: expected a 2-d float32 tensor (n, d), got {_describe(x)}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
        raise DataError(f"{y_field}: expected a 1-d int64 tensor (n,), got {_describe(y)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{x_field}: expected at least one row and one feature, got {_describe(x)}")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{y_field}: {y.shape[0]} labels for the {x.shape[0]} rows of {x_field}")
    x_min, x_max = torch.aminmax(x)  # NaN propagates; one pass, no mask as large as x
    if not (math.isfinite(x_min) and math.isfinite(x_max)):
        raise DataError(f"{x_field}: holds NaN or infinite values")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise DataError(f"{y_field}: labels must lie in [0, {num_classes}), found {low}..{high}")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"


#: A whole-number argument check that raises :class:`DataError`.
check_int = partial(require_int, error=DataError)


def n_test_rows(n: int, test_fraction: Any, where: str) -> int:
    """Rows held out for ``test_fraction`` of ``n``; both parts must be non-empty."""
    ok = isinstance(test_fraction, int | float) and not isinstance(test_fraction, bool)
    if not ok or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    n_test = round(n * test_fraction)
    if not 1 <= n_test <= n - 1:
        raise DataError(
            f"{where}: {n} rows cannot be split by test_fraction={test_fraction} "
            "into two non-empty parts"
        )
    return n_test


def shuffle_split(
    x: torch.Tensor, y: torch.Tensor, n_test: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shuffle the rows with ``seed``; the last ``n_test`` are the test split."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = order[: len(y) - n_test], order[len(y) - n_test :]
    return x[train], y[train], x[test], y[test]


def standardized(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x - mean) / std`` per feature with the TRAIN statistics, so nothing about the test set
    leaks into the inputs. A feature constant on the train set (std 0) is only centred."""
    mean, std = standardization(x_train)
    return (x_train - mean) / std, (x_test - mean) / std


def standardization(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(mean, std)`` per feature :func:`standardized` uses (std 0 read as 1)."""
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0, correction=0)
    return mean, torch.where(std > 0, std, torch.ones_like(std))
