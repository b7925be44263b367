"""Final stage: the best configuration trained with growth under DDP by Ray Train.

``TorchTrainer`` with ``ScalingConfig(num_workers=N, use_gpu=...)`` (gloo on CPU, nccl on GPU,
one GPU per worker, :func:`gpu_plan`). Each worker trains on its shard of the training set;
each growth decision is scored by every worker on its share of the samples, the statistics
all-reduced, and rank 0's decision is applied by all (:mod:`pipelines.distributed`). The search's
validation split is held out again (the final's validation accuracy is then comparable with the
trial's) and the test split is evaluated too, after every epoch. Rank 0 logs metrics to the final
MLflow run.

A checkpoint at every epoch and every growth event (``ray.train.report``): the network, its
growth events and history (rank 0), and each rank's trainer state (step, FLOPs, optimizer, data
order and position, the policy's counters and random states). A worker lost mid-run costs a
restart, not the run: ``FailureConfig(max_failures=final.max_failures)`` restarts the workers,
and each resumes from the last checkpoint (``ray.train.get_checkpoint``) exactly where it
stood; the MLflow run goes on without logging a step twice.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from growth_core.flops import parameter_count

from . import trial as trials
from .config import PipelineConfig, PipelineError, storage_path
from .distributed import RankZeroDecides, max_rank_difference
from .system_metrics import SystemSampler, named
from .tracking import (
    SPEC_FILE,
    RunLogger,
    history_stride,
    load_model_dir,
    save_model,
    tracking_uri,
)

#: Training FLOPs, named for what they count: every worker's steps and scoring passes, or rank
#: 0's alone (its shard of the steps and its share of every growth decision's scoring: each
#: worker scores its share of the samples and counts that pass).
FLOPS_ALL_RANKS, FLOPS_RANK0 = "train_flops_all_ranks", "train_flops_rank0"
#: Each rank's trainer state in a checkpoint.
STATE_FILE = "trainer_state_rank{rank}.pt"
#: How long rank 0 waits, at a checkpoint, for its MLflow calls to reach the store (a store
#: down longer: training goes on, and a worker lost then may lose those steps' metrics).
CHECKPOINT_FLUSH_SECONDS = 5.0
#: The fit's folder in the run's storage (Ray Train's run name).
FINAL_DIR = "final"
#: How long an interrupted fit gets to abort (workers stopped, resources released).
ABORT_SECONDS = 30.0
#: Checkpoints kept on the storage: the last two (one may be half-written when a worker dies).
CHECKPOINTS_KEPT = 2


@dataclass(frozen=True)
class FinalResult:
    checkpoint_dir: Path
    metrics: dict[str, Any]


def gpu_plan(use_gpu: bool | str, workers: int) -> bool:
    """Whether the final stage's workers take a GPU each: ``"auto"`` when the Ray cluster has
    one GPU per worker (a head without GPUs may schedule workers that have them), else as set;
    one worker per GPU, never more workers than GPUs (the run would wait for them forever)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if use_gpu == "auto":
        return gpus >= workers > 0
    if use_gpu and gpus == 0:
        raise PipelineError(
            'final.use_gpu: true, but the Ray cluster has no GPU; set it to false or "auto"'
        )
    if use_gpu and gpus < workers:
        raise PipelineError(
            f"final.workers: {workers} workers take one GPU each, but the Ray cluster has "
            f'{gpus}; set final.workers <= {gpus}, or final.use_gpu = "auto"'
        )
    return bool(use_gpu)


def _write_checkpoint(trainer, directory: Path, rank: int) -> None:
    """Rank 0: the network, its events and history; every rank: its trainer's state (its data
    order and position differ by shard). Ray Train gathers the ranks' files in one folder."""
    torch.save(trainer.state_dict(), directory / STATE_FILE.format(rank=rank))
    if rank == 0:
        save_model(trainer.net, directory)
        (directory / "events.json").write_text(json.dumps([e.to_dict() for e in trainer.events]))
        (directory / "history.json").write_text(json.dumps(trainer.history))


def _restored(
    rank: int, device: torch.device, earlier: str | None
) -> tuple[Any, dict[str, Any]] | None:
    """The network and this rank's trainer state from the run's last checkpoint, when Ray
    Train restarted the workers after a failure, else from ``earlier`` (the last checkpoint of
    a fit stopped before, which a resumed pipeline goes on from); None on a first start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and earlier is not None:
        checkpoint = ray.train.Checkpoint(earlier)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        net = load_model_dir(folder).to(device)
        state = torch.load(Path(folder) / STATE_FILE.format(rank=rank), weights_only=False)
    return net, state


def _sum_over_ranks(value: int, device: torch.device) -> int:
    """Training FLOPs of all workers together (each counts its own shard's steps)."""
    import torch.distributed as dist

    total = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def _gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (a collective: every rank calls it)."""
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)
    cfg = PipelineConfig.model_validate_json(config["cfg_json"])
    settings = config["settings"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    full = trials.load_data(cfg.data)
    # the search's validation split held out again: the final's val_accuracy checks the search's
    data = trials.with_validation(full, seed=cfg.data.seed)
    restored = _restored(rank, device, config.get("resume_from"))
    if restored is None:
        net, resume = trials.build_net(cfg.model, data, settings).to(device), None
    else:  # a restart after a failure: on from the last checkpoint, not from the start
        net, resume = restored
    logger = None
    if rank == 0 and config.get("run_id"):
        logger = RunLogger(config["run_id"], config["tracking_uri"])
    # never log a step twice: the rows of a restored history were logged before its checkpoint,
    # and a driver stopped after logging a report may not have seen its checkpoint saved
    logged = {"rows": len(resume["history"]) if resume else 0, "step": -1}
    if logger is not None and resume is not None:
        logged["step"] = logger.last_step("loss", FLOPS_ALL_RANKS)
    fault = config.get("fault_after_growth")
    stride = history_stride(data.n_train // world, int(settings["batch_size"]))
    sampler = SystemSampler()
    nodes = _gather(ray.get_runtime_context().get_node_id(), world)
    if logger is not None:
        logger.set_tags({f"system_metrics.worker_{r}.ray_node": n for r, n in enumerate(nodes)})

    def wrap(module):
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def report(trainer, reason: str) -> None:
        row = trainer.history[-1]
        metrics = {
            "reason": reason,
            "step": trainer.step,
            FLOPS_ALL_RANKS: _sum_over_ranks(trainer.flops, device),
            FLOPS_RANK0: trainer.flops,
            "params": parameter_count(trainer.net.spec),
            "depth": trainer.net.spec.depth,
            "widths": list(trainer.net.spec.widths),
            "spec": trainer.net.spec.to_json(),
            "growth_events": len(trainer.events),
            "rank_max_weight_diff": max_rank_difference(trainer.net, device),
        }
        for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "loss"):
            if key in row:
                metrics[key] = row[key]
        samples = _gather(sampler.sample(), world)
        if logger is not None:
            rows = [r for r in trainer.history[logged["rows"] :] if r["step"] > logged["step"]]
            logger.log_history(rows, every=stride, rename={"flops": FLOPS_RANK0})
            logged["rows"] = len(trainer.history)
            system = {}
            for r, sample in enumerate(samples):
                system.update(named(sample, f"worker_{r}"))
            if trainer.step > logged["step"]:
                logger.log_metrics(
                    {FLOPS_ALL_RANKS: metrics[FLOPS_ALL_RANKS], **system}, step=trainer.step
                )
        if logger is not None:  # what the checkpoint says is logged, logged (MLflow down: 5 s)
            logger.flush(CHECKPOINT_FLUSH_SECONDS)
        with tempfile.TemporaryDirectory() as tmp:
            _write_checkpoint(trainer, Path(tmp), rank)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        if fault and reason == "growth" and rank == world - 1 and not Path(fault).exists():
            Path(fault).write_text(f"killed rank {rank} after the growth at step {trainer.step}")
            os.kill(os.getpid(), signal.SIGKILL)  # an injected fault: a worker lost mid-run

    result = trials.run(
        cfg.model,
        data,
        settings,
        on_epoch=lambda trainer, epoch: report(trainer, f"epoch {epoch}"),
        on_growth=lambda trainer: report(trainer, "growth"),
        net=net,
        policy_wrapper=lambda policy: RankZeroDecides(policy, device),
        wrap=wrap,
        shard=(rank, world),
        eval_name="val",
        test=(full.x_test, full.y_test),
        resume=resume,
    )
    if logger is not None:
        logger.log_events(result.events)
        logger.calls.close()  # the worker ends here: what the buffer holds goes first (bounded)


def last_checkpoint(storage: Path | str, workers: int) -> str | None:
    """The newest complete checkpoint of a fit stopped before in ``storage`` (every rank's
    state and the network in it), as a path or URI; None when there is none."""
    import pyarrow.fs

    root = f"{storage_path(storage).rstrip('/')}/{FINAL_DIR}"
    fs, path = pyarrow.fs.FileSystem.from_uri(root if "://" in root else f"file://{root}")
    found = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    needed = {SPEC_FILE, *(STATE_FILE.format(rank=r) for r in range(workers))}
    for folder in sorted(
        (f.path for f in found if f.type == pyarrow.fs.FileType.Directory), reverse=True
    ):
        if not Path(folder).name.startswith("checkpoint_"):
            continue
        names = {Path(f.path).name for f in fs.get_file_info(pyarrow.fs.FileSelector(folder))}
        if needed <= names:
            return folder if "://" not in root else f"{root.split('://')[0]}://{folder}"
    return None


@functools.cache
def _stoppable_trainer():
    """``TorchTrainer`` keeping its Train controller's handle, to stop the fit when the pipeline
    is interrupted. Ray Train's controller is an actor that outlives an interrupted ``fit()`` in
    a Ray session that goes on (a notebook, a cluster, a resumed pipeline in the same process):
    its workers would go on training and logging. Ray Train installs a SIGINT handler there
    instead (it aborts the fit, then exits the process with 0); the pipeline keeps its own:
    Ctrl+C ends its runs KILLED and exits with 130."""
    import ray
    from ray.train.torch import TorchTrainer

    class StoppableTrainer(TorchTrainer):
        controller = None

        def _register_sigint_handler(self, controller) -> None:  # Ray 2.60's hook in fit()
            self.controller = controller

        def stop(self) -> None:
            """Abort the fit as Ray Train's own handler does (its workers and their placement
            group released), killing the controller if it does not answer in time."""
            if self.controller is None:
                return
            with contextlib.suppress(Exception):  # gone, or stuck: the kill below ends it
                ray.get(self.controller.abort.remote(), timeout=ABORT_SECONDS)
            ray.kill(self.controller, no_restart=True)

    return StoppableTrainer


def run_final(
    cfg: PipelineConfig,
    settings: dict[str, Any],
    *,
    run_id: str | None,
    storage: Path | str,
    workers: int | None = None,
    fault_after_growth: Path | None = None,
) -> FinalResult:
    """Train ``settings`` with growth on ``workers`` (default ``final.workers``) Ray Train
    workers, surviving ``final.max_failures`` worker failures (each restart resumes from the
    last checkpoint). A fit stopped before (a resumed pipeline: the same ``storage``) goes on
    from its last checkpoint too: Ray Train finds it there. ``fault_after_growth``: a fault to
    inject (tests, bench/reliability.py): the last rank kills itself after the first growth
    event, once (the file records it)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    n_workers = workers or cfg.final.workers
    use_gpu = gpu_plan(cfg.final.use_gpu, n_workers)
    settings = {**settings, "epochs": cfg.final.epochs}
    trainer = _stoppable_trainer()(
        train_loop_per_worker,
        train_loop_config={
            "cfg_json": cfg.model_dump_json(),
            "settings": settings,
            "run_id": run_id,
            "tracking_uri": tracking_uri(),
            "fault_after_growth": str(fault_after_growth) if fault_after_growth else None,
            "resume_from": last_checkpoint(storage, workers or cfg.final.workers),
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=n_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": 1, "GPU": 1} if use_gpu else {"CPU": 1},
        ),
        run_config=RunConfig(
            name=FINAL_DIR,
            storage_path=storage_path(storage),
            failure_config=FailureConfig(max_failures=cfg.final.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )
    try:
        result = trainer.fit()
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM: the fit stops with the pipeline
        trainer.stop()
        raise
    if result.checkpoint is None:
        raise PipelineError("final: the training job reported no checkpoint")
    local = Path(result.checkpoint.to_directory())
    return FinalResult(local, dict(result.metrics))
