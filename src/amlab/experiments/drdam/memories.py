"""(b) Error against the number of stored patterns K at a fixed number of random projections,
and the bytes each model holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from amlab.experiments.drdam.common import (
    BOTH_ERRORS,
    KINDS,
    QUANTITIES,
    binary_patterns,
    error_panels,
    errors_by_kind,
    flip_bits,
    problem,
    rf_seed,
    select,
)
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.models import DenseAM, RandomFeatureAM
from amlab.tasks.figures import plt


@dataclass(frozen=True)
class MemoryErrors:
    """records: one per (beta, K, query kind), mean absolute energy and gradient errors.
    num_queries: queries of each kind.
    sizes: [K, DrDAM bytes (S, b, T), MrDAM bytes (memories)] per K.
    median_slopes: (quantity, kind) -> the median over beta of the log-log slope of the
        error against K.
    """

    records: list[dict[str, Any]]
    num_queries: int
    sizes: list[list[int]]
    median_slopes: dict[tuple[str, str], float]


def compute(ctx: Context, progress: Progress) -> MemoryErrors:
    grid, seed = ctx.grid, ctx.seed
    memories_all, _ = problem(max(grid.k_values), 0, grid.k_dim, grid.flip, seed + 1)
    g = torch.Generator().manual_seed(seed * 31 + 5)
    n = min(grid.num_queries, min(grid.k_values))
    random_q = binary_patterns(n, grid.k_dim, g)
    records, sizes = [], []
    done, total = 0, len(grid.betas) * len(grid.k_values)
    for beta in grid.betas:
        for k in sorted(grid.k_values):
            memories = memories_all[:k]
            queries = {
                "at": memories[:n],
                "near": flip_bits(memories[:n], grid.flip, g),
                "random": random_q,
            }
            dense = DenseAM(memories, energy="lse", beta=beta)
            rf = RandomFeatureAM.from_dense(dense, grid.k_features, seed=rf_seed(seed, 0))
            if beta == grid.betas[0]:
                sizes.append([k, rf.nbytes, dense.memories.numel() * dense.memories.element_size()])
            records += errors_by_kind(rf, dense, queries, beta=beta, K=k)
            done += 1
            progress(f"beta={beta:g} K={k}", done / total)
    return MemoryErrors(records, n, sizes, _median_slopes(records, grid.betas))


def _curve(records, beta: float, kind: str, quantity: str) -> tuple[list[int], list[float]]:
    """(K, error) of one beta, query kind and quantity, by K."""
    rows = sorted(select(records, beta=beta, kind=kind), key=lambda r: r["K"])
    return [r["K"] for r in rows], [r[f"{quantity}_error"] for r in rows]


def _median_slopes(records, betas) -> dict[tuple[str, str], float]:
    """(quantity, kind) -> the median over beta of the log-log slope of error against K."""
    med = {}
    for q in QUANTITIES:
        for kind in KINDS:
            slopes = []
            for beta in betas:
                ks, es = _curve(records, beta, kind, q)
                slopes.append(float(np.polyfit(np.log(ks), np.log(np.maximum(es, 1e-30)), 1)[0]))
            med[(q, kind)] = float(np.median(slopes))
    return med


def figure(result: MemoryErrors, ctx: Context, report: Report) -> None:
    grid = ctx.grid
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(grid.betas)))

    def draw(ax, q: str, kind: str) -> None:
        for c, beta in zip(colors, grid.betas, strict=True):
            ks, es = _curve(result.records, beta, kind, q)
            ax.plot(ks, es, "o-", color=c, ms=4, label=f"β={beta:g}")

    error_panels(
        report.path("drdam_error_vs_K.png"),
        f"DrDAM error vs K at Y={grid.k_features}, D={grid.k_dim} (sincos)",
        "K (stored patterns)",
        BOTH_ERRORS,
        draw,
    )


def write(result: MemoryErrors, ctx: Context, report: Report) -> dict[str, Any]:
    grid, sizes, med = ctx.grid, result.sizes, result.median_slopes
    report.section(
        "(b) Error against the number of stored patterns K",
        f"Y = {grid.k_features} fixed, D = {grid.k_dim}, K in {sorted(grid.k_values)} (the first K "
        f"of one list of patterns), {result.num_queries} queries of each kind.",
    )
    report.figure("drdam_error_vs_K.png", "Mean absolute errors against K at fixed Y")
    report.table(
        ("K", "DrDAM bytes (S, b, T)", "MrDAM bytes (memories)"),
        sizes,
    )
    report.table(
        ("quantity", *[f"median slope vs K, {k}" for k in KINDS]),
        [(q, *[med[(q, k)] for k in KINDS]) for q in QUANTITIES],
    )
    flat = len({s[1] for s in sizes}) == 1
    report.claim(
        "The memory footprint does not grow with the number of stored patterns",
        f"DrDAM holds {sizes[0][1]} bytes at every K in {[s[0] for s in sizes]}; MrDAM grows "
        f"from {sizes[0][2]} to {sizes[-1][2]} bytes",
        "reproduced" if flat else "not reproduced",
    )
    report.claim(
        "(no number in papers.md) How the error changes with K at fixed Y",
        "median log-log slope of the error against K, at / near / random: energy "
        + " / ".join(f"{med[('energy', k)]:.2f}" for k in KINDS)
        + "; gradient "
        + " / ".join(f"{med[('grad', k)]:.2f}" for k in KINDS),
        "measured",
    )
    return {
        "error_vs_K": {
            "records": result.records,
            "bytes": sizes,
            "median_slopes": {f"{q}_{k}": v for (q, k), v in med.items()},
        }
    }


SECTION = Section("errors vs K", 0.1, compute, write, figure)
