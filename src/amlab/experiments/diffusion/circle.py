"""(b) K points on the unit circle: the empirical LSE energy E_t next to the energy of a
learned energy-parameterised MLP at several noise levels, their minima (stored or spurious),
how far each landscape is from the smooth ring 1/2 (R - 1)^2, and samples of both models."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from amlab.analysis.minima import lse_minima, unique_rows
from amlab.diffusion import Denoiser, EmpiricalDenoiser, MLPDenoiser, VESchedule
from amlab.dynamics import descend
from amlab.experiments.diffusion.common import reused_networks, train_network
from amlab.experiments.report import Context, Progress, Report, Section, part
from amlab.tasks.diffusion import draw_samples, nearest_training
from amlab.tasks.figures import plt, save_figure

#: half the side of the square the landscapes are drawn on
LIMIT = 1.6
#: a minimum within this distance of a stored point is "stored", else spurious
STORED_RADIUS = 0.1


def circle_points(k: int, seed: int) -> torch.Tensor:
    """k points (k, 2) at uniformly random angles on the unit circle."""
    g = torch.Generator().manual_seed(seed * 131 + k)
    angles = 2 * math.pi * torch.rand(k, generator=g, dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], 1).float()


@dataclass(frozen=True)
class Landscape:
    """One K at one sigma: the energy of each model ("empirical", "learned") on the mesh
    (G*G,), the minima each one's descent found ((n, 2) or None), and the metrics record."""

    sigma: float
    energies: dict[str, torch.Tensor]
    minima: dict[str, torch.Tensor | None]
    record: dict[str, Any]


@dataclass(frozen=True)
class CircleRun:
    """One K: its points (K, 2), the learned net's training record, a landscape per sigma,
    each model's samples (n, 2) and their statistics."""

    k: int
    points: torch.Tensor
    training: dict[str, Any]
    landscapes: list[Landscape]
    samples: dict[str, torch.Tensor]
    sample_stats: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Circle:
    """axis: the mesh's coordinates (G,); one run per K of the grid."""

    axis: torch.Tensor
    runs: list[CircleRun]


def compute(ctx: Context, progress: Progress) -> Circle:
    grid = ctx.grid
    axis = torch.linspace(-LIMIT, LIMIT, grid.circle_grid)
    s_axis = torch.linspace(-1.3, 1.3, grid.circle_starts)
    starts = torch.cartesian_prod(s_axis, s_axis)
    runs = []
    share = 1 / len(grid.circle_sizes)
    for i, k in enumerate(grid.circle_sizes):
        runs.append(_circle_run(k, ctx, axis, starts, part(progress, f"K={k}", i * share, share)))
    return Circle(axis=axis, runs=runs)


def _circle_run(k: int, ctx: Context, axis, starts, progress: Progress) -> CircleRun:
    """Train the learned net of K points, then its and the empirical model's landscapes at
    every sigma and their samples. progress(stage, fraction of this K's work)."""
    grid = ctx.grid
    schedule = VESchedule(grid.sigma_min, grid.circle_sigma_max)
    points = circle_points(k, ctx.seed)
    empirical = EmpiricalDenoiser(points, schedule)
    model = MLPDenoiser(
        2,
        schedule,
        hidden=grid.circle_hidden,
        layers=grid.circle_layers,
        energy=True,
        sigma_data=0.7,
        seed=ctx.seed + k,
    )
    training = train_network(
        ctx,
        f"circle-K{k}",
        model,
        points,
        None,
        steps=grid.circle_steps,
        batch=grid.circle_batch,
        progress=progress,
        until=0.6,
    )
    progress("landscapes and minima", 0.6)
    landscapes = []
    for j, sigma in enumerate(grid.circle_sigmas):
        landscapes.append(_landscape(sigma, schedule, empirical, model, points, axis, starts, grid))
        progress(f"sigma={sigma:g}", 0.6 + 0.3 * (j + 1) / len(grid.circle_sigmas))
    samples, stats = {}, {}
    for name, denoiser in (("empirical", empirical), ("learned", model)):
        xs = draw_samples(denoiser, grid.circle_samples, grid.sampler_steps, ctx.seed + 7)
        dist = nearest_training(xs, points)[1]
        samples[name] = xs
        stats[name] = {
            "near_stored": (dist < 0.05).float().mean().item(),
            "mean_abs_radius_error": (xs.norm(dim=1) - 1).abs().mean().item(),
            "mean_distance_to_nearest": dist.mean().item(),
        }
    return CircleRun(k, points, training, landscapes, samples, stats)


def _landscape(sigma, schedule, empirical, model, points, axis, starts, grid) -> Landscape:
    """Both models' energies on the mesh at sigma, their minima from the starts, and how far
    each landscape is from the ring 1/2 (R - 1)^2 (the large-K limit) for 0.5 < R < 1.5."""
    t = schedule.time_of(sigma)
    mesh = torch.cartesian_prod(axis, axis)  # (G*G, 2), x varies slowest
    with torch.no_grad():
        energies = {"empirical": empirical.energy(mesh, t), "learned": model.energy(mesh, t)}
    emp_min = lse_minima(
        points.double(),
        1 / sigma**2,
        starts.double(),
        steps=grid.minima_steps,
        tol=1e-7,
        merge_tol=0.01,
        stored_radius=STORED_RADIUS,
    )
    net_found, net_stored, net_converged, net_points = _learned_minima(
        model, t, starts, grid.minima_steps, points
    )
    r = mesh.norm(dim=1)
    ring = 0.5 * (r - 1) ** 2
    inside = (r > 0.5) & (r < 1.5)
    ring_dev = {
        name: ((e - e[inside].min()) - ring)[inside].abs().max().item()
        for name, e in energies.items()
    }
    record = {
        "sigma": sigma,
        "empirical_minima": len(emp_min),
        "empirical_stored": emp_min.num_stored,
        "empirical_spurious": emp_min.num_emergent,
        "learned_minima": net_found,
        "learned_stored": net_stored,
        "learned_spurious": net_found - net_stored,
        "learned_converged": net_converged,
        "ring_deviation_empirical": ring_dev["empirical"],
        "ring_deviation_learned": ring_dev["learned"],
    }
    minima = {"empirical": emp_min.points, "learned": net_points}
    return Landscape(sigma, energies, minima, record)


def _learned_minima(model: Denoiser, t: float, starts, steps: int, points):
    """Minima of a learned energy by descent (step 0.5) from starts, de-duplicated: their
    number, how many lie within STORED_RADIUS of a stored point, the fraction of starts
    that converged, and the minima (n, 2)."""
    out = descend(model.energy_oracle(t), starts, steps=steps, step_size=0.5, tol=1e-6)
    found = out.states[out.converged]
    found = found[unique_rows(found.double(), 0.01)] if len(found) else found
    dist = nearest_training(found, points)[1] if len(found) else found[:, 0]
    stored = int((dist < STORED_RADIUS).sum())
    return len(found), stored, out.converged.float().mean().item(), found


def figure(result: Circle, ctx: Context, report: Report) -> None:
    """One figure per K: each model's energy at each sigma (rows), then its samples."""
    axis = result.axis
    size = len(axis)
    for run in result.runs:
        columns = len(run.landscapes) + 1  # one per sigma, then the samples
        fig, axes = plt.subplots(2, columns, figsize=(3.1 * columns, 6.2))
        dot = 4 if run.k > 50 else 18
        for row, name in enumerate(("empirical", "learned")):
            for j, scape in enumerate(run.landscapes):
                ax = axes[row][j]
                e, mins = scape.energies[name], scape.minima[name]
                z = (e - e.min()).reshape(size, size).T
                ax.contourf(axis, axis, z.clamp(max=z.quantile(0.9)), levels=20, cmap="viridis")
                ax.scatter(run.points[:, 0], run.points[:, 1], s=dot, c="white")
                if mins is not None and len(mins):
                    ax.scatter(mins[:, 0], mins[:, 1], s=25, c="red", marker="x")
                ax.set_title(f"{name}, sigma={scape.sigma:g}", fontsize=9)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
            ax = axes[row][-1]
            xs = run.samples[name]
            ax.scatter(xs[:, 0], xs[:, 1], s=3, alpha=0.5)
            ax.scatter(run.points[:, 0], run.points[:, 1], s=dot, c="red")
            ax.set_xlim(-LIMIT, LIMIT)
            ax.set_ylim(-LIMIT, LIMIT)
            ax.set_aspect("equal")
            ax.set_title(f"{name} samples", fontsize=9)
        fig.suptitle(f"K = {run.k} points on the circle: energy E_t (red x: minima found)")
        save_figure(fig, report.path(f"diffusion_circle_K{run.k}.png"), dpi=90)


def write(result: Circle, ctx: Context, report: Report) -> dict[str, Any]:
    grid = ctx.grid
    report.section(
        "(b) Points on the circle: energy landscapes, minima and samples",
        f"K points at uniformly random angles on the unit circle, VE schedule sigma in "
        f"[{grid.sigma_min}, {grid.circle_sigma_max}]. Top row of each figure: the empirical "
        "energy E_t(x) = -sigma^2 log sum_mu exp(-||x - xi_mu||^2 / 2 sigma^2) (the LSE DenseAM "
        "with beta = 1/sigma^2); bottom row: the energy of an MLP trained as an "
        "energy-parameterised denoiser (D = x - grad E, so its score is -grad E / sigma^2), "
        f"{grid.circle_hidden} wide, {grid.circle_layers} residual blocks, "
        f"{grid.circle_steps} steps of batch {grid.circle_batch}. Both are shown minus their "
        "minimum on the grid. Last column: samples of the probability-flow ODE (Heun, "
        f"{grid.sampler_steps} steps, then one denoising step) of each model. Minima: "
        "descent from a "
        f"{grid.circle_starts}x{grid.circle_starts} grid of starts, converged end points "
        f"merged within 0.01; a minimum within {STORED_RADIUS} of a stored point is *stored*, "
        "otherwise *spurious*. " + reused_networks([run.training for run in result.runs], ctx),
    )
    sigmas = ", ".join(f"{s:g}" for s in grid.circle_sigmas)
    for run in result.runs:
        report.figure(
            f"diffusion_circle_K{run.k}.png",
            f"K = {run.k}: empirical (top) and learned (bottom) energy at sigma = "
            f"{sigmas}; samples on the right.",
        )
    report.table(
        [
            "K",
            "sigma",
            "empirical minima (spurious)",
            "learned minima (spurious); starts converged",
            "max abs(E - ½(R-1)²), empirical",
            "same, learned",
        ],
        [_minima_row(run.k, scape.record) for run in result.runs for scape in run.landscapes],
    )
    report.text(
        "Samples: fraction within 0.05 of a stored point, mean distance abs(‖x‖ - 1) to "
        "the circle, mean distance to the nearest stored point."
    )
    report.table(
        ["K", "model", "near a stored point", "mean abs(‖x‖ - 1)", "mean distance to nearest"],
        [
            [
                run.k,
                name,
                s["near_stored"],
                s["mean_abs_radius_error"],
                s["mean_distance_to_nearest"],
            ]
            for run in result.runs
            for name, s in run.sample_stats.items()
        ],
    )
    metrics = {
        f"K{run.k}": {
            "training": run.training,
            "by_sigma": [scape.record for scape in run.landscapes],
            "samples": run.sample_stats,
        }
        for run in result.runs
    }
    _claims(report, grid, metrics)
    return {"circle_toy": metrics}


def _minima_row(k: int, rec: dict[str, Any]) -> list[Any]:
    return [
        k,
        rec["sigma"],
        f"{rec['empirical_minima']} ({rec['empirical_spurious']})",
        f"{rec['learned_minima']} ({rec['learned_spurious']}); "
        f"{rec['learned_converged']:.0%} converged",
        rec["ring_deviation_empirical"],
        rec["ring_deviation_learned"],
    ]


def _claims(report: Report, grid: Any, results: dict[str, Any]) -> None:
    sizes = grid.circle_sizes
    if 2 in sizes:
        r = results["K2"]["samples"]
        report.claim(
            "K = 2: samples collapse onto the memories",
            f"within 0.05 of a stored point: empirical {r['empirical']['near_stored']:.0%}, "
            f"learned {r['learned']['near_stored']:.0%}",
            "reproduced" if min(v["near_stored"] for v in r.values()) > 0.9 else "partly",
        )
    if 9 in sizes:
        recs = results["K9"]["by_sigma"]
        below = [rec for rec in recs if rec["sigma"] < max(grid.circle_sigmas)]
        learned_off = 1 - results["K9"]["samples"]["learned"]["near_stored"]
        empirical_off = 1 - results["K9"]["samples"]["empirical"]["near_stored"]
        spurious = ", ".join(
            f"{rec['sigma']:g}: ({rec['empirical_spurious']}, {rec['learned_spurious']})"
            for rec in recs
        )
        in_empirical = any(rec["empirical_spurious"] for rec in below)
        in_learned = any(rec["learned_spurious"] for rec in below) or learned_off > 0.2
        report.claim(
            "K = 9: spurious minima appear (states the model settles in that are not stored "
            "points)",
            f"spurious minima (empirical, learned) at sigma {spurious} (at the largest sigma "
            "the single minimum near the centre counts as spurious); samples off the stored "
            f"points: learned {learned_off:.0%}, empirical {empirical_off:.0%}",
            "reproduced"
            if in_empirical
            else "reproduced for the learned model only"
            if in_learned
            else "not reproduced",
        )
    big = max(sizes)
    if big >= 100:
        recs = results[f"K{big}"]["by_sigma"]
        small = min(recs, key=lambda rec: rec["sigma"])
        few = results[f"K{min(sizes)}"]["by_sigma"]
        few_small = min(few, key=lambda rec: rec["sigma"])
        report.claim(
            f"K = {big}: the energy approaches the smooth ring, (R-1)^2 (1/2 (R-1)^2 in the LSE "
            "convention here) for large beta",
            f"at sigma = {small['sigma']:g}, max abs(E - min E - ½(R-1)²) for 0.5 < R < 1.5: "
            f"empirical {small['ring_deviation_empirical']:.3g}, learned "
            f"{small['ring_deviation_learned']:.3g} (K = {min(sizes)}: "
            f"{few_small['ring_deviation_empirical']:.3g})",
            "reproduced"
            if small["ring_deviation_empirical"] < 0.05 < few_small["ring_deviation_empirical"]
            else "partly",
        )


SECTION = Section("circle toy", 0.38, compute, write, figure)
