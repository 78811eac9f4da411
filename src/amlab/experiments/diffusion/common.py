"""What the sections of the diffusion reproduction share: the digits' noise schedule, where a
network's checkpoints go, and one network's training through the shared loop (resumable:
a rerun with the same settings loads the finished checkpoint)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from amlab.diffusion import VESchedule
from amlab.diffusion.networks import LearnedDenoiser
from amlab.experiments.report import Context, Progress
from amlab.tasks.diffusion import denoiser_schedule, train_denoiser


def digit_schedule(grid: Any) -> VESchedule:
    """The VE schedule of every section on digits: sigma in [sigma_min, digit_sigma_max]."""
    return VESchedule(grid.sigma_min, grid.digit_sigma_max)


def checkpoints(ctx: Context, network: str) -> Path:
    """Where the checkpoints of ``network`` (say ``circle-K9``) go: under the run's out dir,
    tagged with the run's mode and seed, so that a rerun of the same run resumes them."""
    return ctx.out / "checkpoints" / f"{network}-{'quick' if ctx.quick else 'full'}-seed{ctx.seed}"


def train_network(
    ctx: Context,
    network: str,
    model: LearnedDenoiser,
    data: Any,
    labels: Any,
    *,
    steps: int,
    batch: int,
    progress: Progress,
    until: float,
    log_normal: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` steps with the run's seed (4 checkpoints under
    :func:`checkpoints`, resumed when there; progress moves from 0 to ``until``) and put it
    in eval mode. Returns its record in metrics.json: steps, first loss, the mean loss of the
    last tenth of the steps, this run's training seconds and the step it resumed from
    (``steps`` when the finished network was loaded)."""
    config = denoiser_schedule(steps, ctx.seed, checkpoints=4)
    started = time.perf_counter()
    result = train_denoiser(
        model,
        data,
        config,
        labels=labels,
        batch_size=batch,
        label_dropout=0.2,
        log_normal=log_normal,
        out=checkpoints(ctx, network),
        resume=True,
        on_step=lambda done, total, m: progress(
            f"training (loss {m['loss']:.3g})", until * done / total
        ),
    )
    model.eval()
    tail = result.losses[-max(len(result.losses) // 10, 1) :]
    return {
        "steps": steps,
        "first_loss": result.losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": time.perf_counter() - started,
        "resumed_from": result.resumed_from,
    }


def reused_networks(trainings: list[dict[str, Any]], ctx: Context) -> str:
    """The report's sentence on which of a section's networks were trained in this run."""
    reused = sum(t["resumed_from"] == t["steps"] for t in trainings)
    return (
        f"{reused} of the {len(trainings)} networks were loaded from finished checkpoints in "
        f"{ctx.out / 'checkpoints'} rather than trained in this run (training in this run: "
        f"{sum(t['seconds'] for t in trainings):.0f} s)."
    )
