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


def test_the_screen_reads_the_network_the_search_trains():
    from growth_core.init import Initializer
    from growth_core.screen.candidates import candidate_row
    from growth_core.screen.cascade import ScreenBudget
    from pipelines import trial as trials
    from pipelines.config import validate
    from pipelines.screening import screen_depth, screened_candidate, screened_data

    cfg = validate(
        {
            "name": "s",
            "data": {"dataset": "digits"},
            "model": {"activation": "relu", "widths": [8]},
            "screen": {"width": 16},
            "search": {"max_depth": 3, "insertion": ["sensli", "none"]},
        }
    )
    data = screened_data(cfg, trials.load_data(cfg.data))
    assert data.input_dim == 16  # 64 pixels projected to screen.width features
    candidate = screened_candidate(cfg, Initializer("kaiming"), data)
    assert (candidate.depth, candidate.width, candidate.activation) == (3, 16, "relu")
    row = candidate_row(candidate, data, ScreenBudget(max_steps=2, eval_images=50))
    assert (row["width"], row["depth"], row["activation"]) == (16, 3, "relu")
    assert len(row["curve"]) == 3
    # without screen.width: the model's own width on the raw input; depth as growth may go
    plain = validate({**cfg.model_dump(), "screen": {}, "search": {"insertion": ["none"]}})
    raw = screened_data(plain, trials.load_data(cfg.data))
    assert raw.input_dim == 64
    assert screened_candidate(plain, Initializer(), raw).width == 8
    assert screen_depth(plain) == 2  # no insertion: the starting depth, at least 2


def test_the_decay_readout_caps_the_depth_and_drops_untrainable_candidates():
    from pipelines.screening import depth_cap

    assert depth_cap({"decay_depth": 2.7}, start=1, deepest=4) == 2
    assert depth_cap({"decay_depth": 9.0}, start=1, deepest=4) == 4
    assert depth_cap({"decay_depth": float("inf")}, start=2, deepest=4) == 4
    assert depth_cap({"decay_depth": 1.5}, start=2, deepest=4) is None
    # a residual conv net's readout counts blocks: two convolutions each
    assert depth_cap({"decay_depth": 2.7}, start=2, deepest=8, per_map=2) == 4


def test_a_conv_model_is_screened_on_its_images_deepened_as_growth_may_take_it():
    import pytest

    from growth_core.init import Initializer
    from pipelines import trial as trials
    from pipelines.config import ConfigError, validate
    from pipelines.screening import screen_depth, screened_candidate, screened_data

    raw = {
        "name": "c",
        "data": {"dataset": "digits"},
        "model": {"family": "cnn", "stages": [[4, 4], [6]], "downsample": "stride"},
        "search": {"max_depth": 5, "insertion": ["sensli"]},
    }
    cfg = validate(raw)
    data = screened_data(cfg, trials.load_data(cfg.data))
    assert data.shape == (1, 8, 8)  # images, never projected
    spec = screened_candidate(cfg, Initializer("kaiming"), data).spec(64, 10)
    assert spec.stages == ((4, 4), (6, 6, 6)) and spec.activation == "relu"
    residual = validate({**raw, "model": {**raw["model"], "stages": [[4, 4]], "residual": True}})
    assert screen_depth(residual) == 6  # max_depth 5, rounded up to whole blocks
    with pytest.raises(ConfigError, match="screen.width: projects an MLP's input"):
        validate({**raw, "screen": {"width": 16}})
