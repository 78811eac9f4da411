"""The error grid of sections (a) and (e): DrDAM's energy and gradient errors against the
exact DenseAM for every feature map, D, beta, Y and query kind. Section (a) computes it;
section (e) reads its records from ``ctx.results``."""

from __future__ import annotations

from typing import Any

import torch

from amlab.experiments.drdam.common import errors_by_kind, problem, rf_seed
from amlab.experiments.report import Progress
from amlab.models import DenseAM, RandomFeatureAM

#: the four feature maps; sincos (the paper's default) first
KERNELS = ("sincos", "cos", "exp", "expexp")


def error_grid(grid, seed: int, progress: Progress) -> list[dict[str, Any]]:
    """One record per (kernel, D, beta, Y, kind): mean absolute errors and their standard errors.

    sincos runs at every D; the other maps at D = grid.kernel_dim (same memories, queries and S).
    """
    records = []
    dims = grid.dims if grid.kernel_dim in grid.dims else (*grid.dims, grid.kernel_dim)
    jobs = [("sincos", d) for d in dims] + [(k, grid.kernel_dim) for k in KERNELS[1:]]
    problems: dict[int, tuple] = {}
    done, total = 0, len(jobs) * len(grid.betas) * len(grid.features)
    for kernel, dim in jobs:
        if dim not in problems:
            problems[dim] = problem(grid.num_memories, grid.num_queries, dim, grid.flip, seed)
        memories, queries = problems[dim]
        for beta in grid.betas:
            dense = DenseAM(memories, energy="lse", beta=beta)
            guess = _guess_level(dense, queries)
            for j, num_features in enumerate(grid.features):
                rf = RandomFeatureAM.from_dense(
                    dense, num_features, kernel=kernel, seed=rf_seed(seed, j)
                )
                records += [
                    {**r, "energy_guess": guess[0], "grad_guess": guess[1]}
                    for r in errors_by_kind(
                        rf, dense, queries, kernel=kernel, D=dim, beta=beta, Y=num_features
                    )
                ]
                del rf  # before the next S is drawn (Y x D: 1 GB at Y = 500k, D = 500)
                done += 1
                progress(f"{kernel} D={dim} beta={beta:g} Y={num_features}", done / total)
    return records


def _guess_level(dense: DenseAM, queries: dict[str, torch.Tensor]) -> tuple[float, float]:
    """A random-guess reference, after the paper's: mean |E(xi) - E(random pattern)| (and the
    same for the gradient), with the exact energy."""
    e_mem, g_mem = dense.energy_and_grad(queries["at"])
    e_rnd, g_rnd = dense.energy_and_grad(queries["random"])
    return (e_mem - e_rnd).abs().mean().item(), (g_mem - g_rnd).abs().mean().item()
