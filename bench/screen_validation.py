"""Does the cascade screen predict which networks train? Held against real training.

Candidates: MLPs, ``W ~ N(0, sigma_w^2 / fan_in)``, ``b ~ N(0, 0.05)``, hidden layers as wide
as the input, on a grid of ``SIGMA_W2`` by ``DEPTHS``. Rows (:data:`ROWS`): ``digits`` and
``mnist``, tanh (the paper's activation) on scikit-learn's digits (64 features) and on MNIST
randomly projected to ``MNIST_WIDTH`` features (:func:`growth_core.screen.random_projection`;
width 784 on one thread would take hours for the ground truth alone); ``digits_relu``, ReLU (the
activation the configs train) on digits, drawn with the same weights as the ``digits`` row.

Ground truth: every (sigma_w^2, depth, seed) network is trained with ``TRAIN`` (Adam, lr 1e-3,
batch 128, ``TRAIN.steps`` steps, the same batches for all); it is *trainable* when its test
accuracy exceeds ``TRAINABLE_ACCURACY`` (chance is 0.1, a shallow net reaches about 0.95). The
networks of one depth train together as one stacked ensemble (one batched product per layer,
one Adam over the stacked weights), which is exactly each network's own training, checked
against :class:`~growth_core.train.Trainer` at start-up (for every activation run).

For ReLU the label means the same (trains to above 0.5 in 500 Adam steps), but the phases
differ: below ``sigma_w^2 = 2`` the signal's variance settles and inputs grow alike with depth
(the ordered phase, ``xi_c = -1 / log(sigma_w^2 / 2)``); above it every layer multiplies the
variance by ``sigma_w^2 / 2`` (exploding forward, no chaotic phase with a finite ``q*``); 2 is
He's initialization and ReLU's critical point. The cascade's decoders stay tanh (the screen's
own), with the output scale fitted to the ReLU representations they reconstruct.

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
- ``mean field``: ``log(6 xi_c / L)`` (Schoenholz et al. 2017) for the row's activation, where
  ``xi_c`` exists (:func:`six_xi_c`); elsewhere (ReLU at ``sigma_w^2 >= 2``, where ``q*``
  diverges) the cell has no mean-field score: blank in the tables, ``null`` in the JSON, and
  ``auc_mean_field`` is over the cells that have one (``mean_field_cells``: their share;
  ``auc_screen_where_mean_field``: the screen on the same cells);
- the zero-cost proxies of :mod:`growth_core.screen.proxies` on the depth-``L`` network.

Depth readouts are floored at one layer before the log. Spearman: each depth predictor against
the deepest trained depth, over the (sigma_w^2, seed) columns. Intervals: 95% percentile
bootstrap over the (sigma_w^2, seed) columns, each column keeping all its depths (one cascade
gives them all). Cost ratio: the screen's FLOPs (every cascade) over the ground truth's (every
training step of every cell); both are fixed by the budgets below, chosen so the screen costs
under 5% of the training it stands in for.

``--rows digits_relu`` runs some rows; the others are kept from the results file (``--out``),
which must have been made on the same grid, and the plot is redrawn with every row. The
bootstrap draws from one generator seeded 0, row after row in :data:`ROWS` order among the rows
run. ``summary["seconds"]`` adds up the runs that wrote the file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

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
from growth_core.nets import MLP, activation_fn
from growth_core.screen import (
    MEAN_FIELD_ACTIVATIONS,
    Candidate,
    ScreenBudget,
    proxy_columns,
    q_star,
    random_projection,
    screen,
    trainable_depth,
)
from growth_core.train import TrainConfig, Trainer

NAME = "screen_validation"


@dataclass(frozen=True)
class Row:
    """One row of the results: networks with ``activation`` on ``dataset``."""

    dataset: str  # "digits" or "mnist": the data, its width and its screen budget
    activation: str


#: The rows, by the name the JSON, the tables and ``--rows`` use (the tables' ``dataset`` column).
ROWS = {
    "digits": Row("digits", "tanh"),
    "mnist": Row("mnist", "tanh"),
    "digits_relu": Row("digits", "relu"),
}
#: Schoenholz et al.'s and the reference's bias variance; the critical sigma_w^2 is about 1.76
#: for tanh, 2 for ReLU.
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
MEAN_FIELD = "mean field 6 xi_c"
#: The readouts that predict a depth (their score is log(depth / L)).
DEPTH_READOUTS = ("screen (decay)", "screen (reference)", "screen (crossing)", MEAN_FIELD)
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
    """MLPs of one architecture trained as one: layer ``l`` of every member is one stacked
    ``(members, fan_in, fan_out)`` weight. The loss is the sum of the members' mean
    cross-entropies, so each member gets exactly its own gradient, and Adam, element-wise,
    steps each as its own optimizer would."""

    def __init__(self, nets: list[MLP]) -> None:
        super().__init__()
        self.act = activation_fn(nets[0].spec.activation)
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
        h = self.act(torch.matmul(x, self.weights[0]).add_(self.biases[0]))
        for weight, bias in zip(self.weights[1:-1], self.biases[1:-1], strict=True):
            h = self.act(torch.baddbmm(bias, h, weight))
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


def check_ensemble_matches_trainer(data: datasets.Dataset, activation: str) -> float:
    """The largest gap in test logits between :class:`Trainer` and the ensemble, two nets with
    ``activation``, 30 steps; fails loudly above 1e-3."""
    config = TrainConfig(steps=30, lr=1e-3, optimizer="adam", batch_size=128, seed=0)
    candidates = [_candidate(s, 3, 1, activation) for s in (1, 3)]
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
        raise RuntimeError(
            f"the {activation} ensemble departs from Trainer by {gap:g} in the test logits"
        )
    return gap


def ground_truth(data: datasets.Dataset, grid: Grid, activation: str) -> tuple[np.ndarray, int]:
    """Test accuracy of every cell, ``(sigma_w2, depth, seed)``, and the training FLOPs."""
    accuracy = np.zeros((len(grid.sigma_w2), len(grid.depths), grid.seeds))
    flops = 0
    for j, depth in enumerate(grid.depths):
        cells = [(i, k) for i in range(len(grid.sigma_w2)) for k in range(grid.seeds)]
        nets = [
            _candidate(grid.sigma_w2[i], depth, grid.first_seed + k, activation).network(data)
            for i, k in cells
        ]
        model = Ensemble(nets)
        fit_ensemble(model, data, grid.train)
        for (i, k), acc in zip(cells, test_accuracy(model, data), strict=True):
            accuracy[i, j, k] = acc
        flops += (
            grid.train.steps * train_step_flops(nets[0].spec, grid.train.batch_size) * len(nets)
        )
    return accuracy, flops


def _candidate(sigma_w2: float, depth: int, seed: int, activation: str) -> Candidate:
    initializer = Initializer("gaussian", sigma_w2, SIGMA_B2)
    return Candidate(initializer, depth=depth, seed=seed, activation=activation)


#: ``(sigma_w2, depth, seed) -> Candidate``: the network of one cell (the row's family).
CandidateOf = Callable[[float, int, int], Candidate]


# -- the screen, mean field and proxies ---------------------------------------------------------


def screens(
    data: datasets.Dataset, grid: Grid, budget: ScreenBudget, candidate_of: CandidateOf
) -> list[list]:
    """One cascade of depth ``grid.screen_depth`` per (sigma_w2, seed): ``[i][k]``."""
    out = []
    for sigma_w2 in grid.sigma_w2:
        row = []
        for k in range(grid.seeds):
            candidate = candidate_of(sigma_w2, grid.screen_depth, grid.first_seed + k)
            spec = candidate.spec(data.input_dim, data.num_classes)
            row.append(screen(spec, candidate.initializer, data, budget, seed=candidate.seed))
        out.append(row)
    return out


def proxy_scores(
    data: datasets.Dataset, grid: Grid, candidate_of: CandidateOf
) -> dict[str, np.ndarray]:
    """Every proxy on every cell's network, ``(sigma_w2, depth, seed)`` each."""
    columns = proxy_columns()
    out = {name: np.zeros((len(grid.sigma_w2), len(grid.depths), grid.seeds)) for name in columns}
    for i, sigma_w2 in enumerate(grid.sigma_w2):
        for j, depth in enumerate(grid.depths):
            for k in range(grid.seeds):
                candidate = candidate_of(sigma_w2, depth, grid.first_seed + k)
                for name, column in columns.items():
                    out[name][i, j, k] = column(candidate, data)
    return out


def six_xi_c(sigma_w2: float, activation: str) -> float:
    """Schoenholz et al.'s trainable depth ``6 xi_c`` at ``(sigma_w2, SIGMA_B2)``; NaN where it
    does not exist: an activation without a mean field here, or ``q*`` not in ``(0, inf)``
    (ReLU at ``sigma_w2 >= 2``, where the variance grows without bound)."""
    if activation not in MEAN_FIELD_ACTIVATIONS:
        return math.nan
    if not 0.0 < float(q_star(sigma_w2, SIGMA_B2, activation)) < math.inf:
        return math.nan
    return float(trainable_depth(sigma_w2, SIGMA_B2, activation))


def readouts(results: list[list], grid: Grid, activation: str) -> dict[str, np.ndarray]:
    """The screen's and mean field's scores of every cell (higher: more trainable); mean field's
    is NaN where it has none (:func:`six_xi_c`)."""
    shape = (len(grid.sigma_w2), len(grid.depths), grid.seeds)
    depths = np.array(grid.depths, dtype=float)[None, :, None]
    decay = np.array([[r.decay_depth for r in row] for row in results])
    predicted = np.array([[r.reference_depth for r in row] for row in results], dtype=float)
    crossing = np.array([[r.crossing_depth for r in row] for row in results])
    at_depth = np.array(
        [[[r.curve[depth - 1] for r in row] for depth in grid.depths] for row in results]
    )
    six_xi = np.array([six_xi_c(s, activation) for s in grid.sigma_w2])
    return {
        "screen (decay)": np.log(np.maximum(decay[:, None, :], 1.0) / depths),
        "screen (reference)": np.log(np.maximum(predicted[:, None, :], 1.0) / depths),
        "screen (crossing)": np.log(np.maximum(crossing[:, None, :], 1.0) / depths),
        "normalized KL at L": -at_depth,
        MEAN_FIELD: np.broadcast_to(np.log(six_xi[:, None, None] / depths), shape),
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


def on_defined(statistic):
    """``statistic`` over the columns where the score (its first array) is defined, not NaN (a
    readout's NaN means "no value", as mean field's for ReLU at sigma_w^2 >= 2); NaN if none.
    Bootstrapping it resamples every column and keeps the defined ones drawn."""

    def restricted(score: np.ndarray, *others: np.ndarray) -> float:
        keep = ~np.isnan(score.reshape(len(score), -1)).any(axis=1)
        if not keep.any():
            return math.nan
        return statistic(score[keep], *(a[keep] for a in others))

    return restricted


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
        # Mean field's NaN columns have no value; every other score is defined everywhere
        # (a proxy's NaN, if any, is ranked lowest by auc()).
        area, within, rank = (auc, auc_within_depth, spearman)
        if name == MEAN_FIELD:
            area, within, rank = on_defined(auc), on_defined(auc_within_depth), on_defined(spearman)
        row = {"dataset": dataset, "readout": name, "auc": area(s, trainable)}
        row["auc_lo"], row["auc_hi"] = interval(area, (s, trainable), resamples)
        row["auc_within_depth"] = within(s, trainable)
        if name in DEPTH_READOUTS:  # log(depth / L): the predicted depth is exp(score) * L
            predicted = np.exp(s[:, 0]) * depths[0]
            row["spearman"] = rank(predicted, deepest)
            row["spearman_lo"], row["spearman_hi"] = interval(rank, (predicted, deepest), resamples)
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
            if np.isnan(s).any():  # no value here (mean field): blank in the table
                continue
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


def panels(result: dict) -> dict[str, dict]:
    """Per row of a results JSON, in :data:`ROWS` order: test accuracy ``(sigma, depth, seed)``,
    each readout's cascade depths ``(sigma, seed)`` and the two AUCs of the title."""
    config = result["config"]
    sigma, depths, first = config["sigma_w2"], config["depths"], config["first_seed"]
    out = {}
    for name in (n for n in ROWS if n in result["summary"]):
        accuracy = np.zeros((len(sigma), len(depths), config["seeds"]))
        predicted = {key: np.zeros((len(sigma), config["seeds"])) for key in READOUT_KEYS[:3]}
        for r in result["rows"]:
            if r["dataset"] != name or r["table"] not in ("cell", "cascade"):
                continue
            i, k = sigma.index(r["sigma_w2"]), r["seed"] - first
            if r["table"] == "cell":
                accuracy[i, depths.index(r["depth"]), k] = r["test_accuracy"]
            else:
                for key, depth in predicted.items():
                    depth[i, k] = r[f"{key}_depth"]
        summary = result["summary"][name]
        out[name] = {
            "accuracy": accuracy,
            "predicted": predicted,
            "auc_screen": summary["auc_screen"],
            "auc_mean_field": summary["auc_mean_field"],
        }
    return out


def plot(result: dict, path: Path) -> Path:
    """One phase diagram per row of ``result`` (a results JSON): the share of seeds trained per
    cell, the cascades' predicted depths, and mean field's ``6 xi_c`` where it exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from growth_core.io import atomic_write

    config = result["config"]
    sigma = np.array(config["sigma_w2"])
    depths = np.array(config["depths"], dtype=float)
    screen_depth = config["screen_depth"]
    fine = np.linspace(sigma[0], sigma[-1], 200)
    drawn = panels(result)
    fig, axes = plt.subplots(1, len(drawn), figsize=(6.2 * len(drawn), 4.8), squeeze=False)
    for ax, (name, panel) in zip(axes[0], drawn.items(), strict=True):
        activation = ROWS[name].activation
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
        six_xi = np.array([six_xi_c(s, activation) for s in fine])  # NaN: not drawn
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
        ax.axhline(screen_depth, color="gray", lw=0.8, ls=":", label="cascade depth")
        ax.set_yscale("log")
        ax.set_ylim(depths[0] / 1.3, screen_depth * 2)
        ax.set_yticks(depths, [str(int(d)) for d in depths], minor=False)
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("$\\sigma_w^2$  ($\\sigma_b^2$ = 0.05)")
        ax.set_ylabel("depth L (hidden layers)")
        ax.set_title(
            f"{ROWS[name].dataset}, {activation}: AUC screen {_figure(panel['auc_screen'])}, "
            f"mean field {_figure(panel['auc_mean_field'])}",
            fontsize=10,
        )
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
        fig.colorbar(
            mesh, ax=ax, label=f"fraction of seeds with test accuracy > {TRAINABLE_ACCURACY}"
        )
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def _figure(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


# -- the run -------------------------------------------------------------------------------------


def load(dataset: str, args, grid: Grid) -> datasets.Dataset:
    if dataset == "digits":
        return datasets.digits()
    rows = grid.mnist_rows
    mnist = _common.mnist(args.data_dir, rows, None if rows is None else rows // 5)
    return random_projection(mnist, MNIST_WIDTH, seed=0)


def run_row(
    name: str,
    data: datasets.Dataset,
    grid: Grid,
    rng,
    *,
    activation: str | None = None,
    budget: ScreenBudget | None = None,
    candidate_of: CandidateOf | None = None,
    truth: Callable[[datasets.Dataset, Grid], tuple[np.ndarray, int]] | None = None,
) -> dict:
    """Ground truth, screen, proxies and their statistics for row ``name``: by default the MLP
    row of :data:`ROWS`; another family passes its activation, screen budget, cells' candidates
    and ground truth (``bench/conv_screen_validation.py``)."""
    if activation is None:
        activation = ROWS[name].activation
        budget = grid.budgets[ROWS[name].dataset]
        candidate_of = partial(_candidate, activation=activation)
        truth = partial(ground_truth, activation=activation)
    clock = time.perf_counter()
    accuracy, train_flops = truth(data, grid)
    train_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    results = screens(data, grid, budget, candidate_of)
    screen_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    proxies = proxy_scores(data, grid, candidate_of)
    proxy_seconds = time.perf_counter() - clock

    scores = readouts(results, grid, activation) | proxies
    rows = analyse(name, scores, accuracy, grid, rng)
    per_sigma = where_wrong(name, scores, accuracy, grid)
    by = {r["readout"]: r for r in rows}
    screen_flops = sum(r.flops for row in results for r in row)
    best_proxy = max(PROXIES, key=lambda proxy: by[proxy]["auc"])
    has_mean_field = ~np.isnan(scores[MEAN_FIELD])  # (sigma, depth, seed)
    trainable = accuracy > TRAINABLE_ACCURACY
    summary = {
        "auc_screen": by[SCREEN_READOUT]["auc"],
        "auc_mean_field": by[MEAN_FIELD]["auc"],
        "auc_best_proxy": by[best_proxy]["auc"],
        "cost_ratio": screen_flops / train_flops,
        "auc_screen_ci": [by[SCREEN_READOUT]["auc_lo"], by[SCREEN_READOUT]["auc_hi"]],
        "auc_screen_reference": by["screen (reference)"]["auc"],
        "auc_screen_crossing": by["screen (crossing)"]["auc"],
        "auc_normalized_kl": by["normalized KL at L"]["auc"],
        "best_proxy": best_proxy,
        "auc_best_proxy_either_sign": max(max(by[p]["auc"], 1 - by[p]["auc"]) for p in PROXIES),
        "auc_within_depth": {readout: by[readout]["auc_within_depth"] for readout in by},
        "spearman_screen": by[SCREEN_READOUT]["spearman"],
        "spearman_reference": by["screen (reference)"]["spearman"],
        "spearman_crossing": by["screen (crossing)"]["spearman"],
        "spearman_mean_field": by[MEAN_FIELD]["spearman"],
        "mean_field_cells": float(has_mean_field.mean()),
        "auc_screen_where_mean_field": (
            auc(scores[SCREEN_READOUT][has_mean_field], trainable[has_mean_field])
            if has_mean_field.any()
            else math.nan
        ),
        "trainable_fraction": float(trainable.mean()),
        "shallow_accuracy": float(np.median(accuracy[:, 0])),
        "screen_flops": screen_flops,
        "train_flops": train_flops,
        "seconds": {"train": train_seconds, "screen": screen_seconds, "proxies": proxy_seconds},
    }
    cells = [
        {
            "dataset": name,
            "sigma_w2": s,
            "depth": depth,
            "seed": grid.first_seed + k,
            "test_accuracy": float(accuracy[i, j, k]),
            **{readout: float(scores[readout][i, j, k]) for readout in scores},
        }
        for i, s in enumerate(grid.sigma_w2)
        for j, depth in enumerate(grid.depths)
        for k in range(grid.seeds)
    ]
    cascades = [
        {
            "dataset": name,
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
    return {
        "rows": rows,
        "per_sigma": per_sigma,
        "cells": cells,
        "cascades": cascades,
        "summary": summary,
    }


# -- the results file ----------------------------------------------------------------------------

#: The JSON's tables, in the order they are written.
TABLES = ("auc", "per_sigma", "cascade", "cell")
#: The config entries that fix what a row measures: rows kept from a results file share them.
GRID_KEYS = (
    "sigma_w2",
    "sigma_b2",
    "depths",
    "screen_depth",
    "seeds",
    "first_seed",
    "train",
    "trainable_accuracy",
    "screen_budgets",
    "widths",
    "mnist",
    "mnist_rows",
    "bootstrap",
)


def with_other_rows(path: Path, config: dict, rows: list[dict], summary: dict):
    """This run's ``(config, rows, summary)`` with the rows of the results file ``path`` that the
    run did not make (none if it made every row or ``path`` does not exist). Refuses a file made
    on another grid (:data:`GRID_KEYS`)."""
    ran = [name for name in ROWS if name in summary]
    if len(ran) == len(ROWS) or not path.exists():
        return config, rows, summary
    old = json.loads(path.read_text())
    differ = [key for key in GRID_KEYS if not _same(key, old["config"].get(key), config[key])]
    if differ:
        raise SystemExit(
            f"{path} was made on another grid ({', '.join(differ)} differ): "
            "run every row, or write elsewhere with --out"
        )
    kept = [name for name in ROWS if name in old["summary"] and name not in ran]
    names = [name for name in ROWS if name in ran or name in kept]
    config = {
        **old["config"],
        **config,
        "activations": {name: ROWS[name].activation for name in names},
        "ensemble_vs_trainer_max_logit_gap": max(
            old["config"]["ensemble_vs_trainer_max_logit_gap"],
            config["ensemble_vs_trainer_max_logit_gap"],
        ),
    }
    rows = [
        r
        for table in TABLES
        for name in names
        for r in (rows if name in ran else old["rows"])
        if r["table"] == table and r["dataset"] == name
    ]
    summary = {
        **{name: (summary if name in ran else old["summary"])[name] for name in names},
        "seconds": old["summary"]["seconds"] + summary["seconds"],
    }
    return config, rows, summary


def _same(key: str, old, new) -> bool:
    """Whether a results file's config entry ``old`` fixes what this run's ``new`` does. The
    training config on the fields both record: TrainConfig's unused momentum, weight decay and
    schedule fields were removed after the tanh rows were made, and ``epochs`` added."""
    if key == "train" and isinstance(old, dict):
        shared = old.keys() & new.keys()
        return {k: old[k] for k in shared} == {k: new[k] for k in shared}
    return old == new


def _nan_to_null(value):
    """``value`` with every float NaN (no value: mean field where it has none) as ``None``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_null(v) for v in value]
    return value


def main() -> None:
    cli = _common.parser(NAME, __doc__)
    cli.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed, first-seed + 1, ...: a fresh draw of networks and ground truth",
    )
    cli.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated, of {', '.join(ROWS)} (default: all); the others are kept from "
        "the results file",
    )
    cli.add_argument(
        "--replot", type=Path, default=None, help="only draw the plot of a results JSON"
    )
    args = cli.parse_args()
    if args.replot:
        print("wrote", plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png")))
        return
    names = [name for name in args.rows.split(",") if name]
    unknown = [name for name in names if name not in ROWS]
    if unknown or not names:
        cli.error(f"--rows: expected names among {', '.join(ROWS)}, got {args.rows!r}")
    names = [name for name in ROWS if name in names]
    _common.setup()
    start = time.perf_counter()
    grid = QUICK if args.quick else FULL
    if args.seeds:
        grid = Grid(**{**grid.__dict__, "seeds": args.seeds})
    if args.first_seed:
        grid = Grid(**{**grid.__dict__, "first_seed": args.first_seed})
    rng = np.random.default_rng(0)
    digits = datasets.digits()
    activations = list(dict.fromkeys(ROWS[name].activation for name in names))
    gap = max(check_ensemble_matches_trainer(digits, activation) for activation in activations)
    loaded = {"digits": digits}
    outcome = {}
    for name in names:
        dataset = ROWS[name].dataset
        if dataset not in loaded:
            loaded[dataset] = load(dataset, args, grid)
        outcome[name] = run_row(name, loaded[dataset], grid, rng)
        print(f"{name}: done after {time.perf_counter() - start:.0f} s", flush=True)
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
    summary = {name: o["summary"] for name, o in outcome.items()}
    summary["seconds"] = time.perf_counter() - start
    print()
    for name in outcome:
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in summary[name].items()))
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
        "activations": {name: ROWS[name].activation for name in outcome},
        "ensemble_vs_trainer_max_logit_gap": gap,  # the largest over the activations checked
        "threads": torch.get_num_threads(),
    }
    all_rows = (
        [{"table": "auc", **r} for r in rows]
        + [{"table": "per_sigma", **r} for r in per_sigma]
        + [{"table": "cascade", **r} for o in outcome.values() for r in o["cascades"]]
        + [{"table": "cell", **r} for o in outcome.values() for r in o["cells"]]
    )
    seconds = summary["seconds"]
    path = args.out or _common.RESULTS / f"{NAME}.json"
    config, all_rows, summary = with_other_rows(path, config, all_rows, summary)
    out = _common.write_result(
        NAME, path, _nan_to_null(config), _nan_to_null(all_rows), _nan_to_null(summary)
    )
    plot(json.loads(out.read_text()), out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
