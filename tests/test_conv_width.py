import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from growth_core.growth import (
    ChannelProposal,
    ConvGradMaxGrowth,
    ConvRandomGrowth,
    ConvSite,
    ConvTinyGrowth,
    ConvTinyWithUpdateGrowth,
    ConvWidthStatistics,
    NewChannels,
    channel_bottleneck,
    conv_width_statistics,
)
from growth_core.growth.conv_width import CONV_MOMENTS
from growth_core.optim import carry_optimizer_state

SAME = {"padding": 1}  # fan_out keeps the size: every fan_in patch is read 9 times
STRIDED = {"padding": 0, "stride": 2, "dilation": 1}  # borders read less, every other position
SIZE = 7


def conv_net(fan_out=SAME, *, norm=True, bias=True, k2=3, act=nn.Tanh, seed=0, dtype=torch.float64):
    """conv(2 -> 3) [-> BN] -> act -> conv(3 -> 4) -> act -> linear head; its site 0."""
    torch.manual_seed(seed)
    conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(3) if norm else nn.Identity()
    conv2 = nn.Conv2d(3, 4, k2, **fan_out)
    out = conv2(torch.zeros(1, 3, SIZE, SIZE)).numel()
    net = nn.Sequential(conv1, bn, act(), conv2, act(), nn.Flatten(), nn.Linear(out, 3))
    if norm:
        with torch.no_grad():  # running statistics and affine maps that are not the identity
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    name = {nn.Tanh: "tanh", nn.Identity: "identity"}[act]
    site = ConvSite(conv1, conv2, name, norm=bn if norm else None)
    return net.to(dtype), site


def data(n=12, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, SIZE, SIZE, generator=gen, dtype=dtype), torch.randint(0, 3, (n,))


def half_squared_error(z, t):
    """Per-sample ``||z - t||^2 / 2``, averaged over the batch."""
    return 0.5 * (z - t).square().flatten(1).sum(1).mean()


def with_ones(b):
    return torch.cat([b, torch.ones(len(b), 1, b.shape[2], dtype=b.dtype)], dim=1)


# -- the moments -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fan_out", [SAME, STRIDED], ids=["same", "strided"])
def test_moments_are_those_of_the_doubly_unfolded_patches(fan_out):
    """``bt_j``, built here by unfolding ``fan_in``'s patches once more with ``fan_out``'s
    geometry (the paper's tensor T applied), gives S2, M2 and C as plain sums."""
    net, site = conv_net(fan_out)
    net.eval()
    x, y = data()
    m = conv_width_statistics(net, [site], [(x, y)]).site(0).moments()

    h = net[2](net[1](net[0](x)))
    z = net[3](h.requires_grad_(True))
    (g,) = torch.autograd.grad(F.cross_entropy(net[4:](z), y, reduction="sum"), z)
    v = -g.flatten(2)  # (n, o, X)
    b = with_ones(F.unfold(h, 3, **fan_out))  # (n, d, X)
    b2 = with_ones(F.unfold(x, 3, padding=1))  # (n, d2, P)
    bt = F.unfold(b2.reshape(12, 19, SIZE, SIZE), 3, **fan_out).reshape(12, 19, 9, -1)
    expected = {
        "tensor_s": torch.einsum("iax,ibx->ab", b, b),
        "tensor_m": torch.einsum("iax,icx->ac", b, v),
        "tensor_s2": torch.einsum("iajx,ibjx->ab", bt, bt),
        "tensor_m2": torch.einsum("iajx,icx->acj", bt, v).reshape(19, 36),
        "cross_covariance": torch.einsum("iajx,iex->jae", bt, b),
        "goal_covariance": torch.einsum("icx,iex->ce", v, v),
    }
    for name, value in expected.items():
        assert torch.allclose(getattr(m, name), value / 12, atol=1e-12), name
    assert torch.allclose(m.patch_mean, b2.mean(dim=(0, 2)))
    assert torch.allclose(m.patch_moment, torch.einsum("iap,ibp->ab", b2, b2) / (12 * 49))


def test_statistics_do_not_depend_on_batching_or_loss_reduction():
    net, site = conv_net()
    net.eval()  # in training mode BatchNorm makes the function depend on the batching
    x, y = data(n=11)
    whole = conv_width_statistics(net, [site], [(x, y)])
    pieces = [(x[:4], y[:4]), (x[4:5], y[4:5]), (x[5:], y[5:])]
    split = conv_width_statistics(net, [site], pieces)
    summed = conv_width_statistics(
        net,
        [site],
        pieces,
        loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="sum"),
        reduction="sum",
    )
    assert split.n == summed.n == 11 and split.loss == pytest.approx(whole.loss)
    for other in (split, summed):
        for fold in (None, 0, 1):
            a, b = whole.site(0).moments(fold), other.site(0).moments(fold)
            assert a.n == b.n
            for name in (*CONV_MOMENTS, "patch_mean", "patch_moment"):
                assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-12), name
    fold0, fold1 = whole.site(0).moments(0), whole.site(0).moments(1)
    assert (fold0.n, fold1.n) == (6, 5)
    assert torch.allclose(
        6 * fold0.tensor_m2 + 5 * fold1.tensor_m2, 11 * whole.site(0).moments().tensor_m2
    )


def test_statistics_leave_the_network_as_it_was_and_count_their_flops():
    net, site = conv_net()
    net.train()
    before = copy.deepcopy(net.state_dict())
    x, y = data()
    stats = ConvWidthStatistics(net, [site])
    with FlopCounterMode(display=False) as counter:
        stats.update(x, y)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert stats.flops == counter.get_total_flops() > 0


# -- closed forms ----------------------------------------------------------------------------------
def test_best_update_is_the_least_squares_refit_of_fan_out():
    """Squared loss on ``fan_out``'s output: ``[W | b] + dW*`` is the least-squares fit of the
    targets on the patches, and the previewed loss is exactly ``L - g d + g^2 d / 2``."""
    net, site = conv_net(norm=False, act=nn.Identity)
    net = net[:4]  # the loss reads fan_out's output
    x, _ = data()
    targets = torch.randn(12, 4, SIZE, SIZE, dtype=torch.float64)
    stats = conv_width_statistics(net, [site], [(x, targets)], loss_fn=half_squared_error)
    solved = channel_bottleneck(stats.site(0).moments(), "identity")
    b = with_ones(F.unfold(net[:3](x), 3, padding=1)).transpose(1, 2).reshape(-1, 28)
    refit = torch.linalg.lstsq(b, targets.flatten(2).transpose(1, 2).reshape(-1, 4)).solution.T
    current = torch.cat([site.fan_out.weight.flatten(1), site.fan_out.bias[:, None]], dim=1)
    assert torch.allclose(current + solved.delta, refit, atol=1e-10)

    proposal = ConvTinyWithUpdateGrowth().propose(stats, 0, 1)
    d, loss0 = solved.update_decrease, stats.loss
    for gamma in (0.25, 1.0):
        with torch.no_grad():
            proposal.channels.fan_out_weight.zero_()  # the update alone
        previewed, _ = proposal.loss([(x, targets)], gamma, loss_fn=half_squared_error)
        assert previewed == pytest.approx(loss0 - gamma * d + gamma**2 * d / 2)


def test_channels_through_a_1x1_fan_out_are_the_reduced_rank_regression_of_the_bottleneck():
    """With a 1x1 ``fan_out`` the metric is exact: all channels together are the least-squares fit
    of ``v_proj`` on ``fan_in``'s patches, position by position; the gains are
    ``alpha_k^T N omega_k = lambda_k^2``."""
    net, site = conv_net({}, norm=False, k2=1, act=nn.Identity)
    net = net[:4]
    x, _ = data()
    targets = torch.randn(12, 4, SIZE, SIZE, dtype=torch.float64)
    stats = conv_width_statistics(net, [site], [(x, targets)], loss_fn=half_squared_error)
    moments = stats.site(0).moments()
    solved = channel_bottleneck(moments, "identity")
    new = ConvTinyWithUpdateGrowth().propose(stats, 0, len(solved.gains)).channels

    b = with_ones(F.unfold(net[:3](x), 1)).transpose(1, 2).reshape(-1, 4)
    b2 = with_ones(F.unfold(x, 3, padding=1)).transpose(1, 2).reshape(-1, 19)
    v = (targets - net(x)).flatten(2).transpose(1, 2).reshape(-1, 4)
    update = torch.cat([new.weight_update.flatten(1), new.bias_update[:, None]], dim=1)
    v_proj = v - b @ update.T
    fit = new.fan_in_matrix().T @ new.fan_out_weight.flatten(1).T
    assert torch.allclose(fit, torch.linalg.lstsq(b2, v_proj).solution, atol=1e-10)
    alpha, omega = solved.directions.fan_in, solved.directions.fan_out
    assert torch.allclose(torch.einsum("ka,ac,ck->k", alpha, solved.tensor_n, omega), solved.gains)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("fan_out", [SAME, STRIDED], ids=["same", "strided"])
def test_first_order_loss_change_matches_the_statistics(fan_out, mode):
    """The previewed loss falls at rate ``tr(M dW*) + act'(0) sum_k alpha_k^T M2 omega_k``; in
    training mode too, on the statistics' batch, where the new channels' norm is the identity."""
    net, site = conv_net(fan_out)
    net.train(mode == "train")
    x, y = data()
    stats = conv_width_statistics(net, [site], [(x, y)])
    proposal = ConvTinyWithUpdateGrowth().propose(stats, 0, 2)
    moments, new = stats.site(0).moments(), proposal.channels
    update = torch.cat([new.weight_update.flatten(1), new.bias_update[:, None]], dim=1)
    omega = new.fan_out_weight.permute(0, 2, 3, 1).reshape(-1, 2)
    rate = torch.trace(moments.tensor_m @ update) + torch.einsum(
        "ka,ac,ck->", new.fan_in_matrix(), moments.tensor_m2, omega
    )
    eps = 1e-6
    slope = (proposal.loss([(x, y)], eps)[0] - proposal.loss([(x, y)], 0.0)[0]) / eps
    assert slope == pytest.approx(-rate.item(), rel=1e-3)


# -- growing real modules --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("strategy", [ConvGradMaxGrowth, ConvRandomGrowth, ConvTinyGrowth])
def test_growth_preserves_the_function_where_the_strategy_says_so(strategy, mode):
    """GradMax and random channels at amplitude 1, TINY's at amplitude 0: same output (float32)."""
    net, site = conv_net(dtype=torch.float32)
    net.train(mode == "train")
    x, y = data(dtype=torch.float32)
    stats = conv_width_statistics(net, [site], [(x, y)])
    proposal = strategy().propose(stats, 0, 2)
    gamma = 1.0 if strategy.preserves_function else 0.0
    assert proposal.preserves_function == strategy.preserves_function
    before = net(x)
    grown = proposal.apply(gamma).net
    assert (grown(x) - before).abs().max() < 1e-6
    assert (grown[0].out_channels, grown[1].num_features, grown[3].in_channels) == (5, 5, 5)
    new_params = dict(grown.named_parameters())
    for name, old in net.named_parameters():  # old channels first, the new ones appended
        assert torch.equal(new_params[name][tuple(map(slice, old.shape))], old), name
    added = grown[0].weight[3:]  # only random channels have fan-in kernels at their amplitude
    assert added.any() if strategy is ConvRandomGrowth else not added.any()


def test_a_new_channels_norm_is_the_identity_on_that_channel():
    net, site = conv_net()
    x, y = data()
    stats = conv_width_statistics(net, [site], [(x, y)])
    proposal = ConvTinyGrowth().propose(stats, 0, 2)
    conv, norm = proposal.grown_modules(0.3)["0"], proposal.grown_modules(0.3)["1"]
    z = conv(x)[:, 3:]
    norm.eval()
    assert torch.allclose(norm(conv(x))[:, 3:], z)
    norm.train()  # batch statistics of the statistics' samples: the running ones
    assert torch.allclose(norm(conv(x))[:, 3:], z)
    assert torch.allclose(norm.running_mean[3:], z.mean(dim=(0, 2, 3)))


def test_preview_writes_nothing_and_apply_matches_it():
    net, site = conv_net()
    net.train()
    before = copy.deepcopy(net.state_dict())
    x, y = data()
    stats = conv_width_statistics(net, [site], [(x, y)])
    proposal = ConvTinyWithUpdateGrowth().propose(stats, 0, 2)
    search = proposal.line_search([(x, y)])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert search.losses[0.0] == pytest.approx(stats.loss)
    assert search.losses[search.gamma] < stats.loss
    grown = proposal.apply(search.gamma).net
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.allclose(grown(x), proposal.forward(x, search.gamma))
    with FlopCounterMode(display=False) as counter:
        proposal.forward(x[:5], 0.5)
    assert proposal.forward_flops(5) == counter.get_total_flops()
    assert search.flops == len(search.losses) * proposal.forward_flops(12)


def test_optimizer_state_carries_over_to_the_grown_network():
    net, site = conv_net(dtype=torch.float32)
    x, y = data(dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters())
    F.cross_entropy(net(x), y).backward()
    opt.step()
    change = ConvRandomGrowth().propose(conv_width_statistics(net, [site], [(x, y)]), 0, 2)
    change = change.apply(1.0)
    new_opt = torch.optim.Adam(change.net.parameters())
    carry_optimizer_state(opt, net, new_opt, change.net, change.param_map)
    for name in ("0.weight", "1.weight", "3.weight"):
        old, new = net.get_parameter(name), change.net.get_parameter(name)
        state, leading = new_opt.state[new]["exp_avg"].clone(), tuple(map(slice, old.shape))
        assert torch.equal(state[leading], opt.state[old]["exp_avg"])
        state[leading] = 0
        assert not state.any()  # the new channels start with no state


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_errors_name_the_field():
    net, site = conv_net()
    x, y = data()
    conv = nn.Conv2d(3, 4, 3)
    cases = [
        ("^fan_in", lambda: ConvSite(nn.Linear(2, 3), conv, "tanh")),
        ("^fan_out", lambda: ConvSite(site.fan_in, nn.Conv2d(5, 4, 3), "tanh")),
        ("^fan_out", lambda: ConvSite(site.fan_in, nn.Conv2d(3, 3, 3, groups=3), "tanh")),
        ("^padding", lambda: ConvSite(site.fan_in, nn.Conv2d(3, 4, 2, padding="same"), "tanh")),
        ("^activation", lambda: ConvSite(site.fan_in, conv, "swish")),
        ("^norm", lambda: ConvSite(site.fan_in, conv, "tanh", norm=nn.BatchNorm2d(4))),
        ("^sites", lambda: ConvWidthStatistics(net, [])),
        ("^sites", lambda: ConvWidthStatistics(net, [ConvSite(site.fan_in, conv, "tanh")])),
        ("^reduction", lambda: ConvWidthStatistics(net, [site], reduction="max")),
        ("^ridge", lambda: ConvWidthStatistics(net, [site], ridge=-1.0)),
        ("^batches", lambda: conv_width_statistics(net, [site], [])),
    ]
    pooled = nn.Sequential(net[:3], nn.MaxPool2d(2), nn.Conv2d(3, 4, 1), nn.Flatten())
    pooled.double()
    pooled_site = ConvSite(site.fan_in, pooled[2], "tanh", norm=site.norm)
    cases.append(("^sites", lambda: conv_width_statistics(pooled, [pooled_site], [(x, y)])))
    stats = conv_width_statistics(net, [site], [(x, y)])
    proposal = ConvTinyGrowth().propose(stats, 0, 1)
    wrong = NewChannels(torch.zeros(1, 2, 3, 3), None, torch.zeros(4, 1, 3, 3))
    cases += [
        ("^channels", lambda: ConvTinyGrowth().propose(stats, 0, 0)),
        ("^channels", lambda: ConvTinyGrowth().propose(stats, 0, 20)),
        ("^site", lambda: stats.site(1)),
        ("^gamma", lambda: proposal.forward(x, -1.0)),
        ("^channels.fan_in_bias", lambda: ChannelProposal(net, site, wrong)),
    ]
    for pattern, call in cases:
        with pytest.raises(ValueError, match=pattern):
            call()
