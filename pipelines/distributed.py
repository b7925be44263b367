"""Growth under DDP: every rank scores its share, the sums are all-reduced, the decision is
taken once, every rank applies the same change, the model is re-wrapped once.

A data-dependent decision (which layer, which new neurons) made on every rank from its own data
would differ between ranks and the replicas would silently drift apart; made on rank 0 alone it
would cost rank 0 the whole scoring pass while the others wait. :class:`RankZeroDecides` wraps
the growth policy: rank 0's trigger says when; then every rank runs the decision in lockstep on
its share of the scoring samples, its statistics all-reduced (:class:`AllReduce`) before they
are read, so every rank reaches the decision a single process would reach on all the samples.
Rank 0's is applied: it broadcasts the grown spec, the event and the tensors the growth
changed; every other rank builds the same network from them and its own replica. The trainer
then re-wraps the network (DDP) and carries the optimizer state, identically on every rank.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from growth_core.events import NO_DECISION, Change, Decision, Growth, GrowthPolicy, TrainingState
from growth_core.families import spec_from_json
from growth_core.growth import DepthWidthPolicy, Reducer
from growth_core.nets import build


def bind_store_to_master_address() -> None:
    """Ray's worker setup hook (every worker of a pipeline's Ray job runs it at start): rank 0's
    rendezvous store listens on the master address Ray Train gives it, not on every interface.

    torch's ``TCPStore`` server binds ``::`` whatever the host it is given; handed a socket
    already bound to the master address (``master_listen_fd``, libuv backend) it listens there
    only: 127.0.0.1 on a local Ray, the node's address on a cluster. Other ranks connect as
    before. torch has no public setting for it, hence the wrap of its rendezvous's store factory.
    """
    rendezvous = importlib.import_module("torch.distributed.rendezvous")  # not the function
    create = rendezvous._create_c10d_store
    if getattr(create, "binds_master_address", False):
        return

    def create_store(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank != 0 or rendezvous._torchelastic_use_agent_store():
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        listener = socket.create_server((hostname, port), family=_family(hostname), backlog=128)
        return dist.TCPStore(
            host_name=hostname,
            port=port,
            world_size=world_size,
            is_master=True,
            timeout=timeout,
            multi_tenant=True,
            master_listen_fd=listener.detach(),  # the store owns the socket from here on
            use_libuv=True,
        )

    create_store.binds_master_address = True
    rendezvous._create_c10d_store = create_store


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class AllReduce(Reducer):
    """The ranks of the default process group: this rank's share of a decision's samples, its
    sums all-reduced on ``device`` (one flat float64 buffer per reduction; nccl on GPUs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def rank(self) -> int:
        return dist.get_rank()

    @property
    def world(self) -> int:
        return dist.get_world_size()

    def sum(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not tensors:
            return []
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float64) for t in tensors])
        dist.all_reduce(flat)
        parts = flat.split([t.numel() for t in tensors])
        return [p.reshape(t.shape).to(t.device, t.dtype) for p, t in zip(parts, tensors)]

    def sum_numbers(self, values: Sequence[float]) -> list[float]:
        (total,) = self.sum([torch.tensor(values, dtype=torch.float64)])
        return total.tolist()

    def most(self, value: int) -> int:
        top = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        return int(top.item())


@dataclass(frozen=True)
class _AsOnRankZero:
    """A rank's training state with rank 0's FLOPs and batch size: the figures the decision's
    budget checks read, so they read them alike on every rank (each rank counts its own FLOPs;
    a full-batch shard's size differs by one sample between ranks)."""

    state: TrainingState
    flops: int
    batch_size: int

    def __getattr__(self, name: str):
        return getattr(self.state, name)


class RankZeroDecides(GrowthPolicy):
    """Every rank gets the growth ``policy`` decides on every rank's share of the samples.

    After each step, rank 0's trigger says whether to decide (a trigger may read the rank's own
    losses); its answer, FLOPs and batch size go out in one broadcast. When it fires, every rank
    runs :meth:`~growth_core.growth.DepthWidthPolicy.decide_now` in lockstep: the same seeded
    draws, each rank scoring its share, the statistics, line-search losses and sensitivities
    all-reduced (:class:`AllReduce`), so the decision is that of one process on all the samples
    and every rank reaches it. Each rank counts the FLOPs of the passes it ran: summed over
    ranks, each decision's cost is counted once, and each rank's share is about ``1 / world``.

    Rank 0's decision is the one applied. What moves is what changed, as tensors on the device
    (``dist.broadcast``; nccl on GPUs): rank 0 sends the grown spec, the event, the parameter
    map and the names of the entries of the grown network's ``state_dict`` that are new or
    differ from the weight they continue (buffers always: they are small); every other rank
    builds the grown network, copies the rest from its own replica (equal to rank 0's under
    DDP) and receives those. :attr:`moved` and :attr:`kept` count the elements of the last
    growth."""

    def __init__(self, policy: DepthWidthPolicy | None, device: torch.device | None = None) -> None:
        self.policy = policy
        self.device = device or torch.device("cpu")
        self.reducer = AllReduce(self.device)
        self.moved = 0
        self.kept = 0

    def state_dict(self) -> dict:
        return self.policy.state_dict() if self.policy is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.policy is not None:
            self.policy.load_state_dict(state)

    def decide(self, state: TrainingState) -> Decision:
        if self.policy is None:
            return NO_DECISION
        # every rank asks (its first call checks the net); rank 0's answer holds
        asked = [self.policy.due(state), state.flops, state.batch_size]
        agreed = torch.tensor(asked, dtype=torch.int64, device=self.device)
        dist.broadcast(agreed, src=0)
        due, flops, batch_size = agreed.tolist()
        if not due:
            return NO_DECISION
        own = self.policy.decide_now(_AsOnRankZero(state, flops, batch_size), self.reducer)
        return Decision(self._rank_zeros_growth(state, own), own.scoring_flops)

    def _rank_zeros_growth(self, state: TrainingState, decision: Decision) -> Growth | None:
        """Rank 0's growth (or none), on every rank: only what changed moves."""
        rank = dist.get_rank()
        flag = torch.tensor([0 if decision.growth is None else 1], device=self.device)
        dist.broadcast(flag, src=0)
        if not flag.item():
            return None
        old = state.net.state_dict()
        header: list = [None]
        if rank == 0:
            growth = decision.growth
            new = growth.net.state_dict()
            header = [
                {
                    "spec": growth.net.spec.to_json(),
                    "event": growth.event,
                    "param_map": growth.param_map,
                    "moved": _changed(new, old, growth.param_map),
                }
            ]
        dist.broadcast_object_list(header, src=0)
        msg = header[0]
        param_map, moved = msg["param_map"], msg["moved"]
        if rank == 0:
            net = decision.growth.net
        else:
            ref = next(state.net.parameters())
            net = build(spec_from_json(msg["spec"])).to(device=ref.device, dtype=ref.dtype)
            new = net.state_dict()
            for name in new:
                if name not in moved:
                    new[name] = old[param_map[name]]
        for name in moved:  # in rank 0's order, so every rank's broadcasts pair up
            tensor = new[name].to(self.device).contiguous()
            dist.broadcast(tensor, src=0)
            new[name] = tensor
        if rank != 0:
            net.load_state_dict(new)
        self.moved = sum(new[name].numel() for name in moved)
        self.kept = sum(t.numel() for name, t in new.items() if name not in moved)
        if rank == 0:
            return decision.growth
        return Growth(Change(net, param_map), msg["event"])


def _changed(new: dict, old: dict, param_map: dict[str, str]) -> list[str]:
    """The entries of ``new`` another replica cannot copy from its own ``old``: new ones, those
    whose shape or values differ from what they continue, and every buffer."""
    moved = []
    for name, tensor in new.items():
        source = old.get(param_map.get(name, ""))
        if source is None or source.shape != tensor.shape or not torch.equal(source, tensor):
            moved.append(name)
    return moved


def max_rank_difference(net: torch.nn.Module, device: torch.device | None = None) -> float:
    """Largest absolute difference of any weight between this rank and rank 0 (all ranks
    call it); 0.0 when the replicas agree exactly."""
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).to(device or "cpu")
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
