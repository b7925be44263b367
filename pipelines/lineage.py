"""What a run was made from, as MLflow records it: its datasets (``log_input``), the code (git
commit, entry point) and a one-sentence description.

The datasets are the tensors the runs train and evaluate on, after loading and scaling: the
training split without the search's validation split, the validation split, and the test split.
Their source is the Parquet file they were read from, or the built-in loader's call.
"""

from __future__ import annotations

import functools
import getpass
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import mlflow.data
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.entities import DatasetInput, InputTag

from growth_core.data import Dataset

from . import trial as trials
from .config import DataConfig

#: MLflow's context tag of an input, by split.
CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}
#: The tag the UI shows as a run's description.
DESCRIPTION_TAG = "mlflow.note.content"


def dataset_inputs(cfg: DataConfig, data: Dataset) -> dict[str, DatasetInput]:
    """The three splits of ``data`` (as :func:`pipelines.trial.load_data` returns it) as MLflow
    dataset inputs, by split name: ``train``, ``validation``, ``test``."""
    searched = trials.with_validation(data, seed=cfg.seed)
    splits = {
        "train": (searched.x_train, searched.y_train),
        "validation": (searched.x_test, searched.y_test),
        "test": (data.x_test, data.y_test),
    }
    inputs = {}
    for split, (x, y) in splits.items():
        dataset = mlflow.data.from_numpy(
            x.numpy(), targets=y.numpy(), source=_source(cfg, split), name=f"{data.name}-{split}"
        )
        tags = [InputTag("mlflow.data.context", CONTEXTS[split])]
        inputs[split] = DatasetInput(dataset._to_mlflow_entity(), tags)
    return inputs


def _source(cfg: DataConfig, split: str):
    """Where a split comes from: its Parquet file, or the built-in loader's call."""
    if cfg.dataset == "parquet":
        path = Path(cfg.path or "")
        if path.is_dir():
            path = path / ("test.parquet" if split == "test" else "train.parquet")
        return str(path)
    call = f"growth_core.data.load({cfg.dataset!r}, seed={cfg.seed})"
    return CodeDatasetSource({"mlflow.source.name": call})


def source_tags() -> dict[str, str]:
    """MLflow's source tags of this process: entry point, user, and the git commit of the
    checkout the code runs from (when it is one)."""
    tags = {
        "mlflow.source.name": entry_point(),
        "mlflow.source.type": "LOCAL",
        "mlflow.user": _user(),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def entry_point() -> str:
    """The command this process runs, as a person would type it."""
    argv = list(sys.argv) or ["python"]
    if argv[0].endswith(("pipelines/__main__.py", "pipelines\\__main__.py")):
        return " ".join(["python -m pipelines", *argv[1:]])
    return " ".join([Path(argv[0]).name, *argv[1:]])


@functools.cache
def git_commit() -> str | None:
    """The commit of the git checkout this package lives in, or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def described(tags: Mapping[str, str] | None, description: str) -> dict[str, str]:
    """``tags`` with ``description`` as the run's description."""
    return {**(tags or {}), DESCRIPTION_TAG: description}
