"""GroMo's convolutional modules as an oracle for the channel maths.

Our site is ``fan_in -> BatchNorm2d -> tanh -> fan_out``; GroMo's is a ``Conv2dGrowingModule``
(post-layer function: the same norm and tanh) followed by a ``FullConv2dGrowingModule`` (new
channels get full ``fan_out`` kernels: the paper's scheme), on the same weights and batch, in
float64. GroMo's ``tensor_m``, ``tensor_m_prev`` and ``delta_raw`` hold the opposite sign to ours
(ours follow the paper: ``v = -g``); singular pairs are compared up to the sign of each pair. The
network is in eval mode so that our batching (cut differently on purpose) leaves the function as
it is; GroMo is driven with a ``reduction="sum"`` loss, the per-sample convention of ours.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from growth_core.growth import (
    ConvSite,
    ConvTinyWithUpdateGrowth,
    channel_bottleneck,
    conv_width_statistics,
)

gromo_conv = pytest.importorskip("gromo.modules.conv2d_growing_module")

TOL = 1e-5
N_SAMPLES = 16
SIZE = 6
GEOMETRIES = {  # fan_in, fan_out
    "same": ({"padding": 1}, {"padding": 1}),
    "strided-no-bias": ({"padding": 0, "bias": False}, {"padding": 1, "stride": 2}),
    "5x5-valid": ({"padding": 1}, {"kernel_size": 5, "padding": 0, "bias": False}),
}


@pytest.fixture(autouse=True)
def float64():
    """GroMo builds its rows of ones and its mask tensor in the default dtype."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def gromo_modules(fan_in_options, fan_out_options):
    """GroMo's two conv modules, our network reading them, and our site on their layers."""
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    fi = {"kernel_size": 3, "bias": True} | fan_in_options
    fo = {"kernel_size": 3, "bias": True} | fan_out_options
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.3, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
    first = gromo_conv.Conv2dGrowingModule(
        2, 3, fi.pop("kernel_size"), use_bias=fi.pop("bias"), **fi,
        post_layer_function=nn.Sequential(norm, nn.Tanh()), device=cpu,
    )  # fmt: skip
    second = gromo_conv.FullConv2dGrowingModule(
        3, 4, fo.pop("kernel_size"), use_bias=fo.pop("bias"), **fo,
        post_layer_function=nn.Tanh(), previous_module=first, device=cpu,
    )  # fmt: skip
    first.next_module = second
    out = second(first(torch.zeros(1, 2, SIZE, SIZE))).numel()
    head = nn.Sequential(nn.Flatten(), nn.Linear(out, 3))
    net = nn.Sequential(first.layer, norm, nn.Tanh(), second.layer, nn.Tanh(), head).eval()
    site = ConvSite(first.layer, second.layer, "tanh", norm=norm)
    return first, second, net, site


def gromo_statistics(first, second, net, x, y, batch=8):
    """GroMo's protocol: init, then per batch forward / sum-loss backward / update."""
    second.init_computation()
    for i in range(0, len(x), batch):
        logits = net[5](second(first(x[i : i + batch])))
        F.cross_entropy(logits, y[i : i + batch], reduction="sum").backward()
        second.update_computation()
    second.compute_optimal_updates(statistical_threshold=0.0, dtype=torch.float64)


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_conv_statistics_update_and_channels_agree_with_gromo(geometry):
    first, second, net, site = gromo_modules(*geometry)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N_SAMPLES, 2, SIZE, SIZE, generator=gen)
    y = torch.randint(0, 3, (N_SAMPLES,), generator=gen)
    assert torch.equal(net(x), net[5](second(first(x))))
    gromo_statistics(first, second, net, x, y)

    pieces = [(x[:5], y[:5]), (x[5:], y[5:])]
    stats = conv_width_statistics(net, [site], pieces)
    moments = stats.site(0).moments()
    solved = channel_bottleneck(moments, "tanh")
    k = len(second.eigenvalues_extension)
    assert k == len(solved.gains) == min(site.fan_in_features, 4 * site.kernel_positions)
    new = ConvTinyWithUpdateGrowth().propose(stats, 0, k).channels
    ext_in, ext_out = first.extended_output_layer, second.extended_input_layer
    sign = torch.sign((new.fan_out_weight * ext_out.weight).sum(dim=(0, 2, 3)))  # per pair
    diffs = {
        "S": moments.tensor_s - second.tensor_s(),
        "M": moments.tensor_m + second.tensor_m(),
        "S2": moments.tensor_s2 - second.tensor_s_growth(),
        "M2": moments.tensor_m2 + second.tensor_m_prev(),
        "C": moments.cross_covariance - second.cross_covariance(),
        "N": solved.tensor_n - second.tensor_n,
        "V^T V": moments.goal_covariance - second.covariance_loss_gradient(),
        # dW* where it acts on the data (S dW*^T, exact either way) ...
        "S dW*": moments.tensor_s @ (solved.delta + second.delta_raw).T,
        "decrease": torch.tensor(solved.update_decrease - float(second.parameter_update_decrease)),
        "lambda": solved.directions.singular_values - second.eigenvalues_extension,
        "alpha": new.fan_in_weight * sign[:, None, None, None] - ext_in.weight,
        "omega": new.fan_out_weight * sign[None, :, None, None] - ext_out.weight,
        "gain": torch.tensor(solved.gain - float(second.new_neurons_fo_improvement)),  # tanh'(0)=1
    }
    if new.fan_in_bias is not None:
        diffs["alpha bias"] = new.fan_in_bias * sign - ext_in.bias
    if torch.linalg.matrix_rank(moments.tensor_s) == len(moments.tensor_s):
        # ... and itself when S is invertible. Otherwise GroMo's linalg.solve returns one of the
        # many solutions, ours (the linear code's pinv) the least-norm one.
        diffs["dW*"] = solved.delta + second.delta_raw
        diffs["dW* kernels"] = new.weight_update + second.optimal_delta_layer.weight
        if new.bias_update is not None:
            diffs["dW* bias"] = new.bias_update + second.optimal_delta_layer.bias
    worst = {name: d.detach().abs().max().item() for name, d in diffs.items()}
    assert max(worst.values()) < TOL, worst
