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
import math
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from growth_core.conv_spec import ConvSpec
from growth_core.data import DATASETS
from growth_core.flops import parameter_count
from growth_core.growth.bottleneck import MIN_RELATIVE_GAIN
from growth_core.growth.settings import SAMPLE_DRAWS
from growth_core.init import DATA_KINDS as INIT_DATA_KINDS
from growth_core.init import KINDS as INIT_KINDS
from growth_core.init import Initializer
from growth_core.spec import ACTIVATIONS, IDEMPOTENT_ACTIVATIONS, ArchitectureSpec

from .pareto import SELECT_RULES

#: Upper bounds on sizes, so that a typo (``trials = 1e9``, ``widths = [1e9]``) is an error
#: that names the key before any run starts rather than hours of work or an out-of-memory.
MAX_COUNT = 10_000  # trials, epochs, decisions, candidates kept
MAX_WORKERS = 256  # final.workers, search.max_concurrent
MAX_WIDTH = 65_536  # a hidden layer, a screened network, a batch
MAX_DEPTH = 64  # hidden layers a network may start with or grow to
MAX_SCREEN_DEPTH = 512  # the screen's cascade
MAX_PARAMS = 1_000_000_000  # a network the pipeline starts, screens or grows
MAX_SCREEN_CANDIDATES = 1_000  # initializers the screen expands its grids to
MAX_SEED = 2**32 - 1  # what NumPy and Optuna accept
#: Ray storage URIs the project knows: pyarrow's filesystems (local folders need no scheme).
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")
#: The environment variable that sets ``storage`` when the config does not (KubeRay sets it).
STORAGE_ENV = "GROWTH_STORAGE"
#: Experiment names: what an MLflow experiment, a registered model and a folder all accept.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

# Strict: a count is a TOML integer, not ``true`` or ``"4"``; a number is not a string.
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Bool = Annotated[bool, Field(strict=True)]
PositiveInt = Annotated[Int, Field(gt=0)]
Count = Annotated[Int, Field(gt=0, le=MAX_COUNT)]
Width = Annotated[Int, Field(gt=0, le=MAX_WIDTH)]
Depth = Annotated[Int, Field(gt=0, le=MAX_DEPTH)]
Workers = Annotated[Int, Field(gt=0, le=MAX_WORKERS)]
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]


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
    seed: Seed = 0

    @model_validator(mode="after")
    def _path_for_parquet(self) -> DataConfig:
        if self.dataset == "parquet" and not self.path:
            raise ValueError("path: the parquet dataset needs a path")
        if self.dataset != "parquet":
            for name in ("path", "scale", "shape"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: only a parquet dataset takes it; {self.dataset!r} is built in"
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
    batch_norm: Bool = False
    """cnn only: batch norm after every convolution (a grown channel gets its own)."""
    residual: Bool = False
    """cnn only: basic blocks (identity or 1x1 shortcut) instead of plain convolutions."""

    @model_validator(mode="after")
    def _conv_fields_for_cnn(self) -> ModelConfig:
        if self.family == "cnn" and self.stages is None:
            raise ValueError("stages: model.family 'cnn' needs its stages' channels")
        # a default is what a dumped config carries back, so only a value set otherwise counts
        only = {name: "cnn" for name in ("stages", "downsample", "batch_norm", "residual")}
        only |= {"width": "resnet", "widths": ("mlp", "resnet")}
        for name, families in only.items():
            if (
                self.family not in families
                and getattr(self, name) != type(self).model_fields[name].default
            ):
                takes = " or ".join(
                    map(repr, (families,) if isinstance(families, str) else families)
                )
                raise ValueError(f"{name}: only a {takes} model takes it")
        return self

    def hidden_parameters(self) -> int:
        """Weights between hidden layers (convolutions), known before the data is: a lower
        bound on the starting network's size."""
        if self.family == "cnn":
            channels = [c for stage in self.stages for c in stage]
            return sum(9 * a * b for a, b in itertools.pairwise(channels))
        if self.family == "resnet":
            width = self.width or max(self.widths)
            return sum(2 * width * w for w in self.widths)
        return sum(a * b for a, b in itertools.pairwise(self.widths))

    def spec(
        self, input_dim: int, output_dim: int, shape: tuple[int, int, int] | None = None
    ) -> ArchitectureSpec | ConvSpec:
        """The starting network on data of ``input_dim`` features (a cnn's: images of
        ``shape``, ``[channels, height, width]``) and ``output_dim`` classes."""
        if self.family == "cnn":
            if shape is None:
                raise ConfigError(
                    "model.family: a 'cnn' needs images; the data has no shape (set data.shape, or "
                    "give the Parquet file a 'shape' metadata entry that fits its features)"
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

    #: The kinds whose draw reads sigma_w2 and sigma_b2 (the others have their own scale).
    SCALED: ClassVar[tuple[str, ...]] = ("gaussian", "orthogonal", "decorrelated")

    @model_validator(mode="after")
    def _sigmas_for_scaled_kinds(self) -> CandidateGrid:
        if self.kind not in self.SCALED:
            for name in ("sigma_w2", "sigma_b2"):
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise ValueError(
                        f"{name}: {self.kind!r} draws with its own scale; only "
                        f"{', '.join(self.SCALED)} take sigma_w2 and sigma_b2"
                    )
        return self

    def size(self) -> int:
        return math.prod(
            len(v) if isinstance(v, list) else 1 for v in (self.sigma_w2, self.sigma_b2)
        )

    def expand(self) -> list[Initializer]:
        ws = self.sigma_w2 if isinstance(self.sigma_w2, list) else [self.sigma_w2]
        bs = self.sigma_b2 if isinstance(self.sigma_b2, list) else [self.sigma_b2]
        return [Initializer(self.kind, w, b) for w, b in itertools.product(ws, bs)]


class ScreenConfig(_Section):
    candidates: Annotated[list[CandidateGrid], Field(min_length=1)] = [
        CandidateGrid(kind="gaussian", sigma_w2=[0.5, 1.0, 1.76])
    ]
    depth: Annotated[Int, Field(ge=2, le=MAX_SCREEN_DEPTH)] | None = None
    """Depth of the cascade's frozen network; default: the deepest the search may grow the
    model (``search.max_depth`` with layer insertion, else the model's depth), at least 2."""
    width: Width | None = None
    """Width of the screened network, the input randomly projected to it when the data has more
    features (as bench/screen_validation.py screens MNIST); default: the model's width."""
    epochs: Count = 10
    """Passes of the decoders over the training data (digits needs about 10; MNIST one)."""
    steps: Annotated[Int, Field(gt=0, le=10_000_000)] | None = None
    """Stop the decoders after this many steps (default: no limit beyond ``epochs``)."""
    batch_size: Width = 64
    eval_images: Annotated[Int, Field(gt=0, le=1_000_000)] = 500
    """Held-out images the KL-versus-depth curve is read on."""
    keep: Count = 2
    """How many of the best trainable candidates go on to the search."""
    seed: Seed = 0

    @model_validator(mode="after")
    def _candidates_bounded(self) -> ScreenConfig:
        n = sum(grid.size() for grid in self.candidates)
        if n > MAX_SCREEN_CANDIDATES:
            raise ValueError(
                f"candidates: the grids expand to {n:,} initializers, above the "
                f"{MAX_SCREEN_CANDIDATES:,} one screen takes"
            )
        return self

    def initializers(self) -> list[Initializer]:
        return [init for grid in self.candidates for init in grid.expand()]


class AshaConfig(_Section):
    grace_period: Count = 1
    reduction_factor: Annotated[Int, Field(ge=2, le=100)] = 2


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
    growth_until: Annotated[Float, Field(gt=0, le=1)] = 0.5
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
    width_line_search_samples: Annotated[Int, Field(gt=0, le=1_000_000)] | None = 256
    """``WidthGrowth.line_search_samples``: samples each amplitude of the line search is scored
    on (``None``: the statistics samples); a decision's largest cost on a small network."""
    max_depth: Depth = 4
    """The depth layer insertion may grow a net to: hidden layers (mlp), blocks (resnet), or
    3x3 convolutions (cnn; a residual block is two)."""
    max_params: Annotated[Int, Field(gt=0, le=MAX_PARAMS)] | None = None
    architecture: ArchitectureSpace | None = None
    """Search the starting architecture too (``None``: every trial starts from the model's)."""
    asha: AshaConfig = AshaConfig()
    seed: Seed = 0
    max_failures: Annotated[Int, Field(ge=0, le=100)] = 2
    """Restarts a trial gets after it fails, each from its last checkpoint (every epoch): for
    a lost worker or node. A trial that diverges fails again from there, and ends errored."""


class FinalConfig(_Section):
    workers: Workers = 2
    epochs: Count = 10
    max_failures: Annotated[Int, Field(ge=0, le=100)] = 3
    """Worker failures the final fit survives: Ray Train restarts the workers and each resumes
    from the last checkpoint (every epoch and every growth event)."""
    use_gpu: Bool | Literal["auto"] = "auto"
    select: Literal[SELECT_RULES] = "smallest_within"  # type: ignore[valid-type]
    """Which trial of the search's front the final stage trains: the most accurate, or the
    smallest whose validation accuracy is within ``tolerance`` of the most accurate."""
    tolerance: Annotated[Float, Field(ge=0, le=1)] = 0.005


class PipelineConfig(_Section):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """The MLflow experiment name, the registered model's and the run folder's: letters, digits,
    ``.``, ``_`` and ``-``, starting with a letter or digit, at most 100 characters."""
    storage: Annotated[str, Field(min_length=1)] | None = None
    """Where the search's trials and the final fit keep their Ray state and checkpoints: a
    folder every node reaches (a shared volume) or a URI (``s3://bucket/prefix``); default:
    ``$GROWTH_STORAGE``, else the run's own folder (enough for one machine)."""
    data: DataConfig
    model: ModelConfig = ModelConfig()
    screen: ScreenConfig = ScreenConfig()
    search: SearchConfig = SearchConfig()
    final: FinalConfig = FinalConfig()

    @model_validator(mode="after")
    def _storage_is_a_folder_or_known_uri(self) -> PipelineConfig:
        if self.storage is not None:
            check_storage(self.storage, "storage")
        return self

    @model_validator(mode="after")
    def _networks_within_caps(self) -> PipelineConfig:
        """Networks whose hidden layers alone exceed :data:`MAX_PARAMS` are refused here;
        :meth:`check_on` counts the whole network once the data is known."""
        m, s, sc = self.model, self.search, self.screen
        sizes = {"model": m.hidden_parameters()}
        if m.family == "cnn":
            widest = max(max(stage) for stage in m.stages)
            depth = sc.depth or s.max_depth
            sizes["screen.depth"] = 9 * widest * widest * (depth - 1)
        else:
            width = sc.width or m.width or max(m.widths)
            depth = sc.depth or max(s.max_depth, len(m.widths))
            sizes["screen.depth" if sc.width is None else "screen.width"] = width * width * depth
        if s.architecture is not None:
            (_, deepest), (_, widest) = s.architecture.depth, s.architecture.width
            sizes["search.architecture"] = widest * widest * (deepest - 1)
        for field, size in sizes.items():
            if size > MAX_PARAMS:
                raise ValueError(
                    f"{field}: a network of {size:,} parameters between its hidden layers, above "
                    f"the {MAX_PARAMS:,} this project builds"
                )
        return self

    @model_validator(mode="after")
    def _what_an_mlp_can_grow(self) -> PipelineConfig:
        m, s = self.model, self.search
        if m.family == "cnn" or "sensli" not in s.insertion:
            return self
        if m.family == "mlp" and m.activation not in IDEMPOTENT_ACTIVATIONS:
            raise ValueError(
                f"search.insertion: SensLI inserts identity layers, which a plain MLP with "
                f"{m.activation!r} does not admit; use activation "
                f"{' or '.join(map(repr, IDEMPOTENT_ACTIVATIONS))}, family 'resnet', or "
                'insertion = ["none"]'
            )
        shallowest = s.architecture.depth[0] if s.architecture is not None else len(m.widths)
        if s.max_depth <= shallowest:
            unit = "blocks" if m.family == "resnet" else "hidden layers"
            raise ValueError(
                f"search.max_depth: {s.max_depth} leaves no room to insert into the "
                f"{shallowest} {unit} the model starts with"
            )
        return self

    def check_on(self, input_dim: int, num_classes: int, shape=None) -> None:
        """The starting network on the data, counted: within :data:`MAX_PARAMS` and within
        ``search.max_params`` (else no trial could start). Call before any run starts."""
        spec = self.model.spec(input_dim, num_classes, shape)
        n = parameter_count(spec)
        if n > MAX_PARAMS:
            raise ConfigError(
                f"model: the starting network has {n:,} parameters on this data, above the "
                f"{MAX_PARAMS:,} this project builds"
            )
        if self.search.architecture is None and n > (self.search.max_params or n):
            raise ConfigError(
                f"search.max_params: {self.search.max_params:,} is below the starting "
                f"network's {n:,} parameters ({spec.describe()})"
            )

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
        check_storage(root, "storage" if self.storage else f"${STORAGE_ENV}")
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


def check_storage(root: str, field: str) -> None:
    """``root`` is a folder or a URI of a filesystem Ray's storage reads; else a ConfigError
    naming ``field``."""
    scheme, sep, rest = root.partition("://")
    if not sep:
        return
    if scheme.lower() not in STORAGE_SCHEMES or not rest.strip("/"):
        raise ConfigError(
            f"{field}: {root!r} is neither a folder nor a URI of {', '.join(STORAGE_SCHEMES)} "
            "with a bucket or path (s3://bucket/prefix)"
        )


def storage_path(storage: Path | str) -> str:
    """Ray's ``storage_path`` of a folder (made absolute: Tune and Train run in folders of
    their own) or of a URI (as it is)."""
    text = str(storage)
    return text if "://" in text else str(Path(text).resolve())


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, override and validate a pipeline TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    for item in overrides or []:
        apply_override(raw, item)
    return validate(raw, source=str(path))


def validate(raw: dict[str, Any], *, source: str = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {describe(e)}") from None


def describe(error: ValidationError) -> str:
    """Pydantic's errors as one line, ``key: what is wrong (got value)``, ``;`` between keys;
    the alternatives of a field that takes several types (a number or a list) merged."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for err in error.errors():
        by_key.setdefault(_key(err["loc"]), []).append(err)
    return "; ".join(_describe(key, errs) for key, errs in by_key.items())


#: What pydantic names a union member by in an error's location: a type, or a tagged name.
UNION_MEMBERS = {"bool", "int", "float", "str", "none", "list", "tuple", "dict"}
UNION_MARKS = ("[", "-", "function")


def _key(loc: tuple[Any, ...]) -> str:
    """The dotted key of an error's location, without pydantic's names of union members
    (``constrained-float``, ``list[...]``, ``bool``, ``literal['auto']``, ...)."""
    return ".".join(
        str(p)
        for p in loc
        if not (isinstance(p, str) and (any(m in p for m in UNION_MARKS) or p in UNION_MEMBERS))
    )


def _describe(key: str, errs: list[dict[str, Any]]) -> str:
    kinds = {e["type"] for e in errs}
    if "extra_forbidden" in kinds:
        return f"{key}: unknown key"
    if "missing" in kinds:
        return f"{key}: missing"
    msgs = list(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errs))
    if kinds == {"value_error"} and isinstance(errs[0].get("input"), dict):
        # a section's own check: its message starts with the key it is about
        return ".".join(filter(None, (key, "; ".join(msgs))))
    text = "; or ".join(msgs)
    return f"{key}: {text} (got {errs[0].get('input')!r})" if key else text


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
