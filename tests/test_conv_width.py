import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from growth_core.growth import ConvSite, ConvWidthStatistics, conv_width_statistics
from growth_core.growth.conv_width import CONV_MOMENTS

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
