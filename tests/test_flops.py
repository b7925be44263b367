import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from growth_core.conv_spec import ConvSpec
from growth_core.flops import forward_flops, parameter_count, train_step_flops
from growth_core.growth import sensitivity
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec

SPECS = [
    ArchitectureSpec(7, 3, (5, 4, 6), "relu"),
    ArchitectureSpec(7, 3, (4, 2), "tanh", residual=True, width=5),
]


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("spec", SPECS, ids=["mlp", "resnet"])
def test_training_step_count_matches_torch_flop_counter(spec):
    net = build(spec)
    x, y = torch.randn(13, 7), torch.randint(0, 3, (13,))

    def step():
        F.cross_entropy(net(x), y).backward()

    assert train_step_flops(spec, 13) == counted(step)
    with torch.no_grad():
        assert forward_flops(spec, 13) == counted(lambda: net(x))


@pytest.mark.parametrize("spec", SPECS, ids=["mlp", "resnet"])
def test_scoring_pass_count_matches_torch_flop_counter(spec):
    net = build(spec)
    batches = [(torch.randn(11, 7), torch.randint(0, 3, (11,))) for _ in range(3)]
    result = {}

    def score():
        result["s"] = sensitivity.sensitivities(net, batches)

    measured = counted(score)
    assert result["s"].flops == measured
    # cheaper than a full training step of the extended net: only virtual weights get gradients
    ext, _ = sensitivity.extended_network(net)
    assert measured < 3 * train_step_flops(ext.spec, 11)


CONV_SPECS = {
    "plain": ConvSpec((1, 8, 8), 4, ((3, 5),)),
    "pool_bn": ConvSpec((2, 9, 7), 4, ((3,), (5, 4)), "pool", batch_norm=True),
    "stride": ConvSpec((3, 9, 7), 4, ((3,), (5,), (2,)), "stride", "tanh"),
    "residual_shortcuts": ConvSpec((1, 8, 8), 4, ((3, 3), (4, 4, 4, 4)), "stride", residual=True),
    "residual_pool_bn": ConvSpec(
        (2, 8, 8), 4, ((2, 2), (3, 4)), "pool", batch_norm=True, residual=True
    ),
}


@pytest.mark.parametrize("spec", CONV_SPECS.values(), ids=CONV_SPECS)
def test_conv_counts_match_torch_flop_counter(spec):
    net = build(spec)
    x, y = torch.randn(6, spec.input_dim), torch.randint(0, 4, (6,))
    with torch.no_grad():
        assert forward_flops(spec, 6) == counted(lambda: net(x))
    assert train_step_flops(spec, 6) == counted(lambda: F.cross_entropy(net(x), y).backward())


@pytest.mark.parametrize("spec", CONV_SPECS.values(), ids=CONV_SPECS)
def test_conv_parameter_count_matches_the_module(spec):
    assert parameter_count(spec) == sum(p.numel() for p in build(spec).parameters())


def test_a_conv_layer_costs_twice_its_multiply_adds():
    # one 3x3 conv 1 -> 3 at 8x8: 9 * 3 * 64 multiply-adds; the head 3 -> 4: 12
    spec = ConvSpec((1, 8, 8), 4, ((3,),))
    assert forward_flops(spec, 1) == 2 * (9 * 3 * 64 + 12)
