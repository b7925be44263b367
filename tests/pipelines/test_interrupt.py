"""SIGTERM (and Ctrl+C) stop the pipeline: it raises, and every run it opened ends KILLED."""

import os
import signal
import threading
import time

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from pipelines.config import validate
from pipelines.pipeline import run_pipeline

pytestmark = pytest.mark.slow


def test_sigterm_mid_search_ends_every_run_killed(local_ray, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = validate(
        {
            "name": "interrupted",
            "data": {"dataset": "digits"},
            "model": {"widths": [8]},
            "search": {"trials": 4, "epochs": 200, "insertion": ["none"]},  # minutes, if let be
        }
    )
    c = MlflowClient(uri)
    sent = threading.Event()

    def terminate_once_a_trial_runs():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            exp = c.get_experiment_by_name("interrupted")
            if exp is not None and c.search_runs(
                [exp.experiment_id], filter_string="tags.stage = 'trial'"
            ):
                break
            time.sleep(0.5)
        sent.set()
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_once_a_trial_runs, daemon=True).start()
    started = time.monotonic()
    # Interrupted, or a plain KeyboardInterrupt when the signal lands inside Ray's C++ calls
    # (Ray raises its own there); either way an interrupt, not an error
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, ("search", "final"), console=Console(quiet=True))
    assert sent.is_set() and time.monotonic() - started < 150
    # the trials' actors went with the search: the CPUs are free again
    for _ in range(60):
        if local_ray.available_resources().get("CPU", 0) >= 2:
            break
        time.sleep(0.5)
    assert local_ray.available_resources().get("CPU", 0) >= 2, local_ray.available_resources()
    runs = c.search_runs([c.get_experiment_by_name("interrupted").experiment_id])
    statuses = {}
    for r in runs:
        statuses.setdefault(r.data.tags["stage"], set()).add(r.info.status)
    assert statuses["pipeline"] == {"KILLED"} and statuses["search"] == {"KILLED"}
    assert statuses["trial"] <= {"KILLED", "FINISHED"} and "KILLED" in statuses["trial"]
    assert "final" not in statuses  # the pipeline stopped: no final stage on a partial search
    assert signal.getsignal(signal.SIGTERM) == before  # the pipeline's handler is gone again
