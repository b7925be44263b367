import torch

from growth_core.flops import parameter_count
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec

FF = ArchitectureSpec(6, 3, (5, 4), "relu")
RES = ArchitectureSpec(6, 3, (4, 2), "tanh", residual=True, width=5)


def test_feedforward_forward_and_hidden_activations():
    net = build(FF)
    x = torch.randn(8, 6)
    logits, hidden = net.forward_with_hidden(x)
    assert logits.shape == (8, 3)
    assert [h.shape[1] for h in hidden] == [5, 4]
    assert torch.equal(logits, net(x))
    expected = torch.relu(net.hidden[0](x))
    assert torch.equal(hidden[0], expected)


def test_residual_block_is_x_plus_w2_act_w1x():
    net = build(RES)
    x = torch.randn(8, 6)
    logits, hidden = net.forward_with_hidden(x)
    assert logits.shape == (8, 3) and len(hidden) == 3
    block = net.blocks[0]
    assert block.fc2.bias is None
    h0 = hidden[0]
    assert torch.allclose(hidden[1], h0 + block.fc2(torch.tanh(block.fc1(h0))))
    assert torch.equal(logits, net(x))


def test_parameter_count_from_spec_matches_module():
    for spec in (FF, RES):
        assert parameter_count(spec) == sum(p.numel() for p in build(spec).parameters())
