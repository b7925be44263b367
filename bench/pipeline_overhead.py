"""What the pipeline costs on top of the library.

1. ``overhead_ratio``: one growing training run of the shipped MNIST pipeline
   (``pipelines/configs/mnist.toml``: its model, data and search settings, one trial at a fixed
   learning rate) timed bare (data loading + ``pipelines.trial.run``, growth_core's loop, no
   logging, in a fresh Python process) and as a Ray Tune trial of the search stage (a report per
   epoch carrying its history rows and growth events, which the driver writes to the trial's
   MLflow child run), measured inside the trial from its first to its last line.
   ``search_ratio`` is the whole search stage's wall time (Ray start excluded) over the bare
   run's. Ray's start-up and Tune's scheduling are a fixed cost per search, reported apart
   (``search_fixed_seconds``); the trial's own set-up before training (reading the config and
   the data) is reported as ``trial_setup_seconds``. Target: ``overhead_ratio`` <= 1.15.
   ``--quick`` runs the digits pipeline's trial instead (a second of training: the ratio then
   measures the fixed costs, not a claim).
2. ``screen_speedup_2cpu``: the screen stage of the shipped MNIST pipeline (8 candidates, a
   24-layer cascade of width 784 each, its decoders trained for ``SCREEN_STEPS`` steps) fanned
   out as Ray tasks on a Ray of 1 CPU and of 2 CPUs, each Ray started afresh (worker start-up
   counts). Target >= 1.7. ``--quick``: the digits pipeline's screen (a fraction of a second of
   work per candidate, so start-up dominates: not a claim).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import ray

from growth_core.init import Initializer
from pipelines import trial as trials
from pipelines.config import load_config
from pipelines.pipeline import job_runtime_env, keep_ray_on_loopback
from pipelines.screening import run_screen
from pipelines.search import run_search
from pipelines.tracking import ensure_experiment

NAME = "pipeline_overhead"
CONFIGS = _common.ROOT / "pipelines" / "configs"
#: One trial at a fixed learning rate: the bare run and the trial train the same thing.
LR = 3e-3
#: Decoder steps of batch 64 per screened candidate, at the paper's width 784 (the MNIST config
#: itself screens 128 projected features, a few seconds a candidate: too little to fan out).
SCREEN_STEPS = 150


def trial_config(quick: bool, data_dir: Path | None):
    """The shipped pipeline's search stage, narrowed to one trial at a fixed setting, and its
    screen stage at :data:`SCREEN_STEPS` steps a candidate."""
    overrides = [
        "search.trials=1",
        "search.max_concurrent=1",
        f"search.lr=[{LR}, {LR}]",
        'search.insertion=["sensli"]',
        'search.growth_timing=["plateau"]',
        "search.plateau_threshold=[0.02, 0.02]",
        'search.width_strategy=["none"]',
    ]
    if quick:
        return load_config(CONFIGS / "digits.toml", overrides)
    path = Path(data_dir or _common.DEFAULT_MNIST).resolve()
    overrides += [
        f'data.path="{path}"',
        "screen.width=784",  # the paper's width: a candidate costs seconds, not Ray's start-up
        f"screen.steps={SCREEN_STEPS}",
        "screen.batch_size=64",
    ]
    return load_config(CONFIGS / "mnist.toml", overrides)


def start_ray(cpus: int) -> None:
    ray.shutdown()
    keep_ray_on_loopback()
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        object_store_memory=300 * 1024**2,
        log_to_driver=False,
        configure_logging=False,
        runtime_env=job_runtime_env(),
    )


#: The bare run, in a fresh process as the trial is (its first epochs pay the process's warm-up).
BARE = """
import json, sys, time
import torch
from pipelines import trial as trials
from pipelines.config import PipelineConfig
torch.set_num_threads(1)
cfg = PipelineConfig.model_validate_json(sys.argv[1])
settings = json.loads(sys.argv[2])
t0 = time.perf_counter()
data = trials.with_validation(trials.load_data(cfg.data), seed=cfg.data.seed)
trials.run(cfg.model, data, settings, eval_name="val")
print(time.perf_counter() - t0)
"""


def bare_seconds(cfg, settings) -> float:
    """Data loading and the growing run, as the trial does them, without Ray or MLflow, in a
    fresh Python process, timed from its first line to its last as the trial is."""
    out = subprocess.run(
        [sys.executable, "-c", BARE, cfg.model_dump_json(), json.dumps(settings)],
        check=True,
        capture_output=True,
        text=True,
        cwd=_common.ROOT,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _common.parser(NAME, __doc__).parse_args()
    _common.setup()
    repeats = args.seeds or (1 if args.quick else 5)
    cfg = trial_config(args.quick, args.data_dir)
    init = Initializer("kaiming")
    settings = {**trials.base_settings(cfg), "lr": LR, "init": init.to_dict()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        start_ray(2)
        exp = ensure_experiment(cfg.name)
        parent = ensure_parent(exp)
        ratios, fixed, setup, totals = [], [], [], []
        bare_seconds(cfg, settings)  # warm-up of the file cache, as the trials then have it
        for r in range(repeats):
            bare = bare_seconds(cfg, settings)
            t0 = time.perf_counter()
            found = run_search(
                cfg, [init], experiment_id=exp, parent_run_id=parent, storage=Path(tmp) / f"ray{r}"
            )
            total = time.perf_counter() - t0
            in_trial = found.trials[0]["trial_seconds"]
            setup.append(found.trials[0]["setup_seconds"])
            ratios.append(in_trial / bare)
            totals.append(total / bare)
            fixed.append(total - in_trial)
            rows.append(
                {
                    "part": "trial",
                    "repeat": r,
                    "bare_s": bare,
                    "in_pipeline_s": in_trial,
                    "setup_s": setup[-1],
                    "search_total_s": total,
                }
            )
        screen_s = {}
        for cpus in (1, 2):
            start_ray(cpus)
            t0 = time.perf_counter()
            run_screen(
                cfg,
                cfg.screen.initializers(),
                experiment_id=exp,
                parent_run_id=parent,
                workdir=Path(tmp) / f"screen{cpus}",
            )
            screen_s[cpus] = time.perf_counter() - t0
            rows.append(
                {
                    "part": "screen",
                    "cpus": cpus,
                    "seconds": screen_s[cpus],
                    "candidates": len(cfg.screen.initializers()),
                }
            )
        ray.shutdown()
    summary = {
        "overhead_ratio": statistics.median(ratios),
        "search_fixed_seconds": statistics.median(fixed),
        "search_ratio": statistics.median(totals),
        "trial_setup_seconds": statistics.median(setup),
        "screen_speedup_2cpu": screen_s[1] / screen_s[2],
    }
    print(
        _common.markdown_table(
            rows,
            [
                "part",
                "repeat",
                "cpus",
                "bare_s",
                "in_pipeline_s",
                "setup_s",
                "search_total_s",
                "seconds",
            ],
        )
    )
    for k, v in summary.items():
        print(f"{k}: {v:.3f}")
    out = _common.write_result(
        NAME,
        args.out,
        {"trial": cfg.name, "screen": cfg.name, "lr": LR, "repeats": repeats},
        rows,
        summary,
    )
    print(f"wrote {out}")


def ensure_parent(experiment_id: str) -> str:
    from pipelines.tracking import RunLogger

    run = RunLogger.start(experiment_id, "overhead-bench", tags={"stage": "pipeline"})
    return run.run_id


if __name__ == "__main__":
    main()
