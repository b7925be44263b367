"""Search stage: Optuna through Ray Tune, two objectives, ASHA stopping weak trials early.

Each trial is one growing training run (:func:`pipelines.trial.run`) on a validation split,
reporting validation accuracy and the network's parameter count after every epoch; the
screened initializations are one categorical dimension of the space. Optuna's multi-objective
TPE sampler looks for accuracy up and parameters down (what growth buys is a smaller network:
parameters are what a user deploys and pays for at inference, and unlike training FLOPs they do
not favour short runs); ASHA prunes on accuracy alone. The result is the Pareto front
(:mod:`pipelines.pareto`) and the point ``final.select`` picks from it. Every trial is a child
MLflow run of the search's run, itself a child of the pipeline's.

Trials only train: each epoch's report carries the history rows and growth events since the
last one, and a Tune callback in the driver (:class:`_TrialTracker`) writes them to the trial's
MLflow run, which it created when the trial started, under the search's run. A trial process
then never opens the tracking store (on SQLite that alone took 1.5 s a trial) and never draws
a plot; its system metrics travel with its reports too.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from mlflow.entities import DatasetInput
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from growth_core.events import GrowthEvent
from growth_core.init import Initializer

from . import pareto
from . import trial as trials
from .config import PipelineConfig, PipelineError, storage_path
from .plots import growth_figure
from .system_metrics import SystemSampler, named
from .tracking import (
    RunLogger,
    client,
    history_stride,
    load_model_dir,
    sampled_rows,
    save_model,
    tracking_uri,
)

METRIC = "val_accuracy"
#: The second objective, minimized: the network's parameter count when the trial ends.
SIZE = "params"
#: Report keys that carry what the tracker logs (JSON strings), not metrics to compare.
ROWS_KEY, EVENTS_KEY, SPEC_KEY = "new_history_rows", "new_growth_events", "spec"
SYSTEM_KEY = "system_sample"
#: The Tune experiment's folder in the run's storage.
SEARCH_DIR = "search"
#: A trial checkpoint's trainer state (beside the network's ``spec.json`` and weights).
TRIAL_STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class SearchResult:
    best_settings: dict[str, Any]
    """The settings of the trial ``final.select`` picked."""
    best_val_accuracy: float
    best_run_id: str
    trials: list[dict[str, Any]]
    """One row per trial that reported (see :data:`pareto.FRONT_SCHEMA`)."""
    selected: dict[str, Any]


def param_space(
    cfg: PipelineConfig, inits: list[Initializer], depth_caps: dict[str, int] | None = None
) -> dict[str, Any]:
    """Tune's search space: the free settings, sampled by Optuna; the rest fixed. Each
    initializer is a choice with its own depth cap (the screen's readout, else
    ``search.max_depth``)."""
    caps = depth_caps or {}
    s = cfg.search
    space: dict[str, Any] = trials.base_settings(cfg)
    space.update(
        lr=tune.loguniform(*s.lr),
        insertion=tune.choice(list(s.insertion)),
        width_strategy=tune.choice(list(s.width_strategy)),
        growth_timing=tune.choice(list(s.growth_timing)),
        **architecture_space(s),
        plateau_threshold=tune.loguniform(*s.plateau_threshold),
        init=tune.choice(
            [
                json.dumps(
                    {**i.to_dict(), "max_depth": caps.get(i.label, s.max_depth)}, sort_keys=True
                )
                for i in inits
            ]
        ),
    )
    return space


def architecture_space(s) -> dict[str, Any]:
    """The starting depth and width as dimensions, when ``search.architecture`` asks for them."""
    if s.architecture is None:
        return {}
    (d_low, d_high), (w_low, w_high) = s.architecture.depth, s.architecture.width
    return {
        "start_depth": tune.randint(d_low, d_high + 1),
        "start_width": tune.lograndint(w_low, w_high + 1),
    }


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's settings from its Tune config: the initializer choice carries its depth cap."""
    init = json.loads(config["init"])
    return {**config, "max_depth": init.pop("max_depth", config["max_depth"]), "init": init}


def _trial(settings: dict[str, Any], cfg_json: str) -> None:
    """A Tune function trainable: one growing run, reported after every epoch with a checkpoint
    (the network and the trainer's state), from which a restarted trial goes on: after a lost
    worker (``search.max_failures``) or a resumed search (``Tuner.restore``)."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    cfg = PipelineConfig.model_validate_json(cfg_json)
    settings = _settings(settings)
    data = trials.with_validation(trials.load_data(cfg.data), seed=cfg.data.seed)
    stride = history_stride(data.n_train, int(settings["batch_size"]))
    net, resume = _restored_trial()
    done = (len(resume["history"]), len(resume["events"])) if resume else (0, 0)
    sent = {"rows": done[0], "events": done[1]}  # a restored trial reported these before
    sampler = SystemSampler()
    setup_seconds = time.perf_counter() - started

    def on_epoch(t, epoch: int) -> None:
        rows = sampled_rows(t.history[sent["rows"] :], stride)
        events = [e.to_dict() for e in t.events[sent["events"] :]]
        sent["rows"], sent["events"] = len(t.history), len(t.events)
        row = t.history[-1]
        metrics = {
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
            SYSTEM_KEY: json.dumps(sampler.sample()),
        }
        with tempfile.TemporaryDirectory() as tmp:
            save_model(t.net, tmp)
            torch.save(t.state_dict(), Path(tmp) / TRIAL_STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    trials.run(
        cfg.model, data, settings, on_epoch=on_epoch, eval_name="val", net=net, resume=resume
    )


def _restored_trial() -> tuple[Any, dict[str, Any] | None]:
    """The network and trainer state of this trial's last checkpoint, or ``(None, None)``."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as folder:
        net = load_model_dir(folder)
        state = torch.load(Path(folder) / TRIAL_STATE_FILE, weights_only=False)
    return net, state


class _TrialTracker(tune.Callback):
    """The driver's side of every trial's MLflow run, a child of the search's run: created when
    the trial starts (params, datasets, config, description), fed from each report (metrics by
    step, system metrics, each growth event with the spec after it), closed when the trial ends
    (``events.json``, ``spec_final.json``, ``growth.png``). A trial ASHA stopped early is
    FINISHED with the tag ``stopped_early=true``; a trial that failed is FAILED."""

    def __init__(
        self,
        experiment_id: str,
        search_run_id: str,
        epochs: int,
        *,
        datasets: list[DatasetInput] | None = None,
        config_json: str = "{}",
    ) -> None:
        self.experiment_id, self.search_run_id, self.epochs = experiment_id, search_run_id, epochs
        self.datasets, self.config_json = datasets or [], config_json
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self._open: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict:
        return {"runs": self.runs}  # Tune pickles its callbacks with the experiment

    def __setstate__(self, state: dict) -> None:
        self.runs, self._open = state["runs"], {}
        self.datasets, self.config_json = [], "{}"

    # Tune saves this with every experiment checkpoint and gives it back on ``Tuner.restore``:
    # the trials' runs, and what the open ones logged so far (their figures are drawn at the end)
    def get_state(self) -> dict[str, Any]:
        keep = ("history", "events", "epoch", "spec")
        opened = {t: {k: s.get(k) for k in keep} for t, s in self._open.items()}
        for state in opened.values():
            state["events"] = [e.to_dict() for e in state["events"]]
        return {"runs": dict(self.runs), "open": opened}

    def set_state(self, state: dict[str, Any]) -> None:
        self.runs = dict(state["runs"])
        self._restored = state.get("open", {})
        self._retire_orphans()

    def _retire_orphans(self) -> None:
        """Trial runs created after the experiment checkpoint a search resumes from: Tune does
        not know their trials and runs them again (the searcher, restored too, suggests the
        same settings), under new runs. The old ones are deleted (MLflow keeps them, hidden, with
        the tag ``superseded``)."""
        c = client(tracking_uri())
        found = c.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{self.search_run_id}'"
        )
        known = set(self.runs.values())
        for run in found:
            if run.info.run_id not in known:
                c.set_tag(run.info.run_id, "superseded", "resumed search: the trial ran again")
                c.set_terminated(run.info.run_id, "KILLED")
                c.delete_run(run.info.run_id)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self._open:  # a trial restarted after a failure: same run
            return
        if trial.trial_id in self.runs:  # a resumed search: the trial's run goes on
            self._reattach(trial.trial_id)
            return
        settings = _settings(trial.config)
        logger = RunLogger.start(
            self.experiment_id,
            f"trial-{trial.trial_id}",
            parent_run_id=self.search_run_id,
            tags={"stage": "trial", "trial_id": trial.trial_id},
            description=_describe_trial(trial.trial_id, settings),
            uri=tracking_uri(),
        )
        logger.log_params(settings)
        logger.log_datasets(self.datasets)
        logger.log_text(self.config_json, "config.json")
        self.runs[trial.trial_id] = logger.run_id
        self._open[trial.trial_id] = {
            "logger": logger,
            "history": [],
            "events": [],
            "epoch": 0,
            "logged_step": -1,
            "logged_event_step": -1,
        }

    def _reattach(self, trial_id: str) -> None:
        """Open a restored trial's run again; what it had logged (the store knows past the last
        experiment checkpoint) is not logged twice when the trial reports it again."""
        logger = RunLogger.reopen(self.runs[trial_id], tracking_uri())
        logger.set_tags({"resumed": "true"})
        saved = getattr(self, "_restored", {}).get(trial_id) or {}
        self._open[trial_id] = {
            "logger": logger,
            "history": list(saved.get("history") or []),
            "events": [GrowthEvent.from_dict(e) for e in saved.get("events") or []],
            "epoch": saved.get("epoch") or 0,
            "spec": saved.get("spec"),
            "logged_step": logger.last_step("loss", "val_loss"),
            "logged_event_step": logger.last_step("growth_event"),
        }

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        state = self._open.get(trial.trial_id)
        if state is None:
            return
        rows, events = json.loads(result[ROWS_KEY]), json.loads(result[EVENTS_KEY])
        events = [GrowthEvent.from_dict(e) for e in events]
        logger = state["logger"]
        new_rows = [r for r in rows if r["step"] > state["logged_step"]]
        logger.log_history(new_rows)
        if new_rows:
            logger.log_metrics(named(json.loads(result[SYSTEM_KEY])), step=new_rows[-1]["step"])
            state["logged_step"] = new_rows[-1]["step"]
        new_events = [e for e in events if e.step > state["logged_event_step"]]
        if new_events:
            logger.log_events(new_events, summary=False)
            state["logged_event_step"] = new_events[-1].step
        state["history"] += rows
        state["events"] += events
        state["epoch"], state["spec"] = result["epoch"], result[SPEC_KEY]

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        state = self._open.pop(trial.trial_id, None)
        if state is None:
            return
        logger = state["logger"]
        stopped_early = state["epoch"] < self.epochs
        try:
            logger.log_json([e.to_dict() for e in state["events"]], "events.json")
            if state.get("spec"):  # the architecture the trial ended with, grown or not
                logger.log_text(state["spec"], "spec_final.json")
            logger.log_figure(growth_figure(state["history"], state["events"]), "growth.png")
            logger.set_tags(
                {
                    "stopped_early": str(stopped_early).lower(),
                    "epochs_trained": state["epoch"],
                }
            )
        finally:
            logger.finish(True)  # ASHA stopping a trial is the search working, not a failure

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        state = self._open.pop(trial.trial_id, None)
        if state is not None:
            try:
                state["logger"].set_tags({"error": _error_line(trial)})
            finally:
                state["logger"].finish(False)

    def on_experiment_end(self, trials, **info) -> None:
        self.end_open("KILLED")  # never heard of again: end them rather than leave them

    def end_open(self, status: str) -> None:
        """End every trial run still open with ``status``."""
        for trial_id in list(self._open):
            self._open.pop(trial_id)["logger"].finish(status)


def _placement_groups() -> set[str]:
    """Ids of the live placement groups (Tune holds each running trial's resources in one)."""
    from ray.util.placement_group import placement_group_table

    return {
        pg_id
        for pg_id, info in placement_group_table().items()
        if info["state"] in ("PENDING", "CREATED", "RESCHEDULING")
    }


def _remove_placement_groups(ids: set[str]) -> None:
    """Remove the placement groups an interrupted search left, and with them its trials'
    actors: Tune cleans up only when its loop ends normally, and a Ray session that outlives
    the pipeline (a notebook, a cluster) would keep them running."""
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for pg_id in ids:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))


def _error_line(trial) -> str:
    """The last line of a failed trial's error (``DivergedError: val loss nan at ...``), from
    the error file Tune wrote in the driver before it called back."""
    try:
        lines = [line for line in Path(trial.error_file).read_text().splitlines() if line.strip()]
    except (OSError, TypeError):
        lines = []
    return lines[-1].strip()[:5000] if lines else "the trial raised (no error file)"


def _describe_trial(trial_id: str, settings: dict[str, Any]) -> str:
    """One sentence: what this trial trains."""
    growth = []
    if settings["insertion"] != "none":
        growth.append(f"layer insertion ({settings['insertion']})")
    if settings.get("width_strategy", "none") != "none":
        growth.append(f"width growth ({settings['width_strategy']})")
    how = " and ".join(growth) or "no growth (a fixed architecture)"
    return (
        f"Trial {trial_id}: a network trained on the training split with {how}, "
        f"lr {settings['lr']:.3g}, scored on the validation split."
    )


class _SchedulerState(tune.Callback):
    """ASHA's rungs in Tune's experiment checkpoint. Tune saves the searcher's state and its
    callbacks', not the scheduler's: a restored search would start ASHA with empty rungs and
    stop trials the search it resumes would have stopped differently."""

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def __getstate__(self) -> dict:
        return {}  # pickled with the experiment: the scheduler is pickled on its own

    def __setstate__(self, state: dict) -> None:
        self.scheduler = None

    def get_state(self) -> dict[str, Any] | None:
        if self.scheduler is None:
            return None
        return {"scheduler": pickle.dumps(self.scheduler.__dict__)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.__dict__.update(pickle.loads(state["scheduler"]))


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


#: Tune's settings while the search runs: its older reporter, which ``verbose=0`` silences
#: (the pipeline prints its own progress), and Ctrl+C left to the pipeline, which stops (its
#: runs KILLED) rather than let Tune end the search quietly and the final stage go on.
#: The experiment's state (trials, the Optuna study, the trackers' runs) is saved every
#: ``TUNE_GLOBAL_CHECKPOINT_S`` seconds, and a resumed search starts from the last one: the
#: trials reported after it run again from their last checkpoint (not logged twice).
TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
}


@contextmanager
def _quiet_tune():
    """:data:`TUNE_ENV` set and Optuna's INFO lines off while the search runs."""
    before = {k: os.environ.get(k) for k in TUNE_ENV}
    os.environ.update(TUNE_ENV)
    optuna_level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(optuna_level)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_search(
    cfg: PipelineConfig,
    inits: list[Initializer],
    depth_caps: dict[str, int] | None = None,
    *,
    experiment_id: str,
    parent_run_id: str,
    storage: Path | str,
    advance=lambda: None,
    datasets: list[DatasetInput] | None = None,
    resume_run_id: str | None = None,
    on_start=lambda run_id: None,
) -> SearchResult:
    """The search, as a ``search`` child run of ``parent_run_id`` whose children are the trials
    (``datasets``: the training and validation splits, logged on each); ``on_start`` gets its
    run id. ``resume_run_id``: a search stopped before, its run and Tune experiment (in
    ``storage``) to go on with (``Tuner.restore``), its trial runs re-attached."""
    s = cfg.search
    if resume_run_id is not None:
        run = RunLogger.reopen(resume_run_id, tracking_uri())
    else:
        run = RunLogger.start(
            experiment_id,
            "search",
            parent_run_id=parent_run_id,
            tags={"stage": "search"},
            description=(
                f"Search: {s.trials} trials, Optuna's multi-objective sampler (validation "
                "accuracy up, parameters down) through Ray Tune, ASHA stopping weak trials; "
                "its children are the trials."
            ),
            uri=tracking_uri(),
        )
    on_start(run.run_id)
    ok = False
    try:
        if resume_run_id is None:
            run.log_params({k: v for k, v in s.model_dump(mode="json").items()})
            run.log_datasets(datasets or [])
        result = _search(
            cfg,
            inits,
            depth_caps,
            experiment_id,
            run,
            storage,
            advance,
            datasets,
            resume=resume_run_id is not None,
        )
        run.log_metrics(
            {"best_val_accuracy": result.best_val_accuracy, "trials": len(result.trials)}, step=0
        )
        run.set_tags({"selected_trial": result.selected["trial_id"]})
        ok = True
        return result
    finally:
        run.finish(ok)


def _search(cfg, inits, depth_caps, experiment_id, run, storage, advance, datasets, *, resume):
    s = cfg.search
    trainable = tune.with_resources(
        tune.with_parameters(_trial, cfg_json=cfg.model_dump_json()), {"cpu": 1}
    )
    tracker = _TrialTracker(
        experiment_id,
        run.run_id,
        s.epochs,
        datasets=datasets,
        config_json=cfg.model_dump_json(indent=2),
    )
    path = f"{storage_path(storage).rstrip('/')}/{SEARCH_DIR}"
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True)
        scheduler = tuner._local_tuner._tune_config.scheduler  # the one restored with it
        callbacks = [_Progress(advance), tracker, _SchedulerState(scheduler)]
        _replace_callbacks(tuner, callbacks)
        advance(_finished_trials(tuner))
    else:  # a first start, or a search stopped before Tune saved anything: from the start
        scheduler = _scheduler(s)
        callbacks = [_Progress(advance), tracker, _SchedulerState(scheduler)]
        tuner = _new_tuner(cfg, inits, depth_caps, trainable, storage, callbacks, scheduler)
    before = _placement_groups()
    with _quiet_tune():
        try:
            grid = tuner.fit()
        except KeyboardInterrupt:  # Ctrl+C or SIGTERM: the trials end with the search
            tracker.end_open("KILLED")
            _remove_placement_groups(_placement_groups() - before)
            raise
    _drop_checkpoints(grid)
    return _result(cfg, grid, tracker)


def _drop_checkpoints(grid) -> None:
    """The trials' checkpoints, once the search is over: they were kept for resuming it
    (an MNIST trial's are about 3 MB an epoch)."""
    for result in grid:
        for checkpoint, _ in result.best_checkpoints or []:
            with contextlib.suppress(OSError):  # gone, or the storage refuses: space lost
                checkpoint.filesystem.delete_dir(checkpoint.path)


def _scheduler(s) -> ASHAScheduler:
    return ASHAScheduler(
        metric=METRIC,
        mode="max",
        time_attr="training_iteration",
        max_t=s.epochs,
        grace_period=min(s.asha.grace_period, s.epochs),
        reduction_factor=s.asha.reduction_factor,
    )


def _new_tuner(cfg, inits, depth_caps, trainable, storage, callbacks, scheduler) -> tune.Tuner:
    s = cfg.search
    searcher = ConcurrencyLimiter(
        OptunaSearch(metric=[METRIC, SIZE], mode=["max", "min"], seed=s.seed),
        max_concurrent=s.max_concurrent,
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg, inits, depth_caps),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=s.trials,
        ),
        run_config=tune.RunConfig(
            name=SEARCH_DIR,
            storage_path=storage_path(storage),
            verbose=0,
            callbacks=callbacks,
            # a trial's worker lost (a node gone): the trial goes on from its last checkpoint
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            # every checkpoint kept while the search runs: the experiment state on the storage
            # lags Tune's own (synced in the background), and a resumed search restores a
            # trial from the checkpoint that state names; dropped when the search ends
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )


def _replace_callbacks(tuner: tune.Tuner, callbacks: list[tune.Callback]) -> None:
    """This process's callbacks on a restored tuner: ``Tuner.restore`` brings back the ones
    pickled when the search started (their progress bar gone, their runs' state in Tune's
    experiment checkpoint, which it gives to these by ``set_state``). Ray offers no public way
    (nor to the restored scheduler); tests/pipelines/test_resume.py fails if these go."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


def _finished_trials(tuner: tune.Tuner) -> int:
    """Trials a restored search had finished (the progress bar starts there)."""
    try:
        grid = tuner.get_results()
    except Exception:  # noqa: BLE001 - nothing readable yet: the bar starts at 0
        return 0
    return sum(r.metrics.get("done", False) or r.error is not None for r in grid)


def _result(cfg, grid, tracker) -> SearchResult:
    s = cfg.search
    if not any(r.metrics and METRIC in r.metrics for r in grid):
        first = next((r.error for r in grid if r.error), None)
        cause = str(first).strip().splitlines()[-1] if first else "none reported"
        raise PipelineError(f"search: every trial failed; the first error: {cause}")
    rows, configs = [], {}
    for r in grid:
        if r.metrics and METRIC in r.metrics:
            trial_id = r.metrics["trial_id"]
            configs[trial_id] = r.config
            rows.append(
                {
                    "trial_id": trial_id,
                    "mlflow_run_id": tracker.runs.get(trial_id),
                    "val_accuracy": r.metrics[METRIC],
                    "params": r.metrics[SIZE],
                    "flops": r.metrics.get("flops"),
                    "depth": r.metrics.get("depth"),
                    "epochs": r.metrics.get("training_iteration"),
                    "completed": r.metrics.get("training_iteration", 0) >= s.epochs,
                    "grows": trials.grows(r.config),
                    "trial_seconds": r.metrics.get("trial_seconds"),
                    "setup_seconds": r.metrics.get("setup_seconds"),
                    "lr": r.config["lr"],
                    "insertion": r.config["insertion"],
                    "width_strategy": r.config["width_strategy"],
                    "init": r.config["init"],
                }
            )
    pick = pareto.select(rows, cfg.final.select, cfg.final.tolerance)
    settings = _settings(configs[pick["trial_id"]])
    return SearchResult(settings, pick[METRIC], pick["mlflow_run_id"], rows, pick)
