"""The figures the tracker logs show what they list."""

import numpy as np
import pyarrow as pa

from growth_core.events import GrowthEvent
from growth_core.spec import ArchitectureSpec
from pipelines.plots import event_label, growth_figure, phase_figure


def test_the_phase_diagram_holds_every_candidate_it_lists():
    # the kaiming and orthogonal readouts (58, 64) lie far above the Gaussian ones and the
    # cascade depth (31): the axis reaches them, so every legend entry is on the plot
    rows = [
        {"kind": "gaussian", "sigma_w2": s, "sigma_b2": 0.05, "decay_depth": d,
         "reference_depth": d - 1, "crossing_depth": d + 1}
        for s, d in ((0.5, 4.0), (1.5, 20.0), (2.5, 9.0))
    ] + [
        {"kind": kind, "sigma_w2": 1.0, "sigma_b2": 0.05, "decay_depth": d,
         "reference_depth": d, "crossing_depth": d}
        for kind, d in (("kaiming", 58.0), ("orthogonal", 64.0))
    ]  # fmt: skip
    fig = phase_figure(pa.Table.from_pylist(rows), cascade_depth=31, activation="tanh")
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    for line in ax.get_lines():
        if line.get_label().startswith("6 xi_c"):
            continue  # mean field's curve diverges at the critical point: clipped by design
        ys = np.asarray(line.get_ydata(), dtype=float)
        ys = ys[np.isfinite(ys)]
        assert ys.size == 0 or (ys.min() >= low and ys.max() <= high), line.get_label()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "kaiming: decay depth" in labels and "orthogonal: decay depth" in labels


def test_growth_figure_labels_each_event_with_what_where_and_how_much():
    small = ArchitectureSpec(4, 3, (8,), "relu")
    wide = ArchitectureSpec(4, 3, (13,), "relu")
    deep = ArchitectureSpec(4, 3, (13, 13), "relu")
    events = [
        GrowthEvent(step=5, kind="neurons", position=0, score=1.0, spec_before=small,
                    spec_after=wide, params_before=67, params_after=107,
                    details={"neurons": 5}),
        GrowthEvent(step=9, kind="layer", position=1, score=0.5, spec_before=wide,
                    spec_after=deep, params_before=107, params_after=289),
    ]  # fmt: skip
    assert event_label(events[0]) == "width: +5 neurons in hidden layer 0"
    assert event_label(events[1]) == "depth: a layer inserted at position 1"
    history = [{"step": s, "flops": 10 * s, "loss": 1.0 / s} for s in range(1, 12)]
    history[-1]["val_accuracy"], history[-1]["val_loss"] = 0.9, 0.3
    fig = growth_figure(history, events)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert texts >= {event_label(e) for e in events}
