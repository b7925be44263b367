"""SensLI on conv nets: identity convolutions and blocks, scores by finite differences,
optimizer state carried, the policy inserting layers while a conv net trains."""

import pytest
import torch
import torch.nn.functional as F
from finite_differences import entrywise
from torch.utils.flop_counter import FlopCounterMode

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, PolicyError, sensitivity
from growth_core.growth._conv_insertion import virtual_weight
from growth_core.nets import build
from growth_core.optim import carry_optimizer_state

PLAIN = ConvSpec((1, 8, 8), 10, ((3, 4), (5,)), "pool")
RESIDUAL = ConvSpec((1, 8, 8), 10, ((3, 4), (5, 6)), "stride", residual=True)
RESIDUAL_BN = ConvSpec((1, 8, 8), 10, ((3, 4), (5, 6)), "pool", residual=True, batch_norm=True)
SPECS = [PLAIN, RESIDUAL, RESIDUAL_BN]
IDS = ["plain", "residual", "residual-bn"]


def net_and_data(spec, dtype=torch.float64):
    torch.manual_seed(0)
    net = build(spec).to(dtype)
    for p in net.parameters():  # away from PyTorch's default scale, so every score is visible
        p.data.normal_(0, 0.5)
    x = torch.randn(12, 64, dtype=dtype)
    y = torch.randint(0, 10, (12,))
    return net, x, y


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_insertion_and_the_extended_net_compute_the_same_function(spec):
    net, x, _ = net_and_data(spec)
    expected = net(x)
    ext, virtual = sensitivity.extended_network(net)
    assert sorted(virtual) == sensitivity.positions(spec)
    torch.testing.assert_close(ext(x), expected, rtol=0, atol=1e-12)
    for p in sensitivity.positions(spec):
        grown = sensitivity.insert(net, p)
        assert grown.spec == sensitivity.inserted_spec(spec, p)
        assert grown.spec.depth == spec.depth + (2 if spec.residual else 1)
        torch.testing.assert_close(grown.net(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_scores_are_the_gradients_in_the_virtual_weights_by_finite_differences(spec):
    """v2 on one batch is ||dL/dW||^2, W the virtual weight, each entry's derivative taken by
    a difference of the loss. In a plain net the identity convolution's dead units sit at
    ReLU's kink, where autograd takes the left derivative: a backward difference there (a
    lower weight keeps them dead); the residual virtual weights enter linearly: central."""
    net, x, y = net_and_data(spec)
    ext, virtual = sensitivity.extended_network(net)
    scores = sensitivity.sensitivities(net, [(x, y)], score="v2").scores
    for p, k in virtual.items():
        w = virtual_weight(ext, k)
        fd = entrywise(lambda: F.cross_entropy(ext(x), y), w, central=spec.residual)
        assert scores[p] == pytest.approx(fd.square().sum().item(), rel=1e-4, abs=1e-12)
        assert scores[p] > 0


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_scoring_all_positions_at_once_equals_one_insertion_at_a_time(spec):
    net, x, y = net_and_data(spec)
    together = sensitivity.sensitivities(net, [(x, y)]).scores
    for p in sensitivity.positions(spec):
        grown = sensitivity.insert(net, p).net
        (g,) = torch.autograd.grad(F.cross_entropy(grown(x), y), virtual_weight(grown, p + 1))
        assert together[p] == pytest.approx(g.square().sum().item(), rel=1e-9)


def test_the_scoring_pass_counts_what_it_runs():
    net, x, y = net_and_data(PLAIN, torch.float32)
    sens = sensitivity.sensitivities(net, [(x, y), (x[:5], y[:5])])
    ext, virtual = sensitivity.extended_network(net)
    ext.requires_grad_(False)
    weights = [virtual_weight(ext, k).requires_grad_(True) for k in virtual.values()]
    with FlopCounterMode(display=False) as counter:
        for xb, yb in [(x, y), (x[:5], y[:5])]:
            torch.autograd.grad(F.cross_entropy(ext(xb), yb), weights)
    assert sens.flops == counter.get_total_flops() > 0


def test_optimizer_state_follows_the_weights_past_the_inserted_layer():
    net, x, y = net_and_data(PLAIN, torch.float32)
    opt = torch.optim.Adam(net.parameters())
    F.cross_entropy(net(x), y).backward()
    opt.step()
    grown = sensitivity.insert(net, 1)  # after layer 1: layer 2 becomes layer 3
    assert "layers.2.conv.weight" not in grown.param_map
    assert grown.param_map["layers.3.conv.weight"] == "layers.2.conv.weight"
    new_opt = torch.optim.Adam(grown.net.parameters())
    carry_optimizer_state(opt, net, new_opt, grown.net, grown.param_map)
    for new, old in grown.param_map.items():
        state = new_opt.state[grown.net.get_parameter(new)]["exp_avg"]
        assert torch.equal(state, opt.state[net.get_parameter(old)]["exp_avg"])


def test_what_admits_no_identity_layer_is_refused_by_name():
    with pytest.raises(ValueError, match="^batch_norm: a plain conv net with batch norm"):
        sensitivity.positions(ConvSpec((1, 8, 8), 10, ((4,),), batch_norm=True))
    with pytest.raises(ValueError, match="^activation: 'tanh' is not idempotent"):
        sensitivity.positions(ConvSpec((1, 8, 8), 10, ((4,),), activation="tanh"))
    with pytest.raises(ValueError, match="^position: 2 is not one of"):
        sensitivity.insert(build(RESIDUAL), 2)


def test_a_conv_net_grows_in_depth_while_it_trains_and_stays_under_max_depth():
    from growth_core.train import TrainConfig, Trainer

    data = datasets.load("digits")
    torch.manual_seed(0)
    policy = DepthWidthPolicy(AtSteps((10, 20, 30)), depth=DepthGrowth(max_depth=6))
    config = TrainConfig(epochs=3, batch_size=64, lr=1e-2, optimizer="adam")
    result = Trainer(build(RESIDUAL), data, config, policy=policy).fit()
    events = result.events
    assert [e.kind for e in events] == ["layer"], events  # 4 -> 6 convolutions, then the cap
    assert result.net.spec.depth == 6 and result.net.spec.residual
    assert set(events[0].details["scores"]) == {"0", "1"} and events[0].details["scoring_flops"]
    assert result.final["test_accuracy"] > 0.5
    fresh = DepthWidthPolicy(AtSteps((10,)), depth=DepthGrowth())
    bn = ConvSpec((1, 8, 8), 10, ((4, 4),), batch_norm=True)
    with pytest.raises(PolicyError, match="^depth: batch_norm: a plain conv net"):
        Trainer(build(bn), data, config, policy=fresh).fit()
