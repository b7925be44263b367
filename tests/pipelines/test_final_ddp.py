"""Growth under DDP: the replicas stay identical and decide what one worker decides."""

import json

import pytest
import torch

from growth_core.flops import train_step_flops
from growth_core.spec import ArchitectureSpec
from pipelines import trial as trials
from pipelines.config import validate
from pipelines.final import run_final
from pipelines.tracking import load_model_dir

pytestmark = pytest.mark.slow


def settings_forcing_one_insertion(cfg):
    settings = trials.base_settings(cfg)
    settings.update(
        init={"kind": "default", "sigma_w2": 1.0, "sigma_b2": 0.0},
        insertion="sensli",
        growth_timing="plateau",
        plateau_window=5,
        plateau_threshold=10.0,  # always "stalled": inserts at the first check, step 10
        max_depth=2,
        optimizer="sgd",
        lr=0.2,
    )
    return settings


def test_two_workers_grow_identically_and_like_one_worker(local_ray, tmp_path):
    # Full batch on the spirals' training split (the validation split held out, as the final
    # fit holds it out): the DDP-averaged gradient is the full-batch one.
    raw = {
        "name": "ddp-test",
        "data": {"dataset": "spirals"},
        "model": {"widths": [5]},
        "final": {"epochs": 20, "use_gpu": False},
    }
    n_train = trials.with_validation(trials.load_data(validate(raw).data)).n_train
    assert n_train % 2 == 0
    cfg = validate({**raw, "search": {"batch_size": n_train}})
    settings = settings_forcing_one_insertion(cfg)
    two = run_final(cfg, settings, run_id=None, storage=tmp_path / "two", workers=2)
    one = run_final(cfg, settings, run_id=None, storage=tmp_path / "one", workers=1)

    assert two.metrics["rank_max_weight_diff"] == 0.0  # every weight equal on both ranks
    events_two = json.loads((two.checkpoint_dir / "events.json").read_text())
    events_one = json.loads((one.checkpoint_dir / "events.json").read_text())
    assert [(e["step"], e["position"]) for e in events_two] == [(10, 0)]
    assert [(e["step"], e["position"], e["spec_after"]) for e in events_two] == [
        (e["step"], e["position"], e["spec_after"]) for e in events_one
    ]
    # FLOPs summed over ranks: each rank's steps on its half, and its half of the decision's
    # scoring pass (the event is rank 0's), so two workers count exactly what one worker counts.
    (event,), (event_one,) = events_two, events_one
    scoring = event_one["details"]["scoring_flops"]
    assert event["details"]["scoring_flops"] == scoring // 2
    small, grown = (ArchitectureSpec.from_dict(event[k]) for k in ("spec_before", "spec_after"))
    half = n_train // 2
    steps = 10 * train_step_flops(small, half) + 10 * train_step_flops(grown, half)
    flops = "train_flops_all_ranks"
    assert two.metrics[flops] == 2 * steps + scoring == one.metrics[flops]
    net_two, net_one = load_model_dir(two.checkpoint_dir), load_model_dir(one.checkpoint_dir)
    assert net_two.spec == net_one.spec and net_two.spec.widths == (5, 5)
    for p, q in zip(net_two.parameters(), net_one.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_a_worker_killed_after_a_growth_event_costs_a_restart_not_the_run(
    local_ray, tmp_path, monkeypatch
):
    # the last rank SIGKILLs itself right after the first growth event's checkpoint; Ray Train
    # restarts both workers and they resume from it: the same run as without the fault
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import RunLogger, ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = {
        "name": "ddp-fault",
        "data": {"dataset": "spirals"},
        "model": {"widths": [5]},
        "search": {"batch_size": 90},  # several steps an epoch: the data position matters
        "final": {"epochs": 6, "use_gpu": False, "max_failures": 2},
    }
    cfg = validate(raw)
    settings = settings_forcing_one_insertion(cfg)
    whole = run_final(cfg, settings, run_id=None, storage=tmp_path / "whole", workers=2)
    run = RunLogger.start(ensure_experiment("ddp-fault"), "final")
    marker = tmp_path / "fault.txt"
    faulted = run_final(
        cfg, settings, run_id=run.run_id, storage=tmp_path / "faulted", workers=2,
        fault_after_growth=marker,
    )  # fmt: skip
    assert "killed rank 1 after the growth at step 10" in marker.read_text()

    def events(result):
        return json.loads((result.checkpoint_dir / "events.json").read_text())

    assert [e["step"] for e in events(faulted)] == [10]
    assert events(faulted) == events(whole)
    net_f, net_w = load_model_dir(faulted.checkpoint_dir), load_model_dir(whole.checkpoint_dir)
    assert net_f.spec == net_w.spec
    for p, q in zip(net_f.parameters(), net_w.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)  # gloo's all-reduce: the same sums, same order
    flops = "train_flops_all_ranks"
    assert faulted.metrics[flops] == whole.metrics[flops]
    assert faulted.metrics["step"] == whole.metrics["step"]
    # no step logged twice, none lost
    history = MlflowClient(uri).get_metric_history(run.run_id, "loss")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)) and max(steps) == whole.metrics["step"]


@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_one_gpu_per_worker_configured_not_guessed(gpus, monkeypatch):
    import ray

    from pipelines.config import PipelineError
    from pipelines.final import gpu_plan

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": float(gpus)})
    assert gpu_plan("auto", 2) is (gpus >= 2)
    assert gpu_plan("auto", 1) is (gpus >= 1)
    assert gpu_plan(False, 2) is False
    if gpus == 0:
        with pytest.raises(
            PipelineError, match=r"^final.use_gpu: true, but the Ray cluster has no"
        ):
            gpu_plan(True, 1)
    else:
        assert gpu_plan(True, gpus) is True
        with pytest.raises(PipelineError, match=rf"^final.workers: {gpus + 1} workers take one"):
            gpu_plan(True, gpus + 1)
