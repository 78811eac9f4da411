"""The phase curve: the share of memorised, spurious and generalised samples against the
number N of training images, over several seeds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from amlab.analysis.memorisation import AUDIT_CLASSES, Audit, audit
from amlab.diffusion import EmpiricalDenoiser
from amlab.errors import AmlabError
from amlab.experiments.diffusion.common import reused_networks
from amlab.experiments.diffusion.digits import digit_network, pool_split
from amlab.experiments.report import Context, Progress, Report, Section, part
from amlab.tasks.diffusion import draw_samples
from amlab.tasks.figures import image_grid, plt, save_figure

#: the share of spurious samples at the transition that counts as the spurious phase
SPURIOUS_VISIBLE = 0.1


@dataclass(frozen=True)
class Phase:
    """pool: the number of digits training sets are drawn from; records: one per (N, seed)
    with the audit's scale (fitted to that training set) and the learned net's and the
    empirical denoiser's class fractions; examples: (label, images) rows of a learned sample
    of each class and its nearest training image."""

    pool: int
    records: list[dict[str, Any]]
    examples: list[tuple[str, torch.Tensor]]


def compute(ctx: Context, progress: Progress) -> Phase:
    grid = ctx.grid
    runs = [(n, seed) for seed in grid.seeds for n in grid.digit_sizes]
    pool, records, found = 0, [], {}
    share = 1.0 / len(runs)
    for i, (n, seed) in enumerate(runs):
        within = part(progress, f"N={n} seed {seed}", i * share, share)
        run_ctx = dataclasses.replace(ctx, seed=seed)
        x_pool, y_pool, _ = pool_split(run_ctx)
        if n > len(x_pool):
            continue
        pool = len(x_pool)
        train_x = x_pool[:n]
        scale = Audit.fit(train_x)  # relative to how close the training images lie
        model, training = digit_network(run_ctx, train_x, y_pool[:n], within, until=0.85)
        within("sampling and auditing", 0.85)
        record: dict[str, Any] = {
            "N": n,
            "seed": seed,
            "scale": dataclasses.asdict(scale),
            "training": training,
        }
        empirical = EmpiricalDenoiser(train_x, model.schedule)
        # the net draws class-prompted samples (w = 1: its conditional model), the classes
        # those of training images drawn with the seed; the empirical denoiser has no classes
        g = torch.Generator().manual_seed(seed + 7)
        labels = y_pool[:n][torch.randint(n, (grid.digit_samples,), generator=g)]
        for name, denoiser, prompt in (("learned", model, labels), ("empirical", empirical, None)):
            xs = draw_samples(denoiser, grid.digit_samples, grid.sampler_steps, seed + 5, prompt)
            result = audit(xs, train_x, scale, steps=grid.audit_steps)
            record[name] = {
                **result.fractions(),
                "mean_nearest_distance": float(result.distance.mean()),
            }
            if name == "learned":
                for c, label in enumerate(AUDIT_CLASSES):
                    rows = (result.classes == c).nonzero().reshape(-1)
                    if len(rows) and label not in found:
                        k = int(rows[0])
                        found[label] = (xs[k], train_x[result.nearest[k]], n)
        records.append(record)
    if not records:
        raise AmlabError(
            f"every training-set size of {grid.digit_sizes} is larger than the pool of "
            "digits; pass smaller sizes."
        )
    examples = [
        (f"{label} (N={n})", torch.stack([sample, nearest]))
        for label, (sample, nearest, n) in found.items()
    ]
    return Phase(pool, records, examples)


def by_size(records: list[dict[str, Any]], who: str) -> list[dict[str, Any]]:
    """Per N: the mean and the spread (min, max) over seeds of each class's share."""
    out = []
    for n in sorted({r["N"] for r in records}):
        mine = [r[who] for r in records if r["N"] == n]
        row: dict[str, Any] = {"N": n, "seeds": len(mine)}
        for label in AUDIT_CLASSES:
            values = [m[label] for m in mine]
            row[label] = sum(values) / len(values)
            row[f"{label}_range"] = (min(values), max(values))
        out.append(row)
    return out


def figure(result: Phase, ctx: Context, report: Report) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, who in zip(axes, ("learned", "empirical"), strict=True):
        rows = by_size(result.records, who)
        sizes = [r["N"] for r in rows]
        for label, style in zip(AUDIT_CLASSES, ("o-", "s-", "^-"), strict=True):
            lo = [r[f"{label}_range"][0] for r in rows]
            hi = [r[f"{label}_range"][1] for r in rows]
            ax.plot(sizes, [r[label] for r in rows], style, label=label)
            ax.fill_between(sizes, lo, hi, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("training images N")
        ax.set_title(f"{who} denoiser")
    axes[0].set_ylabel("share of samples")
    axes[0].legend()
    save_figure(fig, report.path("memorisation_phase.png"), dpi=100)
    if result.examples:
        image_grid(
            result.examples,
            ctx.images.shape,
            report.path("memorisation_examples.png"),
            title="a learned sample of each class and its nearest training image",
        )


def write(result: Phase, ctx: Context, report: Report) -> dict[str, Any]:
    grid = ctx.grid
    scales = [r["scale"] for r in result.records]
    threshold = (min(s["threshold"] for s in scales), max(s["threshold"] for s in scales))
    level = (min(s["noise_level"] for s in scales), max(s["noise_level"] for s in scales))
    learned, empirical = by_size(result.records, "learned"), by_size(result.records, "empirical")
    report.section(
        "The phase curve: memorised, spurious, generalised",
        f"Training sets of N digits (the first N of a pool of {result.pool} shuffled by each "
        f"seed; seeds {', '.join(map(str, grid.seeds))}). For each, the class-conditional conv "
        f"net of the diffusion reproduction ({grid.digit_channels} channels, "
        f"{grid.digit_blocks} blocks, {grid.digit_steps} steps of batch {grid.digit_batch}) "
        f"and the empirical denoiser of the same N images each draw {grid.digit_samples} "
        f"samples (Heun, {grid.sampler_steps} steps; the net's prompted with the classes of "
        "training images drawn at random, guidance 1, the empirical denoiser's unconditional). "
        "The audit classes a sample "
        "*memorised* when a training image lies within a threshold, *spurious* when attention "
        "steps of the training set's LSE energy at a noise level s (the exact empirical "
        "denoiser, applied until it stops) carry it to a minimum within the threshold that is "
        "no training image, and *generalised* otherwise. Threshold and s are a third and a "
        "half of the median distance between a training image and its nearest other one "
        "(relative to how close the training images lie, as Carlini et al. measure "
        f"memorisation): threshold {threshold[0]:.3f} to {threshold[1]:.3f}, s "
        f"{level[0]:.3f} to {level[1]:.3f} from the largest to the smallest N. "
        + reused_networks([r["training"] for r in result.records], ctx),
    )
    report.table(
        [
            "N",
            "seeds",
            "learned: memorised",
            "spurious",
            "generalised",
            "empirical: memorised",
            "spurious",
            "generalised",
        ],
        [
            [
                a["N"],
                a["seeds"],
                *(_share(a, label) for label in AUDIT_CLASSES),
                *(_share(b, label) for label in AUDIT_CLASSES),
            ]
            for a, b in zip(learned, empirical, strict=True)
        ],
    )
    report.figure(
        "memorisation_phase.png",
        "Share of each class against N (mean over seeds; the band spans the seeds).",
    )
    if result.examples:
        report.figure(
            "memorisation_examples.png",
            "A learned sample of each class (left) and its nearest training image (right).",
        )
    first, last = learned[0], learned[-1]
    peak = max(learned, key=lambda r: r["spurious"])
    interior = learned[0] is not peak and learned[-1] is not peak
    moves = first["memorised"] > last["memorised"] and last["generalised"] > first["generalised"]
    report.claim(
        "As N grows, samples move from memorised training examples through spurious states "
        "(mixtures that are no training example) to generalisation; spurious states appear at "
        "the transition",
        f"learned: memorised {first['memorised']:.0%} at N = {first['N']} and "
        f"{last['memorised']:.0%} at N = {last['N']}; generalised {first['generalised']:.0%} "
        f"and {last['generalised']:.0%}; spurious largest ({peak['spurious']:.0%}) at "
        f"N = {peak['N']}",
        # spurious states must be a visible share at the transition, not one stray sample
        "reproduced"
        if moves and interior and peak["spurious"] >= SPURIOUS_VISIBLE
        else "partly"
        if moves
        else "not reproduced",
    )
    always = min(r["memorised"] for r in empirical)
    report.claim(
        "The exact (empirical) denoiser only reproduces its training examples",
        f"at least {always:.0%} of its samples are memorised at every N",
        "reproduced" if always > 0.9 else "partly",
    )
    return {
        "memorisation": {
            "pool": result.pool,
            "runs": result.records,
            "learned_by_N": learned,
            "empirical_by_N": empirical,
        }
    }


def _share(row: dict[str, Any], label: str) -> str:
    lo, hi = row[f"{label}_range"]
    spread = f" ({lo:.0%}-{hi:.0%})" if row["seeds"] > 1 else ""
    return f"{row[label]:.0%}{spread}"


SECTION = Section("phase", 1.0, compute, write, figure)
