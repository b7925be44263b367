"""Does the conv screen predict which conv nets train? ``bench/screen_validation.py``'s protocol
on MNIST images and convolutional networks.

Candidates: tanh (``--activation relu``: ReLU) conv nets on 1x28x28 MNIST images, ``CHANNELS``
channels per 3x3 convolution: one convolution at 28x28, a 2x2 max pool, one at 14x14, a pool,
then the rest at 7x7; global average pooling and a linear head. The depth ``L`` counts
convolutions (``L >= 3``). Weights ``W ~ N(0, sigma_w^2 / fan_in)`` with ``fan_in = c_in * 9``,
biases ``N(0, 0.05)``, on a grid of ``SIGMA_W2`` by ``DEPTHS``.

Ground truth: every (sigma_w^2, depth, seed) network is trained by
:class:`~growth_core.train.Trainer` with ``TRAIN`` on the first ``MNIST_ROWS`` training images;
it is *trainable* when its accuracy on the first ``MNIST_ROWS // 6`` test images exceeds
``TRAINABLE_ACCURACY`` (chance is 0.1).

The screen (:mod:`growth_core.screen.conv_cascade`): for each (sigma_w^2, seed) one cascade of
transposed-convolution decoders on a ``SCREEN_DEPTH``-convolution network, read at every depth
``L``. The network of depth ``L`` drawn with a seed is the first ``L`` convolutions of the deep
one (the initializer draws module by module, the head last), so the cascade sees exactly the
layers each ground-truth network starts from.

Scores, statistics and keys are ``screen_validation.py``'s (its :func:`run_row`): ``auc_screen``
(the decay readout the pipeline ranks by), the reference and crossing readouts, the normalized
KL at ``L``, the zero-cost proxies (on conv nets: NASWOT's codes over every channel and position,
synaptic flow through the linearized convolutions), and mean field's ``6 xi_c``. Mean field here
is the fully connected theory's: for Gaussian convolutions the variance map and the
spatially averaged correlation map obey the same recursion (Xiao et al. 2018, "Dynamical
Isometry and a Mean Field Theory of CNNs"), so its depth scale ``xi_c`` carries over; what it
does not model (the spatial structure of the correlations, pooling) is what this row tests.
"""

from __future__ import annotations

import time
from functools import partial

import _common
import numpy as np
import screen_validation as sv
import torch

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.flops import train_step_flops
from growth_core.init import Initializer
from growth_core.screen import Candidate, ScreenBudget
from growth_core.train import TrainConfig, Trainer

NAME = "conv_screen_validation"
#: By activation: the row's name (and the results file's suffix).
ROWS = {"tanh": "mnist_cnn", "relu": "mnist_cnn_relu"}
CHANNELS = 8
#: Around tanh's critical point (about 1.76 at sigma_b^2 = 0.05).
SIGMA_W2 = (0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
DEPTHS = (3, 5, 8, 12, 17, 24, 32)
#: A quarter deeper than the deepest depth asked about.
SCREEN_DEPTH = 40
MNIST_ROWS = 12_000
TRAIN = TrainConfig(steps=400, lr=3e-3, optimizer="adam", batch_size=128, seed=0)
BUDGET = ScreenBudget(max_steps=300, batch_size=16, eval_images=100)

FULL = sv.Grid(SIGMA_W2, DEPTHS, SCREEN_DEPTH, 2, TRAIN, {"mnist": BUDGET}, MNIST_ROWS)
QUICK = sv.Grid(
    (0.5, 1.5, 4.0),
    (3, 8, 16),
    20,
    2,
    TrainConfig(steps=60, lr=3e-3, optimizer="adam", batch_size=128, seed=0),
    {"mnist": ScreenBudget(max_steps=60, batch_size=16, eval_images=40)},
    3000,
    bootstrap=100,
)


def template(activation: str) -> ConvSpec:
    """The three convolutions every candidate starts with; deeper ones repeat the last."""
    return ConvSpec((1, 28, 28), 10, ((CHANNELS,),) * 3, downsample="pool", activation=activation)


def candidate_of(sigma_w2: float, depth: int, seed: int, activation: str) -> Candidate:
    initializer = Initializer("gaussian", sigma_w2, sv.SIGMA_B2)
    conv = template(activation)
    return Candidate(initializer, depth=depth, seed=seed, activation=activation, conv=conv)


def ground_truth(data: datasets.Dataset, grid: sv.Grid, activation: str) -> tuple[np.ndarray, int]:
    """Test accuracy of every cell, ``(sigma_w2, depth, seed)``, and the training FLOPs."""
    accuracy = np.zeros((len(grid.sigma_w2), len(grid.depths), grid.seeds))
    flops = 0
    for i, sigma_w2 in enumerate(grid.sigma_w2):
        for j, depth in enumerate(grid.depths):
            for k in range(grid.seeds):
                net = candidate_of(sigma_w2, depth, grid.first_seed + k, activation).network(data)
                Trainer(net, data, grid.train).fit()
                with torch.no_grad():
                    correct = net(data.x_test).argmax(1) == data.y_test
                accuracy[i, j, k] = float(correct.double().mean())
                flops += grid.train.steps * train_step_flops(net.spec, grid.train.batch_size)
    return accuracy, flops


def load(args, grid: sv.Grid) -> datasets.Dataset:
    return _common.mnist(args.data_dir, grid.mnist_rows, grid.mnist_rows // 6)


def main() -> None:
    cli = _common.parser(NAME, __doc__)
    cli.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, ...")
    cli.add_argument(
        "--activation",
        choices=tuple(ROWS),
        default="tanh",
        help="the networks' activation (relu: results in conv_screen_validation_relu.json)",
    )
    args = cli.parse_args()
    activation, row = args.activation, ROWS[args.activation]
    _common.setup()
    start = time.perf_counter()
    grid = QUICK if args.quick else FULL
    if args.seeds:
        grid = sv.Grid(**{**grid.__dict__, "seeds": args.seeds})
    if args.first_seed:
        grid = sv.Grid(**{**grid.__dict__, "first_seed": args.first_seed})
    data = load(args, grid)
    outcome = sv.run_row(
        row,
        data,
        grid,
        np.random.default_rng(0),
        activation=activation,
        budget=grid.budgets["mnist"],
        candidate_of=partial(candidate_of, activation=activation),
        truth=partial(ground_truth, activation=activation),
    )
    columns = ["dataset", "readout", "auc", "auc_lo", "auc_hi", "auc_within_depth", "spearman"]
    print(_common.markdown_table(outcome["rows"], columns))
    print()
    per_sigma = ["dataset", "sigma_w2", "deepest_trained", "decay_depth", "reference_depth"]
    per_sigma += ["crossing_depth", "mean_field_depth"]
    print(_common.markdown_table(outcome["per_sigma"], per_sigma))
    seconds = time.perf_counter() - start
    summary = {row: outcome["summary"], "seconds": seconds}
    print()
    print(f"{row}: " + ", ".join(f"{k}={v}" for k, v in outcome["summary"].items()))
    config = {
        "network": template(activation).describe()
        + f", deepened to L convolutions at {CHANNELS} channels",
        "sigma_w2": list(grid.sigma_w2),
        "sigma_b2": sv.SIGMA_B2,
        "depths": list(grid.depths),
        "screen_depth": grid.screen_depth,
        "seeds": grid.seeds,
        "first_seed": grid.first_seed,
        "train": grid.train.to_dict(),
        "trainable_accuracy": sv.TRAINABLE_ACCURACY,
        "screen_budget": grid.budgets["mnist"].__dict__,
        "mnist_rows": grid.mnist_rows,
        "bootstrap": f"{grid.bootstrap} resamples of the (sigma_w2, seed) columns, 95% percentile",
        "threads": torch.get_num_threads(),
    }
    rows = [
        {"table": table, **r}
        for table, key in (("auc", "rows"), ("per_sigma", "per_sigma"), ("cascade", "cascades"))
        for r in outcome[key]
    ] + [{"table": "cell", **r} for r in outcome["cells"]]
    suffix = "" if activation == "tanh" else f"_{activation}"
    path = args.out or _common.RESULTS / f"{NAME}{suffix}.json"
    out = _common.write_result(
        NAME, path, sv._nan_to_null(config), sv._nan_to_null(rows), sv._nan_to_null(summary)
    )
    print(f"\nwrote {out} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
