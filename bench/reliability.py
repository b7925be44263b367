"""Faults, injected for real, and what survives them; hostile input; what listens where.

Each fault is a real one, on this machine's Ray and MLflow:

- ``worker killed after a growth event``: a 2-worker final fit (spirals, 6 epochs, one layer
  inserted at step 10) whose last rank SIGKILLs itself right after the growth event's
  checkpoint, against the same fit without the fault. Survived when it ends with the same growth
  events, architecture and FLOPs and weights within 1e-6; ``metric_steps_lost``: steps the
  uninterrupted run logged to MLflow that the faulted one did not; ``metric_steps_twice``: steps
  it logged twice.
- ``SIGTERM mid-search, then --resume``: the pipeline (search and final) stopped by SIGTERM
  while its trials run, then resumed as ``growth run --resume RUN_ID`` does. Survived when it
  stops (no final stage on a partial search) leaving no MLflow run RUNNING (all KILLED or
  FINISHED) and no trial holding a CPU, and the resumed pipeline finishes its 4 trials and the
  final stage in the same parent run, nothing RUNNING.
- ``a diverging search``: every trial's loss turns infinite. Survived when each trial is FAILED
  in MLflow with its error and the pipeline ends with its one-line error, nothing RUNNING.
- ``MLflow server down mid-run``: a run logging to a real ``mlflow server`` on 127.0.0.1 that
  is stopped for 40 of its 60 steps and started again on the same store. Survived when the run
  ends FINISHED with every step; ``artifacts_lost`` counts its 4 artifacts that did not arrive,
  ``slowest_log_call_seconds`` how long logging ever waited while the server was down.

``fuzz_cases`` / ``uncaught_exceptions``: tests/test_fuzz.py's generated configs, specs and
Parquet tables (2,000, derandomized), run here; an uncaught exception fails a case.
``load_*``: a 50-trial search on digits, 2 trials at a time: its trial runs that ended (none
may be left RUNNING) and the driver's peak resident memory.
``non_loopback_sockets``: listening TCP sockets of this process and everything it started (its
in-process Ray, as ``make run`` starts it: GCS, raylet, agents, trial and Train workers),
sampled every 0.5 s through the whole bench, on an address other than loopback (127.0.0.0/8,
::1, or 127.x mapped into IPv6); ``make cluster-up``'s cluster is checked the same way by
tests/pipelines/test_cluster_job.py, two ``make run`` at once by test_concurrent_runs.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import _common
import psutil

sys.path.insert(0, str(_common.ROOT / "tests" / "pipelines"))
import servers  # noqa: E402  (the tests' socket listing: one definition of "loopback")
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console

from pipelines import trial as trials
from pipelines.config import PipelineError, validate
from pipelines.final import run_final
from pipelines.pipeline import init_ray, resume_pipeline, run_pipeline
from pipelines.tracking import RunLogger, ensure_experiment, load_model_dir

NAME = "reliability"
#: The load test's trials (``--quick``: 10).
LOAD_TRIALS = 50


def worker_killed_after_growth(tmp: Path) -> dict:
    cfg = validate(
        {
            "name": "reliability-final",
            "data": {"dataset": "spirals"},
            "model": {"widths": [5]},
            "search": {"batch_size": 90},
            "final": {"epochs": 6, "use_gpu": False, "max_failures": 2},
        }
    )
    settings = trials.base_settings(cfg)
    settings.update(
        init={"kind": "default", "sigma_w2": 1.0, "sigma_b2": 0.0},
        insertion="sensli",
        growth_timing="plateau",
        plateau_window=5,
        plateau_threshold=10.0,  # always "stalled": one insertion at step 10
        max_depth=2,
        optimizer="sgd",
        lr=0.2,
    )
    experiment = ensure_experiment(cfg.name)
    results, runs = {}, {}
    for name, fault in (("whole", None), ("faulted", tmp / "fault.txt")):
        runs[name] = RunLogger.start(experiment, name)
        results[name] = run_final(
            cfg, settings, run_id=runs[name].run_id, storage=tmp / name, workers=2,
            fault_after_growth=fault,
        )  # fmt: skip
    whole, faulted = results["whole"], results["faulted"]

    def events(result):
        return json.loads((result.checkpoint_dir / "events.json").read_text())

    net_w, net_f = load_model_dir(whole.checkpoint_dir), load_model_dir(faulted.checkpoint_dir)
    same_weights = net_w.spec == net_f.spec and all(
        torch.allclose(p, q, atol=1e-6)
        for p, q in zip(net_w.parameters(), net_f.parameters(), strict=True)
    )
    c = MlflowClient()
    steps = {n: [m.step for m in c.get_metric_history(r.run_id, "loss")] for n, r in runs.items()}
    flops = "train_flops_all_ranks"
    return {
        "fault": "worker killed after a growth event",
        "injected": (tmp / "fault.txt").exists(),
        "survived": events(whole) == events(faulted)
        and same_weights
        and whole.metrics[flops] == faulted.metrics[flops],
        "metric_steps_lost": len(set(steps["whole"]) - set(steps["faulted"])),
        "metric_steps_twice": len(steps["faulted"]) - len(set(steps["faulted"])),
        "detail": (tmp / "fault.txt").read_text() if (tmp / "fault.txt").exists() else "",
    }


def sigterm_mid_search() -> dict:
    import ray

    cfg = validate(
        {
            "name": "reliability-sigterm",
            "data": {"dataset": "digits"},
            "model": {"widths": [8]},
            "search": {"trials": 4, "epochs": 30, "insertion": ["none"]},
            "final": {"workers": 1, "epochs": 2, "use_gpu": False},
        }
    )
    c = MlflowClient()

    def terminate_once_a_trial_runs():
        for _ in range(240):
            exp = c.get_experiment_by_name(cfg.name)
            if exp and c.search_runs([exp.experiment_id], filter_string="tags.stage = 'trial'"):
                break
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_a_trial_runs, daemon=True).start()
    stopped = False
    try:
        run_pipeline(cfg, ("search", "final"), console=Console(quiet=True))
    except KeyboardInterrupt:
        stopped = True
    experiment = c.get_experiment_by_name(cfg.name).experiment_id
    runs = c.search_runs([experiment])
    statuses = [r.info.status for r in runs]
    for _ in range(60):
        if ray.available_resources().get("CPU", 0) >= ray.cluster_resources().get("CPU", 0):
            break
        time.sleep(0.5)
    freed = ray.available_resources().get("CPU", 0) >= ray.cluster_resources().get("CPU", 0)
    final = [r for r in runs if r.data.tags.get("stage") == "final"]
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    # then resumed, as `growth run --resume RUN_ID` does: the search goes on, the final runs
    resumed = resume_pipeline(parent.info.run_id, console=Console(quiet=True))
    after = c.search_runs([experiment])
    stages = {r.data.tags.get("stage"): r.info.status for r in after if r.data.tags.get("stage")}
    trial_runs = [r for r in after if r.data.tags.get("stage") == "trial"]
    finished = (
        resumed["search"]["trials"] == 4
        and stages.get("pipeline") == stages.get("search") == stages.get("final") == "FINISHED"
        and all(r.info.status != "RUNNING" for r in after)
    )
    return {
        "fault": "SIGTERM mid-search, then --resume",
        "injected": True,
        "survived": stopped and "RUNNING" not in statuses and not final and freed and finished,
        "runs_left_running": statuses.count("RUNNING"),
        "statuses": sorted(set(statuses)),
        "resumed_trial_runs": len(trial_runs),
        "resumed_statuses": dict(sorted(stages.items())),
    }


def diverging_search() -> dict:
    cfg = validate(
        {
            "name": "reliability-nan",
            "data": {"dataset": "digits"},
            "model": {"widths": [8]},
            "search": {"trials": 2, "epochs": 1, "optimizer": "sgd", "lr": [1e12, 1e13],
                       "insertion": ["none"]},
        }
    )  # fmt: skip
    error = ""
    try:
        run_pipeline(cfg, ("search",), console=Console(quiet=True))
    except PipelineError as e:
        error = str(e)
    c = MlflowClient()
    runs = c.search_runs([c.get_experiment_by_name(cfg.name).experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("stage") == "trial"]
    named = all(
        r.info.status == "FAILED" and "DivergedError" in r.data.tags.get("error", "")
        for r in trial_runs
    )
    return {
        "fault": "a diverging search (every trial's loss not finite)",
        "injected": True,
        "survived": "DivergedError" in error
        and named
        and len(trial_runs) == 2
        and all(r.info.status != "RUNNING" for r in runs),
        "error": error,
    }


def _server(port: int, tmp: Path, log: Path) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:port over a SQLite store in ``tmp``, once it answers."""
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
        "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp}/server.db",
        "--artifacts-destination", str(tmp / "server-artifacts"), "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    for _ in range(360):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def mlflow_outage(tmp: Path) -> dict:
    """A run logging 60 steps and 4 artifacts to a real server that is down for steps 20-59
    and comes back on the same store: are they all there, and did logging ever wait?"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = _server(port, tmp, tmp / "server.log")
    try:
        experiment = MlflowClient(url).create_experiment("outage")
        logger = RunLogger.start(experiment, "outage", uri=url)
        for step in range(20):
            logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        logger.flush(60)
        _stop(server)
        slowest = 0.0
        for step in range(20, 60):
            started = time.perf_counter()
            logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            if step % 10 == 0:
                logger.log_text(f"step {step}", f"notes/step_{step}.txt")
            slowest = max(slowest, time.perf_counter() - started)
        time.sleep(3)
        server = _server(port, tmp, tmp / "server.log")
        logger.finish(True)
        c = MlflowClient(url)
        steps = [m.step for m in c.get_metric_history(logger.run_id, "loss")]
        notes = c.list_artifacts(logger.run_id, "notes")
        status = c.get_run(logger.run_id).info.status
    finally:
        _stop(server)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {
        "fault": "MLflow server down mid-run, then back",
        "injected": True,
        "survived": status == "FINISHED" and sorted(set(steps)) == list(range(60)),
        "metric_steps_lost": len(set(range(60)) - set(steps)),
        "metric_steps_twice": len(steps) - len(set(steps)),
        "artifacts_lost": 4 - len(notes),
        "slowest_log_call_seconds": slowest,
    }


def load(trials: int) -> dict:
    """A search of ``trials`` trials on digits, 2 at a time: every trial's MLflow run ends
    (none RUNNING), and the driver's memory (resident set, sampled every 0.5 s) stays bounded."""
    cfg = validate(
        {
            "name": "reliability-load",
            "data": {"dataset": "digits"},
            "model": {"widths": [8]},
            "search": {"trials": trials, "epochs": 1, "max_concurrent": 2},
        }
    )
    me, peak, done = psutil.Process(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    started_rss = me.memory_info().rss
    started = time.perf_counter()
    run_pipeline(cfg, ("search",), console=Console(quiet=True))
    done.set()
    c = MlflowClient()
    runs = c.search_runs(
        [c.get_experiment_by_name(cfg.name).experiment_id],
        filter_string="tags.stage = 'trial'",
        max_results=1000,
    )
    return {
        "trials": trials,
        "trial_runs": len(runs),
        "trial_runs_terminal": sum(r.info.status in ("FINISHED", "FAILED", "KILLED") for r in runs),
        "driver_rss_start_mb": started_rss / 1e6,
        "driver_rss_peak_mb": peak[0] / 1e6,
        "seconds": time.perf_counter() - started,
    }


def fuzz() -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(_common.ROOT / "tests" / "test_fuzz.py")],
        capture_output=True, text=True, cwd=_common.ROOT,
    )  # fmt: skip
    sys.path.insert(0, str(_common.ROOT / "tests"))
    import test_fuzz

    cases = test_fuzz.CONFIG_CASES + test_fuzz.SPEC_CASES + test_fuzz.PARQUET_CASES
    return {"fuzz_cases": cases, "uncaught_exceptions": 0 if done.returncode == 0 else None,
            "fuzz_output": done.stdout.strip().splitlines()[-1]}  # fmt: skip


class SocketWatch:
    """Samples the listening sockets of this process and everything it started (its Ray: GCS,
    raylet, agents, trial and Train workers) every 0.5 s while the bench runs."""

    def __init__(self) -> None:
        self.seen: set = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.seen.update(servers.listening_sockets([os.getpid()]))
            time.sleep(0.5)

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def report(self) -> dict:
        outside = sorted(s for s in self.seen if not servers.is_loopback(s[1]))
        return {
            "listening_sockets": len(self.seen),
            "processes": sorted({name for name, _, _ in self.seen}),
            "non_loopback_sockets": len(outside),
            "non_loopback": [f"{name} {ip}:{port}" for name, ip, port in outside],
        }


def main() -> None:
    p = _common.parser(NAME, __doc__)
    args = p.parse_args()
    _common.setup()
    started = time.perf_counter()
    init_ray()  # here, with a stable working directory; make run's Ray
    with SocketWatch() as watch, tempfile.TemporaryDirectory(prefix="gp-reliability-") as tmp:
        tmp = Path(tmp)
        before = Path.cwd()
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        try:
            faults = [worker_killed_after_growth(tmp), sigterm_mid_search(), diverging_search()]
            faults.append(mlflow_outage(tmp))
            loaded = load(10 if args.quick else LOAD_TRIALS)
        finally:
            os.chdir(before)
    checks = fuzz()
    sockets = watch.report()
    summary = {
        "faults_injected": sum(f["injected"] for f in faults),
        "faults_survived": sum(f["injected"] and f["survived"] for f in faults),
        "metric_steps_lost": sum(f.get("metric_steps_lost", 0) for f in faults),
        "metric_steps_twice": sum(f.get("metric_steps_twice", 0) for f in faults),
        "artifacts_lost": sum(f.get("artifacts_lost", 0) for f in faults),
        "fuzz_cases": checks["fuzz_cases"],
        "uncaught_exceptions": checks["uncaught_exceptions"],
        "non_loopback_sockets": sockets["non_loopback_sockets"],
        "load_trials": loaded["trials"],
        "load_trial_runs_terminal": loaded["trial_runs_terminal"],
        "load_driver_rss_peak_mb": loaded["driver_rss_peak_mb"],
        "seconds": time.perf_counter() - started,
    }
    rows = [{k: v for k, v in f.items() if k in ("fault", "injected", "survived")} for f in faults]
    print(_common.markdown_table(rows, ["fault", "injected", "survived"]))
    print(summary)
    config = {
        "faults": faults,
        "fuzz": checks,
        "sockets": sockets,
        "load": loaded,
        "quick": args.quick,
    }
    print("wrote", _common.write_result(NAME, args.out, config, rows, summary))


if __name__ == "__main__":
    main()
