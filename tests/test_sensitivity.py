import random

import pytest
import torch
import torch.nn.functional as F
from finite_differences import entrywise

from growth_core.growth import sensitivity
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec, SpecError

FF = ArchitectureSpec(4, 3, (6, 5), "relu")
RES_TANH = ArchitectureSpec(4, 3, (5, 3), "tanh", residual=True, width=5)
RES_RELU = ArchitectureSpec(4, 3, (2,), "relu", residual=True, width=5)


def net_and_data(spec, seed=0, dtype=torch.float32):
    net = Initializer("gaussian", 2.0, 0.05).apply(build(spec), seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, spec.input_dim, generator=gen, dtype=dtype)
    y = torch.randint(0, spec.output_dim, (64,), generator=gen)
    return net, x, y


@pytest.mark.parametrize("spec", [FF, RES_TANH, RES_RELU], ids=["mlp", "res-tanh", "res-relu"])
def test_extended_and_inserted_networks_compute_the_same_function(spec):
    net, x, _ = net_and_data(spec)
    ext, virtual = sensitivity.extended_network(net)
    assert sorted(virtual) == sensitivity.positions(spec)
    assert (ext(x) - net(x)).abs().max() < 1e-6
    for p in sensitivity.positions(spec):
        grown = sensitivity.insert(net, p)
        assert grown.spec.depth == spec.depth + 1
        assert (grown.net(x) - net(x)).abs().max() < 1e-6
        assert all(q.requires_grad for q in grown.net.parameters())


def test_candidate_positions():
    assert sensitivity.positions(FF) == [0, 1]  # after each hidden layer
    assert sensitivity.positions(RES_TANH) == [0, 1, 2]  # between blocks and at both ends
    assert sensitivity.inserted_spec(FF, 0).widths == (6, 6, 5)
    assert sensitivity.inserted_spec(RES_TANH, 2).widths == (5, 3, 5)
    with pytest.raises(SpecError, match="^activation"):
        sensitivity.positions(ArchitectureSpec(4, 3, (6,), "tanh"))
    with pytest.raises(ValueError, match="^position"):
        sensitivity.inserted_spec(FF, 2)


def test_param_map_points_each_surviving_weight_at_its_old_self():
    net, _, _ = net_and_data(FF)
    grown = sensitivity.insert(net, 0)
    old = dict(net.named_parameters())
    new = dict(grown.net.named_parameters())
    assert "hidden.1.weight" not in grown.param_map  # the inserted layer
    assert grown.param_map["hidden.2.weight"] == "hidden.1.weight"
    for new_name, old_name in grown.param_map.items():
        assert torch.equal(new[new_name], old[old_name])
    assert torch.equal(new["hidden.1.weight"], torch.eye(6))


@pytest.mark.parametrize("spec", [FF, RES_TANH], ids=["mlp", "res-tanh"])
def test_scoring_all_positions_at_once_equals_one_insertion_at_a_time(spec):
    net, x, y = net_and_data(spec)
    together = sensitivity.sensitivities(net, [(x, y)]).scores
    for p in sensitivity.positions(spec):
        grown = sensitivity.insert(net, p)
        new_layer = p if spec.residual else p + 1
        w = (
            grown.net.blocks[new_layer].fc2.weight
            if spec.residual
            else grown.net.hidden[new_layer].weight
        )
        (g,) = torch.autograd.grad(F.cross_entropy(grown.net(x), y), [w])
        assert together[p] == pytest.approx(g.square().sum().item(), rel=1e-5)


@pytest.mark.parametrize("spec", [FF, RES_TANH], ids=["mlp", "res-tanh"])
def test_scores_match_finite_differences_of_the_loss_in_the_virtual_weights(spec):
    """v2 on one batch is ||dL/dW||^2, W the virtual weight; v1 divides by its entries.

    ReLU is not differentiable at 0, where dead units of the virtual layer sit; autograd takes
    relu'(0) = 0, the left derivative, so the feedforward check uses a backward difference."""
    net, x, y = net_and_data(spec, dtype=torch.float64)
    ext, virtual = sensitivity.extended_network(net)
    v2 = sensitivity.sensitivities(net, [(x, y)], score="v2").scores
    v1 = sensitivity.sensitivities(net, [(x, y)], score="v1").scores
    for p, k in virtual.items():
        w = ext.blocks[k].fc2.weight if spec.residual else ext.hidden[k].weight
        fd = entrywise(lambda: F.cross_entropy(ext(x), y), w, central=spec.residual)
        assert v2[p] == pytest.approx(fd.square().sum().item(), rel=1e-4, abs=1e-10)
        assert v1[p] == pytest.approx(fd.square().sum().item() / w.numel(), rel=1e-4, abs=1e-10)


def test_v1_averages_squared_norms_and_v2_squares_the_averaged_gradient():
    net, x, y = net_and_data(FF)
    halves = [(x[:32], y[:32]), (x[32:], y[32:])]
    ext, virtual = sensitivity.extended_network(net)
    grads = {p: [] for p in virtual}
    for xb, yb in halves:
        ws = [ext.hidden[k].weight for k in virtual.values()]
        for p, g in zip(virtual, torch.autograd.grad(F.cross_entropy(ext(xb), yb), ws)):
            grads[p].append(g)
    v1 = sensitivity.sensitivities(net, halves, score="v1").scores
    v2 = sensitivity.sensitivities(net, halves, score="v2").scores
    for p, (g1, g2) in grads.items():
        assert v1[p] == pytest.approx(
            (g1.square().sum() + g2.square().sum()).item() / 2 / g1.numel(), rel=1e-5
        )
        assert v2[p] == pytest.approx(((g1 + g2) / 2).square().sum().item(), rel=1e-5)


def test_selection_max_min_random():
    s = sensitivity.Sensitivities({0: 0.5, 1: 2.0, 2: 1.0}, flops=0, loss=0.0)
    assert s.select("max") == 1
    assert s.select("min") == 0
    picks = {s.select("random", rng=random.Random(i)) for i in range(30)}
    assert picks == {0, 1, 2}
    with pytest.raises(ValueError, match="^selection"):
        s.select("median")
    with pytest.raises(ValueError, match="^score"):
        sensitivity.sensitivities(build(FF), [], score="v3")
