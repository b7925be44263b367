"""Growth under DDP without Ray: two gloo processes score their shares of the samples, the sums
are all-reduced, rank 0's growth is applied by both and only what changed moves."""

import math
import os
import socket
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.families import spec_from_json
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, WidthGrowth
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, Trainer
from pipelines.distributed import AllReduce, RankZeroDecides, max_rank_difference

CASES = {
    "mlp width": (
        ArchitectureSpec(64, 10, (8, 8), "relu"),
        {"width": WidthGrowth("tiny", selection="singular_value", max_neurons=4)},
    ),
    "conv depth": (ConvSpec((1, 8, 8), 10, ((4, 4), (6,)), "stride"), {"depth": DepthGrowth()}),
}
#: One decision each, on :data:`SCORED` samples: TINY with the held-out test (its folds must
#: survive the split), SensLI, TINY's channels.
DECISIONS = {
    "mlp width": (ArchitectureSpec(64, 10, (8, 8), "relu"), {"width": WidthGrowth(max_neurons=4)}),
    "mlp depth": (ArchitectureSpec(64, 10, (8, 8), "relu"), {"depth": DepthGrowth()}),
    "conv width": (
        ConvSpec((1, 8, 8), 10, ((4, 4), (6,)), "stride"),
        {"width": WidthGrowth(selection="singular_value", max_neurons=3, min_relative_gain=0.0)},
    ),
}
#: The samples a decision reads: the first of digits' training set, all of them (the statistics
#: draw and the depth scores' mini-batches of 20 cover the set in order), rank r the r-th half.
SCORED = 200


@dataclass
class _State:
    """What a policy reads of a training run, at the step its trigger fires."""

    net: torch.nn.Module
    data: object
    step: int = 1
    batch_size: int = 20
    total_steps: int = 10
    flops: int = 0
    history: list = field(default_factory=list)
    loss_fn: object = F.cross_entropy


@dataclass
class _Samples:
    x_train: torch.Tensor
    y_train: torch.Tensor


def _scored() -> _Samples:
    """The scored samples, in float64 (so that the order of the sums shows only at 1e-12)."""
    data = datasets.load("digits")
    return _Samples(data.x_train[:SCORED].double(), data.y_train[:SCORED])


def _decide(case: str, samples: _Samples, reducer=None):
    """The case's decision on ``samples`` (with ``reducer``: this process's share of them)."""
    spec, kinds = DECISIONS[case]
    torch.manual_seed(0)
    policy = DepthWidthPolicy(AtSteps((1,)), **kinds)
    state = _State(build(spec).double(), samples)
    return policy.decide_now(state) if reducer is None else policy.decide_now(state, reducer)


def _outcome(decision) -> tuple:
    """A decision as plain data: its event, the grown weights (NumPy: a tensor would leave a
    worker through shared memory, gone when the worker ends) and what it cost."""
    growth = decision.growth
    if growth is None:
        return None, None, decision.scoring_flops
    weights = {k: v.detach().cpu().numpy() for k, v in growth.net.state_dict().items()}
    return growth.event.to_dict(), weights, decision.scoring_flops


def _worker(rank: int, world: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for case, (spec, kinds) in CASES.items():  # one process group for every case
            torch.manual_seed(0)  # the same start on both ranks, as DDP's first broadcast makes it
            policy = RankZeroDecides(DepthWidthPolicy(AtSteps((6,)), **kinds))
            config = TrainConfig(steps=10, batch_size=32, lr=1e-2, optimizer="adam")
            trainer = Trainer(
                build(spec),
                datasets.load("digits"),
                config,
                policy=policy,
                wrap=torch.nn.parallel.DistributedDataParallel,
                shard=(rank, world),
            )
            result = trainer.fit()
            diff = max_rank_difference(result.net)
            spec_json, events = result.net.spec.to_json(), len(result.events)
            out.put(("grown", case, rank, spec_json, events, diff, policy.moved, policy.kept))
        for case in DECISIONS:
            # this rank reads its half only: the other half is NaN here
            samples = _scored()
            half = SCORED // world
            others = torch.ones(SCORED, dtype=torch.bool)
            others[rank * half : (rank + 1) * half] = False
            samples.x_train[others] = math.nan
            decision = _decide(case, samples, AllReduce(torch.device("cpu")))
            out.put(("decided", case, rank, *_outcome(decision)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks():
    """Every case of :data:`CASES` grown and of :data:`DECISIONS` decided on two gloo ranks:
    ``{(kind, case, rank): what that rank found}``."""
    context = mp.get_context("spawn")
    out = context.Queue()
    port = _free_port()
    procs = [context.Process(target=_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in range(2 * (len(CASES) + len(DECISIONS))):
        kind, case, rank, *found = out.get(timeout=180)
        results[kind, case, rank] = found
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rank_grows_the_same_net_and_only_what_changed_moves(case, two_ranks):
    spec0, events0, diff, moved, kept = two_ranks["grown", case, 0]
    spec1, events1, _, moved1, kept1 = two_ranks["grown", case, 1]
    assert spec0 == spec1 and events0 == events1 == 1
    assert diff == 0.0  # the replicas agree exactly after the growth and the steps after it
    assert (moved, kept) == (moved1, kept1)
    grown = spec_from_json(spec0)
    if case == "conv depth":  # one identity 3x3 convolution of c channels: its kernel and bias
        c = next(w for w, old in zip(grown.widths, (*CASES[case][0].widths, 0)) if w != old)
        assert moved == c * c * 9 + c
    else:  # the widened layer (weight and bias) and the next one's weight
        i = next(i for i, (w, old) in enumerate(zip(grown.widths, (8, 8))) if w != old)
        fan_in, fan_out = (64, *grown.widths)[i], (*grown.widths, 10)[i + 1]
        assert moved == grown.widths[i] * (fan_in + 1) + fan_out * grown.widths[i]
    assert moved + kept == sum(t.numel() for t in build(grown).state_dict().values())


def _assert_same_decision(found, expected, key: str = "event") -> None:
    """The same event, its numbers up to the order of the sums; the FLOPs it records are the
    process's own and are left out (their sum is checked)."""
    if isinstance(expected, dict):
        assert isinstance(found, dict) and set(found) == set(expected), key
        for k, v in expected.items():
            if not k.endswith("_flops"):
                _assert_same_decision(found[k], v, f"{key}.{k}")
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), key
        for i, (f, e) in enumerate(zip(found, expected)):
            _assert_same_decision(f, e, f"{key}[{i}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, rel=1e-9, abs=1e-12), key
    else:
        assert found == expected, key


@pytest.mark.parametrize("case", sorted(DECISIONS))
def test_two_ranks_decide_as_one_process_on_the_union_of_their_halves(case, two_ranks):
    """Each rank reads its half of the samples (the other half is NaN there), all-reduces, and
    takes the decision one process takes on all of them; each counts its own half's passes."""
    event, weights, flops = _outcome(_decide(case, _scored()))
    assert event is not None  # something to compare: every case grows
    for rank in (0, 1):
        event_r, weights_r, _ = two_ranks["decided", case, rank]
        _assert_same_decision(event_r, event)
        for name, array in weights.items():
            np.testing.assert_allclose(weights_r[name], array, rtol=1e-9, atol=1e-12)
    assert two_ranks["decided", case, 0][2] + two_ranks["decided", case, 1][2] == flops
    # the comparison can fail: on one half alone, the decision differs
    alone = _scored()
    alone = _Samples(alone.x_train[: SCORED // 2], alone.y_train[: SCORED // 2])
    event_alone, _, _ = _outcome(_decide(case, alone))
    assert event_alone is None or event_alone["details"]["scores"] != pytest.approx(
        event["details"]["scores"], rel=1e-3
    )
