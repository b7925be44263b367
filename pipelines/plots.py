"""Figures the tracker logs: loss and accuracy against FLOPs, growth events marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from growth_core.events import GrowthEvent  # noqa: E402


def growth_figure(history: Sequence[dict[str, Any]], events: Sequence[GrowthEvent]) -> Figure:
    """Training loss and held-out accuracy against cumulative FLOPs; a dashed line per growth."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    train = [r for r in history if "loss" in r]
    ax_loss.plot([r["flops"] for r in train], [r["loss"] for r in train], lw=0.8, label="train")
    held = [r for r in history if any(k.endswith("_accuracy") and k != "accuracy" for k in r)]
    for key in ("val", "test"):
        pts = [r for r in held if f"{key}_accuracy" in r]
        if pts:
            ax_loss.plot(
                [r["flops"] for r in pts], [r[f"{key}_loss"] for r in pts], "o-", ms=3, label=key
            )
            ax_acc.plot(
                [r["flops"] for r in pts],
                [r[f"{key}_accuracy"] for r in pts],
                "o-",
                ms=3,
                label=key,
            )
    flops_at = {r["step"]: r["flops"] for r in history}
    for e in events:
        for ax in (ax_loss, ax_acc):
            ax.axvline(flops_at.get(e.step, 0), color="gray", ls="--", lw=0.8)
        ax_loss.annotate(
            f"+{e.kind} @{e.position}",
            (flops_at.get(e.step, 0), ax_loss.get_ylim()[1]),
            fontsize=7,
            rotation=90,
            va="top",
        )
    ax_loss.set(xlabel="training FLOPs", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="training FLOPs", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def phase_figure(table, cascade_depth: int) -> Figure:
    """The screen's predicted trainable depth against sigma_w^2, with mean field's 6 xi_c."""
    import numpy as np

    from growth_core.screen import mean_field

    rows = table.to_pylist()
    fig, ax = plt.subplots(figsize=(6, 4))
    gauss = sorted((r for r in rows if r["kind"] == "gaussian"), key=lambda r: r["sigma_w2"])
    if gauss:
        sigma = [r["sigma_w2"] for r in gauss]
        for key, style, label in (
            ("decay_depth", "o-", "screen: decay depth"),
            ("reference_depth", "v-", "screen: reference readout"),
            ("crossing_depth", "s--", "screen: crossing depth"),
        ):
            ax.plot(sigma, [r[key] for r in gauss], style, ms=4, label=label)
        sb2 = gauss[0]["sigma_b2"]
        if sb2 > 0:
            grid = np.linspace(
                min(r["sigma_w2"] for r in gauss), max(r["sigma_w2"] for r in gauss), 60
            )
            ax.plot(
                grid,
                mean_field.trainable_depth(grid, sb2),
                "k:",
                label=f"6 xi_c (sigma_b2={sb2:g})",
            )
    for r in rows:
        if r["kind"] != "gaussian":
            ax.plot([r["sigma_w2"]], [r["decay_depth"]], "^", label=f"{r['kind']}: decay depth")
    ax.axhline(cascade_depth, color="gray", lw=0.8, label="cascade depth")
    ax.set(xlabel="sigma_w^2", ylabel="trainable depth", ylim=(0, cascade_depth * 1.3))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
