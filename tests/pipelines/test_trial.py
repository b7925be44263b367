"""A growing run as the search and the final stage make it, without Ray."""

import pytest
import torch

from growth_core.growth import DepthWidthPolicy
from growth_core.init import DATA_SAMPLE, Initializer
from growth_core.nets import build
from pipelines import trial as trials
from pipelines.config import ConfigError, validate

CFG = validate({"name": "t", "data": {"dataset": "digits"}, "model": {"widths": [4]}})


def settings(**kw):
    return {**trials.base_settings(CFG), **kw}


def test_policies_from_settings():
    assert trials.build_policy(settings(insertion="none", width_strategy="none")) is None
    depth_only = trials.build_policy(settings(insertion="sensli"))
    assert depth_only.width is None and depth_only.depth.max_depth == CFG.search.max_depth
    both = trials.build_policy(settings(insertion="sensli", width_strategy="tiny"))
    assert isinstance(both, DepthWidthPolicy) and both.depth is not None
    width_only = trials.build_policy(settings(insertion="none", width_strategy="random"))
    assert width_only.depth is None
    tuned = trials.build_policy(
        settings(width_strategy="tiny", width_ridge=1.0, width_samples="fixed")
    )
    assert (tuned.width.strategy, tuned.width.ridge, tuned.width.samples) == ("tiny", 1.0, "fixed")


def test_width_growth_runs_through_the_trial():
    data = trials.with_validation(trials.load_data(CFG.data))
    s = settings(
        insertion="none", width_strategy="tiny", epochs=3, growth_timing="plateau",
        plateau_window=5, plateau_threshold=10.0,  # always "stalled": a decision at every check
    )  # fmt: skip
    result = trials.run(CFG.model, data, s, eval_name="val")
    assert result.events and {e.kind for e in result.events} == {"neurons"}
    assert result.net.spec.widths[0] > 4
    assert "val_accuracy" in result.history[-1]


def test_a_conv_net_grows_in_depth_through_the_trial():
    model = {"family": "cnn", "stages": [[4, 4], [6, 6]], "residual": True, "batch_norm": True}
    cnn = validate(
        {"name": "c", "data": {"dataset": "digits"}, "model": model, "search": {"max_depth": 8}}
    )
    data = trials.with_validation(trials.load_data(cnn.data))
    s = {
        **trials.base_settings(cnn), "insertion": "sensli", "width_strategy": "none",
        "epochs": 2, "decisions": 2,
    }  # fmt: skip
    result = trials.run(cnn.model, data, s, eval_name="val")
    assert [e.kind for e in result.events] == ["layer", "layer"]
    assert result.net.spec.depth == 8 and result.net.spec.residual
    assert result.history[-1]["val_accuracy"] > 0.3


def test_a_trial_draws_a_decorrelated_initializer_from_its_training_inputs():
    data = trials.with_validation(trials.load_data(CFG.data))
    init = Initializer("decorrelated", 1.0, 0.0)
    net = trials.build_net(CFG.model, data, settings(init=init.to_dict(), seed=2))
    spec = CFG.model.spec(data.input_dim, data.num_classes)
    expected = init.apply(build(spec), seed=2, data=data.x_train[:DATA_SAMPLE])
    assert torch.equal(net.hidden[0].weight, expected.hidden[0].weight)


def test_unknown_width_strategy_is_named():
    with pytest.raises(ConfigError, match="search.width_strategy"):
        validate(
            {"name": "t", "data": {"dataset": "digits"}, "search": {"width_strategy": ["wide"]}}
        )


def test_a_schedule_times_the_decisions_by_fractions_of_the_run():
    data = trials.with_validation(trials.load_data(CFG.data))
    s = settings(
        insertion="sensli", width_strategy="tiny", epochs=4, growth_timing="schedule",
        decisions=3, growth_until=0.75, max_depth=3,
    )  # fmt: skip
    policy = trials.build_policy(s)
    assert policy.trigger.to_dict() == {"kind": "at_fractions", "fractions": [0.25, 0.5, 0.75]}
    result = trials.run(CFG.model, data, s, eval_name="val")
    per_epoch = -(-data.n_train // s["batch_size"])
    assert 1 <= len(result.events) <= 3
    assert {e.step for e in result.events} <= {per_epoch, 2 * per_epoch, 3 * per_epoch}


def test_a_searched_architecture_is_where_the_run_starts():
    from pipelines.search import param_space

    cfg = validate(
        {
            "name": "f",
            "data": {"dataset": "digits"},
            "search": {"architecture": {"depth": [1, 3], "width": [16, 512]}},
        }
    )
    space = param_space(cfg, [Initializer("kaiming")])
    assert (space["start_depth"].lower, space["start_depth"].upper) == (1, 4)
    assert (space["start_width"].lower, space["start_width"].upper) == (16, 513)
    data = trials.load_data(cfg.data)
    net = trials.build_net(cfg.model, data, settings(start_depth=2, start_width=40))
    assert net.spec.widths == (40, 40)
    assert "start_depth" not in param_space(CFG, [Initializer("kaiming")])
    with pytest.raises(ConfigError, match="search.architecture"):
        validate({"name": "f", "data": {"dataset": "digits"},
                  "search": {"architecture": {"width": [64, 16]}}})  # fmt: skip
