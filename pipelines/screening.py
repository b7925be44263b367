"""Screen stage: one Ray task per candidate initialization, gathered into a Parquet table.

The screened network is the one the search trains: the model's family, activation and width
(or ``screen.width``, the input randomly projected to it), as deep as growth may take it
(:func:`screened_candidate`); a conv model's stages on its images, its last stage deepened.
Each task (1 CPU, one torch thread) runs the cascade-reconstruction screen
(:func:`growth_core.screen.cascade.screen`) on one candidate; the driver joins the rows into a
pyarrow Table, writes it atomically as ``screen.parquet``, logs it to a child MLflow run with
a phase diagram, and keeps the ``keep`` candidates the screen finds
most trainable (see :func:`ranked`: the screen's score, then its reference readout, then mean
field's 6 xi_c). Each kept candidate's decay readout caps its depth in the search
(:func:`depth_cap`); a candidate whose readout is below the model's starting depth is not kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import torch
from mlflow.entities import DatasetInput
from rich.table import Table

from growth_core.data import Dataset
from growth_core.init import Initializer
from growth_core.screen import MEAN_FIELD_ACTIVATIONS, mean_field, random_projection
from growth_core.screen.candidates import Candidate, candidate_row, rows_table, write_table
from growth_core.screen.cascade import ScreenBudget

from . import trial as trials
from .config import PipelineConfig, PipelineError
from .plots import phase_figure
from .tracking import RunLogger, tracking_uri

TABLE_FILE = "screen.parquet"


@dataclass(frozen=True)
class ScreenStageResult:
    table: pa.Table
    table_path: Path
    kept: list[Initializer]
    depth_caps: dict[str, int]
    """Per kept candidate's label, the deepest the search may grow it."""
    activation: str = "tanh"

    def render(self) -> Table:
        t = Table(title="screened candidates (most trainable first)")
        t.add_column("candidate", no_wrap=True)
        for col in ("decay depth", "reference depth", "crossing depth", "6 xi_c", "depth cap"):
            t.add_column(col)
        kept = {i.label for i in self.kept}
        for row in ranked(self.table):
            init = _initializer(row)
            t.add_row(
                init.label,
                f"{row['decay_depth']:.1f}",
                str(row["reference_depth"]),
                f"{row['crossing_depth']:.1f}",
                _mean_field_depth(init, self.activation),
                str(self.depth_caps[init.label]) if init.label in kept else "",
            )
        return t


@ray.remote(num_cpus=1)
def _screen_task(candidate: Candidate, data: Dataset, budget: ScreenBudget) -> dict:
    torch.set_num_threads(1)
    return candidate_row(candidate, data, budget)


def start_depth(cfg: PipelineConfig) -> int:
    """The model's depth as it starts: hidden layers (blocks), or a conv net's convolutions."""
    m = cfg.model
    return sum(map(len, m.stages)) if m.family == "cnn" else len(m.widths)


def screen_depth(cfg: PipelineConfig) -> int:
    """The cascade's depth: ``screen.depth``, or the deepest the search may grow the model (a
    residual conv net's rounded up to whole blocks)."""
    start = start_depth(cfg)
    if cfg.screen.depth is not None:
        depth = max(cfg.screen.depth, start if cfg.model.family == "cnn" else 0)
    else:
        deepest = cfg.search.max_depth if "sensli" in cfg.search.insertion else start
        depth = max(2, start, deepest)
    return depth + depth % 2 if cfg.model.family == "cnn" and cfg.model.residual else depth


def screened_candidate(cfg: PipelineConfig, init: Initializer, data: Dataset) -> Candidate:
    """The network the screen reads for ``init`` on ``data`` (as :func:`screened_data` gives
    it): the model's family, activation and width (or ``screen.width``), :func:`screen_depth`
    layers (blocks; a conv net's convolutions)."""
    m = cfg.model
    if m.family == "cnn":
        conv = m.spec(data.input_dim, data.num_classes, data.shape)
        return Candidate(
            init, depth=screen_depth(cfg), seed=cfg.screen.seed, activation=m.activation, conv=conv
        )
    width = cfg.screen.width or (
        (m.width or max(m.widths)) if m.family == "resnet" else m.widths[0]
    )
    return Candidate(
        init,
        depth=screen_depth(cfg),
        width=width,
        residual=m.family == "resnet",
        seed=cfg.screen.seed,
        activation=m.activation,
    )


def screened_data(cfg: PipelineConfig, data: Dataset) -> Dataset:
    """The data as the screen reads it: projected to ``screen.width`` features when it has
    more (the projection bench/screen_validation.py validated the screen with)."""
    width = cfg.screen.width
    if width is None or width >= data.input_dim:
        return data
    return random_projection(data, width, seed=cfg.screen.seed)


def depth_cap(row: dict[str, Any], start: int, deepest: int, per_map: int = 1) -> int | None:
    """The deepest the search may grow a candidate: its decay readout, floored, at most
    ``deepest``; ``None`` when the readout is below the model's ``start`` depth (untrainable
    as it starts). The readout counts hidden maps; ``per_map`` layers make one (a residual
    conv net's block is two convolutions)."""
    readout = row["decay_depth"]
    cap = deepest if not math.isfinite(readout) else min(deepest, int(readout) * per_map)
    return cap if cap >= start else None


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
        six_xi = _six_xi(init, r.get("activation", "tanh"))
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
    data: Dataset | None = None,
    dataset_input: DatasetInput | None = None,
) -> ScreenStageResult:
    """Screen ``inits`` on ``data`` (loaded from the config if not given) in a child run of
    ``parent_run_id``; ``dataset_input`` is the training split as MLflow records it."""
    run = RunLogger.start(
        experiment_id,
        "screen",
        parent_run_id=parent_run_id,
        tags={"stage": "screen"},
        description=(
            f"Screen: the reconstruction-entropy cascade rates {len(inits)} candidate "
            f"initializations of the model; the {cfg.screen.keep} most trainable go to the "
            "search, each with its trainable depth as a depth cap."
        ),
        uri=tracking_uri(),
    )
    ok = False
    try:
        if dataset_input is not None:
            run.log_datasets([dataset_input])
        budget = budget_of(cfg)
        data = screened_data(cfg, data if data is not None else trials.load_data(cfg.data))
        candidates = {i.label: screened_candidate(cfg, i, data) for i in inits}
        probe = next(iter(candidates.values()))
        probe_spec = probe.spec(data.input_dim, data.num_classes)
        run.log_params(
            {
                "depth": probe.depth,
                "network": probe_spec.describe(),
                "activation": probe.activation,
                "residual": probe_spec.residual,
                "projected_features": data.input_dim,
                "candidates": len(inits),
                **budget.__dict__,
            }
        )
        data_ref = ray.put(data)
        pending = {_screen_task.remote(candidates[i.label], data_ref, budget): i for i in inits}
        rows_by_label: dict[str, dict] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            init = pending.pop(done[0])
            rows_by_label[init.label] = ray.get(done[0])
            advance()
        table = rows_table([rows_by_label[i.label] for i in inits])
        path = write_table(table, workdir / TABLE_FILE)
        start, deepest = start_depth(cfg), min(probe.depth, cfg.search.max_depth)
        per_map = 2 if probe.family == "cnn" and probe_spec.residual else 1
        caps = {}
        for r in ranked(table):
            cap = depth_cap(r, start, deepest, per_map)
            if cap is not None and len(caps) < cfg.screen.keep:
                caps[_initializer(r).label] = cap
        if not caps:
            readouts = ", ".join(f"{d:.1f}" for d in table["decay_depth"].to_pylist())
            raise PipelineError(
                f"screen: no candidate reads as trainable at the model's starting depth {start} "
                f"(decay readouts: {readouts})"
            )
        order = list(caps)  # most trainable first
        kept = sorted((i for i in inits if i.label in caps), key=lambda i: order.index(i.label))
        run.log_file(path)
        run.log_figure(phase_figure(table, probe.depth, probe.activation), "phase_diagram.png")
        run.log_json([{**i.to_dict(), "max_depth": caps[i.label]} for i in kept], "kept.json")
        run.log_metrics(
            {
                "screen_flops": sum(table["flops"].to_pylist()),
                "screen_seconds": sum(table["seconds"].to_pylist()),
            },
            step=0,
        )
        ok = True
        return ScreenStageResult(table, path, kept, caps, probe.activation)
    finally:
        run.finish(ok)


def _initializer(row: dict[str, Any]) -> Initializer:
    return Initializer(row["kind"], row["sigma_w2"], row["sigma_b2"])


def _six_xi(init: Initializer, activation: str = "tanh") -> float | None:
    """Mean field's trainable depth 6 xi_c of a Gaussian initializer for ``activation``
    (None for other initializers, activations without a closed form, or where it is not
    defined)."""
    if init.kind != "gaussian" or init.sigma_b2 <= 0 or activation not in MEAN_FIELD_ACTIVATIONS:
        return None
    try:
        return float(mean_field.trainable_depth(init.sigma_w2, init.sigma_b2, activation))
    except ValueError:  # e.g. ReLU beyond sigma_w2 = 2: no finite fixed point
        return None


def _mean_field_depth(init: Initializer, activation: str = "tanh") -> str:
    six_xi = _six_xi(init, activation)
    return "" if six_xi is None else f"{six_xi:.1f}"
