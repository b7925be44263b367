"""The pipeline on images: a conv net on digits (1x8x8) searched and grown in width, trained
under DDP with growth, tracked, registered and loaded back as MLflow would."""

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from growth_core.conv_spec import ConvSpec
from pipelines.config import ConfigError, validate
from pipelines.pipeline import run_pipeline
from pipelines.tracking import load_model

pytestmark = pytest.mark.slow

CNN = {
    "name": "tiny-cnn",
    "data": {"dataset": "digits"},
    "model": {"family": "cnn", "stages": [[4, 4], [6]], "downsample": "stride", "batch_norm": True},
    "screen": {
        "candidates": [{"kind": "kaiming"}, {"kind": "gaussian", "sigma_w2": 0.5}],
        "steps": 40,
        "eval_images": 100,
    },
    "search": {
        "trials": 2,
        "epochs": 2,
        "insertion": ["none"],
        "width_strategy": ["tiny"],
        "decisions": 2,
        "width_samples": "fresh",
        "width_min_relative_gain": 0.0,  # growth is certain: the test is of the plumbing
        "asha": {"grace_period": 2},
    },
    "final": {"workers": 2, "epochs": 2, "use_gpu": False},
}


def test_a_cnn_pipeline_grows_channels_under_ddp_and_registers_a_conv_net(
    local_ray, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    summary = run_pipeline(
        validate(CNN), ("screen", "search", "final"), console=Console(quiet=True)
    )
    table = pq.read_table(summary["screen"]["table"]).to_pylist()  # the conv net screened
    assert [(r["family"], r["depth"], len(r["kl"])) for r in table] == [("cnn", 3, 3)] * 2
    assert summary["screen"]["kept"] and set(summary["screen"]["kept"]) <= {
        "kaiming",
        "gaussian(sw2=0.5,sb2=0)",
    }
    final = summary["final"]
    start = ConvSpec((1, 8, 8), 10, ((4, 4), (6,)), "stride", batch_norm=True)
    lines = final["growth"]
    assert final["growth_events"] == len(lines) >= 1
    assert all("channels in conv layer" in line for line in lines), lines
    assert final["architecture"].startswith("cnn 1x8x8-") and final["architecture"] != (
        start.describe()
    )
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("tiny-cnn").experiment_id])
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    trial_runs = [r for r in runs if r.data.tags.get("stage") == "trial"]
    assert len(trial_runs) == 2
    for r in trial_runs:  # each trial grew channels, every event with its grown conv spec
        local = c.download_artifacts(r.info.run_id, "events.json", str(tmp_path))
        trial_events = json.loads(Path(local).read_text())
        assert trial_events and {e["kind"] for e in trial_events} == {"neurons"}
        specs = {a.path for a in c.list_artifacts(r.info.run_id, "growth")}
        assert specs == {f"growth/spec_step_{e['step']:07d}.json" for e in trial_events}
    mlflow.set_tracking_uri(uri)
    try:
        net = load_model(final["model_uri"], uri=uri)
        assert isinstance(net.spec, ConvSpec) and net.spec.widths != start.widths
        model = mlflow.pyfunc.load_model(final["model_uri"])
        probs = model.predict(np.random.default_rng(0).integers(0, 16, (3, 64)).astype("float32"))
        assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    finally:
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", uri))


def test_a_cnn_config_refuses_what_conv_nets_cannot_do_yet():
    with pytest.raises(ConfigError, match="search.insertion: a plain conv net with batch norm"):
        validate({**CNN, "search": {**CNN["search"], "insertion": ["sensli", "none"]}})
    residual = {**CNN["model"], "stages": [[4, 4], [6, 6]], "residual": True}
    with pytest.raises(ConfigError, match="search.max_depth: counts a conv net's convolutions"):
        validate({**CNN, "model": residual, "search": {**CNN["search"], "insertion": ["sensli"]}})
    with pytest.raises(ConfigError, match="stages: model.family 'cnn' needs"):
        validate({**CNN, "model": {"family": "cnn"}})
    with pytest.raises(ConfigError, match="batch_norm: only a 'cnn' model takes it"):
        validate({**CNN, "model": {"widths": [8], "batch_norm": True}})
    spirals = validate({**CNN, "data": {"dataset": "spirals"}})  # no images
    with pytest.raises(ConfigError, match="model.family: a 'cnn' needs images"):
        run_pipeline(spirals, ("search",), console=Console(quiet=True))
