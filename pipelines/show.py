"""``growth show``: a finished pipeline's summary, read back from MLflow."""

from __future__ import annotations

import json

from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table

from .tracking import client


def show(experiment: str, *, run_id: str | None = None, console: Console | None = None) -> int:
    """Print the pipeline run's summary and its child runs; returns a process exit code."""
    console = console or Console()
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        console.print(
            f"[red]no experiment named {experiment!r}[/red] in {c.tracking_uri}", soft_wrap=True
        )
        return 1
    if run_id is None:
        runs = c.search_runs(
            [exp.experiment_id],
            filter_string="tags.stage = 'pipeline' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            console.print(f"[red]no finished pipeline run[/red] in experiment {experiment!r}")
            return 1
        run_id = runs[0].info.run_id
    else:
        try:
            c.get_run(run_id)
        except MlflowException:
            console.print(f"[red]no run {run_id!r}[/red] in {c.tracking_uri}", soft_wrap=True)
            return 1
    try:
        summary = json.loads(_read_artifact(c, run_id, "summary.json"))
    except MlflowException:
        console.print(
            f"[red]run {run_id} has no summary.json[/red]: not a pipeline run, or it has not "
            "finished (make run RESUME=<its id> goes on with it)",
            soft_wrap=True,
        )
        return 1
    children = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    table = Table(title=f"pipeline run {run_id}")
    for col in ("run", "stage", "status", "val acc", "test acc", "depth", "params"):
        table.add_column(col)
    for r in children:
        m = r.data.metrics
        table.add_row(
            r.info.run_name,
            r.data.tags.get("stage", ""),
            r.info.status,
            _fmt(m.get("val_accuracy")),
            _fmt(m.get("test_accuracy")),
            _fmt(m.get("depth")),
            _fmt(m.get("params")),
        )
    console.print(table)
    console.print_json(json.dumps(summary))
    return 0


def _read_artifact(c, run_id: str, path: str) -> str:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        local = c.download_artifacts(run_id, path, tmp)
        return Path(local).read_text()


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4g}"
