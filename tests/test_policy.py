import json

import pytest
import torch

from growth_core.data import Dataset
from growth_core.flops import parameter_count, train_step_flops
from growth_core.growth import (
    AtSteps,
    Budget,
    DepthGrowth,
    DepthWidthPolicy,
    GradMaxGrowth,
    OnPlateau,
    PolicyError,
    Reducer,
    WidthGrowth,
)
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, Trainer

SPEC = ArchitectureSpec(6, 4, (2, 2), "relu")


def rings(n=400, seed=0) -> Dataset:
    """Four classes by the radius bands of 2 of 6 features: a 2-2 ReLU net underfits it."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, 6, generator=gen)
    r = x[:, :2].norm(dim=1)
    y = torch.bucketize(r, torch.tensor([0.75, 1.2, 1.7]))
    return Dataset("rings", x[:n], y[:n], x[n:], y[n:], num_classes=4)


def train(policy, steps=120, spec=SPEC, data=None):
    net = Initializer("kaiming").apply(build(spec), seed=0)
    config = TrainConfig(steps=steps, lr=0.05, optimizer="adam", batch_size=50)
    return Trainer(net, data or rings(), config, policy=policy).fit()


def test_grows_in_width_until_the_cap_then_in_depth():
    """GroMo's threshold rule always finds neurons here, so width stops only at ``max_width``."""
    policy = DepthWidthPolicy(
        AtSteps(tuple(range(10, 120, 10))),
        width=WidthGrowth(selection="singular_value", max_width=6, statistics_samples=400),
        depth=DepthGrowth(max_depth=3),
    )
    result = train(policy)
    kinds = [e.kind for e in result.events]
    first_layer = kinds.index("layer")
    assert first_layer >= 2 and set(kinds[:first_layer]) == {"neurons"}
    assert result.events[first_layer].spec_before.widths == (6, 6)
    specs = [SPEC] + [e.spec_after for e in result.events]
    for event, before in zip(result.events, specs, strict=False):
        assert event.spec_before == before
        assert event.params_after == parameter_count(event.spec_after) > event.params_before
    assert result.net.spec == specs[-1] and specs[-1].depth == 3
    assert all(w <= 6 for w in specs[-1].widths)
    widened = [e for e in result.events if e.kind == "neurons"]
    assert all(e.details["strategy"] == "tiny" and e.details["neurons"] >= 1 for e in widened)
    assert result.growth_flops >= sum(e.details["scoring_flops"] for e in result.events)


def test_held_out_selection_widens_and_deepens_on_its_own():
    policy = DepthWidthPolicy(
        AtSteps(tuple(range(10, 120, 10))),
        width=WidthGrowth(statistics_samples=400),
        depth=DepthGrowth(max_depth=3),
    )
    kinds = {e.kind for e in train(policy).events}
    assert kinds == {"neurons", "layer"}


def test_a_strategy_object_grows_like_its_name():
    """``WidthGrowth`` takes a strategy by name or as an object; settings write the name."""
    by_name = WidthGrowth(strategy="gradmax", selection="singular_value", statistics_samples=400)
    by_object = WidthGrowth(
        strategy=GradMaxGrowth(), selection="singular_value", statistics_samples=400
    )
    spec = ArchitectureSpec(6, 4, (2, 2), "tanh")
    runs = [train(DepthWidthPolicy(AtSteps((20,)), width=w), steps=30, spec=spec) for w in
            (by_name, by_object)]  # fmt: skip
    assert [e.to_dict() for e in runs[0].events] == [e.to_dict() for e in runs[1].events]
    assert runs[1].events and by_object.to_dict()["strategy"] == "gradmax"


@pytest.mark.parametrize(
    ("strategy", "activation"), [("tiny_update", "relu"), ("random", "relu"), ("gradmax", "tanh")]
)
def test_every_named_strategy_widens(strategy, activation):
    width = WidthGrowth(strategy=strategy, selection="singular_value", statistics_samples=400)
    spec = ArchitectureSpec(6, 4, (2, 2), activation)
    (event,) = train(DepthWidthPolicy(AtSteps((20,)), width=width), steps=30, spec=spec).events
    assert event.kind == "neurons" and event.details["strategy"] == strategy
    assert event.details["neurons"] >= 1
    assert (event.details["gamma"] == 1.0) == (strategy in ("random", "gradmax"))


def test_parameter_budget_caps_the_neurons_added():
    budget = parameter_count(SPEC) + 30
    policy = DepthWidthPolicy(
        AtSteps(tuple(range(10, 120, 10))),
        width=WidthGrowth(statistics_samples=400),
        depth=DepthGrowth(max_depth=4),
        budget=Budget(max_params=budget),
    )
    result = train(policy)
    assert result.events
    assert parameter_count(result.net.spec) <= budget
    assert all(e.params_after <= budget for e in result.events)


def test_flop_budget_bounds_the_whole_run_including_scoring():
    steps, bs = 120, 50
    fixed = steps * train_step_flops(SPEC, bs)
    budget = 3 * fixed
    policy = DepthWidthPolicy(
        AtSteps(tuple(range(10, 120, 10))),
        width=WidthGrowth(statistics_samples=400),
        budget=Budget(max_flops=budget),
    )
    result = train(policy, steps=steps)
    assert result.events  # it grew, and stayed within the budget
    assert fixed < result.flops <= budget
    unlimited = train(
        DepthWidthPolicy(
            AtSteps(tuple(range(10, 120, 10))), width=WidthGrowth(statistics_samples=400)
        )
    )
    assert unlimited.flops > budget


def test_a_decision_that_grows_nothing_still_counts_its_scoring():
    policy = DepthWidthPolicy(
        AtSteps((10, 20)), width=WidthGrowth(min_relative_gain=1e9, statistics_samples=400)
    )
    result = train(policy, steps=30)
    assert not result.events and policy.decisions == 2
    assert result.growth_flops > 0
    assert result.flops == 30 * train_step_flops(SPEC, 50) + result.growth_flops


def test_fixed_samples_reuse_one_draw_and_count_the_input_covariance_once():
    def run(samples):
        policy = DepthWidthPolicy(
            AtSteps((10, 20, 30)),
            width=WidthGrowth(min_relative_gain=1e9, statistics_samples=400, samples=samples),
        )
        return train(policy, steps=40), policy

    fresh, _ = run("fresh")
    fixed, policy = run("fixed")
    d2 = SPEC.input_dim + 1
    covariance = policy._fixed.covariance
    assert covariance.n == 400 and covariance.flops == 2 * 400 * d2 * d2
    # Nothing grew: three statistics passes each; the fixed draw computes S2 of the input once.
    assert fresh.growth_flops - fixed.growth_flops == 2 * covariance.flops


def test_settings_round_trip():
    policy = DepthWidthPolicy(
        OnPlateau(window=20, threshold=0.03),
        width=WidthGrowth(
            strategy="gradmax", selection="singular_value", threshold=1e-2, samples="fixed"
        ),
        depth=DepthGrowth(score="v1", max_depth=5, score_batches=3),
        budget=Budget(max_params=10_000, max_flops=10**12),
        seed=3,
    )
    d = policy.to_dict()
    again = DepthWidthPolicy.from_dict(d)
    assert again.to_dict() == d
    assert (again.trigger, again.width, again.depth, again.budget) == (
        policy.trigger,
        policy.width,
        policy.depth,
        policy.budget,
    )
    assert DepthWidthPolicy.from_dict(json.loads(json.dumps(d))).to_dict() == d
    width_only = DepthWidthPolicy(AtSteps((5,)), width=WidthGrowth())
    assert DepthWidthPolicy.from_dict(width_only.to_dict()).depth is None


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"width": {"strategy": "grow"}}, "width.strategy"),
        ({"width": {"selection": "fixed"}}, "width.selection"),
        ({"width": {"max_neurons": 0}}, "width.max_neurons"),
        ({"width": {"samples": "some"}}, "width.samples"),
        ({"width": {"speed": 1}}, "width.speed"),
        ({"depth": {"score": "v3"}}, "depth.score"),
        ({"depth": {"max_depth": 0}}, "depth.max_depth"),
        ({"budget": {"max_flops": -5}}, "budget.max_flops"),
        ({"depth": {"score_batches": 0}}, "depth.score_batches"),
        ({"order": "depth_first"}, "order"),
        ({"trigger": {"kind": "sometimes"}}, "trigger"),
        ({"width": None, "depth": None}, "width"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_settings_name_the_field(settings, field):
    d = {"trigger": {"kind": "at_steps", "steps": [5]}, "width": {}, **settings}
    with pytest.raises(PolicyError, match=f"^{field}"):
        DepthWidthPolicy.from_dict(d)


def test_depth_growth_on_a_net_that_admits_no_identity_layer_fails_at_once():
    policy = DepthWidthPolicy(AtSteps((50,)), width=WidthGrowth(), depth=DepthGrowth())
    with pytest.raises(PolicyError, match="^depth: activation: 'tanh' is not idempotent"):
        train(policy, steps=5, spec=ArchitectureSpec(6, 4, (2, 2), "tanh"))


def test_decisions_score_the_trainers_loss_function():
    """Twice the cross-entropy under Adam (scale-free) trains the same weights; the decisions
    read the trainer's loss: twice the loss in the width statistics, four times the squared
    sensitivity of a layer."""

    def run(loss_fn, kind):
        width = WidthGrowth(selection="singular_value", statistics_samples=400)
        policy = (
            DepthWidthPolicy(AtSteps((20,)), width=width)
            if kind == "width"
            else DepthWidthPolicy(AtSteps((20,)), depth=DepthGrowth())
        )
        net = Initializer("kaiming").apply(build(SPEC), seed=0)
        config = TrainConfig(steps=21, lr=0.05, optimizer="adam", batch_size=50)
        (event,) = Trainer(net, rings(), config, policy=policy, loss_fn=loss_fn).fit().events
        return event

    def double(z, y):
        return 2 * torch.nn.functional.cross_entropy(z, y)

    plain, doubled = run(torch.nn.functional.cross_entropy, "width"), run(double, "width")
    assert doubled.details["loss"] == pytest.approx(2 * plain.details["loss"], rel=1e-4)
    plain, doubled = run(torch.nn.functional.cross_entropy, "depth"), run(double, "depth")
    assert doubled.score == pytest.approx(4 * plain.score, rel=1e-3)


class ThirdOfThree(Reducer):
    """Rank 2 of 3 processes, as a Reducer sees them (no collective is reached here)."""

    rank, world = 2, 3


@pytest.mark.parametrize("n", [4, 7, 10, 301])
def test_shares_of_the_samples_cover_them_once_each_starting_at_an_even_position(n):
    shares = ThirdOfThree().shares(n, 2)
    assert [i for s in shares for i in range(n)[s]] == list(range(n))
    assert all(s.start % 2 == 0 for s in shares if s.stop > s.start)
    assert Reducer().share(n, 2) == slice(0, n)  # one process: every sample


def test_too_few_statistics_samples_for_the_processes_names_the_field():
    policy = DepthWidthPolicy(AtSteps((1,)), width=WidthGrowth(statistics_samples=5))
    net = Initializer("kaiming").apply(build(SPEC), seed=0)
    trainer = Trainer(net, rings(), TrainConfig(steps=1, batch_size=50))
    with pytest.raises(PolicyError, match="^width.statistics_samples: 5 samples .* 3 processes"):
        policy.decide_now(trainer, ThirdOfThree())
