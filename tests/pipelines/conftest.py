import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One in-process Ray for the pipeline tests (2 CPUs, a small object store)."""
    ray = pytest.importorskip("ray")
    from pipelines.pipeline import job_runtime_env, keep_ray_on_loopback

    keep_ray_on_loopback()
    ray.init(
        runtime_env=job_runtime_env(),
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 1024**2,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


#: A pipeline small enough for a test: 2 screened candidates, 2 trials, a 2-worker final fit.
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


@dataclass(frozen=True)
class PipelineRun:
    """A finished tiny pipeline: its summary, config and the store it logged to."""

    summary: dict
    cfg: object
    folder: Path
    uri: str


@pytest.fixture(scope="session")
def tiny_pipeline(local_ray, tmp_path_factory):
    """:data:`TINY` run once (about a minute), in its own folder with its own SQLite store;
    the tests that read a real run share it."""
    from rich.console import Console

    from pipelines.config import validate
    from pipelines.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("pipeline")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    before_cwd, before_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(folder)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        cfg = validate(TINY)
        summary = run_pipeline(cfg, ("screen", "search", "final"), console=Console(quiet=True))
    finally:
        os.chdir(before_cwd)
        if before_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_uri
    return PipelineRun(summary, cfg, folder, uri)
