"""A pipeline stage logging to an `mlflow server` over HTTP; the server stopped by its PID."""

import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from servers import free_port, served

from pipelines.config import validate
from pipelines.pipeline import run_pipeline

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def server_command(port: int, folder: Path) -> list:
    """``mlflow server`` on 127.0.0.1:port over a SQLite store and artifacts in ``folder``."""
    return [
        BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", port,
        "--backend-store-uri", f"sqlite:///{folder}/server.db",
        "--artifacts-destination", folder / "server-artifacts", "--workers", "1",
    ]  # fmt: skip


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    command = server_command(port, tmp_path)
    url = f"http://127.0.0.1:{port}"
    with served(command, f"{url}/health"):
        yield url


def test_screen_stage_logs_to_a_tracking_server(local_ray, mlflow_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = validate(
        {
            "name": "server-test",
            "data": {"dataset": "digits"},
            "screen": {
                "candidates": [{"kind": "gaussian", "sigma_w2": [0.5, 2.0], "sigma_b2": 0.05}],
                "depth": 4,
                "epochs": 1,
                "eval_images": 50,
            },
        }
    )
    summary = run_pipeline(cfg, ("screen",), console=Console(quiet=True))
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the embedded store

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("server-test").experiment_id])
    assert sorted(r.data.tags["stage"] for r in runs) == ["pipeline", "screen"]
    screen_run = next(r for r in runs if r.data.tags["stage"] == "screen")
    names = {a.path for a in client.list_artifacts(screen_run.info.run_id)}
    assert {"screen.parquet", "phase_diagram.png", "kept.json"} <= names
    assert summary["parent_run_id"] in {r.info.run_id for r in runs}


def test_an_mlflow_outage_mid_run_costs_training_no_time_and_loses_nothing(tmp_path, monkeypatch):
    # a real server, stopped while a run logs and started again on the same store: the calls
    # made while it was down return at once, and every step and artifact is there in the end
    from pipelines.tracking import RunLogger, ensure_experiment

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the buffer does the retrying
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = free_port()
    command = server_command(port, tmp_path)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    with served(command, f"{url}/health", log=tmp_path / "server-1.log"):
        logger = RunLogger.start(ensure_experiment("outage"), "outage", uri=url)
        for step in range(20):
            logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        assert logger.flush(60)
    # down: training goes on, its logging does not wait
    slowest = 0.0
    for step in range(20, 60):
        started = time.perf_counter()
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        if step % 10 == 0:
            logger.log_text(f"step {step}", f"notes/step_{step}.txt")
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5 and logger.calls.pending > 0
    time.sleep(3)
    with served(command, f"{url}/health", log=tmp_path / "server-2.log"):  # back, same store
        logger.finish(True)  # flushes: the retries get through
        c = MlflowClient(url)
        steps = sorted(m.step for m in c.get_metric_history(logger.run_id, "loss"))
        notes = c.list_artifacts(logger.run_id, "notes")
        status = c.get_run(logger.run_id).info.status
    assert steps == list(range(60))  # none lost, none twice
    assert len(notes) == 4 and status == "FINISHED"
    assert logger.calls.dropped == 0
