"""Datasets as tensors: built-in offline sets and any Parquet file read through pyarrow.

Every dataset is a :class:`Dataset`: train and test features ``(n, d)`` float32 with int64
labels, validated once when it is built, so the trainer, the growth scores and the screen never
meet a ragged, NaN-laden or mislabelled input. Nothing here downloads anything, and every
builder is deterministic for a seed.

Example::

    data = load("spirals")  # the layer-insertion paper's two spirals
    data = load_parquet("mnist/train.parquet", "mnist/test.parquet", scale=255.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .builtin import DIGIT_CLASSES, digits, mnist1d, spirals, teacher, white_noise
from .dataset import DataError, Dataset
from .parquet import load_parquet

_BUILDERS: dict[str, Callable[..., Dataset]] = {
    "spirals": spirals,
    "digits": digits,
    "mnist1d": mnist1d,
    "teacher": teacher,
    "noise": white_noise,
    "parquet": load_parquet,
}

#: Names :func:`load` knows.
DATASETS: tuple[str, ...] = tuple(_BUILDERS)


def load(name: str, **kwargs: Any) -> Dataset:
    """Build a dataset by name with its keyword arguments, e.g. ``load("teacher", hidden=(64,))``
    or ``load("parquet", train_path="train.parquet")``; the entry point for configs."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise DataError(f"dataset: unknown {name!r}; expected one of {', '.join(DATASETS)}")
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as err:
        raise DataError(f"dataset {name!r}: {err}") from err
    return builder(**kwargs)


__all__ = [
    "DATASETS",
    "DIGIT_CLASSES",
    "DataError",
    "Dataset",
    "digits",
    "load",
    "load_parquet",
    "mnist1d",
    "spirals",
    "teacher",
    "white_noise",
]
