"""(a) The exact denoiser of a finite set is one attention step of the LSE DenseAM with
beta_t = 1/sigma_t^2: both next to the float64 brute-force posterior mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from amlab.diffusion import EmpiricalDenoiser
from amlab.experiments.diffusion.common import digit_schedule
from amlab.experiments.report import Context, Progress, Report, Section


@dataclass(frozen=True)
class Correspondence:
    """memories: the number of training digits; rows: [sigma, beta, max abs(D - attention
    step), max abs(D - float64 posterior mean)] per noise level; the worst of each column."""

    memories: int
    rows: list[list[float]]
    max_diff_attention: float
    max_diff_brute: float


def compute(ctx: Context, progress: Progress) -> Correspondence:
    grid = ctx.grid
    data = ctx.images.subset(grid.trajectory_memories, seed=ctx.seed).images
    schedule = digit_schedule(grid)
    denoiser = EmpiricalDenoiser(data, schedule)
    g = torch.Generator().manual_seed(ctx.seed + 1)
    rows = []
    for sigma in (grid.sigma_min, 0.1, 0.5, 2.0, grid.digit_sigma_max):
        t = schedule.time_of(sigma)
        x = data[:16] + sigma * torch.randn(16, data.shape[1], generator=g)
        denoised = denoiser.denoise(x, t)
        am = denoiser.memory_at(t)
        step = am.retrieve(x, steps=1, method="attention", tol=0.0).states
        d2 = ((x.double()[:, None] - data.double()[None]) ** 2).sum(-1)
        brute = torch.softmax(-d2 / (2 * sigma**2), 1) @ data.double()
        diff_step = (denoised - step).abs().max().item()
        diff_brute = (denoised.double() - brute).abs().max().item()
        rows.append([sigma, am.beta, diff_step, diff_brute])
    return Correspondence(
        memories=data.shape[0],
        rows=rows,
        max_diff_attention=max(0.0, *(row[2] for row in rows)),
        max_diff_brute=max(0.0, *(row[3] for row in rows)),
    )


def write(result: Correspondence, ctx: Context, report: Report) -> dict[str, Any]:
    report.section(
        "(a) The optimal denoiser is one DenseAM attention step",
        f"{result.memories} digits as the training set, VE schedule; at each noise level sigma "
        "16 noisy copies are denoised three ways: `EmpiricalDenoiser.denoise`, one "
        '`retrieve(..., steps=1, method="attention")` of the LSE DenseAM with beta = 1/sigma^2, '
        "and the posterior mean sum softmax(-||x - xi||^2 / 2 sigma^2) xi in float64.",
    )
    report.table(
        ["sigma", "beta", "max abs(D - attention step)", "max abs(D - float64 brute force)"],
        result.rows,
    )
    worst_step, worst_brute = result.max_diff_attention, result.max_diff_brute
    report.claim(
        "The ideal denoiser of K points is one attention update of an LSE DenseAM with "
        "beta_t = 1/sigma_t^2",
        f"largest difference to the attention step {worst_step:.1e}, to the float64 "
        f"posterior mean {worst_brute:.1e} (float32)",
        "reproduced" if worst_step == 0.0 and worst_brute < 1e-4 else "not reproduced",
    )
    return {
        "correspondence": {
            "rows": result.rows,
            "max_diff_attention": worst_step,
            "max_diff_brute": worst_brute,
        }
    }


SECTION = Section("correspondence", 0.02, compute, write)
