import math

import pytest
import torch

from growth_core.init import InitError, Initializer
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec

SPEC = ArchitectureSpec(400, 10, (300, 300), "tanh")


def test_same_seed_same_weights_other_seed_other_weights():
    init = Initializer("gaussian", 1.5, 0.05)
    a, b, c = (init.apply(build(SPEC), seed=s) for s in (3, 3, 4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.hidden[0].weight, c.hidden[0].weight)


@pytest.mark.parametrize(
    ("init", "var_w", "var_b"),
    [
        (Initializer("gaussian", 2.0, 0.05), 2.0 / 300, 0.05),
        (Initializer("kaiming"), 2.0 / 300, 0.0),
        (Initializer("xavier"), 2.0 / 600, 0.0),
    ],
)
def test_gaussian_variances(init, var_w, var_b):
    layer = init.apply(build(SPEC), seed=0).hidden[1]
    assert layer.weight.var().item() == pytest.approx(var_w, rel=0.03)
    assert layer.bias.var().item() == pytest.approx(var_b, abs=0.02)


def test_orthogonal_rows_are_orthonormal_times_sigma():
    net = Initializer("orthogonal", 2.0).apply(build(SPEC), seed=0)
    w = net.hidden[1].weight  # square
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(300), atol=1e-4)
    w0 = net.hidden[0].weight  # 300 x 400: orthonormal rows
    assert torch.allclose(w0 @ w0.T, 2.0 * torch.eye(300), atol=1e-4)


def test_round_trip_and_label():
    init = Initializer("gaussian", 1.76, 0.05)
    assert Initializer.from_dict(init.to_dict()) == init
    assert init.label == "gaussian(sw2=1.76,sb2=0.05)"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "lecun"}, "kind"),
        ({"sigma_w2": -1.0}, "sigma_w2"),
        ({"sigma_b2": math.nan}, "sigma_b2"),
    ],
)
def test_bad_fields_are_named(kwargs, field):
    with pytest.raises(InitError, match=f"^{field}:"):
        Initializer(**kwargs)


def test_conv_kernels_are_drawn_with_their_fan_in():
    import pytest
    import torch

    from growth_core.conv_spec import ConvSpec
    from growth_core.init import Initializer
    from growth_core.nets import build

    net = build(ConvSpec((3, 16, 16), 10, ((64,), (64,)), "stride"))
    Initializer("gaussian", sigma_w2=2.0, sigma_b2=0.0).apply(net, seed=0)
    w = net.layers[1].conv.weight  # 64 kernels of 64 x 3 x 3
    assert float(w.var()) == pytest.approx(2.0 / (64 * 9), rel=0.05)
    assert not net.layers[1].conv.bias.any()
    Initializer("orthogonal", sigma_w2=1.0).apply(net, seed=0)
    rows = net.layers[1].conv.weight.reshape(64, -1)
    torch.testing.assert_close(rows @ rows.T, torch.eye(64), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="kind: 'decorrelated'"):
        Initializer("decorrelated").apply(net, seed=0, data=torch.randn(8, 768))
