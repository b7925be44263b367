"""Initializers: named, serializable choices (each can be a screening candidate).

An :class:`Initializer` is plain data (``kind`` plus the few numbers it needs); ``apply`` draws
every linear map of a network from it with a seeded generator, so the same initializer and seed
always give the same weights. The ``decorrelated`` kind also reads a sample of inputs
(``apply(net, seed=0, data=x)``); ``apply_on(net, seed=0, inputs=x_train)`` is the one call for
every kind, which takes the first :data:`DATA_SAMPLE` training inputs when the kind needs them
(how the trainability screen and the pipeline's trials draw their candidates).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .diversity import correlation
from .nets import activation_fn

#: Initializers by name; each is one function below.
KINDS = ("gaussian", "kaiming", "xavier", "orthogonal", "default", "decorrelated")

#: Kinds that need a sample of inputs (``apply(..., data=x)``).
DATA_KINDS = ("decorrelated",)

#: Training inputs :meth:`Initializer.apply_on` hands a data-dependent kind (the first ones).
DATA_SAMPLE = 512

#: ``decorrelated``: candidate neurons drawn per neuron kept. Ours (the paper draws "many").
DECORRELATED_CANDIDATES = 10

#: ``decorrelated``: a candidate whose output standard deviation on the sample is below this
#: fraction of the median candidate's is dead or saturated, and is kept only if nothing else is
#: left (a constant neuron correlates with nothing, so greedy selection would favour it). Ours.
DEAD_FRACTION = 1e-2


class InitError(ValueError):
    """An initializer with a bad field; the message names the field."""


@dataclass(frozen=True)
class Initializer:
    """How to draw weights.

    - ``gaussian``: the mean-field choice, ``W ~ N(0, sigma_w2 / fan_in)``, ``b ~ N(0, sigma_b2)``
      (Poole et al. 2016; Schoenholz et al. 2017).
    - ``kaiming``: ``W ~ N(0, 2 / fan_in)``, ``b = 0`` (He et al. 2015).
    - ``xavier``: ``W ~ N(0, 2 / (fan_in + fan_out))``, ``b = 0`` (Glorot & Bengio 2010).
    - ``orthogonal``: ``W = sqrt(sigma_w2) Q`` with ``Q`` a random (semi-)orthogonal matrix
      (Saxe et al. 2014), ``b ~ N(0, sigma_b2)``.
    - ``default``: PyTorch's ``nn.Linear`` default (uniform, Kaiming with a = sqrt(5)).
    - ``decorrelated``: decorrelated yet random (Kovalenko, Kordík, Friedjungová 2021, arXiv
      2109.09612). Layer by layer, bottom-up, draw ``DECORRELATED_CANDIDATES`` times as many
      candidate neurons as the layer has, each as ``gaussian`` draws it, compute their outputs
      on a data sample fed through the layers already chosen, and keep greedily the set with
      small pairwise correlation: start from the first live candidate, then repeatedly add the
      candidate whose largest ``|rho|`` with the neurons kept so far is smallest. The output
      layer is drawn as ``gaussian``. Feedforward networks only; needs ``data``.
    """

    kind: str = "gaussian"
    sigma_w2: float = 1.0
    sigma_b2: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InitError(f"kind: unknown {self.kind!r}; expected one of {', '.join(KINDS)}")
        for name in ("sigma_w2", "sigma_b2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InitError(f"{name}: expected a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InitError(f"{name}: expected a finite number >= 0, got {value}")

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``gaussian(sw2=1.76,sb2=0.05)``."""
        if self.kind in ("gaussian", "orthogonal", "decorrelated"):
            return f"{self.kind}(sw2={self.sigma_w2:g},sb2={self.sigma_b2:g})"
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Initializer:
        unknown = sorted(set(d) - {"kind", "sigma_w2", "sigma_b2"})
        if unknown:
            raise InitError(f"{unknown[0]}: unknown field of an initializer")
        return cls(**d)

    @property
    def needs_data(self) -> bool:
        """Whether :meth:`apply` needs a sample of inputs."""
        return self.kind in DATA_KINDS

    def apply(self, net: nn.Module, *, seed: int, data: Tensor | None = None) -> nn.Module:
        """Redraw every ``nn.Linear`` and ``nn.Conv2d`` of ``net`` in place, in module order;
        returns ``net``. A convolution is drawn as the matrix ``(out_channels, in_channels * kh
        * kw)`` its kernels flatten to: fan-in ``in_channels * kh * kw``, fan-out
        ``out_channels * kh * kw`` (PyTorch's convention), orthogonal rows of that matrix.

        ``data`` ``(n, input_dim)``: the input sample ``decorrelated`` measures correlations on
        (a few hundred samples suffice); ignored by the other kinds.
        """
        gen = torch.Generator().manual_seed(seed)
        convs = any(isinstance(m, nn.Conv2d) for m in net.modules())
        if self.needs_data and convs:
            raise ValueError(f"kind: {self.kind!r} draws feedforward networks only, not conv nets")
        if self.needs_data:
            _draw_decorrelated(self, net, data, gen)
            return net
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, nn.Linear | nn.Conv2d):
                    _draw(self, module, gen)
        return net

    def apply_on(self, net: nn.Module, *, seed: int, inputs: Tensor) -> nn.Module:
        """:meth:`apply` for a network that will see ``inputs`` ``(n, input_dim)``: a kind that
        needs data reads the first :data:`DATA_SAMPLE` of them; the others ignore them."""
        return self.apply(net, seed=seed, data=inputs[:DATA_SAMPLE] if self.needs_data else None)


def _draw(init: Initializer, layer: nn.Linear | nn.Conv2d, gen: torch.Generator) -> None:
    w, b = layer.weight.view(layer.weight.shape[0], -1), layer.bias  # a conv's kernels as rows
    rows, fan_in = w.shape
    fan_out = layer.weight[0, 0].numel() * rows  # out_channels * kh * kw; a linear's rows
    if init.kind == "default":
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear.reset_parameters, written with a generator
        w.uniform_(-bound, bound, generator=gen)
        if b is not None:
            b.uniform_(-bound, bound, generator=gen)
        return
    if init.kind == "orthogonal":
        w.copy_(math.sqrt(init.sigma_w2) * orthonormal(rows, fan_in, gen))
    else:
        var = {
            "gaussian": init.sigma_w2 / fan_in,
            "kaiming": 2.0 / fan_in,
            "xavier": 2.0 / (fan_in + fan_out),
        }[init.kind]
        w.normal_(0.0, math.sqrt(var), generator=gen)
    if b is not None:
        if init.kind in ("gaussian", "orthogonal") and init.sigma_b2 > 0:
            b.normal_(0.0, math.sqrt(init.sigma_b2), generator=gen)
        else:
            b.zero_()


def orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random matrix with orthonormal rows or columns (QR with sign fix)."""
    a = torch.randn(max(rows, cols), min(rows, cols), generator=gen)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q if rows >= cols else q.T


# -- decorrelated yet random -----------------------------------------------------------------------
@torch.no_grad()
def _draw_decorrelated(
    init: Initializer, net: nn.Module, data: Tensor | None, gen: torch.Generator
) -> None:
    spec = getattr(net, "spec", None)
    if spec is None or spec.residual:
        raise InitError(
            "kind: 'decorrelated' draws the hidden layers of a feedforward network from "
            f"nets.build; got {type(net).__name__}"
        )
    if data is None:
        raise InitError(
            f"data: the {init.kind!r} initializer needs a sample of inputs, "
            f"apply(net, seed=..., data=x) with x of shape (n, {spec.input_dim})"
        )
    if not isinstance(data, Tensor) or data.ndim != 2 or data.shape[1] != spec.input_dim:
        shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise InitError(f"data: expected a tensor of shape (n, {spec.input_dim}), got {shape}")
    if len(data) < 2:
        raise InitError(f"data: correlations need at least 2 samples, got {len(data)}")
    act = activation_fn(spec.activation)
    gaussian = Initializer("gaussian", init.sigma_w2, init.sigma_b2)
    h = data.to(net.out.weight.dtype)  # (n, fan_in) of the layer being drawn
    for layer in net.hidden:
        width, fan_in = layer.out_features, layer.in_features
        count = DECORRELATED_CANDIDATES * width
        w = torch.empty(count, fan_in, dtype=h.dtype)  # drawn as ``gaussian`` draws a layer
        w.normal_(0.0, math.sqrt(init.sigma_w2 / fan_in), generator=gen)
        b = torch.zeros(count, dtype=h.dtype)
        if init.sigma_b2 > 0:
            b.normal_(0.0, math.sqrt(init.sigma_b2), generator=gen)
        out = act(h @ w.T + b)  # (n, candidates)
        keep = _greedy_decorrelated(out, width)
        layer.weight.copy_(w[keep])
        layer.bias.copy_(b[keep])
        h = out[:, keep]
    _draw(gaussian, net.out, gen)


def _greedy_decorrelated(out: Tensor, k: int) -> Tensor:
    """Indices of ``k`` columns of ``out`` ``(n, candidates)`` with small pairwise ``|rho|``;
    dead columns (see :data:`DEAD_FRACTION`) only once no live one is left."""
    std = out.std(dim=0)
    dead = ~(std > DEAD_FRACTION * std.median())
    abs_rho = correlation(out.double()).abs()  # (candidates, candidates)
    handicap = 2.0 * dead.double()  # |rho| <= 1, so any live candidate ranks before a dead one
    taken = torch.zeros_like(dead)
    worst = torch.zeros_like(handicap)  # largest |rho| of each candidate with the kept set
    chosen = []
    for _ in range(k):  # the first pick is the first live candidate: all ``worst`` are 0
        nxt = int(torch.argmin((worst + handicap).masked_fill(taken, math.inf)))
        chosen.append(nxt)
        taken[nxt] = True
        worst = torch.maximum(worst, abs_rho[nxt])
    return torch.tensor(chosen)
