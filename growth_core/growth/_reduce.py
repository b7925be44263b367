"""How a growth decision's statistics join when its samples are spread over processes.

Every figure a decision reads from data is a sum over samples plus a count: the width moments
(per fold), the input covariance, the line search's losses, the layer sensitivities' gradient
sums. A decision on samples shared out between processes is therefore the decision on all of
them once each process's sums are added to the others' (up to the order of the float
additions). A :class:`Reducer` says which share of a decision's samples this process reads and
adds the sums up. This one is a single process: its share is everything and it adds nothing, so
a decision made through it is the one made without it, bit for bit; ``pipelines.distributed``
has the all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor


class Reducer:
    """One process: reads every sample, and every sum is already the total."""

    rank: int = 0
    world: int = 1

    def shares(self, n: int, multiple: int = 1) -> list[slice]:
        """Every process's share of ``n`` items in order, by rank: contiguous blocks whose
        lengths are multiples of ``multiple`` (the last may be shorter or empty), so each block
        starts at a multiple of it (``multiple=2``: a sample's fold, the parity of its position,
        is the same in its share as in the whole)."""
        block = multiple * math.ceil(n / (multiple * self.world))
        return [slice(min(r * block, n), min((r + 1) * block, n)) for r in range(self.world)]

    def share(self, n: int, multiple: int = 1) -> slice:
        """This process's share of ``n`` items (see :meth:`shares`)."""
        return self.shares(n, multiple)[self.rank]

    def sum(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Each tensor summed over the processes; every process passes the same shapes in the
        same order."""
        return list(tensors)

    def sum_numbers(self, values: Sequence[float]) -> list[float]:
        """Each number summed over the processes (counts stay exact: float64 below 2^53)."""
        return list(values)

    def most(self, value: int) -> int:
        """The largest ``value`` of the processes: a cost that every process's budget check must
        read alike, or their decisions, and the reductions inside them, would part."""
        return value


#: The single process, the default everywhere.
LOCAL = Reducer()


def reduce_tables(reducer: Reducer, tables: Sequence[dict[str, Tensor]]) -> None:
    """Replace every tensor of ``tables`` by its sum over the processes, in one reduction (keys
    taken in sorted order, the same on every process)."""
    keys = [(i, name) for i, table in enumerate(tables) for name in sorted(table)]
    totals = reducer.sum([tables[i][name] for i, name in keys])
    for (i, name), total in zip(keys, totals, strict=True):
        tables[i][name] = total


def reduce_sites(reducer: Reducer, sites: Sequence[Any], numbers: list[float]) -> list[float]:
    """Add up over the processes every site's fold sums and counts (a :class:`SiteStatistics`
    or its conv counterpart, changed in place) and ``numbers`` (their totals returned), in one
    reduction of each kind. Every process must hold sums of both folds (a sample of each): the
    sums to add are those a process has."""
    if reducer.world > 1 and not all(c for site in sites for c in site._counts):
        raise ValueError(
            f"batches: this process read {max(site.n for site in sites)} samples, and each of "
            f"{reducer.world} processes needs a sample of each fold (2 or more)"
        )
    reduce_tables(reducer, [table for site in sites for table in site._sums])
    counts = [c for site in sites for c in site._counts]
    totals = reducer.sum_numbers([*numbers, *counts])
    counts = [int(c) for c in totals[len(numbers) :]]
    for i, site in enumerate(sites):
        site._counts = counts[2 * i : 2 * i + 2]
    return totals[: len(numbers)]
