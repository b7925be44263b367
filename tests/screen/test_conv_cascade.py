"""The cascade-reconstruction screen of conv nets: transposed-convolution decoders, batched."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from growth_core.conv_spec import ConvSpec
from growth_core.data import digits
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.screen import (
    Candidate,
    ScreenBudget,
    ScreenError,
    conv_cascade,
    relative_entropy,
    screen,
    screen_candidates,
)
from growth_core.screen.conv_cascade import ConvDecoders, geometries

SIGMA_B2 = 0.05


@pytest.fixture(scope="module")
def data():
    return digits()


def _conv(stages, **kw):
    kw.setdefault("activation", "tanh")
    kw.setdefault("downsample", "stride")
    return ConvSpec(kw.pop("input_shape", (1, 8, 8)), 10, stages, **kw)


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        (_conv(((4, 4), (6, 6))), [8, 8, 4, 4]),
        (_conv(((4, 4), (6, 6)), downsample="pool"), [8, 8, 4, 4]),
        (_conv(((3,), (5,), (5,)), input_shape=(2, 7, 7)), [7, 4, 2]),  # odd maps, stride
        (_conv(((3,), (5,), (5,)), input_shape=(2, 7, 7), downsample="pool"), [7, 3, 1]),
        (_conv(((4, 4), (6, 6, 6, 6)), residual=True), [8, 4, 4]),  # one map per block
    ],
)
def test_every_decoder_gives_back_the_shape_of_the_map_before(spec, sizes):
    net = build(spec)
    x = torch.randn(3, *spec.input_shape)
    _, hidden = net.forward_with_hidden(x)
    assert [h.shape[-1] for h in hidden] == sizes
    decoders = ConvDecoders(spec, generator=torch.Generator().manual_seed(0))
    before = [x, *hidden[:-1]]
    for i, h in enumerate(hidden):
        assert decoders.decode(i, h.unsqueeze(0)).shape[1:] == before[i].shape
    assert len(geometries(spec)) == len(hidden)


def test_decoders_of_one_geometry_are_one_grouped_convolution():
    spec = _conv(((4, 4, 4), (6, 6, 6)))
    decoders = ConvDecoders(spec, generator=torch.Generator().manual_seed(0))
    # input <- 0; 0 <- 1 <- 2 (equal); 2 <- 3 (stride); 3 <- 4 <- 5 (equal)
    assert decoders.members == [[0], [1, 2], [3], [4, 5]]


def test_the_batched_gradient_is_each_decoders_own_mse_gradient():
    spec = _conv(((3, 3, 3), (5, 5)), input_shape=(2, 6, 6))
    decoders = ConvDecoders(spec, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(4, 2 * 6 * 6, generator=gen)
    _, hidden = build(spec).forward_with_hidden(x)
    hidden = [2 * h.detach() for h in hidden]
    decoders.set_scales(x, hidden)
    decoders.write_gradients(x, hidden)
    batched = [p.grad.clone() for p in decoders.parameters()]

    for p in decoders.parameters():
        p.grad = None
    targets = [x.reshape(4, 2, 6, 6), *hidden[:-1]]
    loss = sum(
        F.mse_loss(decoders.decode(i, h.unsqueeze(0))[0], t)
        for i, (h, t) in enumerate(zip(hidden, targets))
    )
    loss.backward()
    for got, want in zip(batched, (p.grad for p in decoders.parameters()), strict=True):
        torch.testing.assert_close(got, want)


def test_a_shallow_near_identity_conv_net_is_reconstructed_well(data):
    near_identity = Initializer("orthogonal", 0.1, 0.0)
    spec = _conv(((8, 8),))
    result = screen(spec, near_identity, data, ScreenBudget(epochs=30, batch_size=32))
    mean_image_kl = relative_entropy(data.x_test, data.x_train.mean(0)).median()
    assert result.kl[0] < 0.1 * mean_image_kl


def test_a_deep_ordered_conv_net_loses_more_of_the_input_than_a_critical_one(data):
    spec = _conv(((8,) * 16,))
    budget = ScreenBudget(epochs=3, batch_size=16, eval_images=200)
    ordered = screen(spec, Initializer("gaussian", 0.3, SIGMA_B2), data, budget)
    critical = screen(spec, Initializer("gaussian", 1.5, SIGMA_B2), data, budget)
    assert len(ordered.curve) == 16 and ordered.curve[-1] == 1.0
    # the ordered net's reconstructions stop improving after a few layers; the critical one's
    # keep their detail twice as deep
    assert 2 * ordered.reference_depth < critical.reference_depth
    assert 2 * ordered.crossing_depth < critical.crossing_depth
    assert ordered.kl[7] > 1.3 * critical.kl[7]
    assert ordered.score == ordered.decay_depth / 16


def test_conv_screen_is_deterministic(data):
    spec = _conv(((4, 4), (4, 4)), residual=True)
    budget = ScreenBudget(max_steps=4, batch_size=32, eval_images=50)
    first = screen(spec, Initializer("gaussian", 1.0, SIGMA_B2), data, budget, seed=2)
    second = screen(spec, Initializer("gaussian", 1.0, SIGMA_B2), data, budget, seed=2)
    assert first.kl == second.kl and all(math.isfinite(v) for v in first.kl)


@pytest.mark.parametrize(
    "spec",
    [
        _conv(((4, 4), (6, 6, 6))),
        _conv(((3,), (5,), (5,)), input_shape=(1, 8, 8), downsample="pool", batch_norm=True),
        _conv(((4, 4), (6, 6, 6, 6, 6, 6)), residual=True),
    ],
)
def test_conv_screen_flops_are_exactly_what_torch_counts(data, spec, monkeypatch):
    """Every decoder alone, as torch counts exactly; batched, the same screen (same draws, same
    curve) counted the same (torch would count a grouped transposed weight gradient too often)."""
    budget = ScreenBudget(epochs=2, max_steps=5, batch_size=500, eval_images=300)  # ragged
    init = Initializer("gaussian", 1.0, SIGMA_B2)
    batched = screen(spec, init, data, budget)
    unbatched = partial(ConvDecoders, batched=False)
    monkeypatch.setattr(conv_cascade, "ConvDecoders", unbatched)
    with FlopCounterMode(display=False) as counter:
        alone = screen(spec, init, data, budget)
    assert alone.steps == batched.steps == 5
    assert alone.flops == batched.flops == counter.get_total_flops()
    assert alone.kl == pytest.approx(batched.kl, rel=1e-4)


@pytest.mark.parametrize(
    ("spec", "data", "match"),
    [
        (_conv(((4,),)), torch.rand(5, 64), "spec.stages: a cascade needs at least two"),
        (_conv(((4, 4),)), torch.rand(5, 63), "data: 63 features, but spec.input_dim is 64"),
    ],
)
def test_bad_conv_input_names_the_field(spec, data, match):
    with pytest.raises(ScreenError, match=match):
        screen(spec, Initializer(), data, ScreenBudget(max_steps=1))


# -- candidates --------------------------------------------------------------------------------


def test_a_conv_candidate_screens_its_stages_deepened_to_its_depth(data):
    plain = _conv(((4, 4), (6, 6)), activation="relu")
    candidate = Candidate(Initializer("gaussian", 1.0, SIGMA_B2), depth=7, conv=plain)
    spec = candidate.spec(64, 10)
    assert spec.stages == ((4, 4), (6, 6, 6, 6, 6)) and spec.activation == "tanh"
    residual = _conv(((4, 4), (6, 8)), residual=True)
    assert Candidate(Initializer(), 6, conv=residual).spec(64, 3).stages == ((4, 4), (6, 8, 6, 8))

    table = screen_candidates([candidate], data, ScreenBudget(max_steps=2, eval_images=20))
    row = table.to_pylist()[0]
    assert (row["family"], row["depth"], row["width"], row["residual"]) == ("cnn", 7, 6, False)
    assert len(row["kl"]) == 7


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"depth": 3}, "candidate.depth: 3 convolutions, fewer than the 4"),
        ({"width": 8}, "candidate.width: a conv candidate's channels"),
        ({"initializer": Initializer("decorrelated")}, "candidate.initializer: 'decorrelated'"),
        ({"conv": "cnn"}, "candidate.conv: expected a ConvSpec"),
    ],
)
def test_bad_conv_candidates_are_named(change, match):
    args = {"initializer": Initializer(), "depth": 5, "conv": _conv(((4, 4), (6, 6)))}
    with pytest.raises(ScreenError, match=match):
        Candidate(**{**args, **change})


def test_a_conv_candidate_on_data_of_another_shape_is_named():
    candidate = Candidate(Initializer(), 4, conv=_conv(((4, 4), (6, 6))))
    with pytest.raises(ScreenError, match=r"candidate.conv.input_shape: \[1, 8, 8\] is 64"):
        candidate.spec(784, 10)
