"""Growth under DDP without Ray: two gloo processes, rank 0 decides, only what changed moves."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from growth_core import data as datasets
from growth_core.conv_spec import ConvSpec
from growth_core.families import spec_from_json
from growth_core.growth import AtSteps, DepthGrowth, DepthWidthPolicy, WidthGrowth
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, Trainer
from pipelines.distributed import RankZeroDecides, max_rank_difference

CASES = {
    "mlp width": (
        ArchitectureSpec(64, 10, (8, 8), "relu"),
        {"width": WidthGrowth("tiny", selection="singular_value", max_neurons=4)},
    ),
    "conv depth": (ConvSpec((1, 8, 8), 10, ((4, 4), (6,)), "stride"), {"depth": DepthGrowth()}),
}


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
            out.put((case, rank, spec_json, events, diff, policy.moved, policy.kept))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def grown_on_two_ranks():
    """Every case of :data:`CASES` grown on two gloo ranks: ``{case: [rank 0's, rank 1's]}``."""
    context = mp.get_context("spawn")
    out = context.Queue()
    port = _free_port()
    procs = [context.Process(target=_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=180) for _ in range(2 * len(CASES)))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return {case: [r[2:] for r in results if r[0] == case] for case in CASES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rank_grows_the_same_net_and_only_what_changed_moves(case, grown_on_two_ranks):
    (spec0, events0, diff, moved, kept), (spec1, events1, _, moved1, kept1) = grown_on_two_ranks[
        case
    ]
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
