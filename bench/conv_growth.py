"""A conv net grown from 1/8 of its channels, in width and depth, against the big fixed conv
net it could become, its own final architecture trained from scratch, and GroMo 0.1.0 growing the
same start in the same run, on the MNIST images (1x28x28).

Rows, each seed fixing the initial draw (PyTorch's default) and the batch order of our rows:

- ``big fixed``: stages (32, 32) and (64, 64), the second at half the resolution (``--downsample
  stride``, the default: its first convolution strides by 2; ``pool``: a 2x2 max pool before
  it), ReLU, global average pooling and a linear head, no batch norm (a plain net with it
  admits no identity layer, and GroMo's start has none either); Adam, batch 128;
- ``tiny``: the same net at 1/8 of its channels, (4, 4) and (8, 8), grown with
  :class:`~growth_core.growth.DepthWidthPolicy`: width first (TINY on conv sites, GroMo's
  singular-value threshold, no bar on the first-order gain (see ``pipelines/configs/
  mnist_cnn.toml``), at most :data:`MAX_CHANNELS` channels a decision), else depth (SensLI, an
  identity convolution, up to :data:`MAX_DEPTH` convolutions, scored on ``depth_batches``
  mini-batches): ``decisions`` evenly over the first half of the run, width statistics on
  ``statistics_samples`` drawn once, the amplitude searched on ``line_search_samples``, under a
  FLOP budget of 0.35x the big net's training FLOPs;
- ``tiny scratch``: that seed's grown architecture trained from scratch, the same epochs;
- ``start scratch``: the starting architecture, (4, 4) and (8, 8), trained without growth, the
  same epochs: what growth adds over not growing at all;
- ``gromo``: GroMo's ``VGG`` on the same start, grown at the same steps (:func:`gromo_run`).

FLOPs: training steps by ``growth_core.flops`` (exact, per layer), a decision's statistics and
line search by ``torch.utils.flop_counter`` (ours and GroMo's alike); ``flops_ratio_vs_big``
includes them, ``growth_share_of_flops`` is their share of the grown run's. Summary keys, means
over seeds: ``acc_gap_vs_big``, ``acc_gap_vs_same_size_scratch`` and ``acc_gap_vs_gromo`` in
points of test accuracy (``null`` without GroMo installed), ``acc_gap_vs_start_scratch`` (what
growing bought over the starting net), ``flops_ratio_vs_big``,
``growth_share_of_flops``. Where a site is: a convolution followed by one that reads its map
directly (no pool between): with stride downsampling every convolution but the last; with
pooling the last convolution of each stage keeps its channels unless a layer is inserted after
it. GroMo's ``VGG`` downsamples by pooling only, so under ``stride`` its start differs from ours
in that alone (same channels, same sites but the one across the stages).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace

import _common
import _gromo
import torch
import torch.nn.functional as F

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.data import Dataset
from growth_core.flops import parameter_count, train_step_flops
from growth_core.growth import AtSteps, Budget, DepthGrowth, DepthWidthPolicy, WidthGrowth
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.train import TrainConfig, Trainer

NAME = "conv_growth"
BIG = ((32, 32), (64, 64))
START = ((4, 4), (8, 8))
BUDGET_RATIO = 0.35
"""The FLOP budget of the grown run, as a fraction of the big net's training FLOPs (the target)."""
MAX_CHANNELS = 8
"""Channels one decision may add at its site."""
MAX_DEPTH = 6
"""Convolutions the grown net may reach by insertion (it starts with 4, the big net has 4)."""


@dataclass(frozen=True)
class Setting:
    epochs: int = 4
    decisions: int = 8
    statistics_samples: int = 1000
    depth_batches: int = 4
    line_search_samples: int = 512
    seeds: int = 3
    lr: float = 2e-3
    batch_size: int = 128
    train_subset: int | None = None
    test_subset: int | None = None
    downsample: str = "stride"
    max_channels: int = MAX_CHANNELS
    growth_span: float = 0.5
    """The fraction of the run the decisions spread over."""


QUICK = dict(epochs=2, decisions=6, statistics_samples=200, seeds=1, train_subset=12_000,
             test_subset=2000)  # fmt: skip


def spec_of(stages, data: Dataset, s: Setting) -> ConvSpec:
    return ConvSpec(data.shape, data.num_classes, stages, s.downsample, "relu")


def config(data: Dataset, s: Setting, seed: int) -> TrainConfig:
    per_epoch = math.ceil(data.n_train / s.batch_size)
    return TrainConfig(
        steps=s.epochs * per_epoch, lr=s.lr, optimizer="adam", batch_size=s.batch_size,
        eval_every=per_epoch, log_every=per_epoch, seed=seed,
    )  # fmt: skip


def run(spec: ConvSpec, data: Dataset, s: Setting, seed: int, policy=None) -> dict:
    torch.manual_seed(seed)
    net = Initializer("default").apply(build(spec), seed=seed)
    result = Trainer(net, data, config(data, s, seed), policy=policy).fit()
    return {
        "acc": result.final["test_accuracy"],
        "flops": result.flops,
        "growth_flops": result.growth_flops,
        "params": parameter_count(result.net.spec),
        "spec": result.net.spec,
        "events": [(e.step, e.kind, e.position, e.spec_after.describe()) for e in result.events],
    }


def grown(data: Dataset, s: Setting, seed: int, budget: int) -> dict:
    steps = config(data, s, seed).steps
    every = max(int(steps * s.growth_span) // s.decisions, 1)
    policy = DepthWidthPolicy(
        AtSteps(tuple(every * k for k in range(1, s.decisions + 1))),
        width=WidthGrowth(
            "tiny",
            selection="singular_value",
            min_relative_gain=0.0,
            max_neurons=s.max_channels,
            statistics_samples=s.statistics_samples,
            line_search_samples=s.line_search_samples,
            samples="fixed",
        ),  # fmt: skip
        depth=DepthGrowth(max_depth=MAX_DEPTH, score_batches=s.depth_batches),
        budget=Budget(max_flops=budget),
        seed=seed,
    )
    return run(spec_of(START, data, s), data, s, seed, policy)


# -- the peer: GroMo 0.1.0 -------------------------------------------------------------------------
def gromo_run(data: Dataset, s: Setting, seed: int) -> dict | None:
    """GroMo's ``VGG`` on the same start: stages (4, 4) and (8, 8) with a max pool between,
    ReLU, no norm, then global average pooling (its pool sized for a 1x1 map: an input shape of
    2x2 in its arithmetic) and one linear layer, PyTorch's default initial draw. It grows the
    first convolution of each stage (the same sites as ours; no depth growth) at our decision
    steps with :func:`_gromo.growth_step` (its statistics on ``statistics_samples``, our line
    search), a fresh Adam after each growth as in GroMo's tutorials."""
    try:
        from gromo.containers.vgg import VGG
    except ImportError:
        return None
    from torch.utils.flop_counter import FlopCounterMode

    cfg = [*START[0], "M", *START[1]]
    target = [*BIG[0], "M", *BIG[1]]
    torch.manual_seed(seed)
    model = VGG(
        cfg, target_cfg=target, in_features=data.shape[0], normalization=None,
        num_classes=data.num_classes, init_weights=False, dropout=0.0, number_of_fc_layers=1,
        input_spatial_shape=(2, 2), device="cpu",
    )  # fmt: skip

    def spec() -> ConvSpec:
        c = [conv.out_channels for conv in model._feature_growing_modules]
        return ConvSpec(data.shape, data.num_classes, (tuple(c[:2]), tuple(c[2:])), "pool")

    def images(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), *data.shape)

    steps = config(data, s, seed).steps
    every = max(int(steps * s.growth_span) // s.decisions, 1)
    decide_at = {every * k for k in range(1, s.decisions + 1)}
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    flops, growth_flops, events, step = 0, 0, [], 0
    while step < steps:
        order = torch.randperm(data.n_train, generator=gen)
        for i in range(0, data.n_train, s.batch_size):
            if step == steps:
                break
            idx = order[i : i + s.batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(images(data.x_train[idx])), data.y_train[idx]).backward()
            optimizer.step()
            flops += train_step_flops(spec(), len(idx))
            step += 1
            if step in decide_at:
                with FlopCounterMode(display=False) as counter:
                    event = _gromo.growth_step(
                        model, data, gen, statistics_samples=s.statistics_samples,
                        line_search_samples=s.line_search_samples, as_input=images,
                    )  # fmt: skip
                growth_flops += counter.get_total_flops()
                flops += counter.get_total_flops()
                if event is not None:
                    events.append((step, "neurons", event[0], spec().describe()))
                optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    with torch.no_grad():
        predicted = torch.cat([model(images(x)).argmax(1) for x in data.x_test.split(1000)])
    return {
        "acc": (predicted == data.y_test).float().mean().item(),
        "flops": flops,
        "growth_flops": growth_flops,
        "params": parameter_count(spec()),
        "spec": spec(),
        "events": events,
    }


def load(s: Setting, data_dir) -> Dataset | None:
    folder = data_dir or _common.DEFAULT_MNIST
    if not (folder / "train.parquet").exists():
        return None
    data = datasets.load_parquet(folder / "train.parquet", folder / "test.parquet", scale=255.0)
    n, m = s.train_subset or data.n_train, s.test_subset or len(data.y_test)
    return Dataset(
        data.name, data.x_train[:n], data.y_train[:n], data.x_test[:m], data.y_test[:m],
        data.num_classes, shape=data.shape,
    )  # fmt: skip


def main() -> None:
    cli = _common.parser(NAME, __doc__)
    cli.add_argument("--downsample", choices=("stride", "pool"), default="stride")
    cli.add_argument("--decisions", type=int, default=None, help="growth decisions a run")
    cli.add_argument("--max-channels", type=int, default=None, help="channels a decision adds")
    cli.add_argument("--growth-span", type=float, default=None, help="fraction of the run")
    args = cli.parse_args()
    _common.setup()
    s = replace(Setting(), **QUICK) if args.quick else Setting()
    s = replace(s, downsample=args.downsample)
    for name in ("decisions", "max_channels", "growth_span"):
        if getattr(args, name) is not None:
            s = replace(s, **{name: getattr(args, name)})
    if args.seeds:
        s = replace(s, seeds=args.seeds)
    data = load(s, args.data_dir)
    if data is None:
        print("no MNIST parquet files: pass --data-dir")
        return
    started = time.perf_counter()
    big_spec = spec_of(BIG, data, s)
    budget = int(BUDGET_RATIO * s.epochs * math.ceil(data.n_train / s.batch_size)
                 * train_step_flops(big_spec, s.batch_size))  # fmt: skip
    runs: dict[str, list[dict]] = {
        "big fixed": [], "tiny": [], "tiny scratch": [], "start scratch": [], "gromo": []
    }  # fmt: skip
    for seed in range(s.seeds):
        runs["big fixed"].append(run(big_spec, data, s, seed))
        runs["tiny"].append(grown(data, s, seed, budget))
        runs["tiny scratch"].append(run(runs["tiny"][-1]["spec"], data, s, seed))
        runs["start scratch"].append(run(spec_of(START, data, s), data, s, seed))
        peer = gromo_run(data, s, seed)
        if peer is not None:
            runs["gromo"].append(peer)
        accs = ", ".join(f"{k} {100 * v[-1]['acc']:.2f}" for k, v in runs.items())
        print(f"seed {seed}: {accs}", flush=True)
    big_flops = statistics.fmean(r["flops"] for r in runs["big fixed"])
    rows = []
    runs = {name: rs for name, rs in runs.items() if rs}  # no gromo row without GroMo
    for name, rs in runs.items():
        row = {"row": name, "seeds": len(rs)}
        row |= _common.averaged(rs, "acc", params="params", flops_vs_big=("flops", big_flops))
        row["architecture"] = "; ".join(sorted({r["spec"].describe() for r in rs}))
        row["growth_events"] = statistics.fmean(len(r["events"]) for r in rs)
        rows.append(row)

    def acc(name: str) -> float:
        return statistics.fmean(r["acc"] for r in runs[name])

    tiny = runs["tiny"]
    summary = {
        "acc_gap_vs_big": 100 * (acc("tiny") - acc("big fixed")),
        "flops_ratio_vs_big": statistics.fmean(r["flops"] for r in tiny) / big_flops,
        "acc_gap_vs_same_size_scratch": 100 * (acc("tiny") - acc("tiny scratch")),
        "acc_gap_vs_start_scratch": 100 * (acc("tiny") - acc("start scratch")),
        "acc_gap_vs_gromo": 100 * (acc("tiny") - acc("gromo")) if "gromo" in runs else None,
        "growth_share_of_flops": statistics.fmean(r["growth_flops"] / r["flops"] for r in tiny),
        "params_ratio_vs_big": statistics.fmean(r["params"] for r in tiny)
        / parameter_count(big_spec),
    }
    cfg = {
        **vars(s), "big": big_spec.describe(), "start": spec_of(START, data, s).describe(),
        "budget_ratio": BUDGET_RATIO, "max_depth": MAX_DEPTH,
        "quick": args.quick,
        "events": {i: r["events"] for i, r in enumerate(tiny)},
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    columns = ["row", "seeds", "acc", "acc_std", "params", "flops_vs_big", "growth_events"]
    print(_common.markdown_table(rows, [*columns, "architecture"]))
    print(summary)
    print("wrote", _common.write_result(NAME, args.out, cfg, rows, summary))


if __name__ == "__main__":
    main()
