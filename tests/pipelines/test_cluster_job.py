"""The pipeline as a Ray job on a real 2-node Ray cluster on 127.0.0.1 (`make cluster-up`),
every server of it listening on loopback only, its runs then found in MLflow, and exactly that
cluster stopped afterwards."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port, is_loopback, listening_sockets

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "local-cluster.sh"
BIN = Path(sys.executable).parent

TINY = """
name = "cluster-job"
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
trials = 1
epochs = 1
max_concurrent = 1
[final]
workers = 1
epochs = 1
use_gpu = false
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # zombies are gone


def test_pipeline_job_on_a_two_node_cluster(tmp_path):
    port, dashboard = free_port(), free_port()
    temp = Path(f"/tmp/gp-ray-test-{port}")
    env = {
        **os.environ,
        "RAY": str(BIN / "ray"),
        "RAY_PORT": str(port),
        "RAY_DASHBOARD_PORT": str(dashboard),
        "RAY_AGENT_PORT": str(free_port()),
        "RAY_WORKER_AGENT_PORT": str(free_port()),
        "RAY_CLUSTER_TEMP": str(temp),
        "RAY_AUTH_MODE": "token",  # the script writes the token; every ray call below sends it
        "RAY_AUTH_TOKEN_PATH": str(temp / "auth_token"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    storage = tmp_path / "shared-storage"
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    recorded: list[int] = []
    try:
        subprocess.run([SCRIPT, "up"], env=env, check=True, timeout=240, cwd=ROOT)
        recorded = [int(p) for p in (temp / "cluster.pids").read_text().split()]
        status = subprocess.run(
            [SCRIPT, "status"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
        ).stdout
        assert status.count("node_") == 2, status
        token = temp / "auth_token"
        assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
        # the Jobs API refuses a request without the token
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/jobs/", timeout=30)
        assert refused.value.code in (401, 403)
        seen: set = set()
        sampling = threading.Event()

        def sample():  # the cluster's listening sockets, until the job has finished
            while not sampling.is_set():
                seen.update(listening_sockets(recorded))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        runtime_env = {
            "excludes": [".venv", "runs", "mlartifacts", "mlflow.db*", ".git", "bench/results"],
            "env_vars": {
                "MLFLOW_TRACKING_URI": uri,
                "RAY_AUTH_MODE": "token",
                "GROWTH_STORAGE": str(storage),  # outside the job's working directory
            },
        }
        for _ in range(24):  # on a loaded machine the head's job agent can come up late (2 min)
            job = subprocess.run(
                [BIN / "ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}",
                 "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env),
                 "--", "python", "-m", "pipelines", "run", "--config", str(config)],
                env=env, capture_output=True, text=True, timeout=900, cwd=ROOT,
            )  # fmt: skip
            if "No available agent" not in job.stderr + job.stdout:
                break
            time.sleep(5)
        sampling.set()
        sampler.join()
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout
    finally:
        subprocess.run([SCRIPT, "down"], env=env, timeout=120, cwd=ROOT)
    assert recorded
    # both nodes' servers and the job's workers were seen, none listening beyond this machine
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet", "ray::RayTrainWorker"} <= names, names
    outside = sorted(s for s in seen if not is_loopback(s[1]))
    assert outside == [], outside
    for _ in range(100):  # a SIGKILLed process may take a moment to be reaped
        survivors = [p for p in recorded if alive(p)]
        if not survivors:
            break
        time.sleep(0.1)
    assert not survivors, [Path(f"/proc/{p}/cmdline").read_text() for p in survivors]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cluster-job")
    runs = client.search_runs([exp.experiment_id])
    stages = sorted(r.data.tags.get("stage") for r in runs)
    assert [s for s in stages if s != "trial"] == ["final", "pipeline", "screen", "search"]
    assert "trial" in stages
    assert all(r.info.status == "FINISHED" for r in runs)
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the database, not in the job dir
    # the search's trials and the final fit's checkpoints went to the shared storage
    (run_storage,) = (storage / "cluster-job").iterdir()
    assert (run_storage / "search").is_dir()
    assert list((run_storage / "final").glob("checkpoint_*"))
