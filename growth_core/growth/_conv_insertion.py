"""SensLI for conv nets: where an identity convolution (or basic block) can go, the networks
with it, and the weight whose gradient scores it. :mod:`.sensitivity` dispatches here on a
:class:`~growth_core.conv_spec.ConvSpec`; the scores and the selection are its own.

- Plain, after convolution ``i``: a 3x3 convolution of ``widths[i]`` channels with a Dirac
  kernel (the centre tap of channel ``c`` to channel ``c`` is 1, every other 0) and a zero bias,
  in the same stage. ``act(dirac * act(z)) = act(z)`` for an idempotent activation (ReLU), as in
  the feedforward MLP; the virtual weight is its kernel. A plain net with batch norm admits no
  identity layer (the norm rescales it), so it is refused by name.
- Residual, after block ``p``: a basic block of ``c = out_p`` channels with an identity
  shortcut. Without batch norm, ``conv1`` is Dirac and ``conv2`` zero, the virtual weight
  ``conv2``'s kernel (the residual MLP's ``W1 = I``, ``W2 = 0``). With batch norm a zero
  ``conv2`` would be normalized by a zero variance, so ``conv2`` is Dirac as well and the
  block's last norm has ``weight = 0`` and ``bias = 0`` (the zero-gamma start of residual
  blocks, Goyal et al. 2017): the block is exactly zero and the virtual weight is that norm's
  ``weight``, the one parameter through which the block's output can move. This is our
  reading of the paper for batch-norm blocks, which it does not treat; it scores the same
  Lagrange multiplier, of the constraint "norm weight = 0". Positions are after each block,
  not before the first (its input is the image, with the image's channels).

Bias and norm shifts are left out of the scores, as in the paper.
"""

from __future__ import annotations

from torch import nn

from ..conv_nets import ConvNet, ResidualConvNet
from ..conv_spec import ConvSpec
from ..events import Change
from ..nets import build


def positions(spec: ConvSpec) -> list[int]:
    """After each convolution (plain), after each block (residual)."""
    require_identity_insertion(spec)
    return list(range(spec.depth // 2 if spec.residual else spec.depth))


def require_identity_insertion(spec: ConvSpec) -> None:
    if spec.residual:
        return
    if spec.activation not in ("relu", "identity"):
        raise ValueError(
            f"activation: {spec.activation!r} is not idempotent, so a plain conv net admits no "
            "identity layer insertion; use relu or a residual conv net"
        )
    if spec.batch_norm:
        raise ValueError(
            "batch_norm: a plain conv net with batch norm admits no identity layer (the norm "
            "rescales it); use a residual conv net, or no batch norm, to insert layers"
        )


def inserted_spec(spec: ConvSpec, position: int) -> ConvSpec:
    """``spec`` with one identity convolution (plain) or block (residual) after ``position``."""
    if position not in positions(spec):
        raise ValueError(f"position: {position} is not one of {positions(spec)}")
    layer = 2 * position + 1 if spec.residual else position
    c = spec.widths[layer]
    new = (c, c) if spec.residual else (c,)
    stages, start = [], 0
    for stage in spec.stages:
        j = layer - start
        stages.append(stage[: j + 1] + new + stage[j + 1 :] if 0 <= j < len(stage) else stage)
        start += len(stage)
    return spec.with_stages(tuple(stages))


def insert(net: ConvNet | ResidualConvNet, position: int) -> Change:
    """Grow ``net`` by one identity convolution or block after ``position``."""
    spec = inserted_spec(net.spec, position)
    new = position + 1
    units = _units(spec)
    old_of_new = {k: k - (k > new) for k in range(units) if k != new}
    return _grown(net, spec, old_of_new)


def extended_network(net: ConvNet | ResidualConvNet) -> tuple[nn.Module, dict[int, int]]:
    """``net`` with an identity convolution or block after every position at once, and per
    position the index of its virtual unit (layer or block)."""
    spec = net.spec
    if spec.residual:
        stages = tuple(
            tuple(c for a, b in zip(st[::2], st[1::2]) for c in (a, b, b, b)) for st in spec.stages
        )
    else:
        stages = tuple(tuple(c for c in st for _ in range(2)) for st in spec.stages)
    ext = spec.with_stages(stages)
    old_of_new = {2 * i: i for i in range(_units(spec))}
    virtual = {p: 2 * p + 1 for p in positions(spec)}
    return _grown(net, ext, old_of_new).net, virtual


def virtual_weight(net: ConvNet | ResidualConvNet, index: int) -> nn.Parameter:
    """The parameter whose gradient scores the identity unit ``index`` (see the module)."""
    if not net.spec.residual:
        return net.layers[index].conv.weight
    conv2 = net.blocks[index].conv2
    return conv2.conv.weight if conv2.bn is None else conv2.bn.weight


def _units(spec: ConvSpec) -> int:
    return spec.depth // 2 if spec.residual else spec.depth


def _grown(net, spec: ConvSpec, old_of_new: dict[int, int]) -> Change:
    """Build ``spec``; unit ``k`` continues old unit ``old_of_new[k]`` (weights, norm statistics
    and, through the map, optimizer state), the head is kept, every other unit is an identity."""
    ref = next(net.parameters())
    grown = build(spec).to(device=ref.device, dtype=ref.dtype)
    prefix = "blocks" if spec.residual else "layers"
    names: dict[str, str] = {}
    for name in grown.state_dict():
        head, _, rest = name.partition(".")
        if head != prefix:
            names[name] = name
            continue
        index, _, tail = rest.partition(".")
        if int(index) in old_of_new:
            names[name] = f"{prefix}.{old_of_new[int(index)]}.{tail}"
    old = net.state_dict()
    grown.load_state_dict({**grown.state_dict(), **{new: old[o] for new, o in names.items()}})
    for k in range(_units(spec)):
        if k not in old_of_new:
            _make_identity(grown, k)
    params = {name for name, _ in grown.named_parameters()}
    return Change(grown, {new: o for new, o in names.items() if new in params})


def _make_identity(net, index: int) -> None:
    if not net.spec.residual:
        _dirac(net.layers[index])
        return
    block = net.blocks[index]
    _dirac(block.conv1)
    if block.conv2.bn is None:
        nn.init.zeros_(block.conv2.conv.weight)
        nn.init.zeros_(block.conv2.conv.bias)
    else:
        _dirac(block.conv2)
        nn.init.zeros_(block.conv2.bn.weight)
        nn.init.zeros_(block.conv2.bn.bias)


def _dirac(layer) -> None:
    nn.init.dirac_(layer.conv.weight)
    if layer.conv.bias is not None:
        nn.init.zeros_(layer.conv.bias)
