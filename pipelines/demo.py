"""``make demo``: layer insertion on the spirals, in a minute, without Ray or MLflow.

Trains the paper's feedforward net (2-[5]-2 ReLU, full-batch GD, lr 0.2, 1850 steps) three
ways per seed: the small net, SensLI growing it by one layer at step 450, and the big net of
the grown architecture; prints a table and writes the runs to ``runs/demo/results.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from growth_core import data as datasets
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, sensitivity
from growth_core.init import Initializer
from growth_core.io import write_json
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, Trainer

SPEC = ArchitectureSpec(2, 2, (5,), "relu")
CONFIG = TrainConfig(steps=1850, lr=0.2)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("runs/demo/results.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    console = Console()
    data = datasets.spirals()
    rows = {"small fixed": [], "SensLI": [], "big fixed": []}
    events = []
    t0 = time.perf_counter()
    with Progress(console=console) as progress:
        task = progress.add_task("training on the spirals", total=3 * args.seeds)
        for seed in range(args.seeds):
            for name in rows:
                spec = sensitivity.inserted_spec(SPEC, 0) if name == "big fixed" else SPEC
                policy = None
                if name == "SensLI":
                    policy = DepthWidthPolicy(AtSteps((450,)), depth=DepthGrowth())
                net = Initializer("default").apply(build(spec), seed=seed)
                result = Trainer(net, data, CONFIG, policy=policy).fit()
                last = result.final
                rows[name].append(
                    {
                        "seed": seed,
                        "loss": result.history[-2]["loss"] if "loss" not in last else last["loss"],
                        "test_accuracy": last["test_accuracy"],
                        "flops": result.flops,
                        "architecture": result.net.spec.describe(),
                    }
                )
                events += [e.to_dict() for e in result.events]
                progress.advance(task)
    table = Table(title=f"Layer insertion on the spirals ({args.seeds} seeds, 1850 GD steps)")
    for col in ("run", "architecture", "train loss", "test accuracy", "MFLOPs"):
        table.add_column(col)
    for name, rs in rows.items():
        table.add_row(
            name,
            rs[0]["architecture"],
            f"{statistics.fmean(r['loss'] for r in rs):.3f}",
            f"{statistics.fmean(r['test_accuracy'] for r in rs):.3f}",
            f"{statistics.fmean(r['flops'] for r in rs) / 1e6:.1f}",
        )
    console.print(table)
    write_json(args.out, {"runs": rows, "growth_events": events})
    console.print(
        f"Done in {time.perf_counter() - t0:.0f} s. Results: {args.out.resolve()}\n"
        "The paper's whole experiment (30 seeds, controls, plot): make bench"
    )


if __name__ == "__main__":
    main()
