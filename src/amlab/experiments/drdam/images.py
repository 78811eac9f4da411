"""(d) Image completion: the lower half hidden, the upper half clamped; the exact model next
to DrDAM at several Y, and the energy along both trajectories."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from amlab.data import block_mask
from amlab.experiments.drdam.common import rf_seed
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.models import DenseAM, RandomFeatureAM
from amlab.tasks.figures import image_grid, plt, save_figure


@dataclass(frozen=True)
class Completion:
    """data: the images' name; shape: one image's shape; num_queries: images completed.
    rows: the figure's labelled rows of images (n, D) in pixel units: the originals, the
        queries, the exact completions and DrDAM's at every Y.
    by_Y: per Y, the hidden pixels' mean absolute error against the exact completion and
        the original, the fraction with the same nearest memory as the exact completion,
        and the numbers held in T.
    exact_mae: the exact completions' hidden-pixel error against the originals.
    exact_energy: the exact energy along the exact trajectory (steps + 1,), mean over queries.
    curves: Y -> (DrDAM's energy on its path, the exact energy on DrDAM's path), each
        (steps + 1,), mean over queries.
    """

    data: str
    shape: tuple[int, ...]
    num_queries: int
    rows: list[tuple[str, torch.Tensor]]
    by_Y: list[dict[str, Any]]
    exact_mae: float
    exact_energy: torch.Tensor
    curves: dict[int, tuple[torch.Tensor, torch.Tensor]]


def compute(ctx: Context, progress: Progress) -> Completion:
    grid = ctx.grid
    stored = ctx.images.subset(grid.image_memories, seed=ctx.seed)
    dim = stored.images.shape[1]
    scale = 1.0 / math.sqrt(dim)  # the paper stores images / sqrt(D)
    memories = stored.images * scale
    n = min(grid.image_queries, grid.image_memories)
    query, observed = block_mask(memories[:n], stored.shape, "lower_half")
    descent = {"steps": grid.image_steps, "step_size": grid.image_step_size, "tol": 0.0}
    dense = DenseAM(memories, energy="lse", beta=grid.image_beta)
    exact = dense.retrieve(query, clamp=observed, **descent)
    total = 1 + len(grid.image_features)
    progress("exact", 1 / total)
    hidden = ~observed[0]
    rows = [
        ("original", stored.images[:n]),
        ("query", query / scale),
        ("MrDAM", exact.states / scale),
    ]
    curves, by_y = {}, []
    exact_idx = dense.nearest(exact.states)[0]
    for j, num_features in enumerate(grid.image_features):
        rf = RandomFeatureAM.from_dense(dense, num_features, seed=rf_seed(ctx.seed, j))
        approx = rf.retrieve(query, clamp=observed, record_states=True, **descent)
        path = approx.path
        exact_on_path = dense.energy(path.reshape(-1, dim)).reshape(path.shape[0], n)
        curves[num_features] = (approx.energies.mean(1), exact_on_path.mean(1))
        by_y.append(
            {
                "Y": num_features,
                "hidden_mae_vs_exact": _hidden_error(approx.states, exact.states, hidden, scale),
                "hidden_mae_vs_original": _hidden_error(approx.states, memories[:n], hidden, scale),
                "same_memory": (dense.nearest(approx.states)[0] == exact_idx).float().mean().item(),
                "T_numbers": rf.T.numel(),
            }
        )
        rows.append((f"Y={num_features}", approx.states / scale))
        progress(f"Y={num_features}", (j + 2) / total)
    return Completion(
        data=ctx.images.name,
        shape=stored.shape,
        num_queries=n,
        rows=rows,
        by_Y=by_y,
        exact_mae=_hidden_error(exact.states, memories[:n], hidden, scale),
        exact_energy=exact.energies.mean(1),
        curves=curves,
    )


def _hidden_error(states, reference, hidden, scale: float) -> float:
    """Mean absolute difference over the hidden pixels, in pixel units."""
    return ((states - reference)[:, hidden].abs() / scale).mean().item()


def figure(result: Completion, ctx: Context, report: Report) -> None:
    grid = ctx.grid
    image_grid(
        result.rows,
        result.shape,
        report.path("drdam_completion.png"),
        title=f"{result.data}: lower half completed, β={grid.image_beta:g}, {grid.image_steps} "
        f"steps of {grid.image_step_size}",
    )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    t = np.arange(result.exact_energy.shape[0])
    ax.plot(t, result.exact_energy.numpy(), color="black", lw=2, label="MrDAM: E on its path")
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(result.curves)))
    for c, (num_features, (approx_e, exact_e)) in zip(colors, result.curves.items(), strict=True):
        ax.plot(t, approx_e.numpy(), color=c, label=f"DrDAM Y={num_features}: E~ on its path")
        ax.plot(t, exact_e.numpy(), color=c, ls="--", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("energy (mean over queries)")
    ax.set_title("Energy along the trajectories (dashed: exact E on DrDAM's path)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.2)
    save_figure(fig, report.path("drdam_completion_energy.png"))


def write(result: Completion, ctx: Context, report: Report) -> dict[str, Any]:
    grid = ctx.grid
    report.section(
        "(d) Image completion",
        f"{grid.image_memories} {result.data} images stored (pixels / √D, as in the paper); the "
        f"lower half of {result.num_queries} of them hidden (set to 0) and the upper half "
        f"clamped; gradient descent, β = {grid.image_beta:g}, {grid.image_steps} steps of "
        f"{grid.image_step_size}. Errors are in pixel units ([0, 1]) over the hidden pixels. "
        f"The exact model's completion is {result.exact_mae:.3f} from the originals.",
    )
    report.figure("drdam_completion.png", "Completions: exact (MrDAM) and DrDAM at several Y")
    report.figure("drdam_completion_energy.png", "Energy along both trajectories")
    report.table(
        ("Y", "numbers in T", "MAE vs MrDAM", "MAE vs original", "same nearest memory as MrDAM"),
        [
            (
                r["Y"],
                r["T_numbers"],
                r["hidden_mae_vs_exact"],
                r["hidden_mae_vs_original"],
                f"{r['same_memory']:.0%}",
            )
            for r in result.by_Y
        ],
    )
    first, last = result.by_Y[0], result.by_Y[-1]
    closer = last["hidden_mae_vs_exact"] < first["hidden_mae_vs_exact"]
    report.claim(
        "Image completion: DrDAM's completions approach the exact model's as Y grows",
        f"hidden-pixel MAE vs MrDAM {first['hidden_mae_vs_exact']:.3f} at Y={first['Y']} -> "
        f"{last['hidden_mae_vs_exact']:.3f} at Y={last['Y']}; same nearest memory "
        f"{first['same_memory']:.0%} -> {last['same_memory']:.0%}",
        "reproduced"
        if closer and last["same_memory"] == 1
        else "partly"
        if closer
        else "not reproduced",
    )
    return {
        "images": {
            "data": result.data,
            "exact_mae_vs_original": result.exact_mae,
            "by_Y": result.by_Y,
            "energy_curves": {
                str(k): {"approx": a.tolist(), "exact_on_path": e.tolist()}
                for k, (a, e) in result.curves.items()
            },
            "exact_energy_curve": result.exact_energy.tolist(),
        }
    }


SECTION = Section("images", 0.15, compute, write, figure)
