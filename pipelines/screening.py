"""Screen stage: one Ray task per candidate initialization, gathered into a Parquet table.

Each task (1 CPU, one torch thread) runs the cascade-reconstruction screen
(:func:`growth_core.screen.cascade.screen`) on one candidate; the driver joins the rows into a
pyarrow Table, writes it atomically as ``screen.parquet``, logs it to a child MLflow run with a
phase diagram, and keeps the ``keep`` candidates the screen finds most trainable (see
:func:`ranked`: the screen's score, then its reference readout, then mean field's 6 xi_c).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import torch
from rich.table import Table

from growth_core.data import Dataset
from growth_core.init import Initializer
from growth_core.screen import mean_field
from growth_core.screen.candidates import Candidate, candidate_row, rows_table, write_table
from growth_core.screen.cascade import ScreenBudget

from . import trial as trials
from .config import PipelineConfig
from .plots import phase_figure
from .tracking import RunLogger, tracking_uri

TABLE_FILE = "screen.parquet"


@dataclass(frozen=True)
class ScreenStageResult:
    table: pa.Table
    table_path: Path
    kept: list[Initializer]

    def render(self) -> Table:
        t = Table(title="screened candidates (most trainable first)")
        t.add_column("candidate", no_wrap=True)
        for col in ("decay depth", "reference depth", "crossing depth", "6 xi_c", "kept"):
            t.add_column(col)
        kept = {i.label for i in self.kept}
        for row in ranked(self.table):
            init = _initializer(row)
            t.add_row(
                init.label,
                f"{row['decay_depth']:.1f}",
                str(row["reference_depth"]),
                f"{row['crossing_depth']:.1f}",
                _mean_field_depth(init),
                "yes" if init.label in kept else "",
            )
        return t


@ray.remote(num_cpus=1)
def _screen_task(
    init: dict[str, Any], depth: int, data: Dataset, budget: ScreenBudget, seed: int
) -> dict:
    torch.set_num_threads(1)
    candidate = Candidate(Initializer.from_dict(init), depth=depth, seed=seed)
    return candidate_row(candidate, data, budget)


def budget_of(cfg: PipelineConfig) -> ScreenBudget:
    s = cfg.screen
    return ScreenBudget(
        epochs=s.epochs, max_steps=s.steps, batch_size=s.batch_size, eval_images=s.eval_images
    )


def ranked(table: pa.Table) -> list[dict[str, Any]]:
    """Most trainable first: by the screen's score, then its reference readout; where the
    screen cannot tell candidates apart (inputs of a few features, as the spirals' two, carry no
    pixel distribution to reconstruct), mean field's trainable depth breaks the tie."""
    rows = table.to_pylist()

    def key(r: dict[str, Any]) -> tuple[float, int, float]:
        init = _initializer(r)
        six_xi = _six_xi(init)
        return r["score"], r["reference_depth"], six_xi if six_xi is not None else 0.0

    return sorted(rows, key=key, reverse=True)


def run_screen(
    cfg: PipelineConfig,
    inits: list[Initializer],
    *,
    experiment_id: str,
    parent_run_id: str,
    workdir: Path,
    advance=lambda n=1: None,
) -> ScreenStageResult:
    run = RunLogger.start(
        experiment_id,
        "screen",
        parent_run_id=parent_run_id,
        tags={"stage": "screen"},
        uri=tracking_uri(),
    )
    ok = False
    try:
        budget = budget_of(cfg)
        run.log_params({"depth": cfg.screen.depth, "candidates": len(inits), **budget.__dict__})
        data_ref = ray.put(trials.load_data(cfg.data))
        pending = {
            _screen_task.remote(i.to_dict(), cfg.screen.depth, data_ref, budget, cfg.screen.seed): i
            for i in inits
        }
        rows_by_label: dict[str, dict] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            init = pending.pop(done[0])
            rows_by_label[init.label] = ray.get(done[0])
            advance()
        table = rows_table([rows_by_label[i.label] for i in inits])
        path = write_table(table, workdir / TABLE_FILE)
        kept = [_initializer(r) for r in ranked(table)[: cfg.screen.keep]]
        run.log_file(path)
        run.log_figure(phase_figure(table, cfg.screen.depth), "phase_diagram.png")
        run.log_json([i.to_dict() for i in kept], "kept.json")
        run.log_metrics(
            {
                "screen_flops": sum(table["flops"].to_pylist()),
                "screen_seconds": sum(table["seconds"].to_pylist()),
            },
            step=0,
        )
        ok = True
        return ScreenStageResult(table, path, kept)
    finally:
        run.finish(ok)


def _initializer(row: dict[str, Any]) -> Initializer:
    return Initializer(row["kind"], row["sigma_w2"], row["sigma_b2"])


def _six_xi(init: Initializer) -> float | None:
    """Mean field's trainable depth 6 xi_c of a Gaussian initializer (None for others)."""
    if init.kind != "gaussian" or init.sigma_b2 <= 0:
        return None
    return float(mean_field.trainable_depth(init.sigma_w2, init.sigma_b2))


def _mean_field_depth(init: Initializer) -> str:
    six_xi = _six_xi(init)
    return "" if six_xi is None else f"{six_xi:.1f}"
