"""The whole pipeline: screen -> search -> final, under one MLflow parent run.

Embedded defaults, scale by environment: with nothing set, Ray starts in-process and MLflow
writes ``sqlite:///mlflow.db`` with artifacts in ``./mlartifacts``; ``RAY_ADDRESS`` joins an
existing cluster and ``MLFLOW_TRACKING_URI`` logs to a server. The code does not change.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from growth_core.init import Initializer
from growth_core.io import atomic_write

from . import trial as trials
from .config import PipelineConfig
from .lineage import dataset_inputs
from .plots import event_label
from .resume import CONFIG_FILE, WORKDIR_TAG, PipelineState, PriorRun, hold
from .tracking import RunLogger, ensure_experiment, load_model_dir, tracking_uri

#: Object store of an in-process Ray: small, so two local nodes do not reserve half the RAM.
LOCAL_OBJECT_STORE_BYTES = 500 * 1024**2
#: Ray Train polls its workers every 2 s by default, and a worker's ``report`` waits for the
#: poll: 20 reports of a 2-worker job took 72 s here, 32 s at 0.25 s.
JOB_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}
RUNS_DIR = Path("runs")


def keep_ray_on_loopback() -> None:
    """Make a Ray started on this machine listen on 127.0.0.1 only.

    Ray resolves "127.0.0.1" to the address other machines see and binds its servers (GCS,
    raylet, agents, workers) there or on every interface; ``--node-ip-address=127.0.0.1`` and
    ``_node_ip_address`` do not stop it. Its single-host mode (``ENABLE_RAY_CLUSTER`` off,
    Ray's default on macOS and Windows) keeps every address on loopback: the environment
    variable reaches the processes Ray starts, the constant this one, which read it at import.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def job_runtime_env() -> dict:
    """The runtime environment of the pipeline's Ray job (and of this process, whose Ray Train
    controller runs in the driver): :data:`JOB_ENV`, and rank 0's rendezvous store bound to the
    master address (:func:`~pipelines.distributed.bind_store_to_master_address`)."""
    for key, value in JOB_ENV.items():
        os.environ.setdefault(key, value)
    return {
        "env_vars": {k: os.environ[k] for k in JOB_ENV},
        "worker_process_setup_hook": "pipelines.distributed.bind_store_to_master_address",
    }


def _is_loopback(address: str) -> bool:
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "auto"
        return False


def init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    runtime_env = job_runtime_env()
    if address := os.environ.get("RAY_ADDRESS"):
        if _is_loopback(address):  # a cluster of this machine (make cluster-up, or a Ray job's)
            keep_ray_on_loopback()
        ray.init(runtime_env=runtime_env, log_to_driver=False)
    else:
        keep_ray_on_loopback()
        ray.init(
            runtime_env=runtime_env,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            log_to_driver=False,
            configure_logging=False,
        )


@contextmanager
def _stage(console: Console, title: str, total: int | None):
    columns = [TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(title, total=total)
        yield lambda n=1: progress.advance(task, n)


def run_pipeline(
    cfg: PipelineConfig, stages: tuple[str, ...], *, console: Console | None = None
) -> dict[str, Any]:
    """Run the given stages; returns the summary that is also printed and logged. Ctrl+C and
    SIGTERM stop it with :class:`Interrupted`, its MLflow runs ended KILLED; it can then be
    resumed (:func:`resume_pipeline`)."""
    # MLflow prints a "View run at" link for every run it ends on a server: the pipeline prints
    # its own, once
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with _terminate_as_interrupt():
        return _run_pipeline(cfg, stages, console=console)


def resume_pipeline(run_id: str, *, console: Console | None = None) -> dict[str, Any]:
    """Go on with the pipeline whose parent MLflow run is ``run_id``, stopped (interrupted,
    killed, or failed) before it finished: with its own config and stages, the stages it
    finished not repeated, an interrupted search restored (``Tuner.restore``) with its trial
    runs re-attached, an interrupted final fit on from its last checkpoint; into the same
    MLflow runs and run folder."""
    from .resume import prior_run

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    prior = prior_run(run_id)
    with _terminate_as_interrupt():
        return _run_pipeline(prior.cfg, prior.state.stages, console=console, prior=prior)


class Interrupted(KeyboardInterrupt):
    """The pipeline was stopped by a signal (SIGTERM) or Ctrl+C."""


def _interrupt(signum, frame):
    raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")


def _rearm_sigterm() -> None:
    """SIGTERM to :func:`_interrupt` again: ``ray.init`` installs Ray's own handler, which
    aborts the process (exit 134) and leaves every run RUNNING."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises :class:`Interrupted` in the driver, as Ctrl+C raises KeyboardInterrupt,
    so every open run is ended KILLED on the way out (a signal handler can only be set in the
    main thread: elsewhere SIGTERM keeps its handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run_pipeline(
    cfg: PipelineConfig,
    stages: tuple[str, ...],
    *,
    console: Console | None = None,
    prior: PriorRun | None = None,
) -> dict[str, Any]:
    console = console or Console()
    cfg = cfg.resolved()
    data = trials.load_data(cfg.data)  # in the driver, before any run: a data error stops here
    cfg.check_on(data.input_dim, data.num_classes, data.shape)  # and a model it cannot take
    inputs = dataset_inputs(cfg.data, data)
    init_ray()
    _rearm_sigterm()
    if prior is None:
        experiment_id = ensure_experiment(cfg.name)
        parent, state, lock = _start(cfg, stages, data, inputs, experiment_id)
    else:
        experiment_id, state = prior.experiment_id, prior.state
        lock = hold(state.workdir)
        parent = RunLogger.reopen(prior.run_id)
        console.print(f"Resuming pipeline run {prior.run_id} in {state.workdir}")
    workdir = state.workdir
    summary: dict[str, Any] = {
        "storage": state.storage,
        "parent_run_id": parent.run_id,
        "experiment_id": experiment_id,
        "workdir": str(workdir),
    }
    ok = False
    try:
        inits = [Initializer.from_dict(i.to_dict()) for i in cfg.screen.initializers()]
        depth_caps: dict[str, int] = {}
        if "screen" in stages and "screen" in state.done:
            done = state.done["screen"]
            inits = [Initializer.from_dict(i) for i in done["inits"]]
            depth_caps, summary["screen"] = done["summary"]["depth_caps"], done["summary"]
            console.print(f"screen: finished before; kept {', '.join(done['summary']['kept'])}")
        elif "screen" in stages:
            from .screening import run_screen

            with _stage(console, "screen", len(inits)) as advance:
                screened = run_screen(
                    cfg,
                    inits,
                    experiment_id=experiment_id,
                    parent_run_id=parent.run_id,
                    workdir=workdir,
                    advance=advance,
                    data=data,
                    dataset_input=inputs["train"],
                )
            inits, depth_caps = screened.kept, screened.depth_caps
            summary["screen"] = {
                "table": str(screened.table_path),
                "kept": [i.label for i in inits],
                "depth_caps": depth_caps,
            }
            console.print(screened.render())
            state.finish(
                "screen", {"inits": [i.to_dict() for i in inits], "summary": summary["screen"]}
            )
        settings = trials.base_settings(cfg)
        settings["init"] = inits[0].to_dict()
        settings["max_depth"] = depth_caps.get(inits[0].label, settings["max_depth"])
        if "search" in stages and "search" in state.done:
            settings, summary["search"] = (
                state.done["search"]["settings"],
                state.done["search"]["summary"],
            )
            console.print("search: finished before")
        elif "search" in stages:
            from .search import run_search

            with _stage(console, "search", cfg.search.trials) as advance:
                found = run_search(
                    cfg,
                    inits,
                    depth_caps,
                    experiment_id=experiment_id,
                    parent_run_id=parent.run_id,
                    storage=state.storage,
                    advance=advance,
                    datasets=[inputs["train"], inputs["validation"]],
                    resume_run_id=state.runs.get("search"),
                    on_start=lambda run_id: state.started("search", run_id),
                )
            settings = found.best_settings
            summary["search"] = {
                "best_val_accuracy": found.best_val_accuracy,
                "best_trial_run_id": found.best_run_id,
                "trials": len(found.trials),
                "front": _log_front(cfg, found, parent, workdir),
                "selected": found.selected["trial_id"],
            }
            parent.log_metrics({"best_val_accuracy": found.best_val_accuracy}, step=0)
            state.finish("search", {"settings": settings, "summary": summary["search"]})
        if "final" in stages and "final" in state.done:
            summary["final"] = state.done["final"]
        elif "final" in stages:
            summary["final"] = _final(
                cfg, settings, experiment_id, parent, state, console, data, inputs
            )
            state.finish("final", summary["final"])
        summary["settings"] = settings
        parent.log_json(summary, "summary.json")
        ok = True
    except KeyboardInterrupt:
        console.print(
            f"Stopped; resume with: [bold]make run RESUME={parent.run_id}[/bold]  "
            f"(or: growth run --resume {parent.run_id})"
        )
        raise
    finally:
        parent.finish(ok)
        lock.close()
    _print_summary(console, cfg, summary)
    return summary


def _start(cfg, stages, data, inputs, experiment_id):
    """A new pipeline: its parent run, its own folder (the run id in its name, never shared
    with a run of the same second) with its config and state, and the folder held."""
    started = time.strftime("%Y%m%d-%H%M%S")
    parent = RunLogger.start(
        experiment_id,
        f"pipeline-{started}",
        tags={"stage": "pipeline", "stages": ",".join(stages)},
        description=(
            f"Pipeline ({', '.join(stages)}) on {data.name}: screen candidate initializations, "
            "search growth settings for accuracy against size, train the selected network with "
            "growth and register it."
        ),
    )
    try:
        workdir = (RUNS_DIR / cfg.name / f"{started}-{parent.run_id[:8]}").resolve()
        workdir.mkdir(parents=True, exist_ok=False)
        lock = hold(workdir)
        atomic_write(
            workdir / CONFIG_FILE, lambda tmp: tmp.write_text(cfg.model_dump_json(indent=2))
        )
        state = PipelineState(workdir, stages, cfg.storage_root(workdir))
        state.save()
        parent.set_tags({WORKDIR_TAG: str(workdir), "storage": state.storage})
        parent.log_params(cfg.model_dump(mode="json"))
        parent.log_text(cfg.model_dump_json(indent=2), "config.json")
        parent.log_datasets(inputs.values())
    except BaseException:
        parent.finish(False)
        raise
    return parent, state, lock


def _log_front(cfg, found, parent, workdir: Path) -> list[dict[str, Any]]:
    """The search's trials as ``pareto.parquet`` and ``pareto.png`` on the parent run; returns
    the front's rows for the summary."""
    from .pareto import front_table, write_front
    from .plots import pareto_figure

    table = front_table(found.trials, found.selected["trial_id"])
    parent.log_file(write_front(table, workdir / "pareto.parquet"))
    parent.log_figure(pareto_figure(found.trials, found.selected["trial_id"]), "pareto.png")
    keys = ("trial_id", "val_accuracy", "params", "grows", "selected")
    return [{k: r[k] for k in keys} for r in table.to_pylist() if r["on_front"]]


def _final(cfg, settings, experiment_id, parent, state, console, data, inputs) -> dict:
    """The final fit, in its ``final`` run (a stopped one's, when ``state`` has it: Ray Train
    then goes on from the fit's last checkpoint in ``state.storage``)."""
    import json

    from growth_core.events import GrowthEvent

    from .final import FLOPS_ALL_RANKS, run_final
    from .plots import growth_figure

    if "final" in state.runs:
        run = RunLogger.reopen(state.runs["final"])
    else:
        run = RunLogger.start(
            experiment_id,
            "final",
            parent_run_id=parent.run_id,
            tags={"stage": "final"},
            description=(
                f"Final fit: the selected settings trained with growth under DDP on "
                f"{cfg.final.workers} workers for {cfg.final.epochs} epochs (the search's "
                f"validation split held out), tested, and registered as the model {cfg.name!r}."
            ),
        )
        state.started("final", run.run_id)
        run.log_params({**settings, "workers": cfg.final.workers, "epochs": cfg.final.epochs})
        run.log_text(cfg.model_dump_json(indent=2), "config.json")
        run.log_datasets(inputs.values())
    ok = False
    try:
        with _stage(console, f"final ({cfg.final.workers} workers)", None):
            result = run_final(cfg, settings, run_id=run.run_id, storage=state.storage)
        net = load_model_dir(result.checkpoint_dir)
        history = json.loads((result.checkpoint_dir / "history.json").read_text())
        events = [
            GrowthEvent.from_dict(e)
            for e in json.loads((result.checkpoint_dir / "events.json").read_text())
        ]
        run.log_figure(growth_figure(history, events), "growth.png")
        run.log_text(net.spec.to_json(), "spec_final.json")
        keys = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "params")
        metrics = {k: result.metrics[k] for k in keys}
        metrics["flops"] = result.metrics[FLOPS_ALL_RANKS]
        example = raw_features(data, data.x_test[:5])
        logged = run.log_model(
            net,
            example,
            preprocess=data.preprocess,
            register_as=cfg.name,
            description=(
                f"{net.spec.describe()}, grown in {len(events)} events by the final fit of "
                f"pipeline run {parent.run_id}: raw features ({net.spec.input_dim}) in, class "
                f"probabilities ({net.spec.output_dim}) out; test accuracy "
                f"{metrics['test_accuracy']:.4f}."
            ),
        )
        step = result.metrics["step"]
        for split in ("test", "val"):  # the logged model's metrics, on the split they measure
            on = inputs["test" if split == "test" else "validation"]
            values = {f"{split}_accuracy": metrics[f"{split}_accuracy"]}
            values[f"{split}_loss"] = metrics[f"{split}_loss"]
            run.log_metrics(values, step=step, model_id=logged.model_id, dataset=on)
        parent.log_metrics(
            {f"final_{k}": v for k, v in metrics.items() if k != "flops"}
            | {f"final_{FLOPS_ALL_RANKS}": metrics["flops"]},
            step=0,
        )
        ok = True
        return {
            **metrics,
            "architecture": net.spec.describe(),
            "growth_events": len(events),
            "growth": [describe_event(e) for e in events],
            "model_uri": logged.registered_uri or logged.model_uri,
            "run_id": run.run_id,
            "checkpoint": str(result.checkpoint_dir),
        }
    finally:
        run.finish(ok)


def raw_features(data, x):
    """``x`` as the data source held it, before the loader's scaling (``data.preprocess``)."""
    if data.preprocess is None:
        return x.numpy()
    shift, scale = data.preprocess
    return (x * scale + shift).numpy()


def describe_event(e) -> str:
    """One line a person reads: ``step 40: width +10 neurons in hidden layer 0 (64-18-10)``."""
    return f"step {e.step}: {event_label(e)} ({e.spec_after.describe()})"


def _print_summary(console: Console, cfg: PipelineConfig, summary: dict[str, Any]) -> None:
    table = Table(title=f"{cfg.name}: summary")
    table.add_column("what")
    table.add_column("value")
    if "screen" in summary and "skipped" in summary["screen"]:
        table.add_row("screen", f"skipped: {summary['screen']['skipped']}")
    elif "screen" in summary:
        caps = summary["screen"]["depth_caps"]
        kept = (f"{label} (depth <= {caps[label]})" for label in summary["screen"]["kept"])
        table.add_row("screened candidates kept", ", ".join(kept))
    if "search" in summary:
        front = summary["search"]["front"]
        points = ", ".join(
            f"{r['val_accuracy']:.3f} @ {r['params']}" + (" (trained)" if r["selected"] else "")
            for r in front
        )
        table.add_row("Pareto front (val accuracy @ params)", points)
        rule = f"{cfg.final.select}" + (
            f" (tolerance {cfg.final.tolerance:g})" if cfg.final.select == "smallest_within" else ""
        )
        table.add_row(
            f"trained: {rule}", f"val accuracy {summary['search']['best_val_accuracy']:.4f}"
        )
    s = summary.get("settings", {})
    if s:
        init = Initializer.from_dict(s["init"]).label
        growth = f"insertion={s['insertion']}, width={s.get('width_strategy', 'none')}"
        table.add_row("best settings", f"lr={s['lr']:.3g}, {growth}, init={init}")
    if "final" in summary:
        f = summary["final"]
        table.add_row(
            "grown architecture", f"{f['architecture']} ({f['growth_events']} growth events)"
        )
        for i, line in enumerate(f["growth"]):
            table.add_row("growth events" if i == 0 else "", line)
        table.add_row("test accuracy", f"{f['test_accuracy']:.4f}")
        table.add_row("training FLOPs", f"{f['flops']:.3g}")
        table.add_row("registered model", f["model_uri"])
    console.print(table)
    uri = tracking_uri()
    console.print(f"Results: {summary['workdir']}  (MLflow run {summary['parent_run_id']})")
    page = runs_page(summary["experiment_id"])
    if uri.startswith("sqlite:"):
        console.print(
            f"Open the MLflow UI: [bold]make ui[/bold], then http://127.0.0.1:5000/{page}  "
            f"(or: mlflow ui --backend-store-uri {uri})"
        )
    else:
        console.print(f"Open the MLflow UI: {uri.rstrip('/')}/{page}")


def runs_page(experiment_id: str) -> str:
    """The UI's page of an experiment's runs in "Model training" mode: MLflow 3.17's UI opens
    an experiment in GenAI mode unless the URL's ``workflowType`` (or the browser's saved
    choice, ``localStorage["mlflow.workflowType"]``) says otherwise; it does not read the
    experiment's ``mlflow.experimentKind`` tag for that."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
