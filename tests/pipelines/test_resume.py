"""A stopped pipeline goes on with ``--resume``: SIGTERM mid-search and mid-final, then resumed,
ends where an uninterrupted pipeline of the same config ends, without a step logged twice."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from rich.console import Console

from pipelines.config import PipelineError, validate
from pipelines.pipeline import resume_pipeline, run_pipeline
from pipelines.tracking import load_model_dir

pytestmark = pytest.mark.slow

SEARCH = {
    "data": {"dataset": "digits"},
    "model": {"widths": [8]},
    "search": {
        "trials": 5,
        "max_concurrent": 1,  # one trial at a time: the searcher's order is the same either way
        "epochs": 4,
        "insertion": ["sensli", "none"],
        "growth_timing": ["plateau"],
        "plateau_window": 5,
        "plateau_threshold": [0.01, 10.0],
        "max_depth": 3,
        "asha": {"grace_period": 1, "reduction_factor": 2},
    },
}
FINAL = {
    "data": {"dataset": "digits"},
    "model": {"widths": [8]},
    "search": {"insertion": ["sensli"], "growth_timing": ["plateau"], "plateau_window": 5},
    "final": {"workers": 2, "epochs": 6, "use_gpu": False},
}


def _sigterm_when(ready, timeout=180.0) -> threading.Event:
    """SIGTERM this process once ``ready()`` holds (polled); the event says it was sent."""
    sent = threading.Event()

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ready():
            time.sleep(0.2)
        sent.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    return sent


def _runs(c, name, stage):
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return []
    return c.search_runs([exp.experiment_id], f"tags.stage = '{stage}'")


def _steps_once(c, run_id, keys=("loss", "val_accuracy")):
    for key in keys:
        steps = [m.step for m in c.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged twice at some step in {run_id}"


def _trials(c, name):
    """Each trial's settings and last validation accuracy, in the order Tune made them."""
    rows = []
    for r in _runs(c, name, "trial"):
        index = r.info.start_time  # one trial at a time: started in Tune's order
        p = r.data.params
        settings = (p["lr"], p["insertion"], p["plateau_threshold"])
        rows.append((index, settings, r.data.metrics.get("val_accuracy"), r.info.status))
    return sorted(rows)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(uri)


def _interrupted(cfg, stages, ready):
    sent = _sigterm_when(ready)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, stages, console=Console(quiet=True))
    assert sent.is_set()
    # the store by its URI: MlflowClient() alone takes MLflow's global URI, which an earlier
    # test's model logging may have set to its own store
    (parent,) = _runs(MlflowClient(os.environ["MLFLOW_TRACKING_URI"]), cfg.name, "pipeline")
    assert parent.info.status == "KILLED"
    return parent.info.run_id


def test_search_stopped_then_resumed_matches_an_uninterrupted_one(local_ray, store):
    whole = run_pipeline(
        validate({"name": "whole", **SEARCH}), ("search",), console=Console(quiet=True)
    )

    def two_trials_in():  # the second trial has reported: one done, one mid-way
        runs = _runs(store, "stopped", "trial")
        return len(runs) >= 2 and any("val_accuracy" in r.data.metrics for r in runs[:1])

    run_id = _interrupted(validate({"name": "stopped", **SEARCH}), ("search",), two_trials_in)
    resumed = resume_pipeline(run_id, console=Console(quiet=True))

    assert resumed["parent_run_id"] == run_id
    assert resumed["search"]["selected"] and resumed["search"]["trials"] == 5
    (search,) = _runs(store, "stopped", "search")
    assert search.info.status == "FINISHED"
    expected, got = _trials(store, "whole"), _trials(store, "stopped")
    assert [row[1] for row in got] == [row[1] for row in expected]  # the same trials
    for (_, _, want, _), (_, _, have, status) in zip(expected, got, strict=True):
        assert status == "FINISHED" and have == pytest.approx(want, abs=1e-6)
    trial_runs = _runs(store, "stopped", "trial")
    for r in trial_runs:
        _steps_once(store, r.info.run_id)
    # the trial open when the search stopped went on in its own run (or, started after Tune's
    # last saved state, ran again in a new one, the old one deleted)
    reattached = [r for r in trial_runs if r.data.tags.get("resumed") == "true"]
    deleted = store.search_runs(
        [search.info.experiment_id], "tags.superseded != ''", run_view_type=ViewType.DELETED_ONLY
    )
    assert len(reattached) + len(deleted) >= 1
    # ASHA stopped trials early, the same ones (its rungs were restored with the search)
    stopped_early = [r.data.tags.get("stopped_early") for r in trial_runs]
    assert "true" in stopped_early
    assert resumed["search"]["front"] == whole["search"]["front"] or (
        [r["val_accuracy"] for r in resumed["search"]["front"]]
        == pytest.approx([r["val_accuracy"] for r in whole["search"]["front"]], abs=1e-6)
    )
    with pytest.raises(PipelineError, match="finished"):  # nothing left to resume
        resume_pipeline(run_id)


def test_final_stopped_then_resumed_matches_an_uninterrupted_one(local_ray, store):
    whole = run_pipeline(
        validate({"name": "whole-final", **FINAL}), ("final",), console=Console(quiet=True)
    )

    def checkpointed():  # the fit saved a checkpoint past its first epoch
        found = list(Path.cwd().glob("runs/stopped-final/*/ray/final/checkpoint_*"))
        return len(found) >= 2

    cfg = validate({"name": "stopped-final", **FINAL})
    run_id = _interrupted(cfg, ("final",), checkpointed)
    (final,) = _runs(store, "stopped-final", "final")
    assert final.info.status == "KILLED"
    resumed = resume_pipeline(run_id, console=Console(quiet=True))

    (final,) = _runs(store, "stopped-final", "final")  # the same run, finished
    assert final.info.status == "FINISHED"
    a, b = whole["final"], resumed["final"]
    assert b["architecture"] == a["architecture"] and b["growth"] == a["growth"]
    assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=1e-6)
    net_a, net_b = load_model_dir(a["checkpoint"]), load_model_dir(b["checkpoint"])
    for (name, wa), (_, wb) in zip(
        net_a.state_dict().items(), net_b.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(wb, wa, atol=1e-5, rtol=0, msg=name)
    # (val_accuracy is logged twice at the last step by design: once more for the logged model)
    _steps_once(store, final.info.run_id, keys=("loss", "params", "train_flops_all_ranks"))
