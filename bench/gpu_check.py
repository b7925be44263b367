"""On one GPU, in under 5 minutes: the MNIST conv net trained and grown on the GPU against the
CPU, and the pipeline's final stage run with ``use_gpu = true`` on one worker (nccl); on the CPU,
one growth step of the same net with 2 DDP workers against 1.

Written to JSON (``bench/results/gpu_check.json``):

- ``growth_step_seconds_1_worker`` / ``growth_step_seconds_2_workers``: one growth decision of
  the conv net (the policy below, after 5 training steps), on 1 and 2 gloo CPU processes of one
  thread each, through :class:`pipelines.distributed.RankZeroDecides`: each worker scores its
  share of the samples and the statistics are all-reduced; timed on rank 0, the broadcast of
  what changed included; ``growth_step_speedup`` their ratio; ``growth_step_cpu_seconds_rank0_*``
  rank 0's CPU time in it (its share of the work, whatever else runs on the machine);
  ``growth_events_*`` what each did (the same decision). Run with or without a GPU;
- ``steps_per_second_gpu`` / ``steps_per_second_cpu``: training steps of the conv net of
  ``pipelines/configs/mnist_cnn.toml`` (batch 128, Adam), by :class:`growth_core.train.Trainer`;
- ``steps_per_second_bf16`` / ``steps_per_second_fp32``: the same step on the GPU under
  ``torch.autocast(dtype=torch.bfloat16)`` and without it (the trainer itself runs in fp32);
- ``decision_seconds_gpu`` / ``decision_seconds_cpu``: one growth decision of
  :class:`~growth_core.growth.DepthWidthPolicy` (width statistics, line search, then depth);
- ``peak_gpu_memory_mb``: the most the GPU held over the growth run;
- ``growth_events_gpu``: what the growth run on the GPU did;
- ``final_stage``: the exit code, seconds and growth events of ``python -m pipelines final``
  on mnist_cnn.toml with ``final.use_gpu = true``, ``final.workers = 1``, one epoch.

Where there is no CUDA device the script says so and writes the CPU figures only (the GPU's are
``null``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.events import GrowthPolicy
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, WidthGrowth
from growth_core.nets import build
from growth_core.train import TrainConfig, Trainer
from pipelines.distributed import RankZeroDecides

NAME = "gpu_check"
STAGES = ((4, 4), (8, 8))
CONFIG = _common.ROOT / "pipelines" / "configs" / "mnist_cnn.toml"
#: The DDP growth step is timed after this many training steps.
DECIDE_AT = 5


def load(data_dir: Path | None):
    folder = data_dir or _common.DEFAULT_MNIST
    if not (folder / "train.parquet").exists():
        raise SystemExit(f"no MNIST parquet files in {folder}: pass --data-dir")
    return folder, datasets.load_parquet(
        folder / "train.parquet", folder / "test.parquet", scale=255.0
    )


def spec(data) -> ConvSpec:
    return ConvSpec(data.shape, data.num_classes, STAGES, "stride", "relu")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def steps_per_second(data, device: str, steps: int) -> float:
    """Training steps (no growth) per second on ``device``, after a warm-up of 5."""
    torch.manual_seed(0)
    config = TrainConfig(steps=steps + 5, lr=2e-3, optimizer="adam", batch_size=128)
    trainer = Trainer(build(spec(data)).to(device), data, config)
    for _ in range(5):
        trainer.train_step(*trainer.next_batch())
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*trainer.next_batch())
    sync(device)
    return steps / (time.perf_counter() - start)


def autocast_steps_per_second(data, bf16: bool, steps: int) -> float:
    """The same training step on the GPU, its forward pass under bf16 autocast or not."""
    torch.manual_seed(0)
    net = build(spec(data)).cuda()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = data.x_train[:128].cuda(), data.y_train[:128].cuda()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    sync("cuda")
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync("cuda")
    return steps / (time.perf_counter() - start)


class TimedDecisions(GrowthPolicy):
    """``policy``, with the wall time (and this process's CPU time) of each decision
    ``decider`` makes (trigger fired) recorded; ``decider`` is ``policy`` or the one it wraps."""

    def __init__(
        self, policy: GrowthPolicy, device: str, decider: DepthWidthPolicy | None = None
    ) -> None:
        self.policy, self.device, self.seconds, self.cpu_seconds = policy, device, [], []
        self.decider = decider or policy

    def decide(self, state):
        before = self.decider.decisions
        sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        decision = self.policy.decide(state)
        sync(self.device)
        if self.decider.decisions > before:
            self.seconds.append(time.perf_counter() - start)
            self.cpu_seconds.append(time.process_time() - cpu_start)
        return decision


def growth_policy(steps: tuple[int, ...]) -> DepthWidthPolicy:
    """Width first (TINY on 1000 samples, the line search on 512), else depth (4 batches)."""
    return DepthWidthPolicy(
        AtSteps(steps),
        width=WidthGrowth(
            "tiny",
            selection="singular_value",
            min_relative_gain=0.0,
            max_neurons=8,
            statistics_samples=1000,
            line_search_samples=512,
        ),  # fmt: skip
        depth=DepthGrowth(max_depth=6, score_batches=4),
    )


def growth_run(data, device: str) -> dict:
    """200 steps with a decision every 50 (width first, else depth); each decision timed."""
    torch.manual_seed(0)
    timed = TimedDecisions(growth_policy((50, 100, 150)), device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    config = TrainConfig(steps=200, lr=2e-3, optimizer="adam", batch_size=128, eval_every=200)
    result = Trainer(build(spec(data)).to(device), data, config, policy=timed).fit()
    seconds = timed.seconds
    out = {
        "decision_seconds": sum(seconds) / len(seconds) if seconds else None,
        "growth_events": [f"{e.kind} at {e.position}" for e in result.events],
        "architecture": result.net.spec.describe(),
    }
    if device == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _ddp_worker(rank: int, world: int, port: int, folder: Path, out) -> None:
    """One gloo worker: :data:`DECIDE_AT` DDP steps, then the timed growth step (rank 0 says)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _, data = load(folder)
        torch.manual_seed(0)
        policy = growth_policy((DECIDE_AT,))
        timed = TimedDecisions(RankZeroDecides(policy), "cpu", policy)
        config = TrainConfig(steps=DECIDE_AT, lr=2e-3, optimizer="adam", batch_size=128)
        trainer = Trainer(
            build(spec(data)),
            data,
            config,
            policy=timed,
            wrap=DistributedDataParallel,
            shard=(rank, world),
        )
        trainer.train_until(DECIDE_AT)
        if rank == 0:
            events = [f"{e.kind} at {e.position}" for e in trainer.events]
            out.put((timed.seconds[0], timed.cpu_seconds[0], events))
    finally:
        dist.destroy_process_group()


def growth_step_on_cpu(folder: Path, workers: int) -> tuple[float, float, list[str]]:
    """Seconds of one growth step on ``workers`` gloo processes, rank 0's CPU seconds in it,
    and the growth it made."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    out = context.Queue()
    procs = [
        context.Process(target=_ddp_worker, args=(r, workers, port, folder, out))
        for r in range(workers)
    ]
    for p in procs:
        p.start()
    result = out.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise SystemExit(f"gpu_check: a DDP worker exited with {p.exitcode}")
    return result


def final_stage(data_dir: Path) -> dict:
    """``python -m pipelines final`` on mnist_cnn.toml, one worker on the GPU, in a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow.db'}"}
        command = [
            sys.executable, "-m", "pipelines", "final", "--config", str(CONFIG),
            "--set", f'data.path="{data_dir}"', "--set", "final.use_gpu=true",
            "--set", "final.workers=1", "--set", "final.epochs=1",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        return {
            "returncode": done.returncode,
            "seconds": round(time.perf_counter() - start, 1),
            "stdout_tail": done.stdout[-1500:],
            "stderr_tail": done.stderr[-1500:],
        }


#: The figures only a GPU gives (``null`` without one).
GPU_KEYS = (
    "gpu", "steps_per_second_gpu", "steps_per_second_cpu", "steps_per_second_fp32",
    "steps_per_second_bf16", "decision_seconds_gpu", "decision_seconds_cpu",
    "peak_gpu_memory_mb", "growth_events_gpu", "growth_events_cpu", "final_stage",
)  # fmt: skip


def gpu_figures(data, folder: Path, steps: int) -> dict:
    """The GPU against the CPU: training steps, bf16, growth decisions, the final stage."""
    gpu = growth_run(data, "cuda")
    cpu = growth_run(data, "cpu")
    return {
        "gpu": torch.cuda.get_device_name(0),
        "steps_per_second_gpu": steps_per_second(data, "cuda", steps),
        "steps_per_second_cpu": steps_per_second(data, "cpu", max(steps // 4, 10)),
        "steps_per_second_fp32": autocast_steps_per_second(data, False, steps),
        "steps_per_second_bf16": autocast_steps_per_second(data, True, steps),
        "decision_seconds_gpu": gpu["decision_seconds"],
        "decision_seconds_cpu": cpu["decision_seconds"],
        "peak_gpu_memory_mb": gpu["peak_gpu_memory_mb"],
        "growth_events_gpu": gpu["growth_events"],
        "growth_events_cpu": cpu["growth_events"],
        "final_stage": final_stage(folder.resolve()),
    }


def ddp_growth_steps(folder: Path) -> dict:
    """The CPU figures: one growth step on 1 and on 2 gloo workers."""
    one, one_cpu, one_events = growth_step_on_cpu(folder, 1)
    two, two_cpu, two_events = growth_step_on_cpu(folder, 2)
    return {
        "growth_step_seconds_1_worker": one,
        "growth_step_seconds_2_workers": two,
        "growth_step_speedup": one / two,
        "growth_step_cpu_seconds_rank0_1_worker": one_cpu,
        "growth_step_cpu_seconds_rank0_2_workers": two_cpu,
        "growth_events_1_worker": one_events,
        "growth_events_2_workers": two_events,
    }


def main() -> None:
    args = _common.parser(NAME, __doc__).parse_args()
    _common.setup()
    folder, data = load(args.data_dir)
    started = time.perf_counter()
    steps = 50 if args.quick else 200
    busy = os.getloadavg()[0]  # other work on the machine slows the 2 workers' wall time first
    summary = ddp_growth_steps(folder.resolve())
    if torch.cuda.is_available():
        summary |= gpu_figures(data, folder, steps)
    else:
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); CPU only")
        summary |= dict.fromkeys(GPU_KEYS)
    config = {"start": spec(data).describe(), "quick": args.quick, "steps": steps,
              "seconds": round(time.perf_counter() - started, 1),
              "load_average_before": busy}  # fmt: skip
    print(json.dumps(summary, indent=2))
    print("wrote", _common.write_result(NAME, args.out, config, [], summary))


if __name__ == "__main__":
    main()
