"""The search's front, its hypervolume and the final stage's pick, on points worked by hand."""

import pytest

from pipelines import pareto


def row(trial_id, acc, params, completed=True, grows=True):
    return {
        "trial_id": trial_id, "mlflow_run_id": f"run-{trial_id}", "val_accuracy": acc,
        "params": params, "flops": 10, "depth": 1, "epochs": 4, "completed": completed,
        "grows": grows, "insertion": "sensli", "width_strategy": "tiny", "lr": 0.01, "init": "{}",
    }  # fmt: skip


def test_the_front_keeps_what_nothing_dominates():
    points = [(0.90, 100), (0.95, 400), (0.93, 500), (0.95, 300), (0.80, 50), (0.90, 100)]
    # (0.93, 500) is beaten by (0.95, 400), which (0.95, 300) beats; equal points both stay
    assert pareto.front(points) == [4, 0, 5, 3]
    assert pareto.dominates((0.95, 300), (0.95, 400)) and not pareto.dominates((1, 1), (1, 1))


def test_hypervolume_is_the_staircase_area_above_chance_and_below_the_size_cap():
    reference = (0.1, 1000)
    # one point: (0.9 - 0.1) * (1000 - 200)
    assert pareto.hypervolume([(0.9, 200)], reference) == pytest.approx(640.0)
    # two steps: 0.5 above chance up to 100 params, then 0.4 more from 400
    area = 0.5 * (1000 - 100) + 0.4 * (1000 - 400)
    assert pareto.hypervolume([(0.6, 100), (1.0, 400), (0.5, 900)], reference) == pytest.approx(
        area
    )
    assert pareto.hypervolume([(0.05, 10), (0.9, 2000)], reference) == 0.0  # outside the box


def test_select_takes_the_most_accurate_or_the_smallest_close_to_it():
    rows = [row("a", 0.950, 900), row("b", 0.946, 300), row("c", 0.930, 100),
            row("d", 0.990, 50, completed=False)]  # fmt: skip
    assert pareto.select(rows, "most_accurate")["trial_id"] == "a"
    assert pareto.select(rows, "smallest_within", 0.005)["trial_id"] == "b"
    assert pareto.select(rows, "smallest_within", 0.03)["trial_id"] == "c"
    with pytest.raises(ValueError, match="final.select"):
        pareto.select(rows, "cheapest")


def test_the_table_marks_the_front_among_completed_trials_and_the_pick():
    rows = [row("a", 0.95, 900), row("b", 0.94, 300), row("c", 0.93, 400, grows=False),
            row("d", 0.99, 50, completed=False)]  # fmt: skip
    table = pareto.front_table(rows, "b").to_pylist()
    assert [(r["trial_id"], r["on_front"], r["selected"]) for r in table] == [
        ("a", True, False), ("b", True, True), ("c", False, False), ("d", False, False)
    ]  # fmt: skip
