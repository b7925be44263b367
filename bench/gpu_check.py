"""On one GPU, in under 5 minutes: the MNIST conv net trained and grown on the GPU against the
CPU, and the pipeline's final stage run with ``use_gpu = true`` on one worker (nccl).

Written to JSON (``bench/results/gpu_check.json``):

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

A growth step with 2 workers is not timed here: the statistics are not yet all-reduced across
ranks (issue 13); rank 0 computes them alone. Where there is no CUDA device the script says so
and exits 0, writing nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import torch
import torch.nn.functional as F

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.events import GrowthPolicy
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, WidthGrowth
from growth_core.nets import build
from growth_core.train import TrainConfig, Trainer

NAME = "gpu_check"
STAGES = ((4, 4), (8, 8))
CONFIG = _common.ROOT / "pipelines" / "configs" / "mnist_cnn.toml"


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
    """``policy``, with the wall time of each decision it makes (trigger fired) recorded."""

    def __init__(self, policy: DepthWidthPolicy, device: str) -> None:
        self.policy, self.device, self.seconds = policy, device, []

    def decide(self, state):
        before = self.policy.decisions
        sync(self.device)
        start = time.perf_counter()
        decision = self.policy.decide(state)
        sync(self.device)
        if self.policy.decisions > before:
            self.seconds.append(time.perf_counter() - start)
        return decision


def growth_run(data, device: str) -> dict:
    """200 steps with a decision every 50 (width first, else depth); each decision timed."""
    torch.manual_seed(0)
    policy = DepthWidthPolicy(
        AtSteps((50, 100, 150)),
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
    timed = TimedDecisions(policy, device)
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


def main() -> None:
    args = _common.parser(NAME, __doc__).parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing run")
        return
    _common.setup()
    folder, data = load(args.data_dir)
    started = time.perf_counter()
    steps = 50 if args.quick else 200
    gpu = growth_run(data, "cuda")
    cpu = growth_run(data, "cpu")
    summary = {
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
    config = {"start": spec(data).describe(), "quick": args.quick, "steps": steps,
              "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    print(json.dumps(summary, indent=2))
    print("wrote", _common.write_result(NAME, args.out, config, [], summary))


if __name__ == "__main__":
    main()
