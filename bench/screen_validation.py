"""Does the cascade screen predict which networks train? Held against real training.

Candidates: tanh MLPs, ``W ~ N(0, sigma_w^2 / fan_in)``, ``b ~ N(0, 0.05)``, hidden layers as wide
as the input, on scikit-learn's digits (64 features) and on MNIST randomly projected to
``MNIST_WIDTH`` features (:func:`growth_core.screen.random_projection`; width 784 on one thread
would take hours for the ground truth alone), on a grid of ``SIGMA_W2`` by ``DEPTHS``.

Ground truth: every (sigma_w^2, depth, seed) network is trained with ``TRAIN`` (Adam, lr 1e-3,
batch 128, ``TRAIN.steps`` steps, the same batches for all); it is *trainable* when its test
accuracy exceeds ``TRAINABLE_ACCURACY`` (chance is 0.1, a shallow net reaches about 0.95). The
networks of one depth train together as one stacked ensemble (one batched product per layer,
one Adam over the stacked weights), which is exactly each network's own training, checked
against :class:`~growth_core.train.Trainer` at start-up.

The screen: for each (sigma_w^2, seed) one cascade on a ``SCREEN_DEPTH``-layer network, deeper
than every depth asked about, read at every depth ``L``. The network of depth ``L`` drawn with a
seed is the first ``L`` layers of the ``SCREEN_DEPTH`` one with that seed (the initializer draws
layer by layer), so the cascade sees exactly the layers each ground-truth network starts from.

Scores of a cell (higher: more trainable), each held against the label by ROC AUC:

- ``screen (decay)``: ``log(decay depth / L)``, the readout the pipeline ranks by
  (:func:`growth_core.screen.decay_depth`), reported as ``auc_screen``;
- ``screen (reference)``: ``log(reference depth / L)``, the reference's saturation readout;
- ``screen (crossing)``: ``log(crossing depth / L)``, the noise-robust readout;
- ``normalized KL at L``: minus the normalized curve at depth ``L`` (how close to saturation);
- ``mean field``: ``log(6 xi_c / L)`` (Schoenholz et al. 2017);
- the zero-cost proxies of :mod:`growth_core.screen.proxies` on the depth-``L`` network.

Depth readouts are floored at one layer before the log. Spearman: each depth predictor against
the deepest trained depth, over the (sigma_w^2, seed) columns. Intervals: 95% percentile
bootstrap over the (sigma_w^2, seed) columns, each column keeping all its depths (one cascade
gives them all). Cost ratio: the screen's FLOPs (every cascade) over the ground truth's (every
training step of every cell); both are fixed by the budgets below, chosen so the screen costs
under 5% of the training it stands in for.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import _common
import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import roc_auc_score
from torch import Tensor

from growth_core import data as datasets
from growth_core.flops import train_step_flops
from growth_core.init import Initializer
from growth_core.nets import MLP
from growth_core.screen import (
    Candidate,
    ScreenBudget,
    proxy_columns,
    random_projection,
    screen,
    trainable_depth,
)
from growth_core.train import TrainConfig, Trainer

NAME = "screen_validation"
#: Schoenholz et al.'s and the reference's bias variance; the critical sigma_w^2 is about 1.76.
SIGMA_B2 = 0.05
SIGMA_W2 = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
#: Roughly geometric, around the trainability boundary (6 xi_c is 7 at sigma_w^2 = 0.5, 22 at 1,
#: 42 at 4 and above 60 between 1.5 and 3).
DEPTHS = (2, 4, 6, 9, 13, 18, 25, 34, 46, 60)
#: The cascade's depth: a third deeper than the deepest depth it is asked about.
SCREEN_DEPTH = 80
#: MNIST is projected to this many features (a 128-wide network; digits keeps its 64).
MNIST_WIDTH = 128
#: The ground-truth training budget of every cell: about one MNIST epoch, 48 digits epochs.
TRAIN = TrainConfig(steps=500, lr=1e-3, optimizer="adam", batch_size=128, seed=0)
#: Trainable: test accuracy above this (chance 0.1; a shallow net about 0.95).
TRAINABLE_ACCURACY = 0.5
#: The screen's budget: decoders train with the reference's Adam (lr 1e-3) on batches of 16
#: (a step costs a quarter of one of 64 and the curve needs steps, not samples), about 420
#: steps; the curve is the median over 100 test images.
SCREEN_BUDGETS = {
    "digits": ScreenBudget(epochs=5, batch_size=16, eval_images=100),
    "mnist": ScreenBudget(max_steps=420, batch_size=16, eval_images=100),
}
PROXIES = ("params", "grad_norm", "naswot", "log_synflow")
#: The readouts that predict a depth (their score is log(depth / L)).
DEPTH_READOUTS = ("screen (decay)", "screen (reference)", "screen (crossing)", "mean field 6 xi_c")
#: Their short names in the per-sigma table.
READOUT_KEYS = ("decay", "reference", "crossing", "mean_field")
#: The screen's own readout, the one ``auc_screen`` reports (``entropy.decay_depth``).
SCREEN_READOUT = "screen (decay)"
BOOTSTRAP = 1000


@dataclass(frozen=True)
class Grid:
    """The experiment's size: the full grid or the ``--quick`` one."""

    sigma_w2: tuple[float, ...]
    depths: tuple[int, ...]
    screen_depth: int
    seeds: int
    train: TrainConfig
    budgets: dict[str, ScreenBudget]
    mnist_rows: int | None  # MNIST training rows kept (None: all 60000)
    bootstrap: int = BOOTSTRAP
    first_seed: int = 0  # seeds first_seed, ..., first_seed + seeds - 1


FULL = Grid(SIGMA_W2, DEPTHS, SCREEN_DEPTH, 3, TRAIN, SCREEN_BUDGETS, None)
QUICK = Grid(
    (0.5, 1.0, 1.75, 2.5, 4.0),
    (2, 6, 16, 32),
    40,
    2,
    TrainConfig(steps=40, lr=3e-3, optimizer="adam", batch_size=128, seed=0),
    {
        "digits": ScreenBudget(epochs=1, batch_size=16, eval_images=50),
        "mnist": ScreenBudget(max_steps=100, batch_size=16, eval_images=40),
    },
    4000,
    bootstrap=100,
)


# -- ground truth --------------------------------------------------------------------------------


class Ensemble(torch.nn.Module):
    """Tanh MLPs of one architecture trained as one: layer ``l`` of every member is one stacked
    ``(members, fan_in, fan_out)`` weight. The loss is the sum of the members' mean
    cross-entropies, so each member gets exactly its own gradient, and Adam, element-wise,
    steps each as its own optimizer would."""

    def __init__(self, nets: list[MLP]) -> None:
        super().__init__()
        layers = [net.linear_layers() for net in nets]
        self.weights = torch.nn.ParameterList(
            torch.stack([m[k].weight.detach().T for m in layers]).contiguous()
            for k in range(len(layers[0]))
        )
        self.biases = torch.nn.ParameterList(
            torch.stack([m[k].bias.detach() for m in layers])[:, None, :].contiguous()
            for k in range(len(layers[0]))
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(batch, input_dim)`` to logits ``(members, batch, classes)``."""
        h = torch.matmul(x, self.weights[0]).add_(self.biases[0]).tanh_()
        for weight, bias in zip(self.weights[1:-1], self.biases[1:-1], strict=True):
            h = torch.baddbmm(bias, h, weight).tanh_()
        return torch.baddbmm(self.biases[-1], h, self.weights[-1])


def fit_ensemble(model: Ensemble, data: datasets.Dataset, config: TrainConfig) -> None:
    """Train every member with ``config`` on the batches :class:`Trainer` would draw."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    gen = torch.Generator().manual_seed(config.seed)
    x, y, bs = data.x_train, data.y_train, config.batch_size
    members = len(model.weights[0])
    order, cursor = None, 0
    for _ in range(config.steps):  # Trainer.next_batch: reshuffle when a batch would run over
        if order is None or cursor + bs > len(x):
            order, cursor = torch.randperm(len(x), generator=gen), 0
        idx = order[cursor : cursor + bs]
        cursor += bs
        logits = model(x[idx])  # (members, batch, classes)
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat(members), reduction="sum")
        opt.zero_grad(set_to_none=True)
        (loss / bs).backward()
        opt.step()


@torch.no_grad()
def test_accuracy(model: Ensemble, data: datasets.Dataset) -> list[float]:
    correct = model(data.x_test).argmax(-1) == data.y_test  # (members, n_test)
    return correct.double().mean(1).tolist()


def check_ensemble_matches_trainer(data: datasets.Dataset) -> float:
    """The largest gap in test logits between :class:`Trainer` and the ensemble, two nets, 30
    steps; fails loudly above 1e-3."""
    config = TrainConfig(steps=30, lr=1e-3, optimizer="adam", batch_size=128, seed=0)
    candidates = [Candidate(Initializer("gaussian", s, SIGMA_B2), depth=3, seed=1) for s in (1, 3)]
    nets = [c.network(data) for c in candidates]
    model = Ensemble(nets)
    fit_ensemble(model, data, config)
    with torch.no_grad():
        ensemble_logits = model(data.x_test)
    gap = 0.0
    for k, net in enumerate(nets):
        Trainer(net, data, config).fit()
        with torch.no_grad():
            gap = max(gap, float((net(data.x_test) - ensemble_logits[k]).abs().max()))
    if gap > 1e-3:
        raise RuntimeError(f"the ensemble departs from Trainer by {gap:g} in the test logits")
    return gap


def ground_truth(data: datasets.Dataset, grid: Grid) -> tuple[np.ndarray, int]:
    """Test accuracy of every cell, ``(sigma_w2, depth, seed)``, and the training FLOPs."""
    accuracy = np.zeros((len(grid.sigma_w2), len(grid.depths), grid.seeds))
    flops = 0
    for j, depth in enumerate(grid.depths):
        cells = [(i, k) for i in range(len(grid.sigma_w2)) for k in range(grid.seeds)]
        nets = [
            _candidate(grid.sigma_w2[i], depth, grid.first_seed + k).network(data) for i, k in cells
        ]
        model = Ensemble(nets)
        fit_ensemble(model, data, grid.train)
        for (i, k), acc in zip(cells, test_accuracy(model, data), strict=True):
            accuracy[i, j, k] = acc
        flops += (
            grid.train.steps * train_step_flops(nets[0].spec, grid.train.batch_size) * len(nets)
        )
    return accuracy, flops


def _candidate(sigma_w2: float, depth: int, seed: int) -> Candidate:
    return Candidate(Initializer("gaussian", sigma_w2, SIGMA_B2), depth=depth, seed=seed)


# -- the screen, mean field and proxies ---------------------------------------------------------


def screens(data: datasets.Dataset, grid: Grid, budget: ScreenBudget) -> list[list]:
    """One cascade of depth ``grid.screen_depth`` per (sigma_w2, seed): ``[i][k]``."""
    out = []
    for sigma_w2 in grid.sigma_w2:
        row = []
        for k in range(grid.seeds):
            candidate = _candidate(sigma_w2, grid.screen_depth, grid.first_seed + k)
            spec = candidate.spec(data.input_dim, data.num_classes)
            row.append(screen(spec, candidate.initializer, data, budget, seed=candidate.seed))
        out.append(row)
    return out


def proxy_scores(data: datasets.Dataset, grid: Grid) -> dict[str, np.ndarray]:
    """Every proxy on every cell's network, ``(sigma_w2, depth, seed)`` each."""
    columns = proxy_columns()
    out = {name: np.zeros((len(grid.sigma_w2), len(grid.depths), grid.seeds)) for name in columns}
    for i, sigma_w2 in enumerate(grid.sigma_w2):
        for j, depth in enumerate(grid.depths):
            for k in range(grid.seeds):
                candidate = _candidate(sigma_w2, depth, grid.first_seed + k)
                for name, column in columns.items():
                    out[name][i, j, k] = column(candidate, data)
    return out


def readouts(results: list[list], grid: Grid) -> dict[str, np.ndarray]:
    """The screen's and mean field's scores of every cell (higher: more trainable)."""
    shape = (len(grid.sigma_w2), len(grid.depths), grid.seeds)
    depths = np.array(grid.depths, dtype=float)[None, :, None]
    decay = np.array([[r.decay_depth for r in row] for row in results])
    predicted = np.array([[r.reference_depth for r in row] for row in results], dtype=float)
    crossing = np.array([[r.crossing_depth for r in row] for row in results])
    at_depth = np.array(
        [[[r.curve[depth - 1] for r in row] for depth in grid.depths] for row in results]
    )
    six_xi = np.array([float(trainable_depth(s, SIGMA_B2)) for s in grid.sigma_w2])
    return {
        "screen (decay)": np.log(np.maximum(decay[:, None, :], 1.0) / depths),
        "screen (reference)": np.log(np.maximum(predicted[:, None, :], 1.0) / depths),
        "screen (crossing)": np.log(np.maximum(crossing[:, None, :], 1.0) / depths),
        "normalized KL at L": -at_depth,
        "mean field 6 xi_c": np.broadcast_to(np.log(six_xi[:, None, None] / depths), shape),
    }


# -- statistics ----------------------------------------------------------------------------------


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` against boolean ``labels``; NaN with one class. Scores enter as
    ranks (the AUC depends on nothing else), so infinite values (NASWOT's ``-inf``) are fine."""
    labels = labels.ravel()
    if labels.min() == labels.max():
        return math.nan
    ranks = rankdata(np.nan_to_num(scores.ravel(), nan=-np.inf))
    return float(roc_auc_score(labels, ranks))


def auc_within_depth(scores: np.ndarray, labels: np.ndarray) -> float:
    """The mean over depths (``scores``, ``labels``: ``(columns, depths)``) of the AUC among the
    cells of one depth, over the depths with both classes: how well a score ranks
    initializations, with depth itself taken out (a depth-only score gets 0.5)."""
    values = [auc(scores[:, j], labels[:, j]) for j in range(labels.shape[1])]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def spearman(predicted: np.ndarray, deepest: np.ndarray) -> float:
    if np.ptp(predicted) == 0 or np.ptp(deepest) == 0:
        return math.nan
    return float(spearmanr(predicted, deepest).statistic)


def by_column(cells: np.ndarray) -> np.ndarray:
    """``(sigma_w2, depth, seed)`` to ``(sigma_w2 * seed, depth)``: one row per cascade."""
    return cells.transpose(0, 2, 1).reshape(-1, cells.shape[1])


def interval(statistic, arrays: tuple[np.ndarray, ...], resamples: np.ndarray):
    """The 95% percentile interval of ``statistic(*arrays)`` over bootstrap resamples of the
    arrays' rows (the columns of the grid)."""
    values = np.array([statistic(*(a[rows] for a in arrays)) for rows in resamples])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def deepest_trained(trainable: np.ndarray, depths: tuple[int, ...]) -> np.ndarray:
    """Per column, the deepest depth of the grid that trained (0 if none)."""
    return np.where(trainable, np.array(depths)[None, :], 0).max(axis=1)


def analyse(dataset: str, scores: dict[str, np.ndarray], accuracy: np.ndarray, grid: Grid, rng):
    """Rows of the AUC table, the per-sigma rows, and the dataset's summary figures."""
    trainable = by_column(accuracy > TRAINABLE_ACCURACY)  # (columns, depths)
    columns = len(trainable)
    resamples = rng.integers(0, columns, size=(grid.bootstrap, columns))
    deepest = deepest_trained(trainable, grid.depths)
    depths = np.array(grid.depths, dtype=float)
    rows = []
    for name, cells in scores.items():
        s = by_column(cells)
        row = {"dataset": dataset, "readout": name, "auc": auc(s, trainable)}
        row["auc_lo"], row["auc_hi"] = interval(auc, (s, trainable), resamples)
        row["auc_within_depth"] = auc_within_depth(s, trainable)
        if name in DEPTH_READOUTS:  # log(depth / L): the predicted depth is exp(score) * L
            predicted = np.exp(s[:, 0]) * depths[0]
            row["spearman"] = spearman(predicted, deepest)
            row["spearman_lo"], row["spearman_hi"] = interval(
                spearman, (predicted, deepest), resamples
            )
        rows.append(row)
    return rows


def where_wrong(dataset: str, scores: dict[str, np.ndarray], accuracy: np.ndarray, grid: Grid):
    """Per sigma_w^2: the deepest trained depth, each depth readout's prediction (medians over
    seeds) and the cells it calls wrongly (predicted depth >= L read as "trainable")."""
    trainable = accuracy > TRAINABLE_ACCURACY  # (sigma, depth, seed)
    depths = np.array(grid.depths, dtype=float)
    rows = []
    for i, sigma_w2 in enumerate(grid.sigma_w2):
        deepest = deepest_trained(trainable[i].T, grid.depths)  # per seed
        row = {
            "dataset": dataset,
            "sigma_w2": sigma_w2,
            "deepest_trained": float(np.median(deepest)),
            "accuracy_at_deepest_grid_depth": float(np.median(accuracy[i, -1])),
        }
        for name, key in zip(DEPTH_READOUTS, READOUT_KEYS, strict=True):
            s = scores[name][i]  # (depth, seed)
            row[f"{key}_depth"] = float(np.median(np.exp(s[0]) * depths[0]))
            says = s >= 0.0
            row[f"{key}_false_trainable"] = int((says & ~trainable[i]).sum())
            row[f"{key}_false_untrainable"] = int((~says & trainable[i]).sum())
        rows.append(row)
    return rows


# -- the phase diagram ---------------------------------------------------------------------------


def _edges(centres: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges halfway between centres (in log space for ``log``)."""
    c = np.log(centres) if log else np.asarray(centres, dtype=float)
    mid = (c[1:] + c[:-1]) / 2
    edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.exp(edges) if log else edges


def plot(panels: dict, grid: Grid, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from growth_core.io import atomic_write

    sigma = np.array(grid.sigma_w2)
    depths = np.array(grid.depths, dtype=float)
    fine = np.linspace(sigma[0], sigma[-1], 200)
    six_xi = np.array([float(trainable_depth(s, SIGMA_B2)) for s in fine])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), squeeze=False)
    for ax, (dataset, panel) in zip(axes[0], panels.items(), strict=True):
        trained = (panel["accuracy"] > TRAINABLE_ACCURACY).mean(axis=2)  # (sigma, depth)
        mesh = ax.pcolormesh(
            _edges(sigma, log=False),
            _edges(depths, log=True),
            trained.T,
            cmap="Greens",
            vmin=0.0,
            vmax=1.0,
            shading="flat",
        )
        ax.plot(fine, six_xi, "k--", lw=1.2, label="mean field 6 $\\xi_c$")
        for key, marker, label in (
            ("decay", "D", "screen, decay readout"),
            ("reference", "o", "screen, reference readout"),
            ("crossing", "s", "screen, crossing readout"),
        ):
            depth = panel["predicted"][key]  # (sigma, seed)
            ax.errorbar(
                sigma,
                np.median(depth, axis=1),
                yerr=[np.median(depth, 1) - depth.min(1), depth.max(1) - np.median(depth, 1)],
                fmt=marker,
                ms=5,
                capsize=2,
                label=label,
            )
        ax.axhline(grid.screen_depth, color="gray", lw=0.8, ls=":", label="cascade depth")
        ax.set_yscale("log")
        ax.set_ylim(depths[0] / 1.3, grid.screen_depth * 2)
        ax.set_yticks(depths, [str(int(d)) for d in depths], minor=False)
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("$\\sigma_w^2$  ($\\sigma_b^2$ = 0.05)")
        ax.set_ylabel("depth L (hidden layers)")
        ax.set_title(
            f"{dataset}: AUC screen {panel['auc_screen']:.3f}, mean field "
            f"{panel['auc_mean_field']:.3f}",
            fontsize=10,
        )
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
        fig.colorbar(
            mesh, ax=ax, label=f"fraction of seeds with test accuracy > {TRAINABLE_ACCURACY}"
        )
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


# -- the run -------------------------------------------------------------------------------------


def load(dataset: str, args, grid: Grid) -> datasets.Dataset:
    if dataset == "digits":
        return datasets.digits()
    folder = args.data_dir or _common.DEFAULT_MNIST
    mnist = datasets.load_parquet(folder / "train.parquet", folder / "test.parquet", scale=255.0)
    if grid.mnist_rows is not None:
        n_train, n_test = grid.mnist_rows, grid.mnist_rows // 5
        mnist = datasets.Dataset(
            mnist.name,
            mnist.x_train[:n_train],
            mnist.y_train[:n_train],
            mnist.x_test[:n_test],
            mnist.y_test[:n_test],
            mnist.num_classes,
        )
    return random_projection(mnist, MNIST_WIDTH, seed=0)


def run_dataset(dataset: str, data: datasets.Dataset, grid: Grid, rng) -> dict:
    budget = grid.budgets[dataset]
    clock = time.perf_counter()
    accuracy, train_flops = ground_truth(data, grid)
    train_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    results = screens(data, grid, budget)
    screen_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    proxies = proxy_scores(data, grid)
    proxy_seconds = time.perf_counter() - clock

    scores = readouts(results, grid) | proxies
    rows = analyse(dataset, scores, accuracy, grid, rng)
    per_sigma = where_wrong(dataset, scores, accuracy, grid)
    by = {row["readout"]: row for row in rows}
    screen_flops = sum(r.flops for row in results for r in row)
    best_proxy = max(PROXIES, key=lambda name: by[name]["auc"])
    summary = {
        "auc_screen": by[SCREEN_READOUT]["auc"],
        "auc_mean_field": by["mean field 6 xi_c"]["auc"],
        "auc_best_proxy": by[best_proxy]["auc"],
        "cost_ratio": screen_flops / train_flops,
        "auc_screen_ci": [by[SCREEN_READOUT]["auc_lo"], by[SCREEN_READOUT]["auc_hi"]],
        "auc_screen_reference": by["screen (reference)"]["auc"],
        "auc_screen_crossing": by["screen (crossing)"]["auc"],
        "auc_normalized_kl": by["normalized KL at L"]["auc"],
        "best_proxy": best_proxy,
        "auc_best_proxy_either_sign": max(max(by[p]["auc"], 1 - by[p]["auc"]) for p in PROXIES),
        "auc_within_depth": {name: by[name]["auc_within_depth"] for name in by},
        "spearman_screen": by[SCREEN_READOUT]["spearman"],
        "spearman_reference": by["screen (reference)"]["spearman"],
        "spearman_crossing": by["screen (crossing)"]["spearman"],
        "spearman_mean_field": by["mean field 6 xi_c"]["spearman"],
        "trainable_fraction": float((accuracy > TRAINABLE_ACCURACY).mean()),
        "shallow_accuracy": float(np.median(accuracy[:, 0])),
        "screen_flops": screen_flops,
        "train_flops": train_flops,
        "seconds": {"train": train_seconds, "screen": screen_seconds, "proxies": proxy_seconds},
    }
    cells = [
        {
            "dataset": dataset,
            "sigma_w2": s,
            "depth": depth,
            "seed": grid.first_seed + k,
            "test_accuracy": float(accuracy[i, j, k]),
            **{name: float(scores[name][i, j, k]) for name in scores},
        }
        for i, s in enumerate(grid.sigma_w2)
        for j, depth in enumerate(grid.depths)
        for k in range(grid.seeds)
    ]
    cascades = [
        {
            "dataset": dataset,
            "sigma_w2": s,
            "seed": grid.first_seed + k,
            "decay_depth": r.decay_depth,
            "reference_depth": r.reference_depth,
            "crossing_depth": r.crossing_depth,
            "curve": [round(v, 5) for v in r.curve],
            "flops": r.flops,
            "seconds": r.seconds,
        }
        for s, row in zip(grid.sigma_w2, results, strict=True)
        for k, r in enumerate(row)
    ]
    panel = {
        "accuracy": accuracy,
        "predicted": {
            "decay": np.array([[r.decay_depth for r in row] for row in results]),
            "reference": np.array([[r.reference_depth for r in row] for row in results]),
            "crossing": np.array([[r.crossing_depth for r in row] for row in results]),
        },
        "auc_screen": summary["auc_screen"],
        "auc_mean_field": summary["auc_mean_field"],
    }
    return {
        "rows": rows,
        "per_sigma": per_sigma,
        "cells": cells,
        "cascades": cascades,
        "summary": summary,
        "panel": panel,
    }


def main() -> None:
    cli = _common.parser(NAME, __doc__)
    cli.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed, first-seed + 1, ...: a fresh draw of networks and ground truth",
    )
    args = cli.parse_args()
    _common.setup()
    start = time.perf_counter()
    grid = QUICK if args.quick else FULL
    if args.seeds:
        grid = Grid(**{**grid.__dict__, "seeds": args.seeds})
    if args.first_seed:
        grid = Grid(**{**grid.__dict__, "first_seed": args.first_seed})
    rng = np.random.default_rng(0)
    digits = datasets.digits()
    gap = check_ensemble_matches_trainer(digits)
    outcome = {}
    for dataset in ("digits", "mnist"):
        data = digits if dataset == "digits" else load(dataset, args, grid)
        outcome[dataset] = run_dataset(dataset, data, grid, rng)
        print(f"{dataset}: done after {time.perf_counter() - start:.0f} s", flush=True)

    rows = [row for o in outcome.values() for row in o["rows"]]
    per_sigma = [row for o in outcome.values() for row in o["per_sigma"]]
    print(
        _common.markdown_table(
            rows,
            [
                "dataset",
                "readout",
                "auc",
                "auc_lo",
                "auc_hi",
                "auc_within_depth",
                "spearman",
                "spearman_lo",
                "spearman_hi",
            ],
        )
    )
    print()
    print(
        _common.markdown_table(
            per_sigma,
            [
                "dataset",
                "sigma_w2",
                "deepest_trained",
                "decay_depth",
                "reference_depth",
                "crossing_depth",
                "mean_field_depth",
                "decay_false_trainable",
                "decay_false_untrainable",
                "reference_false_trainable",
                "reference_false_untrainable",
                "crossing_false_trainable",
                "crossing_false_untrainable",
                "mean_field_false_trainable",
                "mean_field_false_untrainable",
            ],
        )
    )
    summary = {dataset: o["summary"] for dataset, o in outcome.items()}
    summary["seconds"] = time.perf_counter() - start
    print()
    for dataset in ("digits", "mnist"):
        print(f"{dataset}: " + ", ".join(f"{k}={v}" for k, v in summary[dataset].items()))
    config = {
        "sigma_w2": list(grid.sigma_w2),
        "sigma_b2": SIGMA_B2,
        "depths": list(grid.depths),
        "screen_depth": grid.screen_depth,
        "seeds": grid.seeds,
        "first_seed": grid.first_seed,
        "train": grid.train.to_dict(),
        "trainable_accuracy": TRAINABLE_ACCURACY,
        "screen_budgets": {k: v.__dict__ for k, v in grid.budgets.items()},
        "widths": {"digits": digits.input_dim, "mnist": MNIST_WIDTH},
        "mnist": f"random_projection(width={MNIST_WIDTH}, seed=0) of 784 pixels / 255",
        "mnist_rows": grid.mnist_rows,
        "bootstrap": f"{grid.bootstrap} resamples of the (sigma_w2, seed) columns, 95% percentile",
        "ensemble_vs_trainer_max_logit_gap": gap,
        "threads": torch.get_num_threads(),
    }
    all_rows = (
        [{"table": "auc", **r} for r in rows]
        + [{"table": "per_sigma", **r} for r in per_sigma]
        + [{"table": "cascade", **r} for o in outcome.values() for r in o["cascades"]]
        + [{"table": "cell", **r} for o in outcome.values() for r in o["cells"]]
    )
    out = _common.write_result(NAME, args.out, config, all_rows, summary)
    plot({d: o["panel"] for d, o in outcome.items()}, grid, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')} in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
