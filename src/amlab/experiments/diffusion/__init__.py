"""``amlab repro diffusion``: diffusion models as associative memories (papers.md section 4,
Hoover et al., *Memory in Plain Sight*, arXiv 2309.16750).

Sections, each with its figure:

(a) the correspondence: the exact denoiser of a finite set next to one attention step of the
    LSE DenseAM with beta_t = 1/sigma_t^2 and a float64 brute-force posterior mean;
(b) the circle toy, K in {2, 9, 1000} points on the unit circle: the empirical LSE energy
    E_t next to the energy of a learned energy-parameterised MLP at several noise levels,
    their minima (stored or spurious) and samples;
(c) memorisation vs generalisation on the digits: the fraction of samples that copy a
    training image as the training set grows, learned conv net vs empirical denoiser, and
    classifier-free guidance of the class-conditional net;
(d) one sample's trajectory under the probability-flow sampler next to plain energy descent
    on the same DenseAM (the one at the last noise level), from the same start.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from amlab.analysis.minima import lse_minima, unique_rows
from amlab.data import ImageSet
from amlab.diffusion import (
    ConvDenoiser,
    Denoiser,
    EmpiricalDenoiser,
    MLPDenoiser,
    VESchedule,
    sample,
)
from amlab.dynamics import descend
from amlab.experiments.report import (
    Progress,
    Report,
    no_progress,
    paper_images,
    reproduction_report,
    run_sections,
)
from amlab.tasks.diffusion import denoiser_schedule, heun_samples, nearest_training, train_denoiser
from amlab.tasks.figures import image_grid, plt, save_figure

PAPER = "Hoover et al., *Memory in Plain Sight: Surveying the Uncanny Resemblances of "
PAPER += "Associative Memories and Diffusion Models*, arXiv 2309.16750"


@dataclass(frozen=True)
class Grid:
    """Every size the run uses (the report lists them)."""

    # (b) circle toy
    circle_sizes: tuple[int, ...] = (2, 9, 1000)
    circle_sigmas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    circle_sigma_max: float = 3.0
    circle_hidden: int = 128
    circle_layers: int = 3
    circle_steps: int = 3000
    circle_batch: int = 256
    circle_samples: int = 500
    circle_grid: int = 121
    circle_starts: int = 21  # minima search from a starts x starts grid
    minima_steps: int = 1000
    # (c) digits
    digit_sizes: tuple[int, ...] = (10, 50, 200, 1000)
    holdout: int = 297
    digit_channels: int = 32
    digit_blocks: int = 2
    digit_steps: int = 4000
    digit_batch: int = 64
    digit_samples: int = 200
    digit_log_normal: tuple[float, float] = (-1.2, 1.2)  # EDM's noise-level distribution
    guidance_scales: tuple[float, ...] = (0.0, 1.0, 3.0)
    guidance_per_class: int = 10
    # shared
    sigma_min: float = 0.01
    digit_sigma_max: float = 10.0
    sampler_steps: int = 50
    # (d) trajectory
    trajectory_memories: int = 100
    trajectory_starts: int = 64
    descent_steps: int = 300
    descent_step_size: float = 0.1


FULL = Grid()
QUICK = Grid(
    circle_sigmas=(0.03, 0.1, 0.3, 1.0),
    circle_hidden=64,
    circle_layers=2,
    circle_steps=800,
    circle_batch=128,
    circle_samples=300,
    circle_grid=81,
    circle_starts=15,
    minima_steps=300,
    digit_sizes=(20, 100, 1000),
    digit_steps=1200,
    digit_samples=64,
    guidance_per_class=4,
    sampler_steps=30,
    trajectory_starts=32,
)


def run(
    out: str | Path,
    quick: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
    progress: Progress = no_progress,
    grid: Grid | None = None,
) -> dict[str, Any]:
    """Run every section; write report.md, the PNG figures and metrics.json into ``out``.

    Trained networks are checkpointed under ``out/checkpoints`` (the shared training loop) and
    reused by a later run with the same settings. ``grid`` overrides the sizes (tests).
    """
    grid = grid if grid is not None else (QUICK if quick else FULL)
    started = time.perf_counter()
    images = paper_images(data_dir)
    report = reproduction_report(
        out, "diffusion models as associative memories", PAPER, quick, seed
    )
    tag = f"{'quick' if quick else 'full'}-seed{seed}"
    checkpoints = Path(out) / "checkpoints"

    def section(run_section):
        return lambda p: run_section(
            report,
            grid=grid,
            seed=seed,
            images=images,
            progress=p,
            checkpoints=checkpoints,
            tag=tag,
        )

    sections = [
        ("correspondence", section(_section_correspondence), 0.02),
        ("circle toy", section(_section_circle), 0.38),
        ("digits", section(_section_digits), 0.5),
        ("trajectory", section(_section_trajectory), 0.1),
    ]
    metrics: dict[str, Any] = {"quick": quick, "seed": seed, "grid": asdict(grid)}
    results, seconds = run_sections(sections, progress)
    metrics.update({name.replace(" ", "_"): result for name, result in results.items()})
    metrics["seconds"] = time.perf_counter() - started
    trainings = [v["training"] for v in metrics["circle_toy"].values()] + [
        r["training"] for r in metrics["digits"]["by_N"]
    ]
    reused = sum(t["resumed_from"] == t["steps"] for t in trainings)
    metrics["section_seconds"] = seconds
    report.section(
        "Run",
        f"Seed {seed}, {'quick' if quick else 'full'} grid, {metrics['seconds']:.0f} s on "
        f"{torch.get_num_threads()} CPU thread(s) (sections: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + f"). {reused} of the {len(trainings)} networks were loaded from finished checkpoints "
        f"in {checkpoints} rather than trained in this run (training in this run: "
        f"{sum(t['seconds'] for t in trainings):.0f} s). The grid:\n\n"
        + "\n".join(f"- `{k}` = {v}" for k, v in asdict(grid).items()),
    )
    progress("done", 1.0)
    return report.write(metrics)


# -- helpers ------------------------------------------------------------------------------------
def circle_points(k: int, seed: int) -> torch.Tensor:
    """k points (k, 2) at uniformly random angles on the unit circle."""
    g = torch.Generator().manual_seed(seed * 131 + k)
    angles = 2 * math.pi * torch.rand(k, generator=g, dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], 1).float()


def _train(
    model, data, labels, grid_steps, batch, seed, out: Path, on_step, log_normal=None
) -> dict[str, Any]:
    config = denoiser_schedule(grid_steps, seed, checkpoints=4)
    started = time.perf_counter()
    result = train_denoiser(
        model,
        data,
        config,
        labels=labels,
        batch_size=batch,
        label_dropout=0.2,
        log_normal=log_normal,
        out=out,
        resume=True,
        on_step=on_step,
    )
    model.eval()
    tail = result.losses[-max(len(result.losses) // 10, 1) :]
    return {
        "steps": grid_steps,
        "first_loss": result.losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": time.perf_counter() - started,
        "resumed_from": result.resumed_from,
    }


# -- (a) the correspondence -----------------------------------------------------------------
def _section_correspondence(report: Report, *, grid: Grid, seed: int, images: ImageSet, **_):
    data = images.subset(grid.trajectory_memories, seed=seed).images
    schedule = VESchedule(grid.sigma_min, grid.digit_sigma_max)
    denoiser = EmpiricalDenoiser(data, schedule)
    g = torch.Generator().manual_seed(seed + 1)
    rows = []
    worst_step = worst_brute = 0.0
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
        worst_step, worst_brute = max(worst_step, diff_step), max(worst_brute, diff_brute)
        rows.append([sigma, am.beta, diff_step, diff_brute])
    report.section(
        "(a) The optimal denoiser is one DenseAM attention step",
        f"{data.shape[0]} digits as the training set, VE schedule; at each noise level sigma "
        "16 noisy copies are denoised three ways: `EmpiricalDenoiser.denoise`, one "
        '`retrieve(..., steps=1, method="attention")` of the LSE DenseAM with beta = 1/sigma^2, '
        "and the posterior mean sum softmax(-||x - xi||^2 / 2 sigma^2) xi in float64.",
    )
    report.table(
        ["sigma", "beta", "max abs(D - attention step)", "max abs(D - float64 brute force)"], rows
    )
    report.claim(
        "The ideal denoiser of K points is one attention update of an LSE DenseAM with "
        "beta_t = 1/sigma_t^2",
        f"largest difference to the attention step {worst_step:.1e}, to the float64 "
        f"posterior mean {worst_brute:.1e} (float32)",
        "reproduced" if worst_step == 0.0 and worst_brute < 1e-4 else "not reproduced",
    )
    return {"rows": rows, "max_diff_attention": worst_step, "max_diff_brute": worst_brute}


# -- (b) the circle toy -----------------------------------------------------------------------
def _learned_minima(model: Denoiser, t: float, starts, steps: int, radius: float, points):
    """Minima of a learned energy by descent (step 0.5) from starts, de-duplicated: their
    number, how many lie within radius of a stored point, the fraction of starts that
    converged, and the minima (n, 2)."""
    out = descend(model.energy_oracle(t), starts, steps=steps, step_size=0.5, tol=1e-6)
    found = out.states[out.converged]
    found = found[unique_rows(found.double(), 0.01)] if len(found) else found
    dist = nearest_training(found, points)[1] if len(found) else found[:, 0]
    return len(found), int((dist < radius).sum()), out.converged.float().mean().item(), found


def _section_circle(
    report: Report, *, grid: Grid, seed: int, progress: Progress, checkpoints: Path, tag: str, **_
):
    schedule = VESchedule(grid.sigma_min, grid.circle_sigma_max)
    lim = 1.6
    axis = torch.linspace(-lim, lim, grid.circle_grid)
    mesh = torch.cartesian_prod(axis, axis)  # (G*G, 2), x varies slowest
    s_axis = torch.linspace(-1.3, 1.3, grid.circle_starts)
    starts = torch.cartesian_prod(s_axis, s_axis)
    # how far each landscape is from the smooth ring 1/2 (R - 1)^2 (its large-K limit)
    r = mesh.norm(dim=1)
    ring = 0.5 * (r - 1) ** 2
    inside = (r > 0.5) & (r < 1.5)
    radius = 0.1  # a minimum within 0.1 of a stored point is "stored", else spurious
    results: dict[str, Any] = {}
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
        f"merged within 0.01; a minimum within {radius} of a stored point is *stored*, "
        "otherwise *spurious*.",
    )
    rows = []
    for i, k in enumerate(grid.circle_sizes):
        base = i / len(grid.circle_sizes)
        share = 1 / len(grid.circle_sizes)
        points = circle_points(k, seed)
        empirical = EmpiricalDenoiser(points, schedule)
        torch.manual_seed(seed + k)
        model = MLPDenoiser(
            2,
            schedule,
            hidden=grid.circle_hidden,
            layers=grid.circle_layers,
            energy=True,
            sigma_data=0.7,
        )
        training = _train(
            model,
            points,
            None,
            grid.circle_steps,
            grid.circle_batch,
            seed,
            checkpoints / f"circle-K{k}-{tag}",
            lambda d, n, m, b=base, s=share, k=k: progress(
                f"K={k}: training (loss {m['loss']:.3g})", b + 0.6 * s * d / n
            ),
        )
        progress(f"K={k}: landscapes and minima", base + 0.6 * share)
        per_sigma = []
        columns = len(grid.circle_sigmas) + 1  # one per sigma, then the samples
        fig, axes = plt.subplots(2, columns, figsize=(3.1 * columns, 6.2))
        for j, sigma in enumerate(grid.circle_sigmas):
            t = schedule.time_of(sigma)
            with torch.no_grad():
                e_emp = empirical.energy(mesh, t)
                e_net = model.energy(mesh, t)
            emp_min = lse_minima(
                points.double(),
                1 / sigma**2,
                starts.double(),
                steps=grid.minima_steps,
                tol=1e-7,
                merge_tol=0.01,
                stored_radius=radius,
            )
            net_found, net_stored, net_converged, net_points = _learned_minima(
                model, t, starts, grid.minima_steps, radius, points
            )
            ring_dev = {
                name: ((e - e[inside].min()) - ring)[inside].abs().max().item()
                for name, e in (("empirical", e_emp), ("learned", e_net))
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
            per_sigma.append(record)
            rows.append(
                [
                    k,
                    sigma,
                    f"{len(emp_min)} ({emp_min.num_emergent})",
                    f"{net_found} ({net_found - net_stored}); {net_converged:.0%} converged",
                    ring_dev["empirical"],
                    ring_dev["learned"],
                ]
            )
            for row, (name, e, mins) in enumerate(
                (("empirical", e_emp, emp_min.points), ("learned", e_net, net_points))
            ):
                ax = axes[row][j]
                z = (e - e.min()).reshape(grid.circle_grid, grid.circle_grid).T
                ax.contourf(axis, axis, z.clamp(max=z.quantile(0.9)), levels=20, cmap="viridis")
                ax.scatter(points[:, 0], points[:, 1], s=4 if k > 50 else 18, c="white")
                if mins is not None and len(mins):
                    ax.scatter(mins[:, 0], mins[:, 1], s=25, c="red", marker="x")
                ax.set_title(f"{name}, sigma={sigma:g}", fontsize=9)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
            done = (j + 1) / len(grid.circle_sigmas)
            progress(f"K={k}: sigma={sigma:g}", base + share * (0.6 + 0.3 * done))
        sample_stats = {}
        for row, (name, denoiser) in enumerate((("empirical", empirical), ("learned", model))):
            xs = heun_samples(denoiser, grid.circle_samples, grid.sampler_steps, seed + 7)
            dist = nearest_training(xs, points)[1]
            sample_stats[name] = {
                "near_stored": (dist < 0.05).float().mean().item(),
                "mean_abs_radius_error": (xs.norm(dim=1) - 1).abs().mean().item(),
                "mean_distance_to_nearest": dist.mean().item(),
            }
            ax = axes[row][-1]
            ax.scatter(xs[:, 0], xs[:, 1], s=3, alpha=0.5)
            ax.scatter(points[:, 0], points[:, 1], s=4 if k > 50 else 18, c="red")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(f"{name} samples", fontsize=9)
        fig.suptitle(f"K = {k} points on the circle: energy E_t (red x: minima found)")
        name = f"diffusion_circle_K{k}.png"
        save_figure(fig, report.path(name), dpi=90)
        results[f"K{k}"] = {"training": training, "by_sigma": per_sigma, "samples": sample_stats}
        report.figure(
            name,
            f"K = {k}: empirical (top) and learned (bottom) energy at sigma = "
            f"{', '.join(f'{s:g}' for s in grid.circle_sigmas)}; samples on the right.",
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
        rows,
    )
    sample_rows = [
        [k, name, s["near_stored"], s["mean_abs_radius_error"], s["mean_distance_to_nearest"]]
        for k in grid.circle_sizes
        for name, s in results[f"K{k}"]["samples"].items()
    ]
    report.text(
        "Samples: fraction within 0.05 of a stored point, mean distance abs(‖x‖ - 1) to "
        "the circle, mean distance to the nearest stored point."
    )
    report.table(
        ["K", "model", "near a stored point", "mean abs(‖x‖ - 1)", "mean distance to nearest"],
        sample_rows,
    )
    _circle_claims(report, grid, results)
    return results


def _circle_claims(report: Report, grid: Grid, results: dict[str, Any]) -> None:
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


# -- (c) digits: memorisation vs generalisation ---------------------------------------------
def _section_digits(
    report: Report,
    *,
    grid: Grid,
    seed: int,
    images: ImageSet,
    progress: Progress,
    checkpoints: Path,
    tag: str,
    **_,
):
    g = torch.Generator().manual_seed(seed + 11)
    order = torch.randperm(len(images), generator=g)
    held = order[-grid.holdout :]
    pool = order[: -grid.holdout]
    sizes = tuple(n for n in grid.digit_sizes if n <= len(pool))
    x_pool, y_pool = images.images[pool], images.labels[pool]
    x_held = images.images[held]
    typical = nearest_training(x_held, x_pool)[1].median().item()
    threshold = typical / 3
    schedule = VESchedule(grid.sigma_min, grid.digit_sigma_max)
    shape = images.shape
    records, gallery, model = [], [], None
    for i, n in enumerate(sizes):
        base, share = i / len(sizes), 1 / len(sizes)
        train_x, train_y = x_pool[:n], y_pool[:n]
        torch.manual_seed(seed + n)
        model = ConvDenoiser(
            shape,
            schedule,
            channels=grid.digit_channels,
            blocks=grid.digit_blocks,
            num_classes=10,
            sigma_data=0.4,
        )
        training = _train(
            model,
            train_x,
            train_y,
            grid.digit_steps,
            grid.digit_batch,
            seed,
            checkpoints / f"digits-N{n}-{tag}",
            lambda d, total, m, b=base, s=share, n=n: progress(
                f"N={n}: training (loss {m['loss']:.3g})", b + 0.8 * s * d / total
            ),
            log_normal=grid.digit_log_normal,
        )
        progress(f"N={n}: sampling", base + 0.8 * share)
        record: dict[str, Any] = {"N": n, "training": training}
        empirical = EmpiricalDenoiser(train_x, schedule)
        for name, denoiser in (("learned", model), ("empirical", empirical)):
            xs = heun_samples(denoiser, grid.digit_samples, grid.sampler_steps, seed + 5)
            d_train = nearest_training(xs, train_x)[1]
            d_held = nearest_training(xs, x_held)[1]
            record[name] = {
                "memorised": (d_train < threshold).float().mean().item(),
                "mean_distance_train": d_train.mean().item(),
                "mean_distance_heldout": d_held.mean().item(),
            }
            if name == "learned":
                idx = nearest_training(xs[:10], train_x)[0]
                gallery += [(f"N={n} sample", xs[:10]), ("nearest train", train_x[idx])]
        records.append(record)
    # figure: memorised fraction against N
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, style in (("learned", "o-"), ("empirical", "s--")):
        axes[0].plot(sizes, [r[name]["memorised"] for r in records], style, label=name)
        axes[1].plot(
            sizes,
            [r[name]["mean_distance_train"] for r in records],
            style,
            label=f"{name}: to training set",
        )
        axes[1].plot(
            sizes,
            [r[name]["mean_distance_heldout"] for r in records],
            style,
            alpha=0.5,
            label=f"{name}: to held-out set",
        )
    axes[0].axhline(0, color="grey", lw=0.5)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training images N")
    axes[0].set_ylabel(f"samples memorised (NN distance < {threshold:.2f})")
    axes[1].set_ylabel("mean distance of a sample to its nearest image")
    axes[0].legend()
    axes[1].legend(fontsize=7)
    save_figure(fig, report.path("diffusion_memorisation.png"), dpi=100)
    image_grid(
        gallery,
        shape,
        report.path("diffusion_digit_samples.png"),
        title="learned samples and the nearest training image",
    )
    # classifier-free guidance with the largest model
    progress("guidance", 0.9)
    guidance = _guidance(model, grid, seed, x_pool, y_pool, shape, report)
    report.section(
        "(c) Digits: memorisation against generalisation",
        f"Training sets of N digits drawn from {len(pool)} (the other {grid.holdout} are held "
        f"out), VE schedule sigma in [{grid.sigma_min}, {grid.digit_sigma_max}]. For each N a "
        f"class-conditional conv net ({grid.digit_channels} channels, {grid.digit_blocks} "
        f"residual blocks, labels dropped with probability 0.2) is trained for "
        f"{grid.digit_steps} steps of batch {grid.digit_batch} (log s ~ "
        f"N{grid.digit_log_normal}), and {grid.digit_samples} "
        f"unconditional samples are drawn (Heun, {grid.sampler_steps} steps, then one "
        "denoising step) from it and from "
        "the empirical denoiser of the same N images. A sample is *memorised* when its nearest "
        f"training image is closer than {threshold:.3f}, a third of the median distance from a "
        f"held-out digit to its nearest neighbour in the pool ({typical:.3f}).",
    )
    report.table(
        [
            "N",
            "learned: memorised",
            "empirical: memorised",
            "learned: distance to train / held-out",
            "empirical: distance to train / held-out",
            "final loss",
        ],
        [
            [
                r["N"],
                r["learned"]["memorised"],
                r["empirical"]["memorised"],
                f"{r['learned']['mean_distance_train']:.3f} / "
                f"{r['learned']['mean_distance_heldout']:.3f}",
                f"{r['empirical']['mean_distance_train']:.3f} / "
                f"{r['empirical']['mean_distance_heldout']:.3f}",
                r["training"]["final_loss"],
            ]
            for r in records
        ],
    )
    report.figure("diffusion_memorisation.png", "Memorised fraction and distances against N.")
    report.figure(
        "diffusion_digit_samples.png",
        "Learned samples (rows per N) and the nearest training image under each.",
    )
    first, last = records[0], records[-1]
    report.claim(
        "With few training images a diffusion model memorises (samples copy training images); "
        "with many it generalises, while the empirical (ideal) denoiser always memorises",
        f"learned: {first['learned']['memorised']:.0%} memorised at N = {first['N']}, "
        f"{last['learned']['memorised']:.0%} at N = {last['N']}; empirical: "
        f"{min(r['empirical']['memorised'] for r in records):.0%} or more at every N. The "
        f"learned samples at N = {last['N']} lie {last['learned']['mean_distance_heldout']:.2f} "
        f"from the nearest held-out digit on average (a held-out digit lies {typical:.2f} from "
        "its nearest neighbour): they copy nothing, but their quality is limited by the "
        "CPU training budget",
        "reproduced"
        if first["learned"]["memorised"] > last["learned"]["memorised"] + 0.2
        and min(r["empirical"]["memorised"] for r in records) > 0.9
        else "partly",
    )
    report.section("(c') Classifier-free guidance", guidance.pop("text"))
    report.figure(
        "diffusion_guidance.png",
        "Class-prompted samples (columns: classes 0-9) at each guidance scale (rows).",
    )
    return {
        "threshold": threshold,
        "typical_distance": typical,
        "by_N": records,
        "guidance": guidance,
    }


def _guidance(model, grid: Grid, seed: int, x_pool, y_pool, shape, report: Report):
    per = grid.guidance_per_class
    labels = torch.arange(10).repeat_interleave(per)
    rows, accuracy = [], {}
    for w in grid.guidance_scales:
        xs = heun_samples(model, len(labels), grid.sampler_steps, seed + 3, labels, w)
        predicted = y_pool[nearest_training(xs, x_pool)[0]]
        accuracy[w] = (predicted == labels).float().mean().item()
        rows.append((f"w={w:g}", xs[::per]))
    image_grid(
        rows,
        shape,
        report.path("diffusion_guidance.png"),
        title="classifier-free guidance: one sample per class",
    )
    text = (
        f"The conditional net of the largest N, prompted with each class ({per} samples per "
        "class). A sample counts as the prompted class when its nearest image in the labelled "
        "pool has that label. Guidance scale w = 0 is the unconditional model, w = 1 the "
        "conditional one:\n\n"
        + "\n".join(
            f"- w = {w:g}: {a:.0%} of samples show the prompted class" for w, a in accuracy.items()
        )
    )
    scales = sorted(accuracy)
    report.claim(
        "Classifier-free guidance lets a class-conditional model be prompted by class",
        ", ".join(f"w = {w:g}: {accuracy[w]:.0%}" for w in scales)
        + " of samples in the prompted class",
        "reproduced" if accuracy[scales[-1]] > max(accuracy[scales[0]] + 0.3, 0.6) else "partly",
    )
    return {"accuracy": {str(w): a for w, a in accuracy.items()}, "text": text}


# -- (d) the sampler's trajectory against plain descent --------------------------------------
def _rises(energies: torch.Tensor) -> torch.Tensor:
    """Per column of energies (T + 1, B): the number of steps where the energy rises by more
    than float64 rounding."""
    before, after = energies[:-1], energies[1:]
    return (after > before + 1e-9 * (1 + before.abs())).float().sum(0)


def _section_trajectory(
    report: Report, *, grid: Grid, seed: int, images: ImageSet, progress: Progress, **_
):
    data = images.subset(grid.trajectory_memories, seed=seed).images.double()
    schedule = VESchedule(grid.sigma_min, grid.digit_sigma_max)
    empirical = EmpiricalDenoiser(data, schedule)  # float64: energies compared step by step
    final = empirical.memory_at(schedule.t_end)  # the DenseAM the sampler ends in
    g = torch.Generator().manual_seed(seed + 23)
    start = schedule.prior(grid.trajectory_starts, data.shape[1], g, dtype=torch.float64)
    progress("sampler", 0.1)
    flow = sample(
        empirical.score_fn(), schedule, start, steps=grid.sampler_steps, method="heun", record=True
    )
    progress("reverse SDE", 0.3)
    noisy = sample(
        empirical.score_fn(),
        schedule,
        start,
        steps=grid.sampler_steps,
        method="euler_maruyama",
        generator=g,
        record=True,
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
    n_flow, n_plain = flow.path.shape[0], plain.path.shape[0]
    dim = data.shape[1]
    e_flow = final.energy(flow.path.reshape(-1, dim)).reshape(n_flow, -1)
    e_plain = plain.energies
    e_noisy = final.energy(noisy.path.reshape(-1, dim)).reshape(n_flow, -1)
    e_own = torch.stack(
        [empirical.energy(flow.path[i], float(t)) for i, t in enumerate(flow.times)]
    )
    idx_flow, d_flow = final.nearest(flow.states)
    idx_plain, d_plain = final.nearest(plain.states)
    rises_flow = _rises(e_flow)
    rises_plain = _rises(e_plain)
    rises_noisy = _rises(e_noisy)
    same = (idx_flow == idx_plain).float().mean().item()
    metrics = {
        "final_distance_sampler": d_flow.mean().item(),
        "final_distance_descent": d_plain.mean().item(),
        "same_memory": same,
        "energy_rises_sampler": rises_flow.mean().item(),
        "energy_rises_descent": rises_plain.mean().item(),
        "energy_rises_sde": rises_noisy.mean().item(),
        "final_distance_sde": final.nearest(noisy.states)[1].mean().item(),
        "start_distance": final.nearest(start)[1].mean().item(),
        "example": {
            "final_distance_sampler": d_flow[0].item(),
            "final_distance_descent": d_plain[0].item(),
            "same_memory": bool(idx_flow[0] == idx_plain[0]),
        },
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    fx = torch.linspace(0, 1, n_flow)
    px = torch.linspace(0, 1, n_plain)
    axes[0].plot(fx, e_flow[:, 0], "o-", ms=3, label="sampler path, energy of the final DenseAM")
    axes[0].plot(fx, e_own[:, 0], "--", label="sampler path, its own E_t")
    axes[0].plot(px, e_plain[:, 0], label="plain descent on the final DenseAM")
    axes[0].plot(fx, e_noisy[:, 0], ":", label="reverse SDE path, energy of the final DenseAM")
    axes[0].set_yscale("symlog")
    axes[0].set_xlabel("fraction of the path")
    axes[0].set_ylabel("energy")
    axes[0].legend(fontsize=7)
    axes[0].set_title("one sample")
    dist_flow = final.nearest(flow.path.reshape(-1, dim))[1].reshape(n_flow, -1).mean(1)
    thinned = plain.path[:: max(n_plain // 60, 1)]
    dist_plain = final.nearest(thinned.reshape(-1, dim))[1].reshape(len(thinned), -1).mean(1)
    axes[1].plot(fx, dist_flow, "o-", ms=3, label="sampler")
    axes[1].plot(torch.linspace(0, 1, len(dist_plain)), dist_plain, label="plain descent")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("fraction of the path")
    axes[1].set_ylabel("mean distance to the nearest memory")
    axes[1].set_title(f"{grid.trajectory_starts} starts")
    axes[1].legend(fontsize=7)
    save_figure(fig, report.path("diffusion_trajectory.png"), dpi=100)
    picks = torch.linspace(0, n_flow - 1, 10).round().long()
    pick_plain = torch.linspace(0, n_plain - 1, 10).round().long()
    image_grid(
        [
            ("sampler", flow.path[picks, 0]),
            ("descent", plain.path[pick_plain, 0]),
            ("memories", torch.stack([data[idx_flow[0]], data[idx_plain[0]]])),
        ],
        images.shape,
        report.path("diffusion_trajectory_images.png"),
        title="one start: sampler (top) and plain descent (middle) at 10 points of the path",
    )
    report.section(
        "(d) The sampler's trajectory against plain energy descent",
        f"{data.shape[0]} digits as memories. From the same {grid.trajectory_starts} starts "
        f"x_T ~ N(0, (1 + sigma_max^2) I) two paths: the probability-flow ODE of the empirical "
        f"denoiser (Heun, {grid.sampler_steps} steps, so beta_t grows from "
        f"{schedule.beta(1.0):.3g} to {schedule.beta(0.0):.3g}), and plain gradient descent "
        f"(step {grid.descent_step_size}, {grid.descent_steps} steps) on the DenseAM the sampler "
        f"ends in, beta = 1/sigma_min^2 = {final.beta:g}; and the reverse SDE (Euler-Maruyama, "
        "same steps) from the same starts. Energies are that final DenseAM's. The ODE stops at "
        "sigma_min, so its end points keep noise of size about sigma_min sqrt(D).",
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
                f"mean number of steps (of {n_flow - 1}, {n_flow - 1}, {n_plain - 1}) where the "
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
    report.claim(
        "Reverse diffusion is descent on a time-dependent energy; plain AM dynamics make E a "
        "Lyapunov function, diffusion trades that guarantee for noise and step-size schedules",
        f"plain descent: the energy rises in {metrics['energy_rises_descent']:.1f} steps on "
        f"average (a Lyapunov function); along the reverse SDE's path the same energy rises in "
        f"{metrics['energy_rises_sde']:.1f} of {n_flow - 1} steps, along the (noise-free) ODE's "
        f"in {metrics['energy_rises_sampler']:.1f}; ODE and descent end on memories (mean "
        f"distance {metrics['final_distance_sampler']:.3f}, about sigma_min sqrt(D) = "
        f"{grid.sigma_min * math.sqrt(dim):.3f}, and {metrics['final_distance_descent']:.2g}), "
        f"the same one for {same:.0%} of starts",
        "reproduced"
        if metrics["energy_rises_descent"] == 0
        and metrics["energy_rises_sde"] > 0
        and metrics["final_distance_sampler"] < 2 * grid.sigma_min * math.sqrt(dim)
        else "partly",
    )
    progress("figures", 1.0)
    return metrics
