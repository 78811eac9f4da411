"""Exact LSR minima across the paper's beta grid: clique enumeration vs brute force.

M = 25 memories uniform on [0,1]^8, 50 beta values from 2/d to 2/R^2 (papers.md section
1). The paper tries all 2^M - 1 subsets at every beta. Brute force costs the same at
every beta (every subset is tried), so it is timed on --brute-betas values of the grid
and scaled to the whole grid; its counts are checked against ours on those values.

    python benchmarks/bench_lsr_minima.py [--json] [--memories 25] [--dim 8]
"""

from __future__ import annotations

import json
import time

import torch
from common import parse_options

from amlab.analysis import lsr_minima, lsr_minima_counts


def brute_force_counts(mem: torch.Tensor, beta: float, chunk: int = 1 << 18) -> tuple[int, int]:
    """(stored, emergent) by trying every subset, vectorised in chunks of subsets."""
    m = mem.shape[0]
    r2 = 2.0 / beta
    bits = torch.arange(m)
    mem_sq = (mem * mem).sum(1)
    stored = emergent = 0
    for lo in range(1, 2**m, chunk):
        ids = torch.arange(lo, min(lo + chunk, 2**m))
        member = ((ids[:, None] >> bits) & 1).bool()
        size = member.sum(1)
        centroid = member.double() @ mem / size[:, None]
        d2 = (centroid * centroid).sum(1, keepdim=True) + mem_sq - 2 * centroid @ mem.T
        minimum = ((d2 < r2) == member).all(1)
        stored += int((minimum & (size == 1)).sum())
        emergent += int((minimum & (size > 1)).sum())
    return stored, emergent


def main() -> None:
    args = parse_options(__doc__, memories=25, dim=8, betas=50, brute_betas=3, seed=0)
    g = torch.Generator().manual_seed(args.seed)
    mem = torch.rand(args.memories, args.dim, generator=g, dtype=torch.float64)
    r_min = 0.5 * torch.pdist(mem).min().item()
    betas = torch.linspace(2.0 / args.dim, 2.0 / r_min**2, args.betas, dtype=torch.float64)

    start = time.perf_counter()
    counts = lsr_minima_counts(mem, betas)
    t_sweep = time.perf_counter() - start

    start = time.perf_counter()
    per_beta = [lsr_minima(mem, float(b)) for b in betas]
    t_per_beta = time.perf_counter() - start
    assert all(
        (x.num_stored, x.num_emergent) == (int(s), int(e))
        for x, s, e in zip(per_beta, counts["stored"], counts["emergent"], strict=True)
    )

    picks = torch.linspace(0, args.betas - 1, args.brute_betas).round().long().tolist()
    start = time.perf_counter()
    brute = {k: brute_force_counts(mem, float(betas[k])) for k in picks}
    t_brute_each = (time.perf_counter() - start) / len(picks)
    agree = all(brute[k] == (int(counts["stored"][k]), int(counts["emergent"][k])) for k in picks)
    t_brute = t_brute_each * args.betas

    report = {
        "M": args.memories,
        "d": args.dim,
        "betas": args.betas,
        "threads": torch.get_num_threads(),
        "clique_sweep_seconds": t_sweep,
        "clique_per_beta_seconds": t_per_beta,
        "brute_force_seconds_per_beta": t_brute_each,
        "brute_force_grid_seconds": t_brute,
        "speedup_sweep_vs_brute": t_brute / t_sweep,
        "speedup_per_beta_vs_brute": t_brute / t_per_beta,
        "brute_force_agrees": agree,
        "max_emergent": int(counts["emergent"].max()),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"LSR minima, M={args.memories} d={args.dim}, {args.betas} betas, "
        f"{report['threads']} threads"
    )
    print(
        f"  brute force, 2^{args.memories} subsets per beta: {t_brute_each:8.2f} s per beta, "
        f"{t_brute:8.1f} s for the grid (timed on {len(picks)} betas)"
    )
    print(
        f"  clique enumeration at each beta        : {t_per_beta:8.2f} s for the grid "
        f"({report['speedup_per_beta_vs_brute']:.0f}x faster)"
    )
    print(
        f"  one clique walk for the whole grid      : {t_sweep:8.2f} s "
        f"({report['speedup_sweep_vs_brute']:.0f}x faster)"
    )
    print(
        f"  counts agree with brute force: {agree}; most emergent minima: {report['max_emergent']}"
    )


if __name__ == "__main__":
    main()
