"""What every benchmark script shares: its command line, its JSON and its table."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from growth_core.io import write_json  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"bench/{name}.py", description=doc)
    p.add_argument("--quick", action="store_true", help="fewer seeds and steps, same keys")
    p.add_argument("--out", type=Path, default=None, help=f"default: bench/results/{name}.json")
    p.add_argument("--data-dir", type=Path, default=None, help="a folder with MNIST parquet files")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds")
    return p


def setup() -> None:
    """One thread: benchmarks compare methods inside one process, as ratios."""
    torch.set_num_threads(1)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (float(values[0]) if values else math.nan), 0.0
    return statistics.fmean(values), statistics.stdev(values)


def averaged(runs: Sequence[dict[str, Any]], accuracy: str, **columns: Any) -> dict[str, Any]:
    """One table row from a row's runs: ``accuracy`` as mean and ``<accuracy>_std``, then each
    column as the mean of ``runs[i][source] / divisor``; a column's value is its source key, or
    ``(source, divisor)``."""
    acc, acc_sd = mean_std([r[accuracy] for r in runs])
    row = {accuracy: acc, f"{accuracy}_std": acc_sd}
    for name, how in columns.items():
        source, divisor = (how, 1) if isinstance(how, str) else how
        row[name] = statistics.fmean(r[source] for r in runs) / divisor
    return row


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_result(
    name: str, out: Path | None, config: dict[str, Any], rows: list, summary: dict
) -> Path:
    path = out or RESULTS / f"{name}.json"
    write_json(path, {"name": name, "config": config, "rows": rows, "summary": summary})
    return path


def mnist(data_dir: Path | None, n_train: int | None = None, n_test: int | None = None):
    """MNIST from its Parquet files (pixels / 255, images of 1x28x28), the first ``n_train``
    training and ``n_test`` test images (``None``: all)."""
    from growth_core.data import Dataset, load_parquet

    folder = data_dir or DEFAULT_MNIST
    data = load_parquet(folder / "train.parquet", folder / "test.parquet", scale=255.0)
    return Dataset(
        data.name, data.x_train[:n_train], data.y_train[:n_train], data.x_test[:n_test],
        data.y_test[:n_test], data.num_classes, shape=data.shape,
    )  # fmt: skip
