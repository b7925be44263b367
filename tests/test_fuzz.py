"""Hostile input, generated: configs, architecture specs and Parquet tables. Whatever comes in,
the answer is a valid object or the project's own error naming the field or file, never another
exception. 2,000 cases in all (deterministic: hypothesis runs derandomized, so CI sees the same
cases every time)."""

import json
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from growth_core.data import DataError, load_parquet
from growth_core.spec import ArchitectureSpec, SpecError
from pipelines.config import ConfigError, validate

CONFIG_CASES, SPEC_CASES, PARQUET_CASES = 1000, 600, 400


def fuzz(cases: int) -> settings:
    return settings(
        max_examples=cases,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


#: Values a TOML file or a --set could carry, and some it could not: huge, negative, non-finite,
#: path-like, nested.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "../x", "a/b", "x:y", "digits", "parquet", "tiny", "none", "sensli"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
KEYS = [
    ("name",), ("data", "dataset"), ("data", "path"), ("data", "scale"), ("model", "widths"),
    ("model", "family"), ("model", "activation"), ("screen", "candidates"), ("screen", "depth"),
    ("screen", "width"), ("screen", "keep"), ("search", "trials"), ("search", "lr"),
    ("search", "insertion"), ("search", "width_strategy"), ("search", "max_depth"),
    ("search", "max_params"), ("search", "architecture"), ("search", "asha"),
    ("final", "workers"), ("final", "select"), ("final", "tolerance"), ("bogus",),
]  # fmt: skip


@fuzz(CONFIG_CASES)
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=4))
def test_configs_validate_or_name_the_key(changes):
    raw = {"name": "fuzz", "data": {"dataset": "digits"}}
    for key, value in changes:
        node = raw
        for part in key[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[key[-1]] = value
    try:
        cfg = validate(raw)
    except ConfigError as e:
        assert str(e).strip()
        return
    assert cfg.search.trials <= 10_000 and cfg.final.workers <= 256
    assert all(math.isfinite(v) for v in cfg.search.lr)


spec_dicts = st.dictionaries(
    st.sampled_from(["input_dim", "output_dim", "widths", "activation", "residual", "width", "x"]),
    values,
)


@fuzz(SPEC_CASES)
@given(spec_dicts | st.text(max_size=40))
def test_specs_build_or_name_the_field(spec):
    text = spec if isinstance(spec, str) else json.dumps(spec, default=str)
    try:
        parsed = ArchitectureSpec.from_json(text)
    except SpecError as e:
        assert str(e).strip()
        return
    assert parsed.input_dim >= 1 and all(w >= 1 for w in parsed.widths)


numbers = st.one_of(
    st.integers(min_value=-(10**9), max_value=10**9), st.floats(allow_nan=True), st.none()
)
column = st.lists(numbers, min_size=1, max_size=6)


@fuzz(PARQUET_CASES)
@given(
    labels=column,
    features=st.one_of(
        column.map(lambda xs: ("x", xs)),
        st.lists(st.lists(numbers, min_size=0, max_size=3), min_size=1, max_size=6).map(
            lambda xs: ("pixels", xs)
        ),
    ),
    label_name=st.sampled_from(["label", "y"]),
)
def test_parquet_tables_load_or_name_the_file_and_column(labels, features, label_name):
    name, feature = features
    n = min(len(labels), len(feature))
    try:
        table = pa.table({name: feature[:n], label_name: labels[:n]})
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return  # not a table pyarrow writes: nothing reaches the loader
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.parquet"
        pq.write_table(table, path)
        try:
            data = load_parquet(path, test_fraction=0.5)
        except DataError as e:
            assert str(path) in str(e) or "test_fraction" in str(e) or "n_test" in str(e), e
            return
    assert data.num_classes >= 2 and data.x_train.isfinite().all()


def test_the_suite_fuzzes_two_thousand_cases():
    assert CONFIG_CASES + SPEC_CASES + PARQUET_CASES == 2000
