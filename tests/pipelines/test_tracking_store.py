"""The embedded SQLite store takes writers at once: two processes logging together lose
nothing."""

import multiprocessing
import sqlite3

from pipelines.tracking import RunLogger, client, ensure_experiment

STEPS = 150


def _log(uri: str, experiment_id: str, name: str) -> str:
    logger = RunLogger.start(experiment_id, name, uri=uri)
    for step in range(STEPS):
        logger.log_metrics({"loss": 1.0 / (step + 1), "accuracy": step / STEPS}, step=step)
    logger.finish(True)
    return logger.run_id


def test_two_processes_write_to_one_sqlite_store_at_once(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment_id = ensure_experiment("concurrent")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        run_ids = pool.starmap(_log, [(uri, experiment_id, "a"), (uri, experiment_id, "b")])
    c = client(uri)
    for run_id in run_ids:
        assert c.get_run(run_id).info.status == "FINISHED"
        assert len(c.get_metric_history(run_id, "loss")) == STEPS


def test_a_model_spec_beyond_the_caps_is_refused_before_allocating(tmp_path):
    import json

    import pytest

    from growth_core.spec import SpecError
    from pipelines.tracking import load_model_dir

    spec = {"input_dim": 100_000, "output_dim": 10, "widths": [100_000] * 3, "activation": "relu"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "state_dict.pt").write_bytes(b"not read")  # it must stop before reading it
    with pytest.raises(SpecError, match=r"spec.json: 30,001,\d{3},\d{3} parameters"):
        load_model_dir(tmp_path)
    deep = {"input_dim": 2, "output_dim": 2, "widths": [1] * 20_000, "activation": "relu"}
    (tmp_path / "spec.json").write_text(json.dumps(deep))
    with pytest.raises(SpecError, match=r"spec.json: 20000 layers, above the 64"):
        load_model_dir(tmp_path)


def test_a_broken_model_folder_is_one_error_naming_the_file(tmp_path):
    import json

    import pytest
    import torch

    from growth_core.nets import build
    from growth_core.spec import ArchitectureSpec, SpecError
    from pipelines.tracking import load_model_dir

    spec = ArchitectureSpec(4, 3, (5,), "relu")
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    with pytest.raises(SpecError, match=r"state_dict.pt: no such file"):
        load_model_dir(tmp_path)
    (tmp_path / "state_dict.pt").write_bytes(b"\x00garbage")
    with pytest.raises(SpecError, match=r"state_dict.pt: not a weights file torch can read"):
        load_model_dir(tmp_path)
    other = build(ArchitectureSpec(4, 3, (6,), "relu"))
    torch.save(other.state_dict(), tmp_path / "state_dict.pt")
    with pytest.raises(SpecError, match=r"state_dict.pt: does not fit spec.json \(4-5-3 relu\)"):
        load_model_dir(tmp_path)
    torch.save(build(spec).state_dict(), tmp_path / "state_dict.pt")
    assert load_model_dir(tmp_path).spec == spec
    (tmp_path / "spec.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match=r"spec.json: not a text file"):
        load_model_dir(tmp_path)
    (tmp_path / "spec.json").unlink()
    (tmp_path / "spec.json").mkdir()
    with pytest.raises(SpecError, match=r"spec.json: not a file"):
        load_model_dir(tmp_path)


def test_runs_logging_the_same_datasets_at_once_all_get_them(tmp_path, monkeypatch):
    # the parent, the search and the trials log the same splits at the same moment, each on its
    # own thread: MLflow's store looks a dataset up, then inserts it, and a race lost that way
    # ("UNIQUE constraint failed") must not drop a run's datasets
    from growth_core import data as datasets
    from pipelines.config import DataConfig
    from pipelines.lineage import dataset_inputs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment_id = ensure_experiment("datasets")
    inputs = list(dataset_inputs(DataConfig(dataset="digits"), datasets.load("digits")).values())
    loggers = [RunLogger.start(experiment_id, f"run-{i}", uri=uri) for i in range(6)]
    for logger in loggers:
        logger.log_datasets(inputs)
    for logger in loggers:
        logger.finish(True)
        assert logger.calls.dropped == 0, logger.calls.errors
    c = client(uri)
    for logger in loggers:
        assert len(c.get_run(logger.run_id).inputs.dataset_inputs) == 3


def test_a_conv_net_comes_back_from_its_folder_and_as_mlflow_pyfunc(tmp_path):
    from types import SimpleNamespace

    import torch

    from growth_core.conv_spec import ConvSpec
    from growth_core.nets import build
    from pipelines.mlflow_model import GrownNetwork
    from pipelines.tracking import load_model_dir, save_model

    torch.manual_seed(0)
    net = build(ConvSpec((1, 8, 8), 10, ((4, 4), (6,)), "pool", batch_norm=True)).eval()
    save_model(net, tmp_path)
    back = load_model_dir(tmp_path).eval()
    assert back.spec == net.spec
    x = torch.randn(5, 64)
    torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)

    shift, scale = torch.zeros(64), torch.ones(64)
    torch.save((shift, scale), tmp_path / "preprocess.pt")
    artifacts = {
        "spec": str(tmp_path / "spec.json"),
        "weights": str(tmp_path / "state_dict.pt"),
        "preprocess": str(tmp_path / "preprocess.pt"),
    }
    model = GrownNetwork()
    model.load_context(SimpleNamespace(artifacts=artifacts))
    probs = model.predict(None, x.numpy())
    torch.testing.assert_close(torch.from_numpy(probs), torch.softmax(net(x), dim=1))
