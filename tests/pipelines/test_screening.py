"""Which screened candidates go on: the ranking, without Ray."""

import pyarrow as pa

from pipelines.screening import ranked


def _row(sigma_w2, score, predicted=0, kind="gaussian"):
    return {"kind": kind, "sigma_w2": sigma_w2, "sigma_b2": 0.05, "score": score,
            "reference_depth": predicted}  # fmt: skip


def test_the_screen_ranks_first_and_mean_field_breaks_its_ties():
    table = pa.Table.from_pylist([_row(0.5, 2.0), _row(4.0, 1.0), _row(1.0, 1.0, 3)])
    assert [r["sigma_w2"] for r in ranked(table)] == [0.5, 1.0, 4.0]
    # a screen that reads nothing (two input features): 6 xi_c is largest near sigma_w2 = 1.76
    flat = pa.Table.from_pylist(
        [_row(s, 0.0) for s in (0.5, 1.0, 1.76, 4.0)] + [_row(1.0, 0.0, kind="orthogonal")]
    )
    assert [r["sigma_w2"] for r in ranked(flat)][:2] == [1.76, 4.0]
