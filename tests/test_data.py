import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from growth_core import data
from growth_core.data import DataError, Dataset

MNIST = Path(__file__).resolve().parents[2] / "shared/data/mnist"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

BUILTINS = [
    ("spirals", {}),
    ("digits", {}),
    ("mnist1d", {"n_samples": 500}),
    ("teacher", {"n_train": 300, "n_test": 100}),
    ("noise", {"n_train": 300, "n_test": 100}),
]


@pytest.mark.parametrize(("name", "kwargs"), BUILTINS)
def test_builtin_shapes_dtypes_and_determinism(name, kwargs):
    a, b, c = (data.load(name, seed=s, **kwargs) for s in (1, 1, 2))
    for x, y in ((a.x_train, a.y_train), (a.x_test, a.y_test)):
        assert x.dtype == torch.float32 and x.is_contiguous() and x.shape[1] == a.input_dim
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert y.min() >= 0 and y.max() < a.num_classes
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_spirals_follow_the_paper():
    ds = data.spirals()
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.num_classes) == (450, 150, 2, 2)
    x, y = torch.cat([ds.x_train, ds.x_test]), torch.cat([ds.y_train, ds.y_test])
    assert y.bincount().tolist() == [300, 300]
    r = x.norm(dim=1)
    assert r.min() >= 0.5 - 1e-6 and r.max() <= 1.5
    # one turn: phi = 2 pi (r - r0); class 0 is the arm with sign -1
    sign = torch.where(y == 1, 1.0, -1.0)[:, None]
    phi = 2 * math.pi * (r - 0.5)
    on_arm = r[:, None] * torch.stack([phi.cos(), phi.sin()], dim=1)
    assert torch.allclose(sign * x, on_arm, atol=1e-5)


def test_digits_standardized_with_train_statistics():
    ds = data.digits()
    assert (ds.n_train + ds.n_test, ds.input_dim, ds.num_classes) == (1797, 64, 10)
    assert ds.x_train.mean(0).abs().max() < 1e-4
    std = ds.x_train.std(0, correction=0)
    constant = std < 1e-6  # e.g. the always-blank corner pixel: centred, not divided by 0
    assert constant.any() and torch.allclose(std[~constant], torch.ones(1), atol=1e-4)
    assert ds.x_test.mean(0).abs().max() > 1e-2  # test statistics were not used


def test_digits_rows_are_8x8_images_and_other_builtins_flat():
    assert data.digits().shape == (1, 8, 8)
    assert data.load("spirals").shape is None


def test_the_scaling_of_raw_features_is_recorded_and_inverts():
    ds = data.digits()
    shift, scale = ds.preprocess
    raw = torch.cat([ds.x_train, ds.x_test]) * scale + shift
    assert raw.min() > -1e-4 and raw.max() < 16 + 1e-4  # the 4-bit pixels, as sklearn has them
    assert torch.allclose(raw, raw.round(), atol=1e-4)
    assert data.load("spirals").preprocess is None  # generated as used: nothing to undo


@pytest.mark.parametrize("standardize", [False, True])
def test_parquet_scaling_is_recorded_and_inverts(tmp_path, standardize):
    rows = [[0, 255, 51], [10, 20, 30], [255, 255, 0], [7, 8, 9]]
    train = write(tmp_path / "train.parquet", {"pixels": pixels(rows), "label": [0, 1, 2, 1]})
    ds = data.load_parquet(train, train, scale=255.0, standardize=standardize)
    shift, scale = ds.preprocess
    assert torch.allclose(ds.x_test * scale + shift, torch.tensor(rows, dtype=torch.float32))
    assert data.load_parquet(train, train).preprocess is None


def test_load_rejects_unknown_names_and_arguments():
    with pytest.raises(DataError, match="spirals, digits, mnist1d, teacher, noise, parquet"):
        data.load("cifar")
    with pytest.raises(DataError, match="spirals"):
        data.load("spirals", radius=2)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("x_train", {"x_train": torch.zeros(4, 3, dtype=torch.float64)}),
        ("y_train", {"y_train": torch.zeros(3, dtype=torch.int64)}),
        ("x_test", {"x_test": torch.zeros(2, 5)}),
        ("y_test", {"y_test": torch.tensor([0, 2])}),
        ("x_train", {"x_train": torch.full((4, 3), math.nan)}),
        ("num_classes", {"num_classes": 1}),
        ("shape", {"shape": (1, 2, 2)}),
        ("shape", {"shape": (3,)}),
        ("shape[0]", {"shape": (0, 1, 3)}),
    ],
)
def test_dataset_names_the_bad_field(field, change):
    fields = {
        "name": "toy",
        "x_train": torch.zeros(4, 3),
        "y_train": torch.tensor([0, 1, 0, 1]),
        "x_test": torch.zeros(2, 3),
        "y_test": torch.tensor([1, 0]),
        "num_classes": 2,
    }
    with pytest.raises(DataError, match=f"^{re.escape(field)}:"):
        Dataset(**(fields | change))

    assert Dataset(**(fields | {"shape": [3, 1, 1]})).shape == (3, 1, 1)


# -- Parquet -----------------------------------------------------------------------------------


def write(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def pixels(rows, width=3):
    return pa.array(rows, pa.list_(pa.uint8(), width))


def test_list_column_loads_scaled(tmp_path):
    train = write(
        tmp_path / "train.parquet", {"pixels": pixels([[0, 255, 51]] * 4), "label": [0, 1, 2, 1]}
    )
    test = write(tmp_path / "test.parquet", {"pixels": pixels([[255, 0, 0]]), "label": [2]})
    ds = data.load_parquet(train, test, scale=255.0)
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.num_classes) == (4, 1, 3, 3)
    assert torch.allclose(ds.x_train[0], torch.tensor([0.0, 1.0, 0.2]))
    assert ds.name == tmp_path.name


def test_a_scale_that_overflows_the_features_is_named(tmp_path):
    train = write(
        tmp_path / "train.parquet", {"pixels": pixels([[0, 255, 51]] * 4), "label": [0, 1, 2, 1]}
    )
    with pytest.raises(
        data.DataError, match=r"^scale: .*train.parquet's features divided by 1e-300"
    ):
        data.load_parquet(train, scale=1e-300)


def test_variable_length_list_column_of_equal_lengths_loads(tmp_path):
    path = write(tmp_path / "v.parquet", {"v": [[0.5, 1.0]] * 5, "label": [0, 1, 0, 1, 0]})
    ds = data.load_parquet(path, test_fraction=0.4)
    assert (ds.n_train, ds.n_test, ds.input_dim) == (3, 2, 2)


def test_numeric_columns_load_and_split(tmp_path):
    n = 50
    path = write(
        tmp_path / "table.parquet",
        {
            "a": np.arange(n, dtype=np.int32),
            "b": np.linspace(0, 1, n),
            "note": ["text"] * n,  # not numeric: left out
            "label": np.arange(n) % 3,
        },
    )
    ds = data.load_parquet(path, test_fraction=0.2, seed=3, standardize=True)
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.num_classes, ds.name) == (40, 10, 2, 3, "table")
    assert ds.x_train.mean(0).abs().max() < 1e-5
    raw = data.load_parquet(path, features=["a"], seed=3)
    assert raw.input_dim == 1
    assert sorted(torch.cat([raw.x_train, raw.x_test])[:, 0].tolist()) == list(range(n))
    assert torch.equal(raw.x_train[:, 0].long() % 3, raw.y_train)  # rows stay whole


OK_PIXELS = pixels([[1, 2, 3]] * 4)
OK = {"pixels": OK_PIXELS, "label": [0, 1, 0, 1]}
TWO_X = [1.0, 2.0]

#: case -> (table, the column the message must name, load_parquet keyword arguments)
BAD_TABLES = {
    "no_label": ({"pixels": OK_PIXELS}, "label", {}),
    "no_feature": (OK, "image", {"features": "image"}),
    "string_feature": ({"word": ["a", "b"], "label": [0, 1]}, "word", {"features": "word"}),
    "string_label": ({"x": TWO_X, "label": ["a", "b"]}, "label", {}),
    "ragged": ({"pixels": [[1, 2], [1, 2, 3]], "label": [0, 1]}, "pixels", {}),
    "null_row": ({"pixels": pa.array([[1, 2], None]), "label": [0, 1]}, "pixels", {}),
    "null_value": ({"pixels": pa.array([[1, 2], [3, None]]), "label": [0, 1]}, "pixels", {}),
    "null_label": ({"x": TWO_X, "label": pa.array([0, None])}, "label", {}),
    "nan": ({"x": [1.0, math.nan], "label": [0, 1]}, "x", {}),
    "inf": ({"pixels": [[1.0, math.inf], [0.0, 1.0]], "label": [0, 1]}, "pixels", {}),
    "empty": ({"pixels": pixels([]), "label": pa.array([], pa.int64())}, None, {}),
    "negative_label": ({"x": TWO_X, "label": [0, -1]}, "label", {}),
    "label_too_big": ({"x": TWO_X, "label": [0, 5]}, "label", {"num_classes": 5}),
    "fractional_label": ({"x": TWO_X, "label": [0.0, 0.5]}, "label", {}),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_bad_table_names_file_and_column(tmp_path, case):
    columns, column, kwargs = BAD_TABLES[case]
    path = write(tmp_path / f"{case}.parquet", columns)
    with pytest.raises(DataError, match=path.name) as err:
        data.load_parquet(path, **kwargs)
    if column is not None:
        assert repr(column) in str(err.value)


def test_missing_or_non_parquet_file_is_named(tmp_path):
    with pytest.raises(DataError, match="absent.parquet"):
        data.load_parquet(tmp_path / "absent.parquet")
    notes = tmp_path / "notes.parquet"
    notes.write_text("pixels,label\n1,0\n")
    with pytest.raises(DataError, match="notes.parquet: not a Parquet file"):
        data.load_parquet(notes)


def test_train_test_width_mismatch_names_both_files(tmp_path):
    train = write(tmp_path / "narrow.parquet", OK)
    test = write(tmp_path / "wide.parquet", {"pixels": pixels([[1, 2, 3, 4]], 4), "label": [0]})
    with pytest.raises(DataError, match="wide.parquet: 4 features in pixels.*narrow.parquet"):
        data.load_parquet(train, test)


def test_parquet_shape_is_given_or_read_from_the_file_metadata(tmp_path):
    rows = {"pixels": pixels([list(range(6))] * 4, width=6), "label": [0, 1, 0, 1]}
    plain = write(tmp_path / "plain.parquet", rows)
    assert data.load_parquet(plain, plain).shape is None
    assert data.load_parquet(plain, plain, shape=[2, 1, 3]).shape == (2, 1, 3)
    with pytest.raises(DataError, match=r"^shape: \[1, 2, 2\] holds 4 values.*plain.parquet"):
        data.load_parquet(plain, plain, shape=(1, 2, 2))
    with pytest.raises(DataError, match=r"^shape\[2\]:"):
        data.load_parquet(plain, plain, shape=(1, 2, -3))
    table = pa.table(rows)
    for meta, shape in (("2,3", (1, 2, 3)), ("3,2,1", (3, 2, 1)), ("4,4", None), ("a,b", None)):
        path = tmp_path / "meta.parquet"
        pq.write_table(table.replace_schema_metadata({"shape": meta}), path)
        assert data.load_parquet(path, path).shape == shape  # ignored when it does not fit


def test_mnist_parquet(tmp_path):
    if not (MNIST / "train.parquet").exists():
        pytest.skip(f"MNIST Parquet files not found at {MNIST} (they sit beside the project)")
    ds = data.load_parquet(MNIST / "train.parquet", MNIST / "test.parquet", scale=255.0)
    assert (ds.n_train, ds.n_test, ds.input_dim, ds.num_classes) == (60000, 10000, 784, 10)
    assert ds.y_train.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.name == "mnist" and ds.shape == (1, 28, 28)  # from the files' "28,28" metadata


@pytest.mark.parametrize("label", [10**8, 1e20, 2**63 + 5])
def test_a_label_too_large_for_an_output_layer_is_named(tmp_path, label):
    labels = pa.array([0, 1, label], pa.uint64() if label == 2**63 + 5 else None)
    path = write(tmp_path / "t.parquet", {"x": [0.1, 0.2, 0.3], "label": labels})
    with pytest.raises(DataError, match=r"t.parquet.*label.*at most 100000 classes"):
        data.load_parquet(path, test_fraction=0.34)
