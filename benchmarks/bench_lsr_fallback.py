"""The LSR ball index where it cannot prune: what falling back to the dense pass costs.

On uniform data in D = 64 every ball's centre lies within r + its radius of a query, so the
index finds no memory to skip and its pass falls back to the dense one. This script builds the
index (``index="clusters"``) over uniform memories and times one LSR pass through it against
the dense pass (``lsr_support_stats`` without an index) at one and the same beta, checking that
both count the same supports. Wall clock, best of ``--repeats``.

    python benchmarks/bench_lsr_fallback.py [--memories M] [--beta B] [--repeats N]
"""

from __future__ import annotations

from functools import partial

import torch
from common import best_time, parse_options

from amlab import DenseAM
from amlab.energy.lsr import lsr_support_stats


def main() -> None:
    args = parse_options(__doc__, json=False, memories=200_000, batch=256, beta=0.5, repeats=5)
    g = torch.Generator().manual_seed(0)
    memories = torch.rand(args.memories, 64, generator=g)
    x = torch.rand(args.batch, 64, generator=g)
    am = DenseAM(memories, energy="lsr", beta=args.beta, index="clusters")
    index, mem_sq = am.lsr_index(x), am.memory_sq_norms()
    indexed = partial(index.support_stats, x, memories, args.beta, mem_sq=mem_sq)
    dense = partial(lsr_support_stats, x, memories, args.beta, mem_sq=mem_sq)
    counts = dense()[1]
    assert torch.equal(indexed()[1], counts)
    t_index, t_dense = best_time(indexed, args.repeats), best_time(dense, args.repeats)
    print(
        f"uniform M={args.memories} D=64 B={args.batch} beta={args.beta:g}: mean support "
        f"{counts.float().mean():.0f} ({counts.float().mean() / args.memories:.0%}), "
        f"{index.num_clusters} balls; indexed {t_index * 1e3:.1f} ms, dense "
        f"{t_dense * 1e3:.1f} ms, indexed/dense {t_index / t_dense:.3f}"
    )


if __name__ == "__main__":
    main()
