"""What a stopped pipeline needs to go on: ``growth run --resume RUN_ID``.

Every pipeline keeps, in its run folder, its config (``config.json``) and a state file
(``pipeline_state.json``, rewritten atomically as each stage starts and ends): the stages asked
for, the storage of its Ray experiments, each finished stage's result and each started stage's
MLflow run. The parent MLflow run carries the folder as its ``workdir`` tag, so a run id is all
a resume needs. A folder is held by one pipeline at a time (an advisory lock the system drops
when the process dies, however it dies).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from growth_core.io import write_json

from .config import PipelineConfig, PipelineError, describe

#: The stages a pipeline's state names, in order.
STAGES = ("screen", "search", "final")

STATE_FILE = "pipeline_state.json"
CONFIG_FILE = "config.json"
LOCK_FILE = ".pipeline.lock"
#: The parent run's tag naming its folder.
WORKDIR_TAG = "workdir"


@dataclass
class PipelineState:
    """A pipeline's progress, saved to ``workdir/pipeline_state.json`` on every change."""

    workdir: Path
    stages: tuple[str, ...]
    storage: str
    done: dict[str, Any] = field(default_factory=dict)
    """Finished stages: their results (what the next stage and the summary need)."""
    runs: dict[str, str] = field(default_factory=dict)
    """Started stages' MLflow run ids (``search``, ``final``)."""

    def finish(self, stage: str, result: Any) -> None:
        self.done[stage] = result
        self.save()

    def started(self, stage: str, run_id: str) -> None:
        self.runs[stage] = run_id
        self.save()

    def save(self) -> None:
        write_json(
            self.workdir / STATE_FILE,
            {
                "stages": list(self.stages),
                "storage": self.storage,
                "done": self.done,
                "runs": self.runs,
            },
        )

    @classmethod
    def load(cls, workdir: Path) -> PipelineState:
        path = workdir / STATE_FILE
        try:
            raw = json.loads(path.read_text())
            state = cls(workdir, tuple(raw["stages"]), raw["storage"], raw["done"], raw["runs"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PipelineError(f"{path}: cannot resume from it ({e})") from None
        unknown = sorted({*state.stages, *state.done, *state.runs} - set(STAGES))
        if unknown or not state.stages:
            what = f"unknown stage {unknown[0]!r}" if unknown else "no stages"
            raise PipelineError(f"{path}: cannot resume from it ({what})")
        return state


@dataclass(frozen=True)
class PriorRun:
    """A stopped pipeline to resume: its parent run, config and state."""

    run_id: str
    experiment_id: str
    cfg: PipelineConfig
    state: PipelineState


def prior_run(run_id: str) -> PriorRun:
    """The stopped pipeline whose parent MLflow run is ``run_id`` (in the current tracking
    store); refused, with the reason, when it finished or its folder is gone."""
    from mlflow.exceptions import MlflowException

    from .tracking import client, tracking_uri

    try:
        run = client().get_run(run_id)
    except MlflowException:
        raise PipelineError(f"--resume: no run {run_id!r} in {tracking_uri()}") from None
    tags = run.data.tags
    if tags.get("stage") != "pipeline":
        raise PipelineError(
            f"--resume: run {run_id} is a {tags.get('stage', 'non-pipeline')} run; give the "
            "pipeline's run id (printed when it stopped)"
        )
    if run.info.status == "FINISHED":
        raise PipelineError(f"--resume: run {run_id} finished; there is nothing to resume")
    if WORKDIR_TAG not in tags:
        raise PipelineError(f"--resume: run {run_id} records no folder to resume from")
    workdir = Path(tags[WORKDIR_TAG])
    try:
        cfg = PipelineConfig.model_validate_json((workdir / CONFIG_FILE).read_text())
    except OSError as e:
        raise PipelineError(f"--resume: the run's folder {workdir} is not readable ({e})") from None
    except ValidationError as e:
        raise PipelineError(f"--resume: {workdir / CONFIG_FILE}: {describe(e)}") from None
    return PriorRun(run_id, run.info.experiment_id, cfg, PipelineState.load(workdir))


def hold(workdir: Path) -> TextIO:
    """Lock ``workdir`` for this process (until the returned file is closed or the process
    ends); a folder another pipeline holds is refused."""
    handle = open(workdir / LOCK_FILE, "a+")  # noqa: SIM115 - held open as the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise PipelineError(f"{workdir}: a pipeline is running there ({holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle
