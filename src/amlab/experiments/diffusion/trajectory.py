"""(d) One sample's trajectory under the probability-flow sampler (and the reverse SDE) next
to plain energy descent on the DenseAM the sampler ends in, from the same starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from amlab.diffusion import EmpiricalDenoiser, sample
from amlab.experiments.diffusion.common import digit_schedule
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.tasks.figures import image_grid, plt, save_figure


@dataclass(frozen=True)
class Trajectory:
    """metrics: the section's metrics.json entry. steps: the number of steps of the sampler
    paths and of plain descent; memories: the number of stored digits (of dimension dim);
    beta_start, beta_end: the sampler's beta at its first and last noise level, final_beta
    the beta of the DenseAM it ends in. energy: the first start's energy curve along each
    path ("sampler", "own" (the sampler path under its own E_t), "descent", "sde");
    distance: the mean distance to the nearest memory along the sampler's and descent's
    paths; pictures: (label, images) rows of the first start's paths and end memories."""

    metrics: dict[str, Any]
    sampler_steps: int
    descent_steps: int
    memories: int
    dim: int
    beta_start: float
    beta_end: float
    final_beta: float
    energy: dict[str, torch.Tensor]
    distance: dict[str, torch.Tensor]
    pictures: list[tuple[str, torch.Tensor]]


def _rises(energies: torch.Tensor) -> torch.Tensor:
    """Per column of energies (T + 1, B): the number of steps where the energy rises by more
    than float64 rounding."""
    before, after = energies[:-1], energies[1:]
    return (after > before + 1e-9 * (1 + before.abs())).float().sum(0)


def _paths(ctx: Context, progress: Progress):
    """From the same starts: the probability-flow ODE (Heun) and the reverse SDE
    (Euler-Maruyama) of the empirical denoiser of the digits, and plain gradient descent on
    the DenseAM the sampler ends in; all recorded, in float64. Returns (memories, the
    empirical denoiser, that final DenseAM, the starts, the ODE, the SDE, the descent)."""
    grid = ctx.grid
    data = ctx.images.subset(grid.trajectory_memories, seed=ctx.seed).images.double()
    schedule = digit_schedule(grid)
    empirical = EmpiricalDenoiser(data, schedule)  # float64: energies compared step by step
    final = empirical.memory_at(schedule.t_end)  # the DenseAM the sampler ends in
    g = torch.Generator().manual_seed(ctx.seed + 23)
    start = schedule.prior(grid.trajectory_starts, data.shape[1], g, dtype=torch.float64)
    progress("sampler", 0.1)
    score, steps = empirical.score_fn(), grid.sampler_steps
    flow = sample(score, schedule, start, steps=steps, method="heun", record=True)
    progress("reverse SDE", 0.3)
    noisy = sample(
        score, schedule, start, steps=steps, method="euler_maruyama", generator=g, record=True
    )
    progress("descent", 0.5)
    plain = final.retrieve(
        start,
        steps=grid.descent_steps,
        step_size=grid.descent_step_size,
        method="gd",
        tol=0.0,
        record_states=True,
    )
    return data, empirical, final, start, flow, noisy, plain


def compute(ctx: Context, progress: Progress) -> Trajectory:
    data, empirical, final, start, flow, noisy, plain = _paths(ctx, progress)

    def along(path: torch.Tensor, fn) -> torch.Tensor:
        """fn of every state of path (T + 1, B, D), as (T + 1, B)."""
        return fn(path.reshape(-1, data.shape[1])).reshape(path.shape[0], -1)

    e_flow, e_plain, e_noisy = (
        along(flow.path, final.energy),
        plain.energies,
        along(noisy.path, final.energy),
    )
    e_own = torch.stack(
        [empirical.energy(flow.path[i], float(t)) for i, t in enumerate(flow.times)]
    )
    idx_flow, d_flow = final.nearest(flow.states)
    idx_plain, d_plain = final.nearest(plain.states)
    rises = {
        name: _rises(e).mean().item()
        for name, e in (("sampler", e_flow), ("descent", e_plain), ("sde", e_noisy))
    }
    metrics = {
        "final_distance_sampler": d_flow.mean().item(),
        "final_distance_descent": d_plain.mean().item(),
        "same_memory": (idx_flow == idx_plain).float().mean().item(),
        "energy_rises_sampler": rises["sampler"],
        "energy_rises_descent": rises["descent"],
        "energy_rises_sde": rises["sde"],
        "final_distance_sde": final.nearest(noisy.states)[1].mean().item(),
        "start_distance": final.nearest(start)[1].mean().item(),
        "example": {
            "final_distance_sampler": d_flow[0].item(),
            "final_distance_descent": d_plain[0].item(),
            "same_memory": bool(idx_flow[0] == idx_plain[0]),
        },
    }
    n_flow, n_plain = flow.path.shape[0], plain.path.shape[0]
    thinned = plain.path[:: max(n_plain // 60, 1)]
    distance = {
        "sampler": along(flow.path, lambda x: final.nearest(x)[1]).mean(1),
        "descent": along(thinned, lambda x: final.nearest(x)[1]).mean(1),
    }
    picks = torch.linspace(0, n_flow - 1, 10).round().long()
    pick_plain = torch.linspace(0, n_plain - 1, 10).round().long()
    pictures = [
        ("sampler", flow.path[picks, 0]),
        ("descent", plain.path[pick_plain, 0]),
        ("memories", torch.stack([data[idx_flow[0]], data[idx_plain[0]]])),
    ]
    return Trajectory(
        metrics=metrics,
        sampler_steps=n_flow - 1,
        descent_steps=n_plain - 1,
        memories=data.shape[0],
        dim=data.shape[1],
        beta_start=empirical.schedule.beta(1.0),
        beta_end=empirical.schedule.beta(0.0),
        final_beta=final.beta,
        energy={
            "sampler": e_flow[:, 0],
            "own": e_own[:, 0],
            "descent": e_plain[:, 0],
            "sde": e_noisy[:, 0],
        },
        distance=distance,
        pictures=pictures,
    )


def figure(result: Trajectory, ctx: Context, report: Report) -> None:
    """Energy along the first start's paths and the mean distance to the nearest memory
    along all paths; the first start's paths as images."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    fx = torch.linspace(0, 1, result.sampler_steps + 1)
    px = torch.linspace(0, 1, result.descent_steps + 1)
    energy = result.energy
    axes[0].plot(
        fx, energy["sampler"], "o-", ms=3, label="sampler path, energy of the final DenseAM"
    )
    axes[0].plot(fx, energy["own"], "--", label="sampler path, its own E_t")
    axes[0].plot(px, energy["descent"], label="plain descent on the final DenseAM")
    axes[0].plot(fx, energy["sde"], ":", label="reverse SDE path, energy of the final DenseAM")
    axes[0].set_yscale("symlog")
    axes[0].set_xlabel("fraction of the path")
    axes[0].set_ylabel("energy")
    axes[0].legend(fontsize=7)
    axes[0].set_title("one sample")
    descent = result.distance["descent"]
    axes[1].plot(fx, result.distance["sampler"], "o-", ms=3, label="sampler")
    axes[1].plot(torch.linspace(0, 1, len(descent)), descent, label="plain descent")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("fraction of the path")
    axes[1].set_ylabel("mean distance to the nearest memory")
    axes[1].set_title(f"{ctx.grid.trajectory_starts} starts")
    axes[1].legend(fontsize=7)
    save_figure(fig, report.path("diffusion_trajectory.png"), dpi=100)
    image_grid(
        result.pictures,
        ctx.images.shape,
        report.path("diffusion_trajectory_images.png"),
        title="one start: sampler (top) and plain descent (middle) at 10 points of the path",
    )


def write(result: Trajectory, ctx: Context, report: Report) -> dict[str, Any]:
    grid, metrics = ctx.grid, result.metrics
    n_flow, n_plain = result.sampler_steps, result.descent_steps
    same = metrics["same_memory"]
    report.section(
        "(d) The sampler's trajectory against plain energy descent",
        f"{result.memories} digits as memories. From the same {grid.trajectory_starts} starts "
        f"x_T ~ N(0, (1 + sigma_max^2) I) two paths: the probability-flow ODE of the empirical "
        f"denoiser (Heun, {grid.sampler_steps} steps, so beta_t grows from "
        f"{result.beta_start:.3g} to {result.beta_end:.3g}), and plain gradient descent "
        f"(step {grid.descent_step_size}, {grid.descent_steps} steps) on the DenseAM the sampler "
        f"ends in, beta = 1/sigma_min^2 = {result.final_beta:g}; and the reverse SDE "
        "(Euler-Maruyama, same steps) from the same starts. Energies are that final DenseAM's. "
        "The ODE stops at sigma_min, so its end points keep noise of size about "
        "sigma_min sqrt(D).",
    )
    report.table(
        ["", "probability-flow ODE", "reverse SDE", "plain descent"],
        [
            [
                "mean final distance to the nearest memory",
                metrics["final_distance_sampler"],
                metrics["final_distance_sde"],
                metrics["final_distance_descent"],
            ],
            [
                f"mean number of steps (of {n_flow}, {n_flow}, {n_plain}) where the "
                "final DenseAM's energy rises",
                metrics["energy_rises_sampler"],
                metrics["energy_rises_sde"],
                metrics["energy_rises_descent"],
            ],
            ["ODE and descent end at the same memory", f"{same:.0%}", "", f"{same:.0%}"],
            [
                "example start: final distance",
                metrics["example"]["final_distance_sampler"],
                "",
                metrics["example"]["final_distance_descent"],
            ],
        ],
    )
    report.figure(
        "diffusion_trajectory.png",
        "Energy along the paths of one start (left) and "
        "mean distance to the nearest memory (right).",
    )
    report.figure("diffusion_trajectory_images.png", "The two paths of one start as images.")
    noise = grid.sigma_min * math.sqrt(result.dim)  # where the ODE's end points lie, about
    report.claim(
        "Reverse diffusion is descent on a time-dependent energy; plain AM dynamics make E a "
        "Lyapunov function, diffusion trades that guarantee for noise and step-size schedules",
        f"plain descent: the energy rises in {metrics['energy_rises_descent']:.1f} steps on "
        f"average (a Lyapunov function); along the reverse SDE's path the same energy rises in "
        f"{metrics['energy_rises_sde']:.1f} of {n_flow} steps, along the (noise-free) ODE's "
        f"in {metrics['energy_rises_sampler']:.1f}; ODE and descent end on memories (mean "
        f"distance {metrics['final_distance_sampler']:.3f}, about sigma_min sqrt(D) = "
        f"{noise:.3f}, and {metrics['final_distance_descent']:.2g}), "
        f"the same one for {same:.0%} of starts",
        "reproduced"
        if metrics["energy_rises_descent"] == 0
        and metrics["energy_rises_sde"] > 0
        and metrics["final_distance_sampler"] < 2 * noise
        else "partly",
    )
    return {"trajectory": metrics}


SECTION = Section("trajectory", 0.1, compute, write, figure)
