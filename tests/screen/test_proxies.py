import math
from dataclasses import replace

import pytest
import torch

from growth_core.data import white_noise
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.screen import (
    Candidate,
    ScreenBudget,
    ScreenError,
    activation_codes,
    gradient_norm,
    log_synflow,
    naswot,
    naswot_kernel,
    proxy_batch,
    proxy_columns,
    screen_candidates,
)
from growth_core.spec import ArchitectureSpec


def _net(spec, *weights):
    """``build(spec)`` with the given weight matrices (fan_out, fan_in) and zero biases."""
    net = build(spec)
    with torch.no_grad():
        for layer, weight in zip(net.linear_layers(), weights, strict=True):
            layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            if layer.bias is not None:
                layer.bias.zero_()
    return net


# -- gradient norm -----------------------------------------------------------------------------


def test_gradient_norm_of_a_zero_network_is_that_of_the_output_bias():
    # All weights zero: logits 0, softmax uniform; only the output bias gets a gradient,
    # mean(softmax - onehot) = (-0.9, 0.1, ..., 0.1) for labels all 0 of ten classes.
    spec = ArchitectureSpec(3, 10, (4, 4), activation="tanh")
    net = _net(spec, torch.zeros(4, 3), torch.zeros(4, 4), torch.zeros(10, 4))
    x, y = torch.randn(7, 3), torch.zeros(7, dtype=torch.long)
    assert gradient_norm(net, x, y) == pytest.approx(math.sqrt(0.81 + 9 * 0.01), rel=1e-6)
    assert all(p.grad is None for p in net.parameters())


# -- NASWOT ------------------------------------------------------------------------------------


def test_naswot_codes_and_kernel_by_hand():
    # Hidden units x1, x2, x1 + x2: input (1, 1) codes 111, input (-1, 2) codes 011.
    spec = ArchitectureSpec(2, 2, (3,), activation="tanh")
    net = _net(spec, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], torch.ones(2, 3))
    x = torch.tensor([[1.0, 1.0], [-1.0, 2.0]])
    codes = activation_codes(net, x)
    assert codes.tolist() == [[True, True, True], [False, True, True]]
    kernel = naswot_kernel(codes)  # three units, the two codes differ in one
    assert kernel.tolist() == [[3.0, 2.0], [2.0, 3.0]]
    assert naswot(net, x) == pytest.approx(math.log(3 * 3 - 2 * 2))


def test_naswot_of_identical_codes_is_minus_infinity():
    spec = ArchitectureSpec(2, 2, (3,), activation="tanh")
    net = Initializer("gaussian", 1.0, 0.05).apply(build(spec), seed=0)
    same = torch.tensor([[0.5, -1.0]]).repeat(4, 1)
    assert naswot(net, same) == -math.inf
    assert naswot(net, same[:1]) == pytest.approx(math.log(3))  # one input: K = (N_A)


def test_naswot_kernel_is_units_minus_hamming_distance():
    codes = torch.rand(6, 40, generator=torch.Generator().manual_seed(0)) > 0.5
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    assert torch.equal(naswot_kernel(codes), (40 - hamming).double())


def test_residual_codes_are_the_input_layer_and_every_blocks_first_layer():
    spec = ArchitectureSpec(5, 2, (3, 4), activation="tanh", residual=True, width=6)
    net = Initializer("gaussian", 1.0, 0.05).apply(build(spec), seed=0)
    assert activation_codes(net, torch.randn(8, 5)).shape == (8, 6 + 3 + 4)


# -- synflow -----------------------------------------------------------------------------------


def test_synflow_of_a_known_tiny_network():
    # |W2| |W1| 1 with W1 = [[1, -2], [0, 3], [-1, 1]], W2 = [[2, 0, 1], [-1, 1, 0]]:
    # |W1| 1 = (3, 3, 2), |W2| (3, 3, 2) = (8, 6), R = 14; R is linear in each of the two
    # layers, so sum_W W dR/dW = 2 R. Signs and biases play no part.
    spec = ArchitectureSpec(2, 2, (3,), activation="tanh")
    w1, w2 = [[1.0, -2.0], [0.0, 3.0], [-1.0, 1.0]], [[2.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]
    net = _net(spec, w1, w2)
    assert log_synflow(net) == pytest.approx(math.log(2 * 14))
    with torch.no_grad():
        net.hidden[0].bias.fill_(5.0)
        net.out.weight.neg_()
    assert log_synflow(net) == pytest.approx(math.log(2 * 14))


def test_synflow_of_a_residual_block_counts_the_skip_path():
    # width 1: inp 1, block fc1 2, fc2 3, out 1: R = 1 * (1 + 3 * 2) = 7;
    # sum W dR/dW = inp 7 + fc1 6 + fc2 6 + out 7 = 26.
    spec = ArchitectureSpec(1, 1, (1,), activation="tanh", residual=True, width=1)
    net = _net(spec, [[1.0]], [[2.0]], [[3.0]], [[1.0]])
    assert log_synflow(net) == pytest.approx(math.log(26))


def test_synflow_stays_finite_far_beyond_float64():
    # 400 hidden layers of width 8, every weight 10: each layer multiplies the flow by 80, so
    # R = 2 * 80 * 80^400 (about 10^764) and the score is 401 R.
    spec = ArchitectureSpec(8, 2, (8,) * 400, activation="tanh")
    net = _net(spec, *[10 * torch.ones(8, 8)] * 400, 10 * torch.ones(2, 8))
    expected = math.log(401) + 400 * math.log(80) + math.log(2 * 10 * 8)
    assert log_synflow(net) == pytest.approx(expected, rel=1e-9)


# -- as columns of the screen table ------------------------------------------------------------


def test_proxies_are_columns_of_the_screen_table():
    data = white_noise(input_dim=12, num_classes=10, n_train=100, n_test=30)
    candidates = [
        Candidate(Initializer("gaussian", s, 0.05), depth=4, width=16, seed=1) for s in (0.5, 4.0)
    ]
    columns = proxy_columns(batch_size=32)
    table = screen_candidates(
        candidates, data, ScreenBudget(max_steps=1, eval_images=20), extra_columns=columns
    )
    rows = table.to_pylist()
    assert all(list(columns) == list(row)[-4:] for row in rows)
    net = candidates[1].network(data)
    x, y = proxy_batch(data, 32, seed=1)
    assert rows[1]["naswot"] == naswot(net, x)
    assert rows[1]["grad_norm"] == gradient_norm(net, x, y)
    assert rows[1]["params"] == 12 * 16 + 16 + 3 * (16 * 16 + 16) + 16 * 10 + 10
    # Larger weights, more flow: sum log|W| rises with sigma_w^2.
    assert rows[1]["log_synflow"] > rows[0]["log_synflow"]


def test_bad_input_is_named():
    with pytest.raises(ScreenError, match="batch_size"):
        proxy_columns(batch_size=0)
    with pytest.raises(ScreenError, match="net: expected an MLP"):
        naswot(torch.nn.Linear(2, 2), torch.randn(3, 2))
    with pytest.raises(ScreenError, match="data: expected a Dataset"):
        proxy_columns()["naswot"](Candidate(Initializer(), depth=2), torch.randn(3, 2))


# -- conv nets ---------------------------------------------------------------------------------


def _conv_spec(**kw):
    from growth_core.conv_spec import ConvSpec

    return ConvSpec((2, 6, 6), 3, ((3, 3), (4,)), activation="tanh", **kw)


def test_conv_codes_are_every_channel_at_every_position():
    spec = _conv_spec(downsample="pool")
    net = build(spec)
    x = torch.randn(5, spec.input_dim)
    codes = activation_codes(net, x)
    assert codes.shape == (5, 3 * 36 + 3 * 36 + 4 * 9)
    first = net.layers[0](x.reshape(5, 2, 6, 6)) > 0
    assert torch.equal(codes[:, : 3 * 36], first.flatten(1))
    residual = build(replace(spec, stages=((3, 2), (4, 4)), residual=True))
    assert activation_codes(residual, x).shape == (5, 3 * 36 + 4 * 9)  # conv1 of each block


def test_conv_synflow_is_layers_plus_one_times_the_linearized_flow():
    spec = _conv_spec(downsample="stride")
    net = build(spec)
    v = torch.ones(1, 2, 6, 6, dtype=torch.float64)
    net.requires_grad_(False)
    for layer in net.layers:  # R of the linearized net, no renormalization (it is small here)
        c = layer.conv
        v = torch.nn.functional.conv2d(
            v, c.weight.double().abs(), stride=c.stride, padding=c.padding
        )
    r = float((v.mean(dim=(2, 3)) @ net.out.weight.double().abs().T).sum())
    assert log_synflow(net) == pytest.approx(math.log((3 + 1) * r), rel=1e-9)


def test_proxies_score_conv_candidates():
    from growth_core.conv_spec import ConvSpec
    from growth_core.data import digits

    conv = ConvSpec((1, 8, 8), 10, ((4,), (4, 4)), activation="tanh", downsample="pool")
    candidates = [Candidate(Initializer("gaussian", s, 0.05), depth=4, conv=conv) for s in (1, 4)]
    table = screen_candidates(
        candidates,
        digits(),
        ScreenBudget(max_steps=2, eval_images=10),
        extra_columns=proxy_columns(),
    )
    rows = table.to_pylist()
    assert all(math.isfinite(r["grad_norm"]) and math.isfinite(r["log_synflow"]) for r in rows)
    assert rows[0]["log_synflow"] < rows[1]["log_synflow"]  # larger weights, more flow
