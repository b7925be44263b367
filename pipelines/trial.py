"""One growing training run, as the search's trials and the final fit run it.

Plain functions of plain settings (a dict that MLflow logs as params and Tune samples), so the
same run can be made bare, inside a Tune trial, or on every rank of a Ray Train job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from growth_core import data as datasets
from growth_core.data import Dataset
from growth_core.events import GrowthPolicy
from growth_core.growth import (
    AtFractions,
    Budget,
    DepthGrowth,
    DepthWidthPolicy,
    OnPlateau,
    WidthGrowth,
)
from growth_core.growth.bottleneck import MIN_RELATIVE_GAIN
from growth_core.init import Initializer
from growth_core.nets import Net, build
from growth_core.train import TrainConfig, Trainer, TrainResult

from .config import DataConfig, ModelConfig, PipelineConfig

VALIDATION_FRACTION = 0.2


def load_data(cfg: DataConfig) -> Dataset:
    """The configured dataset (a parquet folder holds ``train.parquet`` and ``test.parquet``)."""
    if cfg.dataset != "parquet":
        return datasets.load(cfg.dataset, seed=cfg.seed)
    path = Path(cfg.path or "")
    shape = tuple(cfg.shape) if cfg.shape is not None else None
    if path.is_dir():
        return datasets.load_parquet(
            path / "train.parquet",
            path / "test.parquet",
            scale=cfg.scale,
            seed=cfg.seed,
            shape=shape,
        )
    return datasets.load_parquet(path, scale=cfg.scale, seed=cfg.seed, shape=shape)


def with_validation(data: Dataset, fraction: float = VALIDATION_FRACTION, seed: int = 0) -> Dataset:
    """Hold out part of the training set as the evaluation split, so that the search never
    sees the test set; the result's ``x_test`` is the validation split. The final fit holds
    out the same split, so its validation accuracy is comparable with the search's."""
    n_val = max(1, int(round(fraction * data.n_train)))
    order = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return Dataset(
        f"{data.name}/val",
        data.x_train[train],
        data.y_train[train],
        data.x_train[val],
        data.y_train[val],
        data.num_classes,
        shape=data.shape,
    )


def base_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """The settings of a run before the search picks its free ones."""
    s = cfg.search
    return {
        "lr": math.sqrt(s.lr[0] * s.lr[1]),
        "optimizer": s.optimizer,
        "batch_size": s.batch_size,
        "epochs": s.epochs,
        "insertion": s.insertion[0],
        "growth_timing": s.growth_timing[0],
        "decisions": s.decisions,
        "growth_until": s.growth_until,
        "plateau_threshold": math.sqrt(s.plateau_threshold[0] * s.plateau_threshold[1]),
        "plateau_window": s.plateau_window,
        "width_strategy": s.width_strategy[0],
        "width_ridge": s.width_ridge,
        # a conv net's channels take GroMo's threshold (the held-out test is for linear sites)
        "width_selection": "singular_value" if cfg.model.family == "cnn" else "held_out",
        "width_min_relative_gain": s.width_min_relative_gain,
        "width_samples": s.width_samples,
        "width_line_search_samples": s.width_line_search_samples,
        "max_depth": s.max_depth,
        "max_params": s.max_params,
        "init": Initializer("kaiming").to_dict(),
        "seed": s.seed,
    }


def grows(settings: dict[str, Any]) -> bool:
    """Whether a run's settings let its network grow (depth, width or both)."""
    return settings["insertion"] != "none" or settings.get("width_strategy", "none") != "none"


def build_policy(settings: dict[str, Any]) -> DepthWidthPolicy | None:
    """The growth policy a run's settings describe (``None``: a fixed architecture).

    Depth only is sensitivity-based layer insertion; with a width strategy (``tiny``,
    ``tiny_update``, ``gradmax``, ``random``) the policy widens at expressivity bottlenecks
    first and inserts a layer when no bottleneck is worth fixing. Decisions come on a schedule
    (``growth_timing="schedule"``: ``decisions`` spread over the first ``growth_until`` of the
    run) or on loss plateaus.
    """
    if not grows(settings):
        return None
    depth_on = settings["insertion"] != "none"
    width_on = settings.get("width_strategy", "none") != "none"
    if settings["growth_timing"] == "schedule":
        trigger = AtFractions.evenly(int(settings["decisions"]), float(settings["growth_until"]))
    else:
        trigger = OnPlateau(
            window=int(settings["plateau_window"]), threshold=float(settings["plateau_threshold"])
        )
    width = None
    if width_on:
        width = WidthGrowth(
            strategy=settings["width_strategy"],
            ridge=float(settings["width_ridge"]),
            selection=settings.get("width_selection", "held_out"),
            min_relative_gain=float(settings.get("width_min_relative_gain", MIN_RELATIVE_GAIN)),
            samples=settings["width_samples"],
            line_search_samples=settings.get("width_line_search_samples"),
        )
    return DepthWidthPolicy(
        trigger,
        width=width,
        depth=DepthGrowth(max_depth=settings["max_depth"]) if depth_on else None,
        budget=Budget(max_params=settings["max_params"]),
        seed=settings["seed"],
    )


def start_model(model: ModelConfig, settings: dict[str, Any]) -> ModelConfig:
    """The model a run starts from: the configured one, or ``start_depth`` layers of
    ``start_width`` units when the search sampled the architecture."""
    if "start_depth" not in settings:
        return model
    widths = [int(settings["start_width"])] * int(settings["start_depth"])
    return model.model_copy(update={"widths": widths})


def build_net(model: ModelConfig, data: Dataset, settings: dict[str, Any]) -> Net:
    spec = start_model(model, settings).spec(data.input_dim, data.num_classes, data.shape)
    init = Initializer.from_dict(settings["init"])
    return init.apply_on(build(spec), seed=settings["seed"], inputs=data.x_train)


def run(
    model: ModelConfig,
    data: Dataset,
    settings: dict[str, Any],
    *,
    on_epoch: Callable[[Trainer, int], None] | None = None,
    on_growth: Callable[[Trainer], None] | None = None,
    net: Net | None = None,
    policy_wrapper: Callable[[GrowthPolicy | None], GrowthPolicy] | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    resume: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Train (and grow) for ``settings["epochs"]`` epochs, evaluating after each epoch (and on
    ``test = (x, y)`` too, as ``test_*``, when ``data``'s held-out split is a validation split).

    ``policy_wrapper`` wraps the growth policy (under DDP: every rank scores its share, rank 0's
    decision is applied); ``resume`` is a :meth:`~growth_core.train.Trainer.state_dict` to
    continue from (``net`` then the network it was saved with); other keyword arguments go to
    :class:`~growth_core.train.Trainer` (``wrap``, ``shard``, ``eval_name``).
    """
    policy = build_policy(settings)
    if policy_wrapper is not None:
        policy = policy_wrapper(policy)
    config = TrainConfig(
        epochs=settings["epochs"],
        lr=settings["lr"],
        optimizer=settings["optimizer"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
    )
    trainer = Trainer(
        net or build_net(model, data, settings),
        data,
        config,
        policy=policy,
        **trainer_kwargs,
    )
    if on_growth is not None:
        trainer.add_callback("on_growth", on_growth)

    def epoch_end(t: Trainer) -> None:
        if t.step % t.steps_per_epoch == 0:
            t.evaluate()
            if test is not None:
                t.evaluate("test", on=test)
            if on_epoch is not None:
                on_epoch(t, t.step // t.steps_per_epoch)

    trainer.add_callback("on_step_end", epoch_end)
    if resume is not None:
        trainer.load_state_dict(resume)
    return trainer.fit()
