"""A search whose trials diverge: each trial FAILED in MLflow with its error, and the pipeline
ends with the project's one-line error naming it."""

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from pipelines.config import PipelineError, validate
from pipelines.pipeline import run_pipeline

pytestmark = pytest.mark.slow


def test_diverging_trials_fail_by_name_and_stop_the_pipeline(local_ray, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = validate(
        {
            "name": "diverges",
            "data": {"dataset": "digits"},
            "model": {"widths": [8]},
            "search": {
                "trials": 2,
                "epochs": 1,
                "optimizer": "sgd",
                "lr": [1e12, 1e13],  # every step overshoots: the loss is inf, then NaN
                "insertion": ["none"],
            },
        }
    )
    with pytest.raises(PipelineError, match="every trial failed.*DivergedError"):
        run_pipeline(cfg, ("search",), console=Console(quiet=True))
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("diverges").experiment_id])
    trials = [r for r in runs if r.data.tags.get("stage") == "trial"]
    assert len(trials) == 2
    for r in trials:
        assert r.info.status == "FAILED"
        assert "DivergedError" in r.data.tags["error"] and "not finite" in r.data.tags["error"]
    statuses = {r.data.tags["stage"]: r.info.status for r in runs if r not in trials}
    assert statuses == {"pipeline": "FAILED", "search": "FAILED"}  # nothing left RUNNING
