"""Accuracy against size: the search's Pareto front, its hypervolume, and the rule that picks
the point the final stage trains.

A trial is a point (validation accuracy, final parameter count); it dominates another when it
is at least as accurate and at most as large, and strictly better in one. The front is the set
no trial dominates. Only trials that trained every epoch compete for the front and the pick:
an ASHA-stopped trial's accuracy is that of a shorter run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from growth_core.io import atomic_write

#: ``final.select`` rules.
SELECT_RULES = ("most_accurate", "smallest_within")

FRONT_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()), ("mlflow_run_id", pa.string()),
        ("val_accuracy", pa.float64()), ("params", pa.int64()), ("flops", pa.int64()),
        ("depth", pa.int64()), ("epochs", pa.int64()), ("completed", pa.bool_()),
        ("grows", pa.bool_()), ("on_front", pa.bool_()), ("selected", pa.bool_()),
        ("insertion", pa.string()), ("width_strategy", pa.string()), ("lr", pa.float64()),
        ("init", pa.string()),
    ]
)  # fmt: skip


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a = (accuracy, params)`` is at least as good as ``b`` in both and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, by increasing size."""
    keep = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    return sorted(keep, key=lambda i: (points[i][1], -points[i][0]))


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area dominated by ``points`` and bounded by ``reference = (accuracy, params)``
    (chance accuracy and the largest size worth considering): accuracy gained above the
    reference times parameters saved below it, summed over the front's staircase."""
    inside = [(a, p) for a, p in points if a > reference[0] and p < reference[1]]
    area, best = 0.0, reference[0]
    for i in front(inside):  # by increasing size: each step adds a band of higher accuracy
        a, p = inside[i]
        if a > best:
            area += (a - best) * (reference[1] - p)
            best = a
    return area


def select(rows: Sequence[dict[str, Any]], rule: str, tolerance: float = 0.0) -> dict[str, Any]:
    """The completed trial the final stage trains: the most accurate (``"most_accurate"``), or
    the smallest whose accuracy is within ``tolerance`` of the most accurate
    (``"smallest_within"``); ties go to the smaller, then the more accurate."""
    if rule not in SELECT_RULES:
        raise ValueError(f"final.select: expected one of {', '.join(SELECT_RULES)}, got {rule!r}")
    done = [r for r in rows if r["completed"]] or list(rows)
    if not done:
        raise ValueError("trials: none to select from")
    best = max(r["val_accuracy"] for r in done)
    floor = best - tolerance if rule == "smallest_within" else best
    eligible = [r for r in done if r["val_accuracy"] >= floor]
    return min(eligible, key=lambda r: (r["params"], -r["val_accuracy"]))


def front_table(rows: Sequence[dict[str, Any]], selected_trial: str | None) -> pa.Table:
    """Every trial with ``on_front`` (among completed trials) and ``selected`` marked."""
    done = [r for r in rows if r["completed"]]
    on = {done[i]["trial_id"] for i in front([(r["val_accuracy"], r["params"]) for r in done])}
    records = [
        {
            **{k: r.get(k) for k in FRONT_SCHEMA.names},
            "on_front": r["trial_id"] in on,
            "selected": r["trial_id"] == selected_trial,
        }
        for r in rows
    ]
    return pa.Table.from_pylist(records, schema=FRONT_SCHEMA)


def write_front(table: pa.Table, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
