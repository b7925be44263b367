"""One TINY run on MNIST with settings overridden: how ``bench/tiny_growth.py``'s width settings
were chosen (ridge, statistics samples, sample draw, decisions), one seed at a time.

    python bench/tiny_probe.py --seed 0 ridge=1 samples=fixed decisions=32 decision_every=0.125

Keys: the fields of ``tiny_growth.Setting`` (``decisions``, ``decision_every``,
``statistics_samples``, ...) and of ``WidthGrowth`` (``ridge``, ``z``, ``threshold``,
``min_relative_gain``, ``max_neurons``, ``max_width``, ``selection``, ``strategy``,
``samples``); unset width fields take the library's defaults (ridge 0, fresh samples), unset
setting fields ``tiny_growth``'s MNIST values. Prints one JSON line (test accuracy, FLOPs over
the big network's, growth share, final widths, growth events; with ``--scratch`` the final
architecture trained from scratch too). Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path

import _common
import tiny_growth as tg

from growth_core.flops import train_step_flops
from growth_core.growth import AtSteps, Budget, DepthWidthPolicy, WidthGrowth
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import Trainer

WIDTH_TYPES = {f.name: f.type for f in fields(WidthGrowth)}


def _value(text: str, kind: str):
    if kind in ("int", "int | None"):
        return int(text)
    if kind == "float":
        return float(text)
    return text


def parse(pairs: list[str]) -> tuple[dict, dict]:
    setting, width = {}, {}
    setting_types = {f.name: f.type for f in fields(tg.Setting)}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"{pair}: expected key=value")
        if key in setting_types:
            setting[key] = _value(text, setting_types[key])
        elif key in WIDTH_TYPES:
            width[key] = _value(text, WIDTH_TYPES[key])
        else:
            raise SystemExit(f"{key}: not a field of tiny_growth.Setting or WidthGrowth")
    return setting, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", action="store_true", help="also train the final architecture")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    _common.setup()
    setting, width = parse(args.overrides)
    s = replace(tg.SETTINGS["mnist"], **setting)
    data = tg.load("mnist", args.data_dir, s)
    if data is None:
        raise SystemExit("mnist: no data (see ../shared/data/mnist)")
    big = ArchitectureSpec(data.input_dim, data.num_classes, s.big, "relu")
    big_flops = s.epochs * tg.steps_per_epoch(data, s) * train_step_flops(big, s.batch_size)
    start = time.perf_counter()
    spec = ArchitectureSpec(data.input_dim, data.num_classes, s.start, "relu")
    net = Initializer("default").apply(build(spec), seed=args.seed)
    interval = max(round(tg.steps_per_epoch(data, s) * s.decision_every), 1)
    width = {
        "statistics_samples": s.statistics_samples,
        "line_search_samples": s.line_search_samples,
        **width,
    }
    policy = DepthWidthPolicy(
        AtSteps(tuple(interval * k for k in range(1, s.decisions + 1))),
        width=WidthGrowth(**width),
        budget=Budget(max_flops=int(tg.BUDGET_RATIO * big_flops)),
        seed=args.seed,
    )
    trainer = Trainer(net, data, tg.train_config(data, s, args.seed), policy=policy)
    trainer.evaluate()
    out = tg.summary_of(trainer.fit())
    result = {
        "overrides": args.overrides,
        "seed": args.seed,
        "test_acc": round(100 * out["acc"], 2),
        "flops_vs_big": round(out["flops"] / big_flops, 3),
        "growth_share": round(out["growth_flops"] / out["flops"], 2),
        "widths": list(out["spec"].widths),
        "events": [(e.step, e.position, e.details["neurons"]) for e in trainer.events],
        "seconds": round(time.perf_counter() - start),
    }
    if args.scratch:
        result["scratch_test_acc"] = round(
            100 * tg.fixed_run(out["spec"], data, s, args.seed)["acc"], 2
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
