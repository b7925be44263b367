"""Two `make run`s started together in one folder: both finish, each with its own folder,
runs and registered version, on one SQLite store (write-ahead logging); and everything they
start (Ray's GCS, raylet, agents and workers) listens on 127.0.0.1 only."""

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from servers import is_loopback, listening_sockets

pytestmark = pytest.mark.slow

TINY = """
name = "together"
[data]
dataset = "digits"
[model]
widths = [8]
[screen]
candidates = [{ kind = "gaussian", sigma_w2 = [0.5, 1.5], sigma_b2 = 0.05 }]
depth = 4
epochs = 1
eval_images = 50
keep = 1
[search]
trials = 2
epochs = 1
[final]
workers = 1
epochs = 1
use_gpu = false
"""


def test_two_pipelines_started_together_in_one_folder_both_finish(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    command = [sys.executable, "-m", "pipelines", "run", "--config", "tiny.toml"]
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    outs = [log.open("w") for log in logs]  # files: nobody reads a pipe while sockets are sampled
    procs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for out in outs
    ]
    seen = set()
    deadline = time.monotonic() + 600
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        seen |= set(listening_sockets([p.pid for p in procs]))
        time.sleep(0.5)
    for p, out in zip(procs, outs, strict=True):
        p.wait(timeout=60)
        out.close()
    outputs = [log.read_text() for log in logs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    folders = sorted((tmp_path / "runs" / "together").iterdir())
    assert len(folders) == 2 and all((f / "pareto.parquet").exists() for f in folders)
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("together").experiment_id])
    parents = [r for r in runs if r.data.tags["stage"] == "pipeline"]
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents)
    assert all(r.info.status != "RUNNING" for r in runs)
    versions = c.search_model_versions("name = 'together'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    # Ray's servers were seen, and none listened beyond this machine
    assert {name for name, _, _ in seen} >= {"gcs_server", "raylet"}, seen
    outside = sorted(s for s in seen if not is_loopback(s[1]))
    assert outside == [], outside
