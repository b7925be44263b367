"""Figures the tracker logs: loss and accuracy against FLOPs, growth events marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from growth_core.conv_spec import ConvSpec  # noqa: E402
from growth_core.events import GrowthEvent  # noqa: E402


def event_label(e: GrowthEvent) -> str:
    """What a growth event did, where and how much: ``width: +10 neurons in hidden layer 0``
    (a conv net's: ``+2 channels in conv layer 1``) or ``depth: a layer inserted at position 1``
    (a conv net's: ``a conv layer inserted after conv layer 1``, ``a block ... after block 1``)."""
    if e.kind == "neurons" and isinstance(e.spec_before, ConvSpec):
        return f"width: +{e.details.get('neurons', '?')} channels in conv layer {e.position}"
    if e.kind == "neurons":
        return f"width: +{e.details.get('neurons', '?')} neurons in hidden layer {e.position}"
    if isinstance(e.spec_before, ConvSpec):
        unit = "block" if e.spec_before.residual else "conv layer"
        return f"depth: a {unit} inserted after {unit} {e.position}"
    return f"depth: a layer inserted at position {e.position}"


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
            event_label(e),
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


def phase_figure(table, cascade_depth: int, activation: str = "tanh") -> Figure:
    """The screen's predicted trainable depth against sigma_w^2, with mean field's 6 xi_c for
    ``activation`` where it has a closed form; the axis holds every point it draws."""
    import numpy as np

    from growth_core.screen import MEAN_FIELD_ACTIVATIONS, mean_field

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
        if sb2 > 0 and activation in MEAN_FIELD_ACTIVATIONS:
            grid = np.linspace(
                min(r["sigma_w2"] for r in gauss), max(r["sigma_w2"] for r in gauss), 60
            )
            with np.errstate(all="ignore"):
                depth = [
                    _finite_or_nan(mean_field.trainable_depth, g, sb2, activation) for g in grid
                ]
            ax.plot(grid, depth, "k:", label=f"6 xi_c, {activation} (sigma_b2={sb2:g})")
    for r in rows:
        if r["kind"] != "gaussian":
            ax.plot([r["sigma_w2"]], [r["decay_depth"]], "^", label=f"{r['kind']}: decay depth")
    ax.axhline(cascade_depth, color="gray", lw=0.8, label="cascade depth")
    drawn = [r[k] for r in rows for k in ("decay_depth", "reference_depth", "crossing_depth")]
    top = max([cascade_depth, *(v for v in drawn if np.isfinite(v))])
    ax.set(xlabel="sigma_w^2", ylabel="trainable depth", ylim=(0, top * 1.15))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _finite_or_nan(fn, *args) -> float:
    try:
        value = float(fn(*args))
    except ValueError:  # no fixed point there (ReLU beyond sigma_w2 = 2)
        return float("nan")
    return value if value < float("inf") else float("nan")


def pareto_figure(rows: Sequence[dict[str, Any]], selected: str | None = None) -> Figure:
    """Validation accuracy against parameters, one point per trial: growing trials and fixed
    ones marked apart, ASHA-stopped ones hollow, the front of the completed ones drawn as a
    staircase, the trial the final stage trains ringed."""
    from .pareto import front

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for grows, marker, label in ((True, "o", "growing"), (False, "s", "fixed architecture")):
        for completed in (True, False):
            pts = [r for r in rows if r["grows"] == grows and r["completed"] == completed]
            if pts:
                ax.scatter(
                    [r["params"] for r in pts],
                    [r["val_accuracy"] for r in pts],
                    marker=marker,
                    s=28,
                    facecolors=None if completed else "none",
                    edgecolors="C0" if grows else "C1",
                    color="C0" if grows else "C1",
                    label=label if completed else f"{label} (stopped early)",
                )
    done = [r for r in rows if r["completed"]]
    on = [done[i] for i in front([(r["val_accuracy"], r["params"]) for r in done])]
    if on:
        xs, ys = [on[0]["params"]], [on[0]["val_accuracy"]]
        for r in on[1:]:
            xs += [r["params"], r["params"]]
            ys += [ys[-1], r["val_accuracy"]]
        ax.plot(xs, ys, color="gray", lw=1, ls="--", label="Pareto front")
    for r in rows:
        if r["trial_id"] == selected:
            ax.scatter([r["params"]], [r["val_accuracy"]], s=140, facecolors="none",
                       edgecolors="k", lw=1.2, label="trained by the final stage")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("parameters at the end of the trial")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
