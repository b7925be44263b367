import pytest
import torch
from torch import nn

from growth_core import data
from growth_core.conv_spec import ConvSpec
from growth_core.nets import build

PLAIN = ConvSpec((1, 8, 8), 10, ((4, 4), (6,)), "pool", batch_norm=True)
RESIDUAL = ConvSpec((2, 7, 7), 3, ((4, 4), (5, 6, 6, 6)), "stride", "tanh", residual=True)


@pytest.mark.parametrize("spec", [PLAIN, RESIDUAL], ids=["plain", "residual"])
def test_flat_rows_and_images_give_the_same_logits(spec):
    net = build(spec).eval()
    images = torch.randn(5, *spec.input_shape)
    logits = net(images)
    assert logits.shape == (5, spec.output_dim) and net.spec is spec
    assert torch.equal(net(images.flatten(1)), logits)
    with pytest.raises(ValueError, match=r"^input: expected \(batch, 98\) or \(batch, 2, 7, 7\)"):
        build(RESIDUAL)(torch.randn(5, 3, 7, 7))


def test_plain_layers_are_indexed_by_the_spec_and_have_their_own_batch_norm():
    net = build(PLAIN)
    layers = net.conv_layers()
    assert [layer.conv.out_channels for layer in layers] == list(PLAIN.widths)
    assert all(
        layer.conv.bias is None and layer.bn.num_features == w
        for layer, w in zip(layers, PLAIN.widths)
    )
    assert build(ConvSpec((1, 8, 8), 10, ((4,),))).layers[0].bn is None
    logits, hidden = net.forward_with_hidden(torch.randn(5, 64))
    assert [tuple(h.shape[1:]) for h in hidden] == [(4, 8, 8), (4, 8, 8), (6, 4, 4)]
    assert torch.equal(logits, net.out(hidden[-1].mean(dim=(2, 3))))


def test_residual_block_is_shortcut_plus_conv2_act_conv1():
    net = build(RESIDUAL)
    assert [layer.conv.out_channels for layer in net.conv_layers()] == list(RESIDUAL.widths)
    assert [block.shortcut is None for block in net.blocks] == [False, False, True]
    shortcut = net.blocks[1].shortcut.conv  # 4 -> 6 channels at stride 2
    assert (shortcut.kernel_size, shortcut.stride) == ((1, 1), (2, 2))
    x = torch.randn(5, *RESIDUAL.input_shape)
    _, hidden = net.forward_with_hidden(x)
    assert [tuple(h.shape[1:]) for h in hidden] == [(4, 7, 7), (6, 4, 4), (6, 4, 4)]
    block, h = net.blocks[2], hidden[1]
    assert torch.allclose(hidden[2], h + block.conv2(torch.tanh(block.conv1(h))))


def test_a_residual_block_with_zero_conv2_is_the_identity():
    net = build(RESIDUAL)
    nn.init.zeros_(net.blocks[2].conv2.conv.weight)
    nn.init.zeros_(net.blocks[2].conv2.conv.bias)
    _, hidden = net.forward_with_hidden(torch.randn(5, 98))
    assert torch.equal(hidden[2], hidden[1])


def test_a_dataset_shape_is_the_input_shape_of_a_net_for_its_flat_rows():
    digits = data.digits()
    net = build(ConvSpec(digits.shape, digits.num_classes, ((4,), (8,))))
    assert net(digits.x_train[:5]).shape == (5, 10)
