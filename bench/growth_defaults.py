"""How the search's growth settings were chosen: one growing trial per setting, as the search
runs it (:func:`pipelines.trial.run` on the validation split), against fixed networks.

On digits (the default ``make run``), 8 epochs of Adam at lr 1e-2, Kaiming initialization, three
seeds a row: fixed 64-W-10 networks, and networks grown from a start width by TINY (ridge 1, the
statistics samples drawn once) with ``decisions`` decisions spread over the first half of the
run, width only or width then SensLI depth (``max_depth`` 2), and the loss-plateau trigger the
search used before. Rows: mean validation accuracy, final parameters, training FLOPs (growth
statistics and line searches included), growth events. Summary keys: the chosen row's
``acc_gap_vs_fixed`` and ``params_ratio_vs_fixed`` against the most accurate fixed row.
"""

from __future__ import annotations

import _common
import torch

from growth_core.flops import parameter_count
from pipelines import trial as trials
from pipelines.config import validate

NAME = "growth_defaults"
FIXED = ((16,), (32,), (64,), (32, 32))
STARTS = ((2,), (4,), (8,))
DECISIONS = (4, 8)
LINE_SEARCH = (None, 256)
"""Line-search samples: all the statistics samples, or 256 (a decision's largest cost here)."""
CHOSEN = "grown from (8,), width, 4 decisions, line search on 256"
"""The row whose settings pipelines/configs/digits.toml ships."""
QUICK = {
    "fixed": ((16,), (64,)), "starts": ((8,),), "decisions": (4,), "line_search": (256,),
    "seeds": 1, "epochs": 4,
}  # fmt: skip


def run(widths, settings, seed, data, cfg):
    model = cfg.model.model_copy(update={"widths": list(widths)})
    result = trials.run(model, data, {**settings, "seed": seed}, eval_name="val")
    return {
        "val_accuracy": result.final["val_accuracy"],
        "params": parameter_count(result.net.spec),
        "flops": result.flops,
        "events": len(result.events),
        "architecture": result.net.spec.describe(),
    }


def main() -> None:
    args = _common.parser(NAME, __doc__).parse_args()
    _common.setup()
    q = QUICK if args.quick else {}
    seeds = args.seeds or q.get("seeds", 3)
    cfg = validate({"name": NAME, "data": {"dataset": "digits"}})
    data = trials.with_validation(trials.load_data(cfg.data))
    base = trials.base_settings(cfg)
    base.update(
        lr=1e-2, epochs=q.get("epochs", 8), batch_size=64, width_ridge=1.0, width_samples="fixed",
        growth_until=0.5, init={"kind": "kaiming", "sigma_w2": 2.0, "sigma_b2": 0.0},
    )  # fmt: skip
    fixed = {"insertion": "none", "width_strategy": "none"}
    rows_spec = {f"fixed {w}": (w, fixed) for w in q.get("fixed", FIXED)}
    for start in q.get("starts", STARTS):
        for k in q.get("decisions", DECISIONS):
            for ls in q.get("line_search", LINE_SEARCH):
                schedule = {
                    "width_strategy": "tiny", "growth_timing": "schedule", "decisions": k,
                    "width_line_search_samples": ls,
                }  # fmt: skip
                tail = f"{k} decisions" + (f", line search on {ls}" if ls else "")
                rows_spec[f"grown from {start}, width, {tail}"] = (
                    start, {**schedule, "insertion": "none"})  # fmt: skip
                rows_spec[f"grown from {start}, width + depth, {tail}"] = (
                    start, {**schedule, "insertion": "sensli", "max_depth": 2})  # fmt: skip
        rows_spec[f"grown from {start}, plateau trigger"] = (
            start,
            {"width_strategy": "tiny", "insertion": "sensli", "growth_timing": "plateau"},
        )
    rows = []
    for name, (widths, extra) in rows_spec.items():
        runs = [run(widths, {**base, **extra}, seed, data, cfg) for seed in range(seeds)]
        means = _common.averaged(
            runs, "val_accuracy", params="params", mflops=("flops", 1e6), events="events"
        )
        rows.append({"row": name, **means, "architectures": [r["architecture"] for r in runs]})
    by = {r["row"]: r for r in rows}
    best_fixed = max(
        (r for r in rows if r["row"].startswith("fixed")), key=lambda r: r["val_accuracy"]
    )
    chosen = by.get(CHOSEN) or next(r for r in rows if r["row"].startswith("grown"))
    summary = {
        "chosen": chosen["row"],
        "best_fixed": best_fixed["row"],
        "acc_gap_vs_fixed": 100 * (chosen["val_accuracy"] - best_fixed["val_accuracy"]),
        "params_ratio_vs_fixed": chosen["params"] / best_fixed["params"],
        "flops_ratio_vs_fixed": chosen["mflops"] / best_fixed["mflops"],
    }
    cols = ["row", "val_accuracy", "val_accuracy_std", "params", "mflops", "events"]
    print(_common.markdown_table(rows, cols))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})
    config = {"seeds": seeds, "quick": args.quick, **{k: str(v) for k, v in base.items()}}
    print("wrote", _common.write_result(NAME, args.out, config, rows, summary))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
