import math

import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from growth_core.data import digits
from growth_core.init import DATA_SAMPLE, Initializer
from growth_core.nets import build
from growth_core.screen import (
    SCREEN_SCHEMA,
    Candidate,
    ScreenBudget,
    ScreenError,
    crossing_depth,
    decay_depth,
    normalized_curve,
    random_projection,
    relative_entropy,
    saturation_depth,
    screen,
    screen_candidates,
    write_table,
)
from growth_core.screen.mlp_cascade import MLPDecoders
from growth_core.spec import ArchitectureSpec

SIGMA_B2 = 0.05  # the reference's bias variance


@pytest.fixture(scope="module")
def data():
    return digits()


def _tanh_spec(depth, width=64, input_dim=64):
    return ArchitectureSpec(input_dim, 10, (width,) * depth, activation="tanh")


# -- relative entropy --------------------------------------------------------------------------


def test_kl_is_zero_for_identical_images_and_positive_otherwise():
    x = torch.randn(5, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(relative_entropy(x, x.clone()), torch.zeros(5))
    assert (relative_entropy(x, x.flip(1)) > 0).all()


def test_kl_is_invariant_to_positive_scaling_and_shifts_of_either_side():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 50, generator=gen), torch.randn(4, 50, generator=gen)
    kl = relative_entropy(x, y)
    for scale, shift in ((3.0, 0.0), (0.01, 0.0), (2.0, -5.0)):
        torch.testing.assert_close(relative_entropy(scale * x + shift, y), kl)
        torch.testing.assert_close(relative_entropy(x, scale * y + shift), kl)


def test_kl_leaves_its_inputs_alone_and_broadcasts_over_depths():
    x, y = torch.rand(3, 8), torch.rand(6, 3, 8)  # y: reconstructions from six depths
    x_before, y_before = x.clone(), y.clone()
    kl = relative_entropy(x, y)
    assert kl.shape == (6, 3)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    with pytest.raises(ValueError, match="reconstruction: 7 pixels"):
        relative_entropy(x, torch.rand(3, 7))


def test_kl_of_a_constant_image_treats_it_as_uniform():
    flat, ramp = torch.ones(1, 4), torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    p = torch.full((4,), 0.25)
    q = torch.tensor([0.0, 1.0, 2.0, 3.0]) / 6 + 1e-12
    expected = (p * (p / (q / q.sum())).log()).sum()
    torch.testing.assert_close(relative_entropy(flat, ramp), expected.reshape(1))


# -- readouts ----------------------------------------------------------------------------------


def test_normalized_curve_is_the_median_of_each_image_divided_by_its_deepest_value():
    kl = torch.tensor([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0], [0.0, 5.0, 10.0]])
    torch.testing.assert_close(normalized_curve(kl), torch.tensor([0.25, 0.5, 1.0]))
    even = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # ratios 0.5 and 1.5: numpy's median is 1
    torch.testing.assert_close(normalized_curve(even), torch.tensor([1.0, 1.0]))


def test_saturation_depth_scans_back_with_the_reference_tolerance():
    curve = torch.tensor([0.2, 0.5, 0.9, 0.996, 1.0])  # 0.996 is within 0.5% of 1.0
    assert saturation_depth(curve) == 2
    assert saturation_depth(torch.tensor([0.2, 0.5, 0.9, 0.994, 1.0])) == 3
    assert saturation_depth(torch.ones(6)) == 0


def test_crossing_depth_interpolates_and_ignores_a_wobbling_tail():
    curve = torch.tensor([0.2, 0.5, 0.9] + [1.0] * 17)
    assert crossing_depth(curve) == pytest.approx(2 + (0.95 - 0.9) / (1.0 - 0.9))
    assert saturation_depth(curve) == 2
    wobbly = curve.clone()
    wobbly[3:-1] += 0.01 * torch.tensor([1.0, -1.0]).repeat(8)  # +-1%, twice the tolerance
    assert saturation_depth(wobbly) == 18  # the reference rule reads the last wobble
    assert crossing_depth(wobbly) == pytest.approx(crossing_depth(curve), abs=0.2)


def test_decay_depth_is_the_reference_readout_on_a_geometric_curve():
    depth = torch.arange(300, dtype=torch.float64)
    curve = 1 - 0.8 * 0.9**depth  # gap 0.8 r^i: within 0.5% from log(0.8/0.005)/-log(0.9) on
    assert decay_depth(curve) == pytest.approx(math.log(0.8 / 0.005) / -math.log(0.9), rel=1e-3)
    assert saturation_depth(curve) == math.floor(decay_depth(curve))
    assert decay_depth(3.0 * curve) == pytest.approx(decay_depth(curve))  # scale-free


def test_decay_depth_barely_moves_with_a_wobbling_tail_or_a_short_cascade():
    depth = torch.arange(200, dtype=torch.float64)
    slow = 1 - 0.8 * 0.97**depth  # within 0.5% from layer 167 on
    wobbly = slow.clone()
    wobbly[101:-1] += 0.01 * torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(49)
    assert saturation_depth(wobbly) == 198  # the last wobble
    assert decay_depth(wobbly) == pytest.approx(decay_depth(slow), rel=0.05)
    short = slow[:80] / slow[79]  # a cascade too shallow to see the saturation
    assert saturation_depth(short) >= 75  # about the cascade's end
    assert 0.4 * decay_depth(slow) < decay_depth(short) < decay_depth(slow)


def test_decay_depth_of_a_saturated_curve_is_zero():
    assert decay_depth(torch.ones(5)) == 0.0
    assert decay_depth(torch.tensor([0.999, 1.0, 1.0])) == 0.0


# -- the cascade -------------------------------------------------------------------------------


def test_the_batched_gradient_is_each_decoders_own_mse_gradient():
    spec = ArchitectureSpec(5, 2, (4, 4, 4), activation="tanh")
    decoders = MLPDecoders(spec, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    x, hidden = 3 * torch.randn(6, 5, generator=gen), 2 * torch.randn(3, 6, 4, generator=gen)
    decoders.set_scales(x, hidden)
    decoders.write_gradients(x, hidden)
    manual = [p.grad.clone() for p in decoders.parameters()]

    for p in decoders.parameters():
        p.grad = None
    targets = [x, hidden[0], hidden[1]]
    loss = sum(
        torch.nn.functional.mse_loss(decoders.decode(i, hidden[i]), targets[i]) for i in range(3)
    )
    loss.backward()
    for got, want in zip(manual, (p.grad for p in decoders.parameters()), strict=True):
        torch.testing.assert_close(got, want)


def test_a_shallow_near_identity_network_is_reconstructed_almost_perfectly(data):
    near_identity = Initializer("orthogonal", 0.1, 0.0)  # tanh(0.3 Q x): almost linear
    result = screen(_tanh_spec(2), near_identity, data, ScreenBudget(epochs=60))
    mean_image_kl = relative_entropy(data.x_test, data.x_train.mean(0)).median()
    assert result.kl[0] < 0.02 * mean_image_kl


def test_a_deep_ordered_network_loses_the_input(data):
    ordered = Initializer("gaussian", 0.5, SIGMA_B2)  # 6 xi_c is about 7 layers
    result = screen(_tanh_spec(20), ordered, data, ScreenBudget(epochs=10))
    mean_image_kl = relative_entropy(data.x_test, data.x_train.mean(0)).median()
    assert result.kl[-1] > 0.5 * mean_image_kl
    assert result.kl[0] < 0.5 * result.kl[-1]
    assert result.curve[-1] == 1.0
    assert result.reference_depth < 15
    assert result.score == result.decay_depth / 20


def test_reference_depth_rises_with_sigma_w2_across_the_ordered_phase(data):
    budget = ScreenBudget(epochs=10)
    results = [
        screen(_tanh_spec(40), Initializer("gaussian", s, SIGMA_B2), data, budget)
        for s in (0.5, 1.0, 1.5)  # 6 xi_c: about 7, 22 and 60
    ]
    for readout in ("reference_depth", "decay_depth"):
        depths = [getattr(r, readout) for r in results]
        assert depths[0] < depths[1] < depths[2], readout


def test_residual_networks_are_screened_along_their_stream(data):
    spec = ArchitectureSpec(64, 10, (16,) * 5, activation="tanh", residual=True, width=32)
    result = screen(spec, Initializer("gaussian", 1.0, SIGMA_B2), data, ScreenBudget(max_steps=5))
    assert len(result.curve) == 6  # after the input layer, after each block
    assert all(math.isfinite(v) for v in result.kl)


def test_screen_is_deterministic_and_leaves_the_data_alone(data):
    before = data.x_train.clone()
    spec, init, budget = _tanh_spec(4), Initializer("gaussian", 1.0, SIGMA_B2), ScreenBudget(3)
    first = screen(spec, init, data, budget, seed=3)
    second = screen(spec, init, data, budget, seed=3)
    assert first.curve == second.curve and first.steps == second.steps == 3 * 22
    assert torch.equal(data.x_train, before)


# -- cost --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        _tanh_spec(5, width=24),  # the first layer projects 64 -> 24
        ArchitectureSpec(64, 10, (8,) * 3, activation="tanh", residual=True, width=16),
    ],
)
def test_flops_are_exactly_what_torch_counts(data, spec):
    budget = ScreenBudget(epochs=2, max_steps=30, batch_size=500, eval_images=300)  # ragged
    with FlopCounterMode(display=False) as counter:
        result = screen(spec, Initializer("gaussian", 1.0, SIGMA_B2), data, budget)
    assert result.steps == 6
    assert result.flops == counter.get_total_flops()
    assert result.seconds > 0


# -- bad input ---------------------------------------------------------------------------------


def _call(**change):
    args = {
        "spec": _tanh_spec(3, width=4, input_dim=4),
        "initializer": Initializer(),
        "data": torch.rand(10, 4),
        "budget": ScreenBudget(max_steps=1),
    }
    args.update(change)
    return screen(args.pop("spec"), args.pop("initializer"), **args)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"data": torch.rand(0, 4)}, "data: no rows"),
        ({"data": torch.rand(10)}, "data: expected a 2-d float32 tensor"),
        ({"data": torch.rand(10, 4).double()}, "data: expected a 2-d float32 tensor"),
        ({"data": torch.rand(10, 5)}, "data: 5 features, but spec.input_dim is 4"),
        ({"data": torch.tensor([[0.0, 1.0, math.nan, 0.0]])}, "data: holds NaN"),
        ({"data": torch.tensor([[0.0, math.inf, 0.0, 0.0]])}, "data: holds NaN or infinite"),
        ({"data": [[0.0] * 4]}, "data: expected a Dataset or a tensor"),
        ({"spec": ArchitectureSpec(4, 2, (4, 3), activation="tanh")}, "spec.widths: .*equal"),
        ({"spec": _tanh_spec(1, width=4, input_dim=4)}, "spec.widths: .*two hidden layers"),
        ({"initializer": "gaussian"}, "initializer: expected an Initializer"),
        ({"budget": {"epochs": 1}}, "budget: expected a ScreenBudget"),
        ({"seed": -1}, "seed: expected an integer >= 0"),
    ],
)
def test_bad_input_names_the_field(change, match):
    with pytest.raises(ScreenError, match=match):
        _call(**change)


def test_non_finite_dataset_values_are_named(data):
    broken = digits()
    broken.x_test[3, 5] = math.nan
    with pytest.raises(ScreenError, match="data.x_test: holds NaN"):
        screen(_tanh_spec(2), Initializer(), broken, ScreenBudget(max_steps=1))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"epochs": 0}, "budget.epochs"),
        ({"epochs": 1.5}, "budget.epochs"),
        ({"max_steps": 0}, "budget.max_steps"),
        ({"batch_size": True}, "budget.batch_size"),
        ({"eval_images": -3}, "budget.eval_images"),
    ],
)
def test_bad_budget_names_the_field(fields, match):
    with pytest.raises(ScreenError, match=match):
        ScreenBudget(**fields)


# -- many candidates ---------------------------------------------------------------------------


def test_screening_candidates_gives_one_row_each_with_the_schema(data, tmp_path):
    candidates = [
        Candidate(Initializer("gaussian", 0.5, SIGMA_B2), depth=3, width=16),
        Candidate(Initializer("orthogonal", 1.0, 0.0), depth=4, residual=True, seed=2),
    ]
    table = screen_candidates(
        candidates,
        data,
        ScreenBudget(max_steps=2, eval_images=50),
        extra_columns={"params": lambda c, d: c.depth * 100},
    )
    assert table.schema.names == [*SCREEN_SCHEMA.names, "params"]
    assert table.schema.remove(len(SCREEN_SCHEMA)).equals(SCREEN_SCHEMA)
    rows = table.to_pylist()
    assert [r["kind"] for r in rows] == ["gaussian", "orthogonal"]
    assert [r["width"] for r in rows] == [16, 64]  # None: the input's width
    assert [len(r["curve"]) for r in rows] == [3, 5]  # residual: input layer + 4 blocks
    assert [r["params"] for r in rows] == [300, 400]

    path = write_table(table, tmp_path / "screen.parquet")
    assert pq.read_table(path).equals(table)
    assert [p.name for p in tmp_path.iterdir()] == ["screen.parquet"]


def test_a_decorrelated_candidate_is_screened_on_the_net_drawn_from_the_data(data):
    init = Initializer("decorrelated", 1.5, SIGMA_B2)
    candidate = Candidate(init, depth=3, width=16, seed=4)
    net = candidate.network(data)
    spec = candidate.spec(data.input_dim, data.num_classes)
    expected = init.apply(build(spec), seed=4, data=data.x_train[:DATA_SAMPLE])
    for a, b in zip(net.state_dict().values(), expected.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    plain = init.apply(build(spec), seed=4, data=data.x_train[DATA_SAMPLE : 2 * DATA_SAMPLE])
    assert not torch.equal(net.hidden[0].weight, plain.hidden[0].weight)  # it reads the data
    budget = ScreenBudget(max_steps=2, eval_images=50)
    (row,) = screen_candidates([candidate], data, budget).to_pylist()
    assert row["kind"] == "decorrelated"
    assert row["curve"] == list(screen(spec, init, data, budget, seed=4).curve)


def test_bad_candidates_are_named(data):
    with pytest.raises(ScreenError, match="candidate.depth"):
        Candidate(Initializer(), depth=1)
    with pytest.raises(ScreenError, match="candidate.initializer"):
        Candidate("gaussian", depth=3)
    with pytest.raises(ScreenError, match="candidates: expected at least one"):
        screen_candidates([], data)
    with pytest.raises(ScreenError, match=r"candidates\[1\]: expected a Candidate"):
        screen_candidates([Candidate(Initializer(), depth=2), "x"], data)
    with pytest.raises(ScreenError, match="extra_columns: 'score' is not a new column"):
        screen_candidates([Candidate(Initializer(), depth=2)], data, extra_columns={"score": len})


def test_random_projection_keeps_labels_and_norms_on_average(data):
    projected = random_projection(data, 16, seed=1)
    assert projected.x_train.shape == (data.n_train, 16)
    assert torch.equal(projected.y_test, data.y_test)
    ratio = projected.x_train.square().sum() / data.x_train.square().sum()
    assert ratio == pytest.approx(1.0, rel=0.3)
    assert torch.equal(random_projection(data, 16, seed=1).x_test, projected.x_test)
    with pytest.raises(ScreenError, match="width: 65 is wider"):
        random_projection(data, 65)
