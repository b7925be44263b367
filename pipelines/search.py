"""Search stage: Optuna (TPE) through Ray Tune, with ASHA stopping weak trials early.

Each trial is one growing training run (:func:`pipelines.trial.run`) on a validation split,
reporting validation accuracy after every epoch; the screened initializations are one
categorical dimension of the space. Every trial is a child MLflow run of the pipeline's run.

Trials only train: each epoch's report carries the history rows and growth events since the
last one, and a Tune callback in the driver (:class:`_TrialTracker`) writes them to the trial's
MLflow run, which it created when the trial started. A trial process then never opens the
tracking store (on SQLite that alone took 1.5 s a trial) and never draws a plot.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from growth_core.events import GrowthEvent
from growth_core.init import Initializer

from . import trial as trials
from .config import PipelineConfig, PipelineError
from .plots import growth_figure
from .tracking import RunLogger, history_stride, sampled_rows, tracking_uri

METRIC = "val_accuracy"
#: Report keys that carry what the tracker logs (JSON strings), not metrics to compare.
ROWS_KEY, EVENTS_KEY, SPEC_KEY = "new_history_rows", "new_growth_events", "spec"


@dataclass(frozen=True)
class SearchResult:
    best_settings: dict[str, Any]
    best_val_accuracy: float
    best_run_id: str
    trials: list[dict[str, Any]]


def param_space(cfg: PipelineConfig, inits: list[Initializer]) -> dict[str, Any]:
    """Tune's search space: the free settings, sampled by Optuna; the rest fixed."""
    s = cfg.search
    space: dict[str, Any] = trials.base_settings(cfg)
    space.update(
        lr=tune.loguniform(*s.lr),
        insertion=tune.choice(list(s.insertion)),
        width_strategy=tune.choice(list(s.width_strategy)),
        growth_timing=tune.choice(list(s.growth_timing)),
        plateau_threshold=tune.loguniform(*s.plateau_threshold),
        init=tune.choice([json.dumps(i.to_dict(), sort_keys=True) for i in inits]),
    )
    return space


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "init": json.loads(config["init"])}


def _trial(settings: dict[str, Any], cfg_json: str) -> None:
    """A Tune function trainable: one growing run, reported after every epoch."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    cfg = PipelineConfig.model_validate_json(cfg_json)
    settings = _settings(settings)
    data = trials.with_validation(trials.load_data(cfg.data), seed=cfg.data.seed)
    stride = history_stride(data.n_train, int(settings["batch_size"]))
    sent = {"rows": 0, "events": 0}
    setup_seconds = time.perf_counter() - started

    def on_epoch(t, epoch: int) -> None:
        rows = sampled_rows(t.history[sent["rows"] :], stride)
        events = [e.to_dict() for e in t.events[sent["events"] :]]
        sent["rows"], sent["events"] = len(t.history), len(t.events)
        row = t.history[-1]
        tune.report(
            {
                METRIC: row["val_accuracy"],
                "val_loss": row["val_loss"],
                "flops": t.flops,
                "params": row["params"],
                "depth": row["depth"],
                "epoch": epoch,
                "trial_seconds": time.perf_counter() - started,
                "setup_seconds": setup_seconds,
                ROWS_KEY: json.dumps(rows),
                EVENTS_KEY: json.dumps(events),
                SPEC_KEY: t.net.spec.to_json(),
            }
        )

    trials.run(cfg.model, data, settings, on_epoch=on_epoch, eval_name="val")


class _TrialTracker(tune.Callback):
    """The driver's side of every trial's MLflow child run: created when the trial starts
    (params, ``mlflow.parentRunId``), fed from each report (metrics by step, each growth event
    with the spec after it), closed when the trial ends (``events.json``, ``spec_final.json``,
    ``growth.png``; FINISHED, KILLED when ASHA stopped it, FAILED on an error)."""

    def __init__(self, experiment_id: str, parent_run_id: str, epochs: int) -> None:
        self.experiment_id, self.parent_run_id, self.epochs = experiment_id, parent_run_id, epochs
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self._open: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict:
        return {"runs": self.runs}  # Tune saves its callbacks with the experiment

    def __setstate__(self, state: dict) -> None:
        self.runs, self._open = state["runs"], {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        logger = RunLogger.start(
            self.experiment_id,
            f"trial-{trial.trial_id}",
            parent_run_id=self.parent_run_id,
            tags={"stage": "search", "trial_id": trial.trial_id},
            uri=tracking_uri(),
        )
        logger.log_params(_settings(trial.config))
        self.runs[trial.trial_id] = logger.run_id
        self._open[trial.trial_id] = {"logger": logger, "history": [], "events": [], "epoch": 0}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        state = self._open.get(trial.trial_id)
        if state is None:
            return
        rows, events = json.loads(result[ROWS_KEY]), json.loads(result[EVENTS_KEY])
        state["logger"].log_history(rows)
        events = [GrowthEvent.from_dict(e) for e in events]
        if events:
            state["logger"].log_events(events, summary=False)
        state["history"] += rows
        state["events"] += events
        state["epoch"], state["spec"] = result["epoch"], result[SPEC_KEY]

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        state = self._open.pop(trial.trial_id, None)
        if state is None:
            return
        logger = state["logger"]
        done = state["epoch"] >= self.epochs
        try:
            logger.log_json([e.to_dict() for e in state["events"]], "events.json")
            if state.get("spec"):  # the architecture the trial ended with, grown or not
                logger.log_text(state["spec"], "spec_final.json")
            logger.log_figure(growth_figure(state["history"], state["events"]), "growth.png")
            logger.set_tags({"stopped_early": str(not done).lower()})
        finally:
            logger.finish("FINISHED" if done else "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        state = self._open.pop(trial.trial_id, None)
        if state is not None:
            state["logger"].finish(False)

    def on_experiment_end(self, trials, **info) -> None:
        for trial_id in list(self._open):  # never heard of again: end it rather than leave it
            self._open.pop(trial_id)["logger"].finish("KILLED")


class _Progress(tune.Callback):
    """Advances a progress bar as trials finish."""

    def __init__(self, advance) -> None:
        self.advance = advance

    def __getstate__(self) -> dict:
        return {}  # Tune saves its callbacks with the experiment; a progress bar stays behind

    def __setstate__(self, state: dict) -> None:
        self.advance = lambda: None

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.advance()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.advance()


def run_search(
    cfg: PipelineConfig,
    inits: list[Initializer],
    *,
    experiment_id: str,
    parent_run_id: str,
    storage: Path,
    advance=lambda: None,
) -> SearchResult:
    s = cfg.search
    searcher = ConcurrencyLimiter(
        OptunaSearch(metric=METRIC, mode="max", seed=s.seed), max_concurrent=s.max_concurrent
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=s.epochs,
        grace_period=min(s.asha.grace_period, s.epochs),
        reduction_factor=s.asha.reduction_factor,
    )
    trainable = tune.with_resources(
        tune.with_parameters(_trial, cfg_json=cfg.model_dump_json()), {"cpu": 1}
    )
    tracker = _TrialTracker(experiment_id, parent_run_id, s.epochs)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(cfg, inits),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=s.trials,
        ),
        run_config=tune.RunConfig(
            name="search",
            storage_path=str(storage.resolve()),
            verbose=0,
            callbacks=[_Progress(advance), tracker],
        ),
    )
    grid = tuner.fit()
    if not any(r.metrics and METRIC in r.metrics for r in grid):
        first = next((r.error for r in grid if r.error), None)
        cause = str(first).strip().splitlines()[-1] if first else "none reported"
        raise PipelineError(f"search: every trial failed; the first error: {cause}")
    best = grid.get_best_result(metric=METRIC, mode="max", scope="all")
    rows = []
    for r in grid:
        if r.metrics:
            rows.append(
                {
                    "trial_id": r.metrics.get("trial_id"),
                    "mlflow_run_id": tracker.runs.get(r.metrics.get("trial_id")),
                    "val_accuracy": r.metrics.get(METRIC),
                    "epochs": r.metrics.get("training_iteration"),
                    "depth": r.metrics.get("depth"),
                    "params": r.metrics.get("params"),
                    "flops": r.metrics.get("flops"),
                    "trial_seconds": r.metrics.get("trial_seconds"),
                    "setup_seconds": r.metrics.get("setup_seconds"),
                    "lr": r.config["lr"],
                    "insertion": r.config["insertion"],
                    "init": json.loads(r.config["init"]),
                }
            )
    best_run = tracker.runs[best.metrics["trial_id"]]
    return SearchResult(_settings(best.config), best.metrics[METRIC], best_run, rows)
