"""(c) Memorisation against generalisation on the digits: the fraction of samples that copy a
training image as the training set grows, learned conv net against the empirical denoiser;
(c') classifier-free guidance of the class-conditional net of the largest training set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from amlab.diffusion import ConvDenoiser, EmpiricalDenoiser
from amlab.experiments.diffusion.common import (
    digit_schedule,
    reused_networks,
    train_network,
)
from amlab.experiments.report import Context, Progress, Report, Section, part
from amlab.tasks.diffusion import draw_samples, nearest_training
from amlab.tasks.figures import image_grid, plt, save_figure

#: a sample counts as memorised when its nearest training image is closer than the median
#: distance from a held-out digit to its nearest neighbour in the pool, divided by this
MEMORISED_DIVISOR = 3


@dataclass(frozen=True)
class Digits:
    """pool: the number of labelled digits training sets are drawn from; typical: the median
    distance from a held-out digit to its nearest one in the pool; threshold: the memorised
    distance; records: one per training-set size N (its metrics); gallery: (label, images)
    rows of learned samples and their nearest training images; accuracy: guidance scale ->
    share of prompted samples in the prompted class; guided: (label, one image per class)
    rows, one per guidance scale."""

    pool: int
    typical: float
    threshold: float
    records: list[dict[str, Any]]
    gallery: list[tuple[str, torch.Tensor]]
    accuracy: dict[float, float]
    guided: list[tuple[str, torch.Tensor]]


def pool_split(ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run's images shuffled with its seed: (pool images, their labels, the last
    ``grid.holdout`` images held out). A training set of N is the pool's first N."""
    images = ctx.images
    g = torch.Generator().manual_seed(ctx.seed + 11)
    order = torch.randperm(len(images), generator=g)
    held, pool = order[-ctx.grid.holdout :], order[: -ctx.grid.holdout]
    return images.images[pool], images.labels[pool], images.images[held]


def compute(ctx: Context, progress: Progress) -> Digits:
    grid = ctx.grid
    x_pool, y_pool, x_held = pool_split(ctx)
    sizes = tuple(n for n in grid.digit_sizes if n <= len(x_pool))
    typical = nearest_training(x_held, x_pool)[1].median().item()
    threshold = typical / MEMORISED_DIVISOR
    records, gallery, model = [], [], None
    share = 0.9 / len(sizes)
    for i, n in enumerate(sizes):
        within = part(progress, f"N={n}", i * share, share)
        model, record, shown = _memorisation(ctx, x_pool[:n], y_pool[:n], x_held, threshold, within)
        records.append(record)
        gallery += shown
    progress("guidance", 0.9)
    accuracy, guided = _guidance(model, ctx, x_pool, y_pool)
    return Digits(len(x_pool), typical, threshold, records, gallery, accuracy, guided)


def digit_network(ctx: Context, train_x, train_y, progress: Progress, until: float = 0.8):
    """The class-conditional conv net of the grid's ``digit_*`` sizes trained on the N
    images train_x (labels train_y) with the run's seed (checkpoints ``digits-N<N>``, reused
    when finished); progress moves from 0 to ``until``. Returns (the net, its training
    record)."""
    grid, n = ctx.grid, len(train_x)
    model = ConvDenoiser(
        ctx.images.shape,
        digit_schedule(grid),
        channels=grid.digit_channels,
        blocks=grid.digit_blocks,
        num_classes=10,
        sigma_data=0.4,
        seed=ctx.seed + n,
    )
    training = train_network(
        ctx,
        f"digits-N{n}",
        model,
        train_x,
        train_y,
        steps=grid.digit_steps,
        batch=grid.digit_batch,
        progress=progress,
        until=until,
        log_normal=grid.digit_log_normal,
    )
    return model, training


def _memorisation(ctx: Context, train_x, train_y, x_held, threshold: float, progress: Progress):
    """Train the conditional net on the N images train_x, then draw samples of it and of the
    empirical denoiser of the same images. Returns (the net, the record of N, the gallery rows
    of the net's first 10 samples and their nearest training images)."""
    grid, n = ctx.grid, len(train_x)
    model, training = digit_network(ctx, train_x, train_y, progress)
    progress("sampling", 0.8)
    record: dict[str, Any] = {"N": n, "training": training}
    empirical = EmpiricalDenoiser(train_x, model.schedule)
    for name, denoiser in (("learned", model), ("empirical", empirical)):
        xs = draw_samples(denoiser, grid.digit_samples, grid.sampler_steps, ctx.seed + 5)
        d_train = nearest_training(xs, train_x)[1]
        d_held = nearest_training(xs, x_held)[1]
        record[name] = {
            "memorised": (d_train < threshold).float().mean().item(),
            "mean_distance_train": d_train.mean().item(),
            "mean_distance_heldout": d_held.mean().item(),
        }
        if name == "learned":
            first = xs[:10]
    nearest = train_x[nearest_training(first, train_x)[0]]
    return model, record, [(f"N={n} sample", first), ("nearest train", nearest)]


def _guidance(model, ctx: Context, x_pool, y_pool):
    """Samples of ``model`` prompted with each class at each guidance scale. Returns ({scale:
    share whose nearest pool image has the prompted label}, rows of one sample per class)."""
    grid = ctx.grid
    per = grid.guidance_per_class
    labels = torch.arange(10).repeat_interleave(per)
    accuracy, guided = {}, []
    for w in grid.guidance_scales:
        xs = draw_samples(model, len(labels), grid.sampler_steps, ctx.seed + 3, labels, w)
        predicted = y_pool[nearest_training(xs, x_pool)[0]]
        accuracy[w] = (predicted == labels).float().mean().item()
        guided.append((f"w={w:g}", xs[::per]))
    return accuracy, guided


def figure(result: Digits, ctx: Context, report: Report) -> None:
    """The memorised share and the distances against N; the samples; the guided samples."""
    sizes = [r["N"] for r in result.records]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, style in (("learned", "o-"), ("empirical", "s--")):
        axes[0].plot(sizes, [r[name]["memorised"] for r in result.records], style, label=name)
        for key, where, alpha in (("train", "training", 1.0), ("heldout", "held-out", 0.5)):
            axes[1].plot(
                sizes,
                [r[name][f"mean_distance_{key}"] for r in result.records],
                style,
                alpha=alpha,
                label=f"{name}: to {where} set",
            )
    axes[0].axhline(0, color="grey", lw=0.5)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training images N")
    axes[0].set_ylabel(f"samples memorised (NN distance < {result.threshold:.2f})")
    axes[1].set_ylabel("mean distance of a sample to its nearest image")
    axes[0].legend()
    axes[1].legend(fontsize=7)
    save_figure(fig, report.path("diffusion_memorisation.png"), dpi=100)
    shape = ctx.images.shape
    image_grid(
        result.gallery,
        shape,
        report.path("diffusion_digit_samples.png"),
        title="learned samples and the nearest training image",
    )
    image_grid(
        result.guided,
        shape,
        report.path("diffusion_guidance.png"),
        title="classifier-free guidance: one sample per class",
    )


def write(result: Digits, ctx: Context, report: Report) -> dict[str, Any]:
    _write_memorisation(result, ctx, report)
    _write_guidance(result, ctx, report)
    return {
        "digits": {
            "threshold": result.threshold,
            "typical_distance": result.typical,
            "by_N": result.records,
            "guidance": {"accuracy": {str(w): a for w, a in result.accuracy.items()}},
        }
    }


def _write_memorisation(result: Digits, ctx: Context, report: Report) -> None:
    grid, records, typical = ctx.grid, result.records, result.typical
    report.section(
        "(c) Digits: memorisation against generalisation",
        f"Training sets of N digits drawn from {result.pool} (the other {grid.holdout} are "
        f"held out), VE schedule sigma in [{grid.sigma_min}, {grid.digit_sigma_max}]. For each "
        f"N a class-conditional conv net ({grid.digit_channels} channels, {grid.digit_blocks} "
        f"residual blocks, labels dropped with probability 0.2) is trained for "
        f"{grid.digit_steps} steps of batch {grid.digit_batch} (log s ~ "
        f"N{grid.digit_log_normal}), and {grid.digit_samples} "
        f"unconditional samples are drawn (Heun, {grid.sampler_steps} steps, then one "
        "denoising step) from it and from "
        "the empirical denoiser of the same N images. A sample is *memorised* when its nearest "
        f"training image is closer than {result.threshold:.3f}, a third of the median distance "
        f"from a held-out digit to its nearest neighbour in the pool ({typical:.3f}). "
        + reused_networks([r["training"] for r in records], ctx),
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
    always = min(r["empirical"]["memorised"] for r in records)
    report.claim(
        "With few training images a diffusion model memorises (samples copy training images); "
        "with many it generalises, while the empirical (ideal) denoiser always memorises",
        f"learned: {first['learned']['memorised']:.0%} memorised at N = {first['N']}, "
        f"{last['learned']['memorised']:.0%} at N = {last['N']}; empirical: "
        f"{always:.0%} or more at every N. The "
        f"learned samples at N = {last['N']} lie {last['learned']['mean_distance_heldout']:.2f} "
        f"from the nearest held-out digit on average (a held-out digit lies {typical:.2f} from "
        "its nearest neighbour): they copy nothing, but their quality is limited by the "
        "CPU training budget",
        "reproduced"
        if first["learned"]["memorised"] > last["learned"]["memorised"] + 0.2 and always > 0.9
        else "partly",
    )


def _write_guidance(result: Digits, ctx: Context, report: Report) -> None:
    accuracy = result.accuracy
    report.section(
        "(c') Classifier-free guidance",
        f"The conditional net of the largest N, prompted with each class "
        f"({ctx.grid.guidance_per_class} samples per class). A sample counts as the prompted "
        "class when its nearest image in the labelled pool has that label. Guidance scale "
        "w = 0 is the unconditional model, w = 1 the conditional one:\n\n"
        + "\n".join(
            f"- w = {w:g}: {a:.0%} of samples show the prompted class" for w, a in accuracy.items()
        ),
    )
    report.figure(
        "diffusion_guidance.png",
        "Class-prompted samples (columns: classes 0-9) at each guidance scale (rows).",
    )
    scales = sorted(accuracy)
    report.claim(
        "Classifier-free guidance lets a class-conditional model be prompted by class",
        ", ".join(f"w = {w:g}: {accuracy[w]:.0%}" for w in scales)
        + " of samples in the prompted class",
        "reproduced" if accuracy[scales[-1]] > max(accuracy[scales[0]] + 0.3, 0.6) else "partly",
    )


SECTION = Section("digits", 0.5, compute, write, figure)
