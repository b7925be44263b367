"""growth_core runs where the network is: training, evaluation and every growth decision on the
network's device (CUDA where there is one; those cases are skipped here otherwise)."""

import pytest
import torch

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, WidthGrowth
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, Trainer

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
    ),
]


def assert_grows(spec, device, width, epochs=2):
    """Width growth, then depth growth (a policy widens first, so each alone is certain)."""
    data = datasets.load("digits")
    config = TrainConfig(epochs=epochs, batch_size=64, lr=1e-2, optimizer="adam")
    for kind, policy in [
        ("neurons", DepthWidthPolicy(AtSteps((10, 20)), width=width)),
        ("layer", DepthWidthPolicy(AtSteps((10,)), depth=DepthGrowth())),
    ]:
        torch.manual_seed(0)
        trainer = Trainer(build(spec).to(device), data, config, policy=policy)
        result = trainer.fit()
        assert trainer.data.x_train.device.type == device  # moved once, next to the weights
        assert {p.device.type for p in result.net.parameters()} == {device}
        assert result.events and {e.kind for e in result.events} == {kind}, result.events
        assert result.final["test_accuracy"] > 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_an_mlp_grows_in_width_and_depth_on_the_device(device):
    width = WidthGrowth("tiny", selection="singular_value", max_neurons=8, samples="fixed")
    assert_grows(ArchitectureSpec(64, 10, (8,), "relu"), device, width)


@pytest.mark.parametrize("device", DEVICES)
def test_a_conv_net_grows_in_channels_and_depth_on_the_device(device):
    width = WidthGrowth(
        "tiny", selection="singular_value", max_neurons=4, statistics_samples=256,
        min_relative_gain=0.0,
    )  # fmt: skip
    assert_grows(ConvSpec((1, 8, 8), 10, ((4, 4), (6,)), "stride"), device, width, epochs=5)


@pytest.mark.parametrize("device", DEVICES)
def test_a_dataset_moves_once(device):
    data = datasets.load("digits")
    moved = data.to(device)
    assert moved.x_train.device.type == moved.y_test.device.type == device
    assert moved.to(device) is moved
    assert torch.equal(moved.x_train.cpu(), data.x_train)
