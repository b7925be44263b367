"""A tiny pipeline end to end: local Ray, SQLite MLflow in a temp dir."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console

from pipelines import trial as trials
from pipelines.config import validate
from pipelines.pipeline import run_pipeline
from pipelines.tracking import client, load_model

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny-e2e",
    "data": {"dataset": "digits"},
    "model": {"widths": [8]},
    "screen": {
        "candidates": [{"kind": "gaussian", "sigma_w2": [0.5, 1.5], "sigma_b2": 0.05}],
        "depth": 6,
        "epochs": 2,
        "eval_images": 100,
        "keep": 1,
    },
    "search": {
        "trials": 2,
        "epochs": 2,
        "insertion": ["sensli"],
        "growth_timing": ["plateau"],
        "plateau_window": 5,
        "plateau_threshold": [5.0, 10.0],  # always "stalled": growth is certain
        "max_depth": 3,
        "asha": {"grace_period": 1},
    },
    "final": {"workers": 2, "epochs": 2, "use_gpu": False},
}


def test_tiny_pipeline_end_to_end(local_ray, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = validate(TINY)
    summary = run_pipeline(cfg, ("screen", "search", "final"), console=Console(quiet=True))

    # the screen table: one row per candidate, written as Parquet
    table = pq.read_table(summary["screen"]["table"])
    assert table.num_rows == 2 and table["sigma_w2"].to_pylist() == [0.5, 1.5]
    assert len(table["curve"][0].as_py()) == 6

    # the run tree: the parent; screen, trials and final as its children
    c = client()
    exp = c.get_experiment_by_name("tiny-e2e")
    parent_id = summary["parent_run_id"]
    children = c.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    stages = sorted(r.data.tags["stage"] for r in children)
    assert stages == ["final", "screen", "search", "search"]
    statuses = {r.data.tags["stage"]: r.info.status for r in children}
    assert statuses["screen"] == statuses["final"] == "FINISHED"
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)  # KILLED: ASHA

    # a spec artifact for every growth event of a trial
    trial_run = next(r for r in children if r.data.tags["stage"] == "search")
    events_path = c.download_artifacts(trial_run.info.run_id, "events.json", str(tmp_path))
    events = json.loads(Path(events_path).read_text())
    assert events, "the forced plateau trigger must have grown the network"
    specs = {a.path for a in c.list_artifacts(trial_run.info.run_id, "growth")}
    assert specs == {f"growth/spec_step_{e['step']:07d}.json" for e in events}

    # the registered model loads and reproduces the logged test accuracy
    final = summary["final"]
    net = load_model(final["model_uri"])
    data = trials.load_data(cfg.data)
    with torch.no_grad():
        acc = (net(data.x_test).argmax(1) == data.y_test).float().mean().item()
    logged = c.get_run(final["run_id"]).data.metrics["test_accuracy"]
    assert acc == pytest.approx(logged, abs=1e-6)
    assert net.spec.describe() == final["architecture"]

    # the search's Pareto front: a table and a plot on the parent run, the selected trial on it
    front = pq.read_table(Path(summary["workdir"]) / "pareto.parquet").to_pylist()
    assert {r["trial_id"] for r in front} == {
        r.data.tags["trial_id"] for r in children if r.data.tags["stage"] == "search"
    }
    assert sum(r["selected"] for r in front) == 1
    assert {a.path for a in c.list_artifacts(parent_id)} >= {"pareto.parquet", "pareto.png"}
    assert summary["search"]["front"] and all(r["on_front"] for r in front if r["selected"])

    # the final fit's growth events are in MLflow: a metric step per event and the summary's lines
    final_run = c.get_run(final["run_id"])
    assert final["growth_events"] == len(final["growth"]) >= 1
    depth_steps = c.get_metric_history(final["run_id"], "depth")
    assert max(m.value for m in depth_steps) > min(m.value for m in depth_steps)
    assert final_run.info.status == "FINISHED"
