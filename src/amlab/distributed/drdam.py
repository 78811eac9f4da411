"""DrDAM writes from every rank: each rank computes the feature sum of its own patterns, and
one all-reduce adds them all to every rank's :class:`~amlab.models.RandomFeatureAM`, whose T
then is the one a single writer of every pattern would have built (up to the order of the
sums). The ranks' memories must have been built alike (same dim, features, kernel, beta and
seed, hence the same projections) and hold the same T before the write; both are checked.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from amlab.distributed.group import all_gather, all_reduce_, check_group
from amlab.errors import AmlabError
from amlab.models.random_feature_am import RandomFeatureAM


def add_from_ranks(
    memory: RandomFeatureAM, patterns: Any, group: dist.ProcessGroup | None = None
) -> RandomFeatureAM:
    """Collective: store every rank's ``patterns`` (N_r, D) (N_r may be 0) in every rank's
    ``memory``: T += sum over all ranks' patterns of phi(xi). Returns memory."""
    return _write(memory, patterns, 1, group)


def remove_from_ranks(
    memory: RandomFeatureAM, patterns: Any, group: dist.ProcessGroup | None = None
) -> RandomFeatureAM:
    """Collective: forget every rank's ``patterns`` (stored before, by any rank) in every
    rank's ``memory``: T -= the sum of their features. Returns memory."""
    return _write(memory, patterns, -1, group)


def _write(
    memory: RandomFeatureAM, patterns: Any, sign: int, group: dist.ProcessGroup | None
) -> RandomFeatureAM:
    check_group(group)
    _check_alike(memory, group)
    features, count = memory.feature_sum_of(patterns)
    all_reduce_(features, "sum", group)
    total = all_reduce_(torch.tensor([count], device=features.device), "sum", group)
    return memory.add_feature_sum(sign * features, sign * int(total))


def _check_alike(memory: RandomFeatureAM, group: dist.ProcessGroup | None) -> None:
    """Every rank's memory has the same projections, options and T (a fingerprint of each)."""
    mine = torch.stack(
        [
            memory.S.to(torch.float64).sum(),
            memory.b.to(torch.float64).sum(),
            memory.T.to(torch.float64).sum(),
            memory.T.to(torch.float64).square().sum(),
            memory.stored.to(torch.float64),
            torch.tensor(memory.beta, dtype=torch.float64, device=memory.S.device),
            torch.tensor(float(memory.S.numel()), dtype=torch.float64, device=memory.S.device),
            torch.tensor(float(memory.T.numel()), dtype=torch.float64, device=memory.S.device),
        ]
    )
    rows = torch.stack(all_gather(mine, group)).tolist()
    for rank, row in enumerate(rows):
        if row != rows[0]:
            raise AmlabError(
                f"rank {rank}'s RandomFeatureAM differs from rank 0's (projections, beta, "
                "feature count or stored T). Build it on every rank with the same dim, "
                "num_features, kernel, beta and seed, and write to it only through "
                "add_from_ranks / remove_from_ranks."
            )
