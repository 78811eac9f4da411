"""DrDAM writes from several ranks (add_from_ranks, remove_from_ranks) against one writer of
every pattern: 3 spawned gloo ranks, one writing nothing."""

from __future__ import annotations

import pytest
import torch
from ranks import close, run_ranks

from amlab.distributed import add_from_ranks, remove_from_ranks
from amlab.errors import AmlabError
from amlab.models import RandomFeatureAM

F64 = torch.float64


def memory(seed=3, beta=2.0):
    return RandomFeatureAM(5, 300, beta=beta, seed=seed, dtype=F64)


def writes_match_one_writer(rank, world_size, sizes):
    gen = torch.Generator().manual_seed(0)
    patterns = torch.rand(sum(sizes), 5, generator=gen, dtype=F64)
    x = torch.rand(4, 5, generator=gen, dtype=F64)
    lo = sum(sizes[:rank])
    mine = patterns[lo : lo + sizes[rank]]
    shared, one = memory(), memory().add(patterns)
    assert add_from_ranks(shared, mine) is shared
    close(shared.T, one.T)
    assert shared.num_stored == one.num_stored == sum(sizes)
    close(shared.energy(x), one.energy(x))
    close(shared.retrieve(x, steps=5).states, one.retrieve(x, steps=5).states)
    # each rank forgets the first of its own patterns (the empty rank: none)
    add_from_ranks(shared, mine[:0])  # writing nothing changes nothing
    remove_from_ranks(shared, mine[:1])
    one.remove(torch.cat([patterns[sum(sizes[:r]) :][: min(1, s)] for r, s in enumerate(sizes)]))
    close(shared.T, one.T)
    assert shared.num_stored == one.num_stored
    # refused everywhere, T untouched: removing more than the group stored
    before = shared.T.clone()
    with pytest.raises(AmlabError, match="cannot remove"):
        remove_from_ranks(shared, patterns)
    assert torch.equal(shared.T, before)
    # memories built unlike (another seed on one rank), or already diverged, are refused
    for unlike in (memory(seed=3 + (rank == 1)), memory(beta=2.0 + rank)):
        with pytest.raises(AmlabError, match="rank 1's RandomFeatureAM differs"):
            add_from_ranks(unlike, mine)
    diverged = memory().add(mine)  # written locally, not through the group
    with pytest.raises(AmlabError, match="differs from rank 0's"):
        add_from_ranks(diverged, mine)


def test_drdam_writes_from_three_ranks_build_one_writers_T(tmp_path):
    run_ranks(tmp_path, 3, writes_match_one_writer, [4, 0, 6])
