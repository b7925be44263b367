"""The product's claim: at the same number of trials, the growth pipeline finds a network as
accurate as a search over fixed architectures, smaller, for less total training compute.

Per dataset and pipeline seed (``search.seed`` and ``screen.seed``), four rows, each the
shipped config (``pipelines/configs/<dataset>.toml``) run by :func:`pipelines.pipeline.
run_pipeline` in a scratch folder with its own MLflow store:

- ``growth``: the pipeline as shipped (screen, growth search, final);
- ``growth, no screen``: every candidate initialization goes to the search;
- ``fixed search``: the same search (trials, epochs, ASHA, Optuna seed, objectives, every
  candidate initialization) over fixed architectures, depth 1-3 and width 16-512
  log-uniform, no growth; then the same final stage;
- ``big fixed``: 2 hidden layers of 256 (Kaiming), the final stage alone, for reference.

Each row: final test accuracy, final parameters, total training FLOPs (screen + every trial +
final, all ranks), wall seconds, and the hypervolume of the search's accuracy-versus-parameters
front (completed trials; reference point: chance accuracy and the big net's parameters).
Summary keys per dataset (``<dataset>.<key>``): ``acc_gap_vs_fixed_search`` (points, growth
minus fixed search), ``params_ratio_vs_fixed_search``, ``flops_ratio_vs_fixed_search``,
``hypervolume_ratio_vs_fixed_search``, ``screen_flops_saved`` (1 - growth's FLOPs over
growth-no-screen's) with ``screen_acc_gap`` beside it. ``--quick``: digits, one seed, 4 trials
of 3 epochs.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import _common
import pyarrow.parquet as pq
from rich.console import Console

from growth_core.flops import parameter_count
from pipelines.config import load_config
from pipelines.pareto import hypervolume
from pipelines.pipeline import init_ray, run_pipeline

NAME = "pipeline_vs_fixed"
CONFIGS = _common.ROOT / "pipelines" / "configs"
BIG = (256, 256)
ROWS = ("growth", "growth, no screen", "fixed search", "big fixed")
QUICK = ["search.trials=4", "search.epochs=3", "final.epochs=3", "search.asha.grace_period=1"]


def overrides(row: str, seed: int, quick: bool) -> tuple[list[str], tuple[str, ...]]:
    """The ``--set`` overrides and the stages of one row."""
    common = [f"search.seed={seed}", f"screen.seed={seed}", *(QUICK if quick else [])]
    if row == "growth":
        return common, ("screen", "search", "final")
    if row == "growth, no screen":
        return common, ("search", "final")
    if row == "fixed search":
        fixed = [
            'search.insertion=["none"]',
            'search.width_strategy=["none"]',
            "search.architecture={depth = [1, 3], width = [16, 512]}",
        ]
        return common + fixed, ("search", "final")
    big = [
        f"model.widths={list(BIG)}",
        'search.insertion=["none"]',
        'search.width_strategy=["none"]',
        'screen.candidates=[{kind = "kaiming"}]',
    ]
    return common + big, ("final",)


@contextlib.contextmanager
def scratch():
    """A folder of its own (runs/, mlflow.db) for one pipeline run."""
    before, uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="gp-bench-") as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        try:
            yield Path(tmp)
        finally:
            os.chdir(before)
            if uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = uri


def one_run(
    dataset: str,
    row: str,
    seed: int,
    quick: bool,
    data_dir: Path | None,
    extra: list[str] | None = None,
) -> dict:
    sets, stages = overrides(row, seed, quick)
    sets += extra or []
    if dataset == "mnist":
        sets.append(f'data.path="{Path(data_dir or _common.DEFAULT_MNIST).resolve()}"')
    cfg = load_config(CONFIGS / f"{dataset}.toml", sets).resolved()
    cfg = cfg.model_copy(update={"name": f"{cfg.name}-{row.replace(', ', '-').replace(' ', '-')}"})
    with scratch():
        started = time.perf_counter()
        summary = run_pipeline(cfg, stages, console=Console(quiet=True))
        seconds = time.perf_counter() - started
        work = Path(summary["workdir"])
        screen_flops = 0
        if (work / "screen.parquet").exists():
            screen_flops = sum(pq.read_table(work / "screen.parquet")["flops"].to_pylist())
        trials = pq.read_table(work / "pareto.parquet").to_pylist() if "search" in stages else []
    final = summary["final"]
    classes = 10
    big_params = parameter_count(cfg.model.spec(*_dims(dataset)).with_widths(BIG))
    done = [(t["val_accuracy"], t["params"]) for t in trials if t["completed"]]
    return {
        "dataset": dataset,
        "row": row,
        "seed": seed,
        "test_accuracy": final["test_accuracy"],
        "params": final["params"],
        "architecture": final["architecture"],
        "growth_events": final["growth_events"],
        "flops": screen_flops + sum(t["flops"] for t in trials) + final["flops"],
        "screen_flops": screen_flops,
        "search_flops": sum(t["flops"] for t in trials),
        "final_flops": final["flops"],
        "seconds": seconds,
        "trials": len(trials),
        "hypervolume": hypervolume(done, (1 / classes, big_params)) if trials else None,
    }


def _dims(dataset: str) -> tuple[int, int]:
    return {"digits": (64, 10), "mnist": (784, 10)}[dataset]


def summarize(runs: list[dict]) -> tuple[list[dict], dict]:
    rows, summary = [], {}
    for dataset in sorted({r["dataset"] for r in runs}):
        by = {}
        for name in ROWS:
            rs = [r for r in runs if r["dataset"] == dataset and r["row"] == name]
            if not rs:
                continue
            means = _common.averaged(
                rs, "test_accuracy", params="params", gflops=("flops", 1e9), seconds="seconds"
            )
            hv = [r["hypervolume"] for r in rs if r["hypervolume"] is not None]
            by[name] = row = {
                "dataset": dataset,
                "row": name,
                **means,
                "hypervolume": statistics.fmean(hv) if hv else None,
                "architectures": [r["architecture"] for r in rs],
            }
            rows.append(row)
        g, f, n = by.get("growth"), by.get("fixed search"), by.get("growth, no screen")
        if g and f:
            summary[f"{dataset}.acc_gap_vs_fixed_search"] = 100 * (
                g["test_accuracy"] - f["test_accuracy"]
            )
            summary[f"{dataset}.params_ratio_vs_fixed_search"] = g["params"] / f["params"]
            summary[f"{dataset}.flops_ratio_vs_fixed_search"] = g["gflops"] / f["gflops"]
            if g["hypervolume"] and f["hypervolume"]:
                summary[f"{dataset}.hypervolume_ratio_vs_fixed_search"] = (
                    g["hypervolume"] / f["hypervolume"]
                )
        if g and n:
            summary[f"{dataset}.screen_flops_saved"] = 1 - g["gflops"] / n["gflops"]
            summary[f"{dataset}.screen_acc_gap"] = 100 * (g["test_accuracy"] - n["test_accuracy"])
    return rows, summary


def plot(runs: list[dict], path: Path) -> Path:
    """Test accuracy against parameters, one panel per dataset, each run a point, each row a
    colour; a marker's area grows with the run's total training FLOPs (within its panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from growth_core.io import atomic_write

    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.9), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        top = max(r["flops"] for r in runs if r["dataset"] == dataset)
        for i, name in enumerate(ROWS):
            rs = [r for r in runs if r["dataset"] == dataset and r["row"] == name]
            if rs:
                ax.scatter(
                    [r["params"] for r in rs],
                    [r["test_accuracy"] for r in rs],
                    s=[20 + 300 * r["flops"] / top for r in rs],
                    color=f"C{i}",
                    alpha=0.8,
                    label=f"{name} ({statistics.fmean(r['flops'] for r in rs) / 1e9:.3g} GFLOPs)",
                )
        ax.set(xscale="log", xlabel="final parameters", ylabel="test accuracy", title=dataset)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return path


def main() -> None:
    p = _common.parser(NAME, __doc__)
    p.add_argument("--datasets", default=None, help="comma-separated: digits,mnist")
    p.add_argument("--replot", type=Path, default=None, help="only draw the plot of a results JSON")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every row (a probe; the committed results use none)",
    )
    args = p.parse_args()
    rows = [r.strip() for r in args.rows.split(",")]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"--rows: unknown {unknown}; rows are {list(ROWS)}")
    if args.replot:
        runs = json.loads(args.replot.read_text())["config"]["runs"]
        print("wrote", plot(runs, args.replot.with_suffix(".png")))
        return
    _common.setup()
    init_ray()  # here, not in a scratch folder: Ray's workers keep the folder it started in
    datasets = (args.datasets or ("digits" if args.quick else "digits,mnist")).split(",")
    seeds = args.seeds or (1 if args.quick else 3)
    runs = []
    for dataset in datasets:
        for seed in range(seeds):
            for row in rows:
                runs.append(one_run(dataset, row, seed, args.quick, args.data_dir, args.set))
                r = runs[-1]
                line = f"{r['test_accuracy']:.4f}, {r['params']} params, "
                line += f"{r['flops'] / 1e9:.3g} GFLOPs, {r['seconds']:.0f} s"
                print(f"{dataset} seed {seed} {row}: {line}", flush=True)
    rows, summary = summarize(runs)
    cols = ["dataset", "row", "test_accuracy", "test_accuracy_std", "params", "gflops",
            "seconds", "hypervolume"]  # fmt: skip
    print(_common.markdown_table(rows, cols))
    print({k: round(v, 3) for k, v in summary.items()})
    config = {
        "datasets": datasets,
        "seeds": seeds,
        "quick": args.quick,
        "rows": rows,
        "overrides": args.set,
        "runs": runs,
    }
    out = _common.write_result(NAME, args.out, config, rows, summary)
    print("wrote", out, plot(runs, out.with_suffix(".png")))


if __name__ == "__main__":
    main()
