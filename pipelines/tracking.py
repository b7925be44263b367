"""MLflow tracking: one parent run per pipeline, a child run per stage, trial and final fit.

Everything goes through an explicit :class:`~mlflow.tracking.MlflowClient` and run ids, never
MLflow's process-global "active run": Ray workers are separate processes, so each child run is
created with its ``mlflow.parentRunId`` tag set explicitly.

Where runs go: ``MLFLOW_TRACKING_URI`` if set (a server), else ``sqlite:///mlflow.db`` in the
working directory with artifacts in ``./mlartifacts``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.entities import DatasetInput, Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from growth_core.events import GrowthEvent
from growth_core.families import spec_from_json
from growth_core.flops import parameter_count
from growth_core.nets import Net, build
from growth_core.spec import SpecError

from .mlflow_buffer import FLUSH_SECONDS, CallBuffer, call_with_retry

#: The largest network :func:`load_model_dir` builds (``search.max_params``' bound).
MAX_LOADED_PARAMS = 1_000_000_000
#: ... and the deepest (``search.max_depth``'s bound), and the largest spec file it reads.
MAX_LOADED_DEPTH = 64
MAX_SPEC_BYTES = 1_000_000
#: MLflow's switch for its artifact download progress bars.
PROGRESS_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
MODEL_DIR = "model"
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "state_dict.pt"
#: The scaling of raw features a served model applies, ``(shift, scale)`` tensors.
PREPROCESS_FILE = "preprocess.pt"
#: Training rows logged per epoch, at most (evaluations and growth events are always logged): an
#: MNIST epoch has 469 steps, and logging each to SQLite cost a third of the training time.
HISTORY_POINTS_PER_EPOCH = 50
#: Metrics of a history row logged by step; ``widths`` becomes ``width_0``, ``width_1``, ...
HISTORY_METRICS = (
    "loss",
    "accuracy",
    "flops",
    "params",
    "depth",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
)


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, or the embedded SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def client(uri: str | None = None) -> MlflowClient:
    """A client of ``uri`` (workers get the driver's resolved URI), else of :func:`tracking_uri`."""
    return MlflowClient(uri or tracking_uri())


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it (in the driver, before any worker starts) if needed.
    A SQLite store is switched to write-ahead logging first, so two pipelines (and a pipeline's
    driver and its Ray Train rank 0) write to it at once without "database is locked"."""
    c = _prepared_client(tracking_uri())
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(
            name,
            artifact_location=_artifact_location(c.tracking_uri),
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except MlflowException:  # another pipeline created it a moment ago: use it
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _prepared_client(uri: str) -> MlflowClient:
    """A client of ``uri``. A SQLite store is created (MLflow's tables and migrations, which
    ``MlflowClient`` runs as it is built) and switched to write-ahead logging (``PRAGMA
    journal_mode=WAL``, a property of the file: set once, kept) one process at a time: two
    pipelines creating one new store at once race in MLflow's migrations."""
    if not uri.startswith("sqlite:///"):
        return client(uri)
    import fcntl
    import sqlite3

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        return client(uri)


def _artifact_location(uri: str) -> str | None:
    """A SQLite store keeps its artifacts in ``mlartifacts/`` beside the database file (not
    relative to whichever directory a Ray job happens to run in); a server decides itself."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
    return None


def history_stride(n_train: int, batch_size: int) -> int:
    """Log every this many steps, so an epoch gives about :data:`HISTORY_POINTS_PER_EPOCH` rows."""
    return max(1, math.ceil(n_train / batch_size) // HISTORY_POINTS_PER_EPOCH)


def sampled_rows(history: Iterable[Mapping[str, Any]], every: int) -> list[Mapping[str, Any]]:
    """The rows of a trainer's history worth logging: those whose step is a multiple of
    ``every``, every row with an evaluation, and the rows around each growth (the last before
    the network changed and the first after), so the charts step up where it grew."""
    rows = list(history)
    kept = []
    for i, row in enumerate(rows):
        grew = (i > 0 and rows[i - 1].get("params") != row.get("params")) or (
            i + 1 < len(rows) and rows[i + 1].get("params") != row.get("params")
        )
        if grew or row["step"] % every == 0 or any(k.startswith(("val_", "test_")) for k in row):
            kept.append(row)
    return kept


class RunLogger:
    """Logs one MLflow run: params, step metrics, growth events, figures, the model.

    Every call goes through a :class:`~pipelines.mlflow_buffer.CallBuffer`: made in order on a
    thread of its own and retried while the store is unreachable, so training never waits on
    MLflow; :meth:`flush` (bounded) waits for them, and :meth:`finish` flushes. Creating the
    run and logging the model are retried in place (the caller needs their answer)."""

    def __init__(self, run_id: str, uri: str | None = None) -> None:
        self.run_id = run_id
        self.client = client(uri)
        self.calls = CallBuffer(f"mlflow-{run_id[:8]}")

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait (``timeout`` at most) until every call so far reached the store."""
        return self.calls.flush(timeout)

    @classmethod
    def start(
        cls,
        experiment_id: str,
        name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        uri: str | None = None,
    ) -> RunLogger:
        """A new run: named, with the source tags of this process (entry point, git commit),
        ``description`` as the text the UI shows, under ``parent_run_id`` if given."""
        from .lineage import DESCRIPTION_TAG, source_tags

        c = client(uri)
        all_tags = {"mlflow.runName": name, **source_tags(), **(tags or {})}
        if description:
            all_tags[DESCRIPTION_TAG] = description
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        create = functools.partial(c.create_run, experiment_id, run_name=name, tags=all_tags)
        run = call_with_retry(create)
        return cls(run.info.run_id, c.tracking_uri)

    @classmethod
    def reopen(cls, run_id: str, uri: str | None = None) -> RunLogger:
        """An existing run, RUNNING again (a resumed pipeline goes on logging to its runs)."""
        c = client(uri)
        call_with_retry(functools.partial(c.update_run, run_id, status="RUNNING"))
        return cls(run_id, c.tracking_uri)

    def last_step(self, *keys: str) -> int:
        """The highest step logged for any of the metrics ``keys`` (-1 if none): what a resumed
        worker or trial already logged and must not log again."""
        steps = [
            m.step
            for key in keys
            for m in call_with_retry(self.client.get_metric_history, self.run_id, key)
        ]
        return max(steps, default=-1)

    # -- values --------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = _flatten(params)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.calls.submit(self.client.log_batch, self.run_id, [], items[i : i + 100])

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int,
        *,
        model_id: str | None = None,
        dataset: DatasetInput | None = None,
    ) -> None:
        """Metrics at ``step``; with ``model_id`` (and the ``dataset`` they were measured on)
        they are also the logged model's metrics, shown in its Logged Models row."""
        ts = _now_ms()
        on = {"model_id": model_id}
        if dataset is not None:
            on.update(dataset_name=dataset.dataset.name, dataset_digest=dataset.dataset.digest)
        batch = [Metric(k, float(v), ts, step, **on) for k, v in metrics.items()]
        self.calls.submit(self.client.log_batch, self.run_id, batch)

    def log_datasets(self, inputs: Iterable[DatasetInput]) -> None:
        """The datasets the run used (:func:`pipelines.lineage.dataset_inputs`)."""
        self.calls.submit(_log_inputs, self.client, self.run_id, list(inputs))

    def log_history(
        self,
        history: Iterable[Mapping[str, Any]],
        *,
        every: int = 1,
        rename: Mapping[str, str] | None = None,
    ) -> None:
        """Metrics by step from a trainer's history: rows whose step is a multiple of ``every``,
        and rows with evaluations; ``rename`` maps a history key to the metric's name."""
        ts = _now_ms()
        names = {k: (rename or {}).get(k, k) for k in HISTORY_METRICS}
        metrics: list[Metric] = []
        for row in sampled_rows(history, every):
            metrics += [
                Metric(names[k], float(row[k]), ts, row["step"])
                for k in HISTORY_METRICS
                if k in row
            ]
            metrics += [
                Metric(f"width_{j}", float(w), ts, row["step"])
                for j, w in enumerate(row.get("widths", ()))
            ]
        for i in range(0, len(metrics), 1000):
            self.calls.submit(self.client.log_batch, self.run_id, metrics[i : i + 1000])

    def log_events(self, events: list[GrowthEvent], *, summary: bool = True) -> None:
        """Each event as a step metric and the spec after it as a JSON artifact; with
        ``summary``, ``events.json`` lists them all (``events`` is then every event)."""
        for event in events:
            self.log_metrics(
                {"growth_event": 1.0, "growth_params_after": event.params_after}, event.step
            )
            self.log_json(event.spec_after.to_dict(), f"growth/spec_step_{event.step:07d}.json")
        if summary:
            self.log_json([e.to_dict() for e in events], "events.json")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.calls.submit(self.client.set_tag, self.run_id, k, str(v))

    # -- files ---------------------------------------------------------------------------------
    def log_json(self, obj: Any, artifact_path: str) -> None:
        self.log_text(json.dumps(obj, indent=2), artifact_path)

    def log_text(self, text: str, artifact_path: str) -> None:
        self.calls.submit(self.client.log_text, self.run_id, text, artifact_path)

    def log_figure(self, fig: Any, artifact_path: str) -> None:
        """The figure drawn now (to PNG bytes) and closed, logged when the store takes it."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format=Path(artifact_path).suffix.lstrip(".") or "png")
        plt.close(fig)  # drawn: pyplot would keep every figure of a long search alive
        self.calls.submit(_log_bytes, self.client, self.run_id, buffer.getvalue(), artifact_path)

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.calls.submit(self.client.log_artifact, self.run_id, str(path), artifact_dir)

    def log_model(
        self,
        net: Net,
        input_example: np.ndarray,
        *,
        preprocess: tuple[torch.Tensor, torch.Tensor] | None = None,
        register_as: str | None = None,
        description: str | None = None,
    ) -> LoggedNetwork:
        """The network as an MLflow ``python_function`` model (:mod:`pipelines.mlflow_model`)
        with its signature (a float32 matrix of raw features in, class probabilities out), the
        scaling ``preprocess = (shift, scale)`` it applies to raw features (the dataset's), and
        ``input_example`` (raw features); registered as a new version of ``register_as``, with
        ``description`` on the version."""
        import mlflow
        import mlflow.pyfunc
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        import growth_core

        from . import mlflow_model

        f32 = np.dtype(np.float32)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(f32, (-1, net.spec.input_dim))]),
            outputs=Schema([TensorSpec(f32, (-1, net.spec.output_dim))]),
        )
        requirements = [
            f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}",
            f"mlflow=={mlflow.__version__}",
        ]
        mlflow.set_tracking_uri(self.client.tracking_uri)
        with tempfile.TemporaryDirectory() as tmp, _quiet_mlflow():
            save_model(net, tmp)
            n_in = net.spec.input_dim
            shift, scale = preprocess or (torch.zeros(n_in), torch.ones(n_in))
            torch.save((shift.float(), scale.float()), Path(tmp) / PREPROCESS_FILE)
            # the fluent API is the one that logs models; the run was ours before and stays so
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.pyfunc.log_model(
                    name=MODEL_DIR,
                    python_model=mlflow_model.__file__,
                    artifacts={
                        mlflow_model.SPEC_ARTIFACT: str(Path(tmp) / SPEC_FILE),
                        mlflow_model.WEIGHTS_ARTIFACT: str(Path(tmp) / WEIGHTS_FILE),
                        mlflow_model.PREPROCESS_ARTIFACT: str(Path(tmp) / PREPROCESS_FILE),
                    },
                    code_paths=[str(Path(growth_core.__file__).parent)],
                    signature=signature,
                    input_example=input_example.astype(np.float32),
                    pip_requirements=requirements,
                    registered_model_name=register_as,
                )
        registered = None
        if register_as and info.registered_model_version is not None:
            version = str(info.registered_model_version)
            registered = f"models:/{register_as}/{version}"
            if description:  # what the registry's version page says this version is
                self.client.update_model_version(register_as, version, description=description)
        return LoggedNetwork(info.model_id, info.model_uri, registered)

    def finish(self, status: bool | str = True) -> None:
        """End the run: ``True`` for FINISHED, ``False`` for FAILED (KILLED when the exception
        in flight is an interrupt: Ctrl+C, or SIGTERM as :func:`pipelines.pipeline.run_pipeline`
        turns it into one), or a status name (``"KILLED"``)."""
        if status is False and interrupted():
            status = "KILLED"
        if isinstance(status, bool):
            status = RunStatus.to_string(RunStatus.FINISHED if status else RunStatus.FAILED)
        self.calls.submit(self.client.set_terminated, self.run_id, status)
        self.calls.close()


#: Runs of one experiment logging the same dataset at once race in MLflow's SQL store (it
#: looks the dataset up, then inserts it: "UNIQUE constraint failed"); one at a time here, and
#: a lost race (another process) retried once the winner's row exists.
_DATASETS_LOCK = threading.Lock()


def _log_inputs(c: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    for attempt in range(3):
        try:
            with _DATASETS_LOCK:
                c.log_inputs(run_id, datasets=inputs)
            return
        except Exception as error:  # noqa: BLE001 - retried below, else raised to the buffer
            if "UNIQUE constraint" not in str(error) and "unique constraint" not in str(error):
                raise
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def _log_bytes(c: MlflowClient, run_id: str, data: bytes, artifact_path: str) -> None:
    """``data`` as the artifact ``artifact_path`` of ``run_id``."""
    path = Path(artifact_path)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / path.name).write_bytes(data)
        c.log_artifact(
            run_id, str(Path(tmp) / path.name), str(path.parent) if path.parent.parts else None
        )


def interrupted() -> bool:
    """Whether the exception being handled (in an ``except`` or ``finally`` block) is an
    interrupt rather than an error."""
    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


def save_model(net: Net, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(net.spec.to_json())
    torch.save(net.state_dict(), directory / WEIGHTS_FILE)


def load_model_dir(directory: str | Path) -> Net:
    """A network from ``spec.json`` + ``state_dict.pt``: a checkpoint folder, or an MLflow model
    folder logged by :meth:`RunLogger.log_model` (they are in its ``artifacts/``).

    The spec is checked against :data:`MAX_LOADED_PARAMS` and :data:`MAX_LOADED_DEPTH` and both
    files must be there before a single weight is allocated; every failure is a
    :class:`SpecError` naming the file."""
    directory = Path(directory)
    if (directory / "MLmodel").exists():
        directory = directory / "artifacts"
    spec_file, weights_file = directory / SPEC_FILE, directory / WEIGHTS_FILE
    for path in (spec_file, weights_file):
        if not path.is_file():
            what = "not a file" if path.exists() else "no such file"
            raise SpecError(f"{path}: {what} (a model folder holds {SPEC_FILE} and {WEIGHTS_FILE})")
    if spec_file.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{spec_file}: {spec_file.stat().st_size:,} bytes; a spec is under {MAX_SPEC_BYTES:,}"
        )
    try:
        spec = spec_from_json(spec_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{spec_file}: not a text file") from None
    except SpecError as e:
        raise SpecError(f"{spec_file}: {e}") from None
    if spec.depth > MAX_LOADED_DEPTH:
        raise SpecError(
            f"{spec_file}: {spec.depth} layers, above the {MAX_LOADED_DEPTH} a model of this "
            "project can have"
        )
    params = parameter_count(spec)
    if params > MAX_LOADED_PARAMS:
        raise SpecError(
            f"{spec_file}: {params:,} parameters, above the {MAX_LOADED_PARAMS:,} "
            "a model of this project can have"
        )
    try:
        state = torch.load(weights_file, weights_only=True, map_location="cpu")
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"{weights_file}: not a weights file torch can read ({first})") from None
    net = build(spec)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0]
        raise SpecError(
            f"{weights_file}: does not fit {spec_file.name} ({spec.describe()}): {first}"
        ) from None
    return net


def load_model(model_uri: str, *, uri: str | None = None) -> Net:
    """A registered or logged model back as a network, in one call:
    ``load_model("models:/digits-growth/1")`` or ``load_model("models:/<model_id>")``."""
    import mlflow.artifacts

    try:
        with _quiet_mlflow():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, tracking_uri=uri or tracking_uri()
            )
    except MlflowException as e:
        first = str(e).strip().splitlines()[0]
        raise SpecError(
            f"{model_uri}: cannot download it from {uri or tracking_uri()} ({first})"
        ) from None
    return load_model_dir(local)


@dataclass(frozen=True)
class LoggedNetwork:
    """Where :meth:`RunLogger.log_model` put the network."""

    model_id: str
    model_uri: str
    """``models:/<model_id>``: the logged model."""
    registered_uri: str | None
    """``models:/<name>/<version>`` when it was registered."""


@contextmanager
def _quiet_mlflow():
    """MLflow's lines while it logs a model (INFO logs, download bars, "Successfully registered
    model") off the console: the pipeline prints what it registered itself."""
    logger = logging.getLogger("mlflow")
    level, bars = logger.level, os.environ.get(PROGRESS_BARS)
    logger.setLevel(logging.WARNING)
    os.environ[PROGRESS_BARS] = "false"
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
        if bars is None:
            os.environ.pop(PROGRESS_BARS, None)
        else:
            os.environ[PROGRESS_BARS] = bars


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)
