"""A pipeline is a TOML file, validated at the boundary.

Every section and key is declared here; an unknown key, a missing one or a bad value is a
:class:`ConfigError` whose message names the key (``search.lr: ...``). ``--set key=value``
overrides are applied to the parsed TOML before validation, so they are checked the same way.

Example (``pipelines/configs/digits.toml``)::

    name = "digits-growth"

    [data]
    dataset = "digits"

    [model]
    family = "mlp"
    activation = "relu"
    widths = [8]

    [screen]
    depth = 24
    keep = 2
    candidates = [
      { kind = "gaussian", sigma_w2 = [0.5, 1.0, 1.76, 3.0], sigma_b2 = 0.05 },
      { kind = "orthogonal", sigma_w2 = 1.0 },
    ]
"""

from __future__ import annotations

import itertools
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from growth_core.conv_spec import ConvSpec
from growth_core.data import DATASETS
from growth_core.growth.bottleneck import MIN_RELATIVE_GAIN
from growth_core.growth.settings import SAMPLE_DRAWS
from growth_core.init import DATA_KINDS as INIT_DATA_KINDS
from growth_core.init import KINDS as INIT_KINDS
from growth_core.init import Initializer
from growth_core.spec import ACTIVATIONS, ArchitectureSpec

from .pareto import SELECT_RULES

#: Upper bounds on sizes, so that a typo (``trials = 1e9``, ``widths = [1e9]``) is an error
#: that names the key before any run starts rather than hours of work or an out-of-memory.
MAX_COUNT = 10_000  # trials, epochs, decisions, candidates kept
MAX_WORKERS = 256  # final.workers, search.max_concurrent
MAX_WIDTH = 65_536  # a hidden layer, a screened network, a batch
MAX_DEPTH = 64  # hidden layers a network may start with or grow to
MAX_SCREEN_DEPTH = 512  # the screen's cascade
MAX_PARAMS = 1_000_000_000
#: The environment variable that sets ``storage`` when the config does not (KubeRay sets it).
STORAGE_ENV = "GROWTH_STORAGE"
#: Experiment names: what an MLflow experiment, a registered model and a folder all accept.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

PositiveInt = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]
Depth = Annotated[int, Field(gt=0, le=MAX_DEPTH)]
Workers = Annotated[int, Field(gt=0, le=MAX_WORKERS)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ConfigError(ValueError):
    """A pipeline config that does not validate; the message names every bad key."""


class PipelineError(RuntimeError):
    """A stage that could not produce its result (every trial failed, no checkpoint, ...);
    the message says which stage and the first cause."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Bounded(_Section):
    """A section whose ``(low, high)`` fields named in ``bounds`` must have ``low <= high``."""

    bounds: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _ordered_bounds(self) -> _Bounded:
        for name in self.bounds:
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: lower bound {low} above upper bound {high}")
        return self


class DataConfig(_Section):
    dataset: Literal[DATASETS]  # type: ignore[valid-type]
    path: str | None = None
    """``parquet``: a folder holding ``train.parquet`` and ``test.parquet``, or one file."""
    scale: PositiveFloat | None = None
    """``parquet``: divide features by this (255 for MNIST pixels)."""
    shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = None
    """``parquet``: ``[channels, height, width]`` of the image a row holds, for convolutional
    nets: ``growth_core.data.load_parquet``'s ``shape``, whose product must be the number of
    features. Without it the file's own ``shape`` metadata is read (the MNIST files have one).
    Not yet passed on by ``trial.load_data``: that is part of the conv pipeline (issue 13)."""
    seed: int = 0

    @model_validator(mode="after")
    def _path_for_parquet(self) -> DataConfig:
        if self.dataset == "parquet" and not self.path:
            raise ValueError("path: the parquet dataset needs a path")
        if self.shape is not None and self.dataset != "parquet":
            raise ValueError(
                f"shape: only a parquet dataset takes a shape; {self.dataset!r} knows its own"
            )
        return self


class ModelConfig(_Section):
    family: Literal["mlp", "resnet", "cnn"] = "mlp"
    activation: Literal[ACTIVATIONS] = "relu"  # type: ignore[valid-type]
    widths: Annotated[list[Width], Field(min_length=1, max_length=MAX_DEPTH)] = [8]
    """Starting hidden widths (mlp) or block widths (resnet)."""
    width: Width | None = None
    """resnet only: the width of the residual stream."""
    stages: (
        Annotated[
            list[Annotated[list[Width], Field(min_length=1, max_length=MAX_DEPTH)]],
            Field(min_length=1, max_length=MAX_DEPTH),
        ]
        | None
    ) = None
    """cnn only: the channels of each stage's 3x3 convolutions, where growth starts (residual:
    one (inner, out) pair per basic block); stages after the first downsample by 2."""
    downsample: Literal["pool", "stride"] = "pool"
    """cnn only: a 2x2 max pool before each stage after the first, or a stride-2 first layer."""
    batch_norm: bool = False
    """cnn only: batch norm after every convolution (a grown channel gets its own)."""
    residual: bool = False
    """cnn only: basic blocks (identity or 1x1 shortcut) instead of plain convolutions."""

    @model_validator(mode="after")
    def _conv_fields_for_cnn(self) -> ModelConfig:
        if self.family == "cnn" and self.stages is None:
            raise ValueError("stages: model.family 'cnn' needs its stages' channels")
        if self.family != "cnn":
            for name in ("stages", "downsample", "batch_norm", "residual"):
                # a default is what a dumped config carries back, so only a set value counts
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise ValueError(f"{name}: only a 'cnn' model takes it")
        return self

    def spec(
        self, input_dim: int, output_dim: int, shape: tuple[int, int, int] | None = None
    ) -> ArchitectureSpec | ConvSpec:
        """The starting network on data of ``input_dim`` features (a cnn's: images of
        ``shape``, ``[channels, height, width]``) and ``output_dim`` classes."""
        if self.family == "cnn":
            if shape is None:
                raise ConfigError(
                    "model.family: a 'cnn' needs images; the data has no shape (data.shape)"
                )
            return ConvSpec(
                tuple(shape),
                output_dim,
                tuple(tuple(stage) for stage in self.stages),
                self.downsample,
                self.activation,
                batch_norm=self.batch_norm,
                residual=self.residual,
            )
        residual = self.family == "resnet"
        return ArchitectureSpec(
            input_dim,
            output_dim,
            tuple(self.widths),
            self.activation,
            residual=residual,
            width=(self.width or max(self.widths)) if residual else None,
        )


class CandidateGrid(_Section):
    """One initializer kind; list-valued fields are expanded as a grid."""

    kind: Literal[INIT_KINDS]  # type: ignore[valid-type]
    sigma_w2: PositiveFloat | Annotated[list[PositiveFloat], Field(min_length=1)] = 1.0
    sigma_b2: NonNegativeFloat | Annotated[list[NonNegativeFloat], Field(min_length=1)] = 0.0

    def expand(self) -> list[Initializer]:
        ws = self.sigma_w2 if isinstance(self.sigma_w2, list) else [self.sigma_w2]
        bs = self.sigma_b2 if isinstance(self.sigma_b2, list) else [self.sigma_b2]
        return [Initializer(self.kind, w, b) for w, b in itertools.product(ws, bs)]


class ScreenConfig(_Section):
    candidates: Annotated[list[CandidateGrid], Field(min_length=1)] = [
        CandidateGrid(kind="gaussian", sigma_w2=[0.5, 1.0, 1.76])
    ]
    depth: Annotated[int, Field(ge=2, le=MAX_SCREEN_DEPTH)] | None = None
    """Depth of the cascade's frozen network; default: the deepest the search may grow the
    model (``search.max_depth`` with layer insertion, else the model's depth), at least 2."""
    width: Width | None = None
    """Width of the screened network, the input randomly projected to it when the data has more
    features (as bench/screen_validation.py screens MNIST); default: the model's width."""
    epochs: Count = 10
    """Passes of the decoders over the training data (digits needs about 10; MNIST one)."""
    steps: Annotated[int, Field(gt=0, le=10_000_000)] | None = None
    """Stop the decoders after this many steps (default: no limit beyond ``epochs``)."""
    batch_size: Width = 64
    eval_images: Annotated[int, Field(gt=0, le=1_000_000)] = 500
    """Held-out images the KL-versus-depth curve is read on."""
    keep: Count = 2
    """How many of the best trainable candidates go on to the search."""
    seed: int = 0

    def initializers(self) -> list[Initializer]:
        return [init for grid in self.candidates for init in grid.expand()]


class AshaConfig(_Section):
    grace_period: Count = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 2


class ArchitectureSpace(_Bounded):
    """Fixed architectures as search dimensions: every trial starts from ``depth`` hidden
    layers of ``width`` units, depth uniform and width log-uniform within the bounds (the
    fixed-architecture search the growth pipeline is compared with)."""

    bounds = ("depth", "width")
    depth: tuple[Depth, Depth] = (1, 3)
    width: tuple[Width, Width] = (16, 512)


class SearchConfig(_Bounded):
    bounds = ("lr", "plateau_threshold")
    trials: Count = 8
    max_concurrent: Workers = 2
    lr: tuple[PositiveFloat, PositiveFloat] = (1e-3, 3e-2)
    """Log-uniform bounds."""
    optimizer: Literal["sgd", "adam"] = "adam"
    batch_size: Width = 64
    epochs: Count = 8
    insertion: Annotated[list[Literal["sensli", "none"]], Field(min_length=1)] = ["sensli", "none"]
    """Depth growth: sensitivity-based layer insertion (SensLI), or none."""
    growth_timing: Annotated[list[Literal["schedule", "plateau"]], Field(min_length=1)] = [
        "schedule"
    ]
    """When growth decisions are made: ``decisions`` of them spread evenly over the first
    ``growth_until`` of the run, or whenever the training loss plateaus."""
    decisions: Count = 4
    growth_until: Annotated[float, Field(gt=0, le=1)] = 0.5
    plateau_threshold: tuple[PositiveFloat, PositiveFloat] = (0.005, 0.05)
    plateau_window: Count = 20
    width_strategy: Annotated[
        list[Literal["none", "tiny", "tiny_update", "gradmax", "random"]], Field(min_length=1)
    ] = ["none"]
    """Width growth: neurons added at expressivity bottlenecks (TINY and its peers), or none."""
    width_ridge: NonNegativeFloat = 1.0
    """``WidthGrowth.ridge``: shrinkage of ``S2`` when neurons are fitted (0: the paper's)."""
    width_samples: Literal[SAMPLE_DRAWS] = "fixed"  # type: ignore[valid-type]
    """``WidthGrowth.samples``: statistics samples drawn at every decision, or once a run."""
    width_min_relative_gain: NonNegativeFloat = MIN_RELATIVE_GAIN
    """``WidthGrowth.min_relative_gain``: a decision widens only while the best site's
    first-order gain is at least this fraction of the loss. A conv site's gain per unit
    amplitude understates the step the line search then takes (tens of times on digits), so a
    'cnn' takes a lower one (mnist_cnn.toml: 1e-4)."""
    width_line_search_samples: Annotated[int, Field(gt=0, le=1_000_000)] | None = 256
    """``WidthGrowth.line_search_samples``: samples each amplitude of the line search is scored
    on (``None``: the statistics samples); a decision's largest cost on a small network."""
    max_depth: Depth = 4
    """The depth layer insertion may grow a net to: hidden layers (mlp), blocks (resnet), or
    3x3 convolutions (cnn; a residual block is two)."""
    max_params: Annotated[int, Field(gt=0, le=MAX_PARAMS)] | None = None
    architecture: ArchitectureSpace | None = None
    """Search the starting architecture too (``None``: every trial starts from the model's)."""
    asha: AshaConfig = AshaConfig()
    seed: int = 0
    max_failures: Annotated[int, Field(ge=0, le=100)] = 2
    """Restarts a trial gets after it fails, each from its last checkpoint (every epoch): for
    a lost worker or node. A trial that diverges fails again from there, and ends errored."""


class FinalConfig(_Section):
    workers: Workers = 2
    epochs: Count = 10
    max_failures: Annotated[int, Field(ge=0, le=100)] = 3
    """Worker failures the final fit survives: Ray Train restarts the workers and each resumes
    from the last checkpoint (every epoch and every growth event)."""
    use_gpu: bool | Literal["auto"] = "auto"
    select: Literal[SELECT_RULES] = "smallest_within"  # type: ignore[valid-type]
    """Which trial of the search's front the final stage trains: the most accurate, or the
    smallest whose validation accuracy is within ``tolerance`` of the most accurate."""
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.005


class PipelineConfig(_Section):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """The MLflow experiment name, the registered model's and the run folder's: letters, digits,
    ``.``, ``_`` and ``-``, starting with a letter or digit, at most 100 characters."""
    storage: str | None = None
    """Where the search's trials and the final fit keep their Ray state and checkpoints: a
    folder every node reaches (a shared volume) or a URI (``s3://bucket/prefix``); default:
    ``$GROWTH_STORAGE``, else the run's own folder (enough for one machine)."""
    data: DataConfig
    model: ModelConfig = ModelConfig()
    screen: ScreenConfig = ScreenConfig()
    search: SearchConfig = SearchConfig()
    final: FinalConfig = FinalConfig()

    @model_validator(mode="after")
    def _data_kinds_need_a_feedforward_model(self) -> PipelineConfig:
        if self.model.family == "mlp":
            return self
        for i, grid in enumerate(self.screen.candidates):
            if grid.kind in INIT_DATA_KINDS:
                raise ValueError(
                    f"screen.candidates.{i}.kind: {grid.kind!r} draws feedforward networks "
                    f"only, and model.family is {self.model.family!r}"
                )
        return self

    @model_validator(mode="after")
    def _what_a_cnn_can_grow(self) -> PipelineConfig:
        if self.model.family != "cnn":
            return self
        m, s = self.model, self.search
        if self.screen.width is not None:
            raise ValueError(
                "screen.width: projects an MLP's input to fewer features; a conv net is "
                "screened on its images"
            )
        if "sensli" in s.insertion:
            if not m.residual and (m.batch_norm or m.activation not in ("relu", "identity")):
                raise ValueError(
                    "search.insertion: a plain conv net with batch norm or a non-idempotent "
                    "activation admits no identity layer; use model.residual = true, "
                    'batch_norm = false with relu, or insertion = ["none"]'
                )
            convs = sum(map(len, m.stages))
            if s.max_depth <= convs:
                raise ValueError(
                    f"search.max_depth: counts a conv net's convolutions; {s.max_depth} leaves "
                    f"no room to insert into the {convs} the model starts with"
                )
        if self.search.architecture is not None:
            raise ValueError("search.architecture: searches MLP widths and depths, not a 'cnn'")
        return self

    def storage_root(self, workdir: Path, base: Path | None = None) -> str:
        """The storage of one run: ``storage`` (or ``$GROWTH_STORAGE``) with the run's own
        ``<name>/<folder name>`` under it, a local path made absolute; else ``workdir/ray``."""
        root = self.storage or os.environ.get(STORAGE_ENV)
        if not root:
            return str(workdir / "ray")
        if "://" not in root:
            path = Path(root).expanduser()
            root = str(path if path.is_absolute() else (base or Path.cwd()) / path)
        return f"{root.rstrip('/')}/{self.name}/{workdir.name}"

    def resolved(self, base: Path | None = None) -> PipelineConfig:
        """This config with ``data.path`` made absolute against ``base`` (the working directory
        the command ran in), as the driver must do before any Ray task or Tune trial, each of
        which runs in a working directory of its own. A path that does not exist is refused."""
        if self.data.path is None:
            return self
        path = Path(self.data.path).expanduser()
        path = (path if path.is_absolute() else (base or Path.cwd()) / path).resolve()
        if not path.exists():
            raise ConfigError(f"data.path: {self.data.path} ({path}): no such file or folder")
        data = self.data.model_copy(update={"path": str(path)})
        return self.model_copy(update={"data": data})


def storage_path(storage: Path | str) -> str:
    """Ray's ``storage_path`` of a folder (made absolute: Tune and Train run in folders of
    their own) or of a URI (as it is)."""
    text = str(storage)
    return text if "://" in text else str(Path(text).resolve())


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, override and validate a pipeline TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    for item in overrides or []:
        apply_override(raw, item)
    return validate(raw, source=str(path))


def validate(raw: dict[str, Any], *, source: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            f"{source}:\n" + "\n".join(_describe(err) for err in e.errors())
        ) from None


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("literal[", "list[")))
    if err["type"] == "extra_forbidden":
        return f"  {loc}: unknown key"
    if err["type"] == "missing":
        return f"  {loc}: missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"  {loc}: {msg} (got {err.get('input')!r})" if loc else f"  {msg}"


def apply_override(raw: dict[str, Any], item: str) -> None:
    """``search.trials=4`` -> ``raw["search"]["trials"] = 4``; the value is parsed as TOML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()  # a bare word: a string
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = parsed
