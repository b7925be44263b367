"""A pipeline stage logging to an `mlflow server` over HTTP; the server stopped by its PID."""

import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from servers import free_port, served

from pipelines.config import validate
from pipelines.pipeline import run_pipeline

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    command = [
        BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", port,
        "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
        "--artifacts-destination", tmp_path / "server-artifacts", "--workers", "1",
    ]  # fmt: skip
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
