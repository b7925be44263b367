"""Derivatives by differences of the loss, one weight entry at a time (the tests' check of the
gradients the growth scores read)."""

import itertools

import torch


def entrywise(loss, w: torch.Tensor, eps: float = 1e-6, *, central: bool = True) -> torch.Tensor:
    """``d loss() / d w[idx]`` for every entry: a central difference, or a backward one where
    the function has a kink at ``w`` and autograd takes the left derivative (ReLU at 0)."""
    fd = torch.zeros_like(w)
    with torch.no_grad():
        for idx in itertools.product(*map(range, w.shape)):
            w0 = w[idx].item()
            w[idx] = w0 - eps
            down = float(loss())
            w[idx] = w0 + eps if central else w0
            up = float(loss())
            w[idx] = w0
            fd[idx] = (up - down) / (2 * eps if central else eps)
    return fd
