"""One width decision on conv nets built from a ConvSpec: the same `widen` as MLPs, over the
sites `conv_sites` finds, with the grown spec on the grown net."""

import pytest
import torch

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.growth._conv_widen import conv_sites
from growth_core.growth.bottleneck import HeldOutGain, SingularValueThreshold, TinyGrowth, widen
from growth_core.growth.conv_width import ConvGradMaxGrowth, ConvTinyGrowth
from growth_core.nets import build

PLAIN = ConvSpec((1, 8, 8), 10, ((3, 3), (4, 4)), "pool", "tanh", batch_norm=True)
STRIDED = ConvSpec((1, 8, 8), 10, ((3, 3), (4,)), "stride", "tanh")
RESIDUAL = ConvSpec((1, 8, 8), 10, ((3, 4), (3, 5)), "stride", "tanh", residual=True)


def digit_batches(n=400, batch=200):
    d = datasets.load("digits")
    x, y = d.x_train[:n].float(), d.y_train[:n]
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def test_sites_are_the_layers_read_position_by_position():
    assert sorted(conv_sites(build(PLAIN))) == [0, 2]  # a pool stands between layers 1 and 2
    assert sorted(conv_sites(build(STRIDED))) == [0, 1]  # a strided successor reads the map
    net = build(RESIDUAL)
    sites = conv_sites(net)
    assert sorted(sites) == [0, 2]  # each block's inner channels
    assert sites[2].fan_in is net.blocks[1].conv1.conv and sites[2].norm is None


@pytest.mark.parametrize("spec", [PLAIN, STRIDED, RESIDUAL], ids=["pool-bn", "stride", "res"])
def test_tiny_widens_the_best_site_and_lowers_the_loss(spec):
    torch.manual_seed(0)
    net = build(spec)
    batches = digit_batches()
    decision = widen(net, batches, ConvTinyGrowth(), max_neurons=3, min_relative_gain=0.0)
    assert decision.change is not None, decision
    site, k = decision.site, decision.neurons
    assert site in conv_sites(net) and 1 <= k <= 3
    assert decision.scores[site] == max(decision.scores.values())
    grown = decision.change.net
    widths = list(spec.widths)
    widths[site] += k
    assert grown.spec == spec.with_widths(widths) == decision.change.spec
    rebuilt = build(grown.spec)
    rebuilt.load_state_dict(grown.state_dict())  # the spec describes the grown modules exactly
    assert decision.loss_after < decision.loss
    # the first-order gain per unit amplitude understates the step: the search goes far beyond 1
    assert decision.gamma >= 8
    grown.eval()
    with torch.no_grad():
        x, y = batches[0]
        assert torch.isfinite(grown(x)).all()
    assert decision.flops > 0 and net.spec == spec  # the original net is left as it was
    event = decision.event(7, net, strategy="tiny")
    assert event.kind == "neurons" and event.spec_after == grown.spec and event.position == site


def test_gradmax_channels_keep_the_function():
    torch.manual_seed(0)
    net = build(STRIDED).eval()
    batches = digit_batches()
    decision = widen(net, batches, ConvGradMaxGrowth(), max_neurons=2, min_relative_gain=0.0)
    assert decision.change is not None and decision.gamma == 1.0
    x = batches[0][0]
    with torch.no_grad():
        torch.testing.assert_close(decision.change.net.eval()(x), net(x), rtol=0, atol=1e-6)


def test_caps_and_the_budget_bound_the_channels():
    torch.manual_seed(0)
    net = build(STRIDED)
    batches = digit_batches()
    capped = widen(net, batches, ConvTinyGrowth(), caps={0: 0, 1: 1}, min_relative_gain=0.0)
    assert capped.site == 1 and capped.neurons == 1 and set(capped.counts) == {1}
    assert capped.change.spec.widths == (3, 4, 4)
    refused = widen(
        net, batches, ConvTinyGrowth(), min_relative_gain=0.0, fits=lambda spec, cost: False
    )
    assert refused.change is None and all(c == 0 for c in refused.counts.values())


def test_a_conv_net_refuses_linear_strategies_and_the_held_out_rule():
    net, batches = build(STRIDED), digit_batches(200)
    with pytest.raises(ValueError, match="strategy: a conv net grows channels"):
        widen(net, batches, TinyGrowth())
    with pytest.raises(ValueError, match="selection: conv sites take SingularValueThreshold"):
        widen(net, batches, ConvTinyGrowth(), selection=HeldOutGain())
    # GroMo's threshold decides how many: a huge one keeps no channel, so no growth
    none = widen(net, batches, ConvTinyGrowth(), selection=SingularValueThreshold(1e6))
    assert none.change is None


def test_a_conv_net_grows_its_channels_while_it_trains():
    from growth_core.growth import AtSteps, DepthWidthPolicy, PolicyError, WidthGrowth
    from growth_core.growth.settings import Budget
    from growth_core.train import TrainConfig, Trainer

    data = datasets.load("digits")
    spec = ConvSpec((1, 8, 8), 10, ((4, 4), (4,)), "stride", "relu", batch_norm=True)
    torch.manual_seed(0)
    width = WidthGrowth(
        "tiny", selection="singular_value", max_neurons=4, statistics_samples=256,
        min_relative_gain=1e-4,  # a conv gain per unit amplitude understates the step
    )  # fmt: skip
    policy = DepthWidthPolicy(AtSteps((20, 40)), width=width, budget=Budget(max_flops=10**12))
    config = TrainConfig(epochs=4, batch_size=64, lr=1e-2, optimizer="adam")
    result = Trainer(build(spec), data, config, policy=policy).fit()
    kinds = [e.kind for e in result.events]
    assert kinds and set(kinds) == {"neurons"}, kinds
    grown = result.net.spec
    assert isinstance(grown, ConvSpec) and sum(grown.widths) > sum(spec.widths)
    assert grown.widths[2] == 4  # the last convolution feeds the head: not a site
    assert result.events[-1].spec_after == grown
    assert result.final["test_accuracy"] > 0.5
    assert all(e.details["scoring_flops"] > 0 for e in result.events)

    with pytest.raises(PolicyError, match="depth: batch_norm: a plain conv net with batch norm"):
        from growth_core.growth import DepthGrowth

        DepthWidthPolicy(AtSteps((5,)), width=width, depth=DepthGrowth()).decide(
            _state(build(spec), data)
        )
    held_out = DepthWidthPolicy(AtSteps((5,)), width=WidthGrowth("tiny"))
    with pytest.raises(PolicyError, match="width.selection: a conv net's channels"):
        held_out.decide(_state(build(spec), data))


def _state(net, data):
    from types import SimpleNamespace

    import torch.nn.functional as F

    return SimpleNamespace(
        net=net, data=data, step=5, total_steps=10, batch_size=64, flops=0,
        loss_fn=F.cross_entropy, history=[],
    )  # fmt: skip
