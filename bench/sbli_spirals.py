"""Sensitivity-based layer insertion on the spirals: the experiment of Herberg et al. (2023).

Full-batch gradient descent, 1850 iterations, one insertion at iteration 450, 30 seeds (each
seed one initialization, shared by every row, so comparisons are paired):

- feedforward 2-[5]-2 ReLU, lr 0.2 -> two hidden layers;
- tanh residual net of width 3, one block -> two blocks, lr 0.1.

Rows: the small net; the big net of exactly the final architecture; SensLI at the
max-sensitivity position (the method); the min-sensitivity and random-position controls; and,
beyond the paper, SensLI with the insertion time chosen by the loss-plateau criterion.
Every run trains all 1850 iterations (the reference stops runs at 0% test error).

``--data-dir DIR``: MNIST from DIR, a 784-[32]-10 ReLU net, mini-batches, insertion by the
criterion; the same rows.
"""

from __future__ import annotations

import _common
import torch

from growth_core import data as datasets
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, OnPlateau, sensitivity
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, Trainer

NAME = "sbli_spirals"
# The paper's protocol (Herberg et al. 2023, Sec. 5.1 and the reference scripts).
ITERATIONS = 1850
INSERT_AT = 450
SEEDS = 30
PLATEAU = OnPlateau(window=50, threshold=0.02)
"""Criterion row: insert when the mean loss of the last 50 steps fell by less than 2%."""
MNIST_SCORE_BATCHES = 64
"""MNIST: the scoring pass reads 64 mini-batches (8192 samples), not all 469: a full pass would
cost a third of the training run's FLOPs."""

KINDS = {
    "fnn": dict(
        spec=ArchitectureSpec(2, 2, (5,), "relu"),
        lr=0.2,
    ),
    "resnet": dict(
        spec=ArchitectureSpec(2, 2, (3,), "tanh", residual=True, width=3),
        lr=0.1,
    ),
}


def run(spec, data, config, seed, policy=None):
    """One training run; its final loss is the loss on the whole training set after the last
    step (for mini-batches, not one noisy batch)."""
    net = Initializer("default").apply(build(spec), seed=seed)
    trainer = Trainer(net, data, config, policy=policy)
    result = trainer.fit()
    final = result.final
    return {
        "loss": trainer.evaluate("train")["train_full_loss"],
        "test_error": 1.0 - final["test_accuracy"],
        "flops": result.flops,
        "growth_flops": result.growth_flops,
        "insert_step": result.events[0].step if result.events else None,
        "position": result.events[0].position if result.events else None,
        "curve": [(row["flops"], row["loss"]) for row in result.history if "loss" in row],
    }


def insertion(trigger, seed=0, **depth):
    """SensLI alone: the growth policy with depth only."""
    return DepthWidthPolicy(trigger, depth=DepthGrowth(**depth), seed=seed)


def row_policies(spec, trigger, seed, score_batches=None):
    """The method and, where there is more than one candidate position, its two controls."""
    common = {"max_depth": spec.depth + 1, "score_batches": score_batches}
    rows = {"SensLI (max)": insertion(trigger, **common)}
    if len(sensitivity.positions(spec)) > 1:
        rows["min-sensitivity"] = insertion(trigger, selection="min", **common)
        rows["random position"] = insertion(trigger, seed, selection="random", **common)
    return rows


def experiment(
    kind, spec, lr, data, steps, seeds, batch_size=None, fixed_step=True, score_batches=None
):
    config = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seed=0)
    big_spec = sensitivity.inserted_spec(spec, 0)
    runs: dict[str, list[dict]] = {}
    for seed in range(seeds):
        one = {
            "small fixed": run(spec, data, config, seed),
            "big fixed": run(big_spec, data, config, seed),
        }
        trigger = AtSteps((INSERT_AT * steps // ITERATIONS,)) if fixed_step else PLATEAU
        for name, policy in row_policies(spec, trigger, seed, score_batches).items():
            one[name] = run(spec, data, config, seed, policy)
        if fixed_step:
            one["SensLI (criterion)"] = run(
                spec, data, config, seed, insertion(PLATEAU, max_depth=spec.depth + 1)
            )
        for name, r in one.items():
            runs.setdefault(name, []).append(r)
    return runs


def rows_and_summary(kind, runs):
    rows = []
    for name, rs in runs.items():
        loss_m, loss_s = _common.mean_std([r["loss"] for r in rs])
        err_m, _ = _common.mean_std([r["test_error"] for r in rs])
        steps = [r["insert_step"] for r in rs if r["insert_step"] is not None]
        rows.append(
            {
                "net": kind,
                "row": name,
                "final_loss": loss_m,
                "final_loss_std": loss_s,
                "test_error": err_m,
                "flops": _common.mean_std([r["flops"] for r in rs])[0],
                "scoring_flops": _common.mean_std([r["growth_flops"] for r in rs])[0],
                "insert_step": _common.mean_std(steps)[0] if steps else None,
                "inserted": f"{len(steps)}/{len(rs)}",
            }
        )
    by = {r["row"]: r for r in rows}
    sens, small, big = runs["SensLI (max)"], runs["small fixed"], runs["big fixed"]
    summary = {
        "loss_ratio_vs_small": by["SensLI (max)"]["final_loss"] / by["small fixed"]["final_loss"],
        "beats_small_fraction": sum(a["loss"] < b["loss"] for a, b in zip(sens, small)) / len(sens),
        "loss_ratio_vs_big": by["SensLI (max)"]["final_loss"] / by["big fixed"]["final_loss"],
        "flops_ratio_vs_big": by["SensLI (max)"]["flops"] / by["big fixed"]["flops"],
    }
    if "SensLI (criterion)" in by:
        summary["criterion_loss_ratio_vs_big"] = (
            by["SensLI (criterion)"]["final_loss"] / by["big fixed"]["final_loss"]
        )
    summary["beats_big_fraction"] = sum(a["loss"] < b["loss"] for a, b in zip(sens, big)) / len(
        sens
    )
    return rows, summary


def max_beats_min_one_step(data, seeds, steps_before):
    """Two hidden layers of width 4 (two candidates): after ``steps_before`` steps, does the
    max-sensitivity insertion lower the loss more than the min one, one GD step later?"""
    spec = ArchitectureSpec(2, 2, (4, 4), "relu")
    config = TrainConfig(steps=steps_before, lr=0.2)
    wins = 0
    for seed in range(seeds):
        net = Initializer("default").apply(build(spec), seed=seed)
        trainer = Trainer(net, data, config)
        trainer.fit()
        sens = sensitivity.sensitivities(trainer.net, [(data.x_train, data.y_train)])
        after = {}
        for how in ("max", "min"):
            grown = sensitivity.insert(trainer.net, sens.select(how))
            branch = Trainer(grown.net, data, TrainConfig(steps=1, lr=0.2))
            branch.fit()
            with torch.no_grad():
                after[how] = torch.nn.functional.cross_entropy(
                    branch.net(data.x_train), data.y_train
                ).item()
        wins += after["max"] < after["min"]
    return wins / seeds


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2))
    for ax, (kind, runs) in zip(axes if len(results) > 1 else [axes], results.items()):
        for name in ("small fixed", "big fixed", "SensLI (max)", "SensLI (criterion)"):
            if name not in runs:
                continue
            curves = [r["curve"] for r in runs[name]]
            n = min(map(len, curves))
            flops = [sum(c[i][0] for c in curves) / len(curves) for i in range(n)]
            loss = [sum(c[i][1] for c in curves) / len(curves) for i in range(n)]
            ax.plot(flops, loss, label=name)
            steps = [r["insert_step"] for r in runs[name] if r["insert_step"]]
            if name == "SensLI (max)" and steps:
                ax.axvline(flops[steps[0] - 1], color="gray", ls="--", lw=0.8)
                ax.annotate("insertion", (flops[steps[0] - 1], max(loss)), fontsize=8)
        ax.set_xlabel("cumulative training FLOPs (incl. scoring pass)")
        ax.set_ylabel("train loss (mean over seeds)")
        ax.set_yscale("log")
        ax.set_title(kind)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from growth_core.io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main() -> None:
    args = _common.parser(NAME, __doc__).parse_args()
    _common.setup()
    seeds = args.seeds or (3 if args.quick else SEEDS)
    steps = 600 if args.quick else ITERATIONS
    results, rows, summary = {}, [], {}
    if args.data_dir:
        data = datasets.load_parquet(
            args.data_dir / "train.parquet", args.data_dir / "test.parquet", scale=255.0
        )
        spec = ArchitectureSpec(784, 10, (32,), "relu")
        mnist_steps = 300 if args.quick else 1500
        runs = experiment(
            "mnist",
            spec,
            0.1,
            data,
            mnist_steps,
            seeds,
            batch_size=128,
            fixed_step=False,
            score_batches=MNIST_SCORE_BATCHES,
        )
        results["mnist"] = runs
        r, s = rows_and_summary("mnist", runs)
        rows += r
        summary["mnist"] = s
        config = {
            "data": "mnist",
            "spec": spec.to_dict(),
            "steps": mnist_steps,
            "lr": 0.1,
            "batch_size": 128,
            "seeds": seeds,
            "plateau": PLATEAU.to_dict(),
            "score_batches": MNIST_SCORE_BATCHES,
        }
    else:
        data = datasets.spirals()
        for kind, setting in KINDS.items():
            runs = experiment(kind, setting["spec"], setting["lr"], data, steps, seeds)
            results[kind] = runs
            r, s = rows_and_summary(kind, runs)
            rows += r
            summary[kind] = s
        summary["max_beats_min_1step"] = max_beats_min_one_step(
            data, seeds, INSERT_AT * steps // ITERATIONS
        )
        config = {
            "data": "spirals",
            "iterations": steps,
            "insert_at": INSERT_AT * steps // ITERATIONS,
            "seeds": seeds,
            "plateau": PLATEAU.to_dict(),
            "kinds": {k: {"spec": v["spec"].to_dict(), "lr": v["lr"]} for k, v in KINDS.items()},
        }
    columns = ["net", "row", "final_loss", "final_loss_std", "test_error", "flops"]
    columns += ["scoring_flops", "insert_step", "inserted"]
    print(_common.markdown_table(rows, columns))
    print()
    for k, v in summary.items():
        print(f"{k}: {v}")
    out = _common.write_result(NAME, args.out, config, rows, summary)
    plot(results, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
