"""Any classification set stored as Parquet, read through pyarrow with every problem named by
file and column."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .._checks import require_number
from .dataset import (
    DataError,
    Dataset,
    check_int,
    image_shape,
    n_test_rows,
    shuffle_split,
    standardization,
    standardized,
)

#: Labels are class indices below this: a label of 10^8 would make an output layer of GBs.
MAX_CLASSES = 100_000


def _column_error(path: Path, column: str, what: str) -> DataError:
    return DataError(f"{path}: column {column!r}: {what}")


def _is_number(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype)


def _is_list(dtype: pa.DataType) -> bool:
    return (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
    )


def _read_schema(path: Path) -> pa.Schema:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a Parquet file ({err})") from err


def _read_table(path: Path, columns: list[str]) -> pa.Table:
    """Read only ``columns``; every one must exist and the table must have rows."""
    names = _read_schema(path).names
    for column in columns:
        if column not in names:
            raise DataError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: unreadable Parquet file ({err})") from err
    if table.num_rows == 0:
        raise DataError(f"{path}: the table has no rows")
    return table


def _feature_columns(path: Path, features: str | Sequence[str] | None, label: str) -> list[str]:
    """The feature columns: as given, else the one list column, else every numeric column."""
    schema = _read_schema(path)
    if label not in schema.names:
        raise DataError(f"{path}: no label column {label!r} (columns: {', '.join(schema.names)})")
    if features is not None:
        chosen = [features] if isinstance(features, str) else list(features)
        if not chosen or label in chosen:
            raise DataError(
                f"features: expected one or more columns other than {label!r}, got {features!r}"
            )
        return chosen
    others = [f for f in schema if f.name != label]
    lists = [f.name for f in others if _is_list(f.type)]
    if len(lists) > 1:
        raise DataError(f"{path}: several list columns ({', '.join(lists)}); choose with features=")
    if lists:
        return lists
    numeric = [f.name for f in others if _is_number(f.type)]
    if not numeric:
        raise DataError(f"{path}: no numeric or list feature column besides {label!r}")
    return numeric


def _reject_nulls(column: pa.ChunkedArray, path: Path, name: str) -> None:
    if column.null_count:
        row = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
        raise _column_error(
            path, name, f"{column.null_count} null value(s), the first in row {row}"
        )


def _check_finite(values: np.ndarray, path: Path, name: str) -> None:
    """``values`` ``(n, width)`` float32; NaN, inf, or a float64 too large for float32 fail."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise _column_error(
            path, name, f"NaN or infinite values in {int(bad.sum())} row(s), the first in row {row}"
        )


def _list_width(column: pa.ChunkedArray, path: Path, name: str) -> int:
    """The common length of every list in ``column``; ragged lists fail."""
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
    else:
        lengths = pc.list_value_length(column).to_numpy()
        width = int(lengths[0])
        ragged = np.flatnonzero(lengths != width)
        if ragged.size:
            row = int(ragged[0])
            raise _column_error(
                path,
                name,
                f"lists of different lengths (row 0 has {width}, row {row} has {lengths[row]})",
            )
    if width == 0:
        raise _column_error(path, name, "the lists are empty")
    return width


def _list_features(column: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    """A (fixed-size) list column of numbers as ``(n, width)`` float32, without a row loop:
    the lists are flattened into one value buffer and reshaped."""
    if not _is_number(column.type.value_type):
        raise _column_error(path, name, f"expected lists of numbers, got {column.type}")
    _reject_nulls(column, path, name)
    width = _list_width(column, path, name)
    values = pc.list_flatten(column)
    if values.null_count:
        raise _column_error(path, name, f"{values.null_count} null value(s) inside the lists")
    with np.errstate(over="ignore"):  # beyond float32: inf, refused by _check_finite below
        features = values.to_numpy().astype(np.float32).reshape(len(column), width)
    if pa.types.is_floating(values.type):
        _check_finite(features, path, name)
    return features


def _numeric_feature(column: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    """One numeric column as ``(n, 1)`` float32."""
    if _is_list(column.type):
        raise _column_error(path, name, "a list column must be the only feature column")
    if not _is_number(column.type):
        raise _column_error(path, name, f"expected a numeric or list column, got {column.type}")
    _reject_nulls(column, path, name)
    with np.errstate(over="ignore"):  # beyond float32: inf, refused by _check_finite below
        feature = column.to_numpy().astype(np.float32).reshape(-1, 1)
    if pa.types.is_floating(column.type):
        _check_finite(feature, path, name)
    return feature


def _labels(column: pa.ChunkedArray, path: Path, name: str, num_classes: int | None) -> np.ndarray:
    """Integer labels ``(n,)`` int64: integer columns, or float columns of whole numbers."""
    if not _is_number(column.type):
        raise _column_error(path, name, f"expected integer labels, got {column.type}")
    _reject_nulls(column, path, name)
    raw = column.to_numpy()
    if pa.types.is_floating(column.type):
        whole = np.isfinite(raw) & (raw == np.round(raw))
        if not whole.all():
            row = int(np.argmax(~whole))
            raise _column_error(path, name, f"non-integer label {raw[row]} in row {row}")
    # ranges on the values as read, before the cast (a uint64 or 1e20 would wrap in int64)
    if raw.min() < 0:
        row = int(np.argmin(raw))
        raise _column_error(path, name, f"negative label {raw[row]} in row {row}")
    if num_classes is not None and raw.max() >= num_classes:
        row = int(np.argmax(raw))
        raise _column_error(
            path, name, f"label {raw[row]} in row {row} is not below num_classes={num_classes}"
        )
    if raw.max() >= MAX_CLASSES:  # an output layer that large is a mislabelled column
        row = int(np.argmax(raw))
        raise _column_error(
            path, name, f"label {raw[row]} in row {row}: at most {MAX_CLASSES} classes"
        )
    return raw.astype(np.int64)


def _read_xy(
    path: Path, columns: list[str], label: str, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(n, d)`` float32 and labels ``(n,)`` int64 of one Parquet file."""
    table = _read_table(path, [*columns, label])
    if len(columns) == 1 and _is_list(table.schema.field(columns[0]).type):
        x = _list_features(table.column(columns[0]), path, columns[0])
    else:
        x = np.concatenate([_numeric_feature(table.column(c), path, c) for c in columns], axis=1)
    y = _labels(table.column(label), path, label, num_classes)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def _metadata_shape(path: Path, input_dim: int) -> tuple[int, int, int] | None:
    """The image shape a file's ``shape`` schema metadata gives (``b"28,28"``: one channel, or
    ``b"3,32,32"``), when it fits ``input_dim`` features; else ``None``, the rows stay flat."""
    raw = (_read_schema(path).metadata or {}).get(b"shape")
    try:
        dims = tuple(int(part) for part in raw.decode().split(","))
    except (AttributeError, UnicodeDecodeError, ValueError):
        return None
    if len(dims) == 2:
        dims = (1, *dims)
    if len(dims) != 3 or min(dims) < 1 or math.prod(dims) != input_dim:
        return None
    return dims  # type: ignore[return-value]


def _row_shape(
    shape: tuple[int, int, int] | None, path: Path, columns: list[str], input_dim: int
) -> tuple[int, int, int] | None:
    """``shape`` as given (it must hold the ``input_dim`` features), else the file's own."""
    if shape is None:
        return _metadata_shape(path, input_dim)
    if math.prod(shape) != input_dim:
        raise DataError(
            f"shape: {list(shape)} holds {math.prod(shape)} values, but {path} has {input_dim} "
            f"features in {', '.join(columns)}"
        )
    return shape


def _default_name(path: Path) -> str:
    """The file's stem; for the usual ``<set>/train.parquet`` layout, the folder's name."""
    folder = path.resolve().parent.name
    return folder if path.stem == "train" and folder else path.stem


def load_parquet(
    train_path: str | os.PathLike[str],
    test_path: str | os.PathLike[str] | None = None,
    *,
    features: str | list[str] | None = None,
    label: str = "label",
    test_fraction: float = 0.2,
    seed: int = 0,
    scale: float | None = None,
    standardize: bool = False,
    num_classes: int | None = None,
    name: str | None = None,
    shape: Sequence[int] | None = None,
) -> Dataset:
    """A classification set from Parquet files.

    Features are one list or fixed-size-list column of numbers (an image as ``pixels``), or
    several numeric columns; with ``features=None`` the one list column is taken, else every
    numeric column but ``label``. Without ``test_path`` the train file is shuffled with
    ``seed`` and ``test_fraction`` of it held out. ``scale`` divides the features (255 for 8-bit
    images); ``standardize`` then centres and scales them with the train statistics.
    ``num_classes`` defaults to the largest label + 1.

    ``shape`` ``(channels, height, width)`` says the rows are images (kept flat, row-major);
    its product must equal the number of features. Without it, a file whose schema metadata
    holds ``shape`` (``"28,28"`` for one channel, or ``"3,32,32"``), as the MNIST files do, is
    read as images of that shape when the product fits, and as flat vectors otherwise.

    Every problem with a file raises :class:`DataError` naming the file and the column.
    """
    train_path = Path(train_path)
    check_int("seed", seed, 0)
    if num_classes is not None:
        check_int("num_classes", num_classes, 2)
    if scale is not None:
        scale = float(require_number("scale", scale, 0.0, strict=True, error=DataError))
    if shape is not None:
        shape = image_shape(shape)
    columns = _feature_columns(train_path, features, label)
    x_train, y_train = _read_xy(train_path, columns, label, num_classes)
    shape = _row_shape(shape, train_path, columns, x_train.shape[1])
    if test_path is None:
        n_test = n_test_rows(len(y_train), test_fraction, train_path)
        x_train, y_train, x_test, y_test = shuffle_split(x_train, y_train, n_test, seed)
    else:
        test_path = Path(test_path)
        x_test, y_test = _read_xy(test_path, columns, label, num_classes)
        if x_test.shape[1] != x_train.shape[1]:
            raise DataError(
                f"{test_path}: {x_test.shape[1]} features in {', '.join(columns)}, "
                f"but {train_path} has {x_train.shape[1]}"
            )
    shift, divide = torch.zeros(x_train.shape[1]), torch.full((x_train.shape[1],), scale or 1.0)
    if scale is not None:
        x_train, x_test = x_train / scale, x_test / scale
        if not (torch.isfinite(x_train).all() and torch.isfinite(x_test).all()):
            raise DataError(
                f"scale: {train_path}'s features divided by {scale:g} overflow float32; "
                "a scale is the features' range (255 for 8-bit pixels)"
            )
    if standardize:
        mean, std = standardization(x_train)
        x_train, x_test = standardized(x_train, x_test)
        shift, divide = mean * divide, std * divide  # (raw / s - m) / d = (raw - m s) / (d s)
    if num_classes is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
        if num_classes < 2:
            raise _column_error(
                train_path, label, "every label is 0; a classifier needs two classes"
            )
    preprocess = (shift, divide) if scale is not None or standardize else None
    name = name or _default_name(train_path)
    return Dataset(
        name, x_train, y_train, x_test, y_test, num_classes, preprocess=preprocess, shape=shape
    )
