"""Exact LSR minima on the paper's grid: the pruned search against brute force.

Memories uniform on [0,1]^d for every M in --sizes, d in --dims and seed in --seeds;
--betas values linearly spaced from 2/d to 2/R^2 (R half the smallest distance between
memories), as in papers.md section 1. The paper tries all 2^M - 1 subsets at every
beta. Brute force costs the same for every subset at every beta, so it is timed (CPU
time) on the first --brute-sample subsets at one beta per (M, d) and scaled to all
subsets and the whole grid. The counts of ``lsr_minima_counts`` (one search for the
whole grid) are checked at every grid point against the brute-force oracle
``lsr_minima_brute_force`` for M <= --check-max.

    python benchmarks/bench_lsr_minima.py [--json] [--sizes 5,15,25] [--dims 8,32]
        [--seeds 0,42,88] [--betas 50] [--check-max 15] [--brute-sample 262144]
"""

from __future__ import annotations

import json
import time

import torch
from common import parse_options

from amlab.analysis import lsr_minima_brute_force, lsr_minima_counts


def brute_force_counts(mem: torch.Tensor, beta: float, stop: int, chunk: int = 1 << 16) -> tuple:
    """(stored, emergent) among the subsets with bit patterns 1 .. stop - 1, every one
    tried: centroid, squared distances to all memories by the expansion, active set."""
    m = mem.shape[0]
    r2 = 2.0 / beta
    bits = torch.arange(m)
    mem_sq = (mem * mem).sum(1)
    stored = emergent = 0
    for lo in range(1, stop, chunk):
        ids = torch.arange(lo, min(lo + chunk, stop))
        member = ((ids[:, None] >> bits) & 1).bool()
        size = member.sum(1)
        centroid = member.double() @ mem / size[:, None]
        d2 = (centroid * centroid).sum(1, keepdim=True) + mem_sq - 2 * centroid @ mem.T
        minimum = ((d2 < r2) == member).all(1)
        stored += int((minimum & (size == 1)).sum())
        emergent += int((minimum & (size > 1)).sum())
    return stored, emergent


def paper_grid(m: int, d: int, seed: int, n_betas: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The memories and betas of one case, as ``amlab repro lsr`` draws them."""
    g = torch.Generator().manual_seed(seed)
    mem = torch.rand(m, d, generator=g, dtype=torch.float64)
    r_min = 0.5 * torch.pdist(mem).min().item()
    return mem, torch.linspace(2.0 / d, 2.0 / r_min**2, n_betas, dtype=torch.float64)


def agrees_with_brute_force(mem: torch.Tensor, betas: torch.Tensor, counts: dict) -> bool:
    """Whether the oracle's (stored, emergent) equal the counts at every beta."""
    for k, beta in enumerate(betas.tolist()):
        oracle = lsr_minima_brute_force(mem, beta)
        if (oracle.num_stored, oracle.num_emergent) != (
            int(counts["stored"][k]),
            int(counts["emergent"][k]),
        ):
            return False
    return True


def main() -> None:
    args = parse_options(
        __doc__,
        sizes="5,15,25",
        dims="8,32",
        seeds="0,42,88",
        betas=50,
        check_max=15,
        brute_sample=1 << 18,
    )
    sizes, dims, seeds = (
        [int(v) for v in s.split(",")] for s in (args.sizes, args.dims, args.seeds)
    )
    rows = []
    if not args.json:
        print(
            f"LSR minima on the paper's grid, {args.betas} betas, {torch.get_num_threads()} threads"
        )
        print(
            "    M   d  seed  search s  brute s/beta  brute grid s   speedup  checked  max emergent"
        )
    for m in sizes:
        for d in dims:
            brute_per_beta = None
            for seed in seeds:
                mem, betas = paper_grid(m, d, seed, args.betas)
                if brute_per_beta is None:  # the same cost for every seed and beta
                    sample = min(2**m, args.brute_sample + 1)
                    start = time.process_time()
                    brute_force_counts(mem, float(betas[len(betas) // 2]), sample)
                    brute_per_beta = (time.process_time() - start) * (2**m - 1) / (sample - 1)
                start = time.process_time()
                counts = lsr_minima_counts(mem, betas)
                search = time.process_time() - start
                checked = (
                    agrees_with_brute_force(mem, betas, counts) if m <= args.check_max else None
                )
                row = {
                    "M": m,
                    "d": d,
                    "seed": seed,
                    "search_seconds": search,
                    "brute_force_seconds_per_beta": brute_per_beta,
                    "brute_force_grid_seconds": brute_per_beta * args.betas,
                    "speedup": brute_per_beta * args.betas / search,
                    "brute_force_agrees": checked,
                    "max_emergent": int(counts["emergent"].max()),
                }
                rows.append(row)
                if not args.json:
                    print(
                        f"  {m:3d} {d:3d} {seed:5d} {search:9.3f} {brute_per_beta:13.3f} "
                        f"{row['brute_force_grid_seconds']:13.1f} {row['speedup']:9.0f} "
                        f"{'-' if checked is None else str(checked):>8} {row['max_emergent']:13d}",
                        flush=True,
                    )
    total_search = sum(r["search_seconds"] for r in rows)
    total_brute = sum(r["brute_force_grid_seconds"] for r in rows)
    summary = {
        "betas": args.betas,
        "threads": torch.get_num_threads(),
        "search_seconds": total_search,
        "brute_force_grid_seconds": total_brute,
        "speedup": total_brute / total_search,
        "all_checked_agree": all(r["brute_force_agrees"] is not False for r in rows),
        "cases": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"  whole grid: search {total_search:.2f} s, brute force {total_brute:.0f} s "
        f"({summary['speedup']:.0f}x); every checked count agrees: {summary['all_checked_agree']}"
    )


if __name__ == "__main__":
    main()
