"""A tiny pipeline end to end (local Ray, SQLite MLflow in a temp dir), read back as a user of
MLflow would: the run tree, the registered model (pyfunc and served over HTTP), lineage,
system metrics, growth in the charts, the Pareto front."""

import json
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient
from servers import free_port, served

from pipelines import trial as trials
from pipelines.lineage import DESCRIPTION_TAG, git_commit
from pipelines.serving import registered_uri, serve_command, serve_environment
from pipelines.tracking import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_pipeline):
    c = MlflowClient(tiny_pipeline.uri)
    exp = c.get_experiment_by_name("tiny-e2e")

    def children(run_id):
        return c.search_runs(
            [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
        )

    parent_id = tiny_pipeline.summary["parent_run_id"]
    stages = {r.data.tags["stage"]: r for r in children(parent_id)}
    trial_runs = children(stages["search"].info.run_id)
    return tiny_pipeline, c, stages, trial_runs


@pytest.fixture
def tracking(run, monkeypatch):
    """The run's store as this process's (and its children's) tracking URI, for the fluent API
    (pyfunc) and the scoring server; back afterwards."""
    before = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run[0].uri)
    mlflow.set_tracking_uri(run[0].uri)
    yield run[0].uri
    mlflow.set_tracking_uri(before)


def raw(data, x):
    """Features as the data source holds them (digits: 4-bit pixels), before the loader's
    standardization."""
    shift, scale = data.preprocess
    return (x * scale + shift).numpy()


def test_the_run_tree_reads_pipeline_screen_search_trials_final(run):
    p, c, stages, trial_runs = run
    assert sorted(stages) == ["final", "screen", "search"]
    assert all(r.info.status == "FINISHED" for r in stages.values())
    assert len(trial_runs) == 2 and {r.data.tags["stage"] for r in trial_runs} == {"trial"}
    for r in trial_runs:  # ASHA stopping a trial is not a failure: FINISHED, and tagged
        assert r.info.status == "FINISHED"
        assert r.data.tags["stopped_early"] in ("true", "false")
    assert c.get_run(p.summary["parent_run_id"]).info.status == "FINISHED"

    # the screen table: one row per candidate, written as Parquet
    table = pq.read_table(p.summary["screen"]["table"])
    assert table.num_rows == 2 and table["sigma_w2"].to_pylist() == [0.5, 1.5]
    assert len(table["curve"][0].as_py()) == 6


def test_a_trial_logs_each_growth_event_with_its_spec(run):
    p, c, stages, trial_runs = run
    trial_run = trial_runs[0]
    local = c.download_artifacts(trial_run.info.run_id, "events.json", str(p.folder))
    events = json.loads(Path(local).read_text())
    assert events, "the forced plateau trigger must have grown the network"
    specs = {a.path for a in c.list_artifacts(trial_run.info.run_id, "growth")}
    assert specs == {f"growth/spec_step_{e['step']:07d}.json" for e in events}
    steps = c.get_metric_history(trial_run.info.run_id, "growth_event")
    assert sorted(m.step for m in steps) == sorted(e["step"] for e in events)


def test_the_registered_model_loads_as_pyfunc_and_as_a_network(run, tracking):
    p, c, stages, _ = run
    final = p.summary["final"]
    assert final["model_uri"] == "models:/tiny-e2e/1" == registered_uri("tiny-e2e")
    data = trials.load_data(p.cfg.data)
    net = load_model(final["model_uri"], uri=tracking)
    with torch.no_grad():
        logits = net(data.x_test)
    probabilities = torch.softmax(logits, 1).numpy()

    model = mlflow.pyfunc.load_model(final["model_uri"])
    predicted = model.predict(raw(data, data.x_test))  # the model scales raw features itself
    np.testing.assert_allclose(predicted, probabilities, rtol=0, atol=1e-6)
    np.testing.assert_allclose(predicted.sum(1), 1.0, atol=1e-5)

    # the signature a user (and the registry page) sees: features in, one probability per class
    schema = model.metadata.get_input_schema().to_dict()[0]
    assert list(schema["tensor-spec"]["shape"]) == [-1, data.input_dim]
    assert list(model.metadata.get_output_schema().to_dict()[0]["tensor-spec"]["shape"]) == [-1, 10]
    # a wrong input is refused by the signature, naming the shape it expects
    with pytest.raises(Exception, match=r"expected shape \(-1, 64\)"):
        model.predict(np.zeros((2, 3), dtype=np.float32))

    version = c.get_model_version("tiny-e2e", "1")
    assert final["architecture"] in version.description and "raw features" in version.description
    acc = (logits.argmax(1) == data.y_test).float().mean().item()
    final_run = c.get_run(final["run_id"])
    assert acc == pytest.approx(final_run.data.metrics["test_accuracy"], abs=1e-6)
    assert net.spec.describe() == final["architecture"]
    # the Logged Models view: the model, with its test and validation metrics
    logged = c.search_logged_models([final_run.info.experiment_id])
    (model_row,) = [m for m in logged if m.source_run_id == final["run_id"]]
    assert {m.key for m in model_row.metrics} >= {"test_accuracy", "val_accuracy"}


def test_the_served_model_answers_invocations_with_the_same_probabilities(run, tracking):
    p, *_ = run
    data = trials.load_data(p.cfg.data)
    x = data.x_test[:16]
    net = load_model(p.summary["final"]["model_uri"], uri=tracking)
    with torch.no_grad():
        expected = torch.softmax(net(x), 1).numpy()
    port = free_port()
    command = serve_command(p.summary["final"]["model_uri"], port)
    assert command[0].startswith(str(Path(sys.executable).parent))
    ping, log = f"http://127.0.0.1:{port}/ping", p.folder / "serve.log"
    with served(command, ping, log=log, env=serve_environment()):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": raw(data, x).tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    np.testing.assert_allclose(np.array(answer["predictions"]), expected, atol=1e-6)


def test_runs_carry_datasets_descriptions_sources_and_config(run):
    p, c, stages, trial_runs = run
    commit = git_commit()
    for r in [*stages.values(), *trial_runs]:
        assert r.data.tags.get(DESCRIPTION_TAG), r.info.run_name
        assert r.data.tags["mlflow.source.name"]
        if commit:
            assert r.data.tags["mlflow.source.git.commit"] == commit
    contexts = {
        name: {i.tags[0].value for i in r.inputs.dataset_inputs}
        for name, r in [*stages.items(), ("trial", trial_runs[0])]
    }
    assert contexts["trial"] == {"training", "validation"}
    assert contexts["final"] == {"training", "validation", "test"}
    assert contexts["screen"] == {"training"}
    dataset = trial_runs[0].inputs.dataset_inputs[0].dataset
    assert dataset.name.startswith("digits") and dataset.digest
    assert "growth_core.data.load('digits'" in dataset.source
    for r in (stages["final"], trial_runs[0]):
        local = c.download_artifacts(r.info.run_id, "config.json", str(p.folder))
        assert json.loads(Path(local).read_text())["name"] == "tiny-e2e"


def test_system_metrics_per_trial_and_per_worker(run):
    _, c, stages, trial_runs = run
    trial_keys = set(trial_runs[0].data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= (
        trial_keys
    )
    final_keys = set(stages["final"].data.metrics)
    for rank in (0, 1):
        assert f"system/worker_{rank}/cpu_utilization_percentage" in final_keys
        assert f"system/worker_{rank}/process_memory_rss_megabytes" in final_keys
    tags = stages["final"].data.tags
    assert tags["system_metrics.worker_0.ray_node"] and tags["system_metrics.worker_1.ray_node"]


def test_the_final_run_shows_its_growth_validation_and_flops_by_name(run):
    p, c, stages, _ = run
    final = p.summary["final"]
    final_run = stages["final"]
    metrics = final_run.data.metrics
    assert {"val_accuracy", "val_loss", "test_accuracy", "test_loss"} <= set(metrics)
    assert {"train_flops_all_ranks", "train_flops_rank0"} <= set(metrics)
    assert "flops" not in metrics and "final_test_accuracy" not in metrics  # one name each
    assert metrics["train_flops_all_ranks"] == final["flops"] > metrics["train_flops_rank0"]
    assert {a.path for a in c.list_artifacts(final_run.info.run_id)} >= {
        "spec_final.json",
        "growth.png",
        "events.json",
        "config.json",
    }
    # the final fit's growth events are in MLflow, and the charts step up where it grew
    assert final["growth_events"] == len(final["growth"]) >= 1
    events = json.loads(
        Path(c.download_artifacts(final["run_id"], "events.json", str(p.folder))).read_text()
    )
    depth = {m.step: m.value for m in c.get_metric_history(final["run_id"], "depth")}
    for e in events:
        if e["kind"] == "layer":
            # the event's step is the last one trained before it; the next row has the layer
            before = max(s for s in depth if s <= e["step"])
            after = min(s for s in depth if s > e["step"])
            assert (before, after) == (e["step"], e["step"] + 1)
            assert depth[after] == depth[before] + 1


def test_the_search_front_is_on_the_parent_run(run):
    p, c, stages, trial_runs = run
    summary = p.summary
    front = pq.read_table(Path(summary["workdir"]) / "pareto.parquet").to_pylist()
    assert {r["trial_id"] for r in front} == {r.data.tags["trial_id"] for r in trial_runs}
    assert sum(r["selected"] for r in front) == 1
    parent_id = summary["parent_run_id"]
    assert {a.path for a in c.list_artifacts(parent_id)} >= {"pareto.parquet", "pareto.png"}
    assert summary["search"]["front"] and all(r["on_front"] for r in front if r["selected"])
    assert stages["search"].data.tags["selected_trial"] == summary["search"]["selected"]
