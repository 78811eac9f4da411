"""Curriculum: MAX+MED first, then SUM, against SUM alone, size by size (from the sweep's
records)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from amlab.experiments.listops.sweep import save_accuracy_plot, sweep_of
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.tasks.figures import plt


@dataclass(frozen=True)
class Curriculum:
    """Per size with curriculum runs: the SUM test accuracy of each seed trained on SUM
    alone and of each seed pretrained on MAX+MED (``rows``); and the SUM threshold (the
    fewest parameters at which SUM alone is learned; None: not within the ladder)."""

    rows: list[dict[str, Any]]
    sum_threshold: int | None


def compute(ctx: Context, progress: Progress) -> Curriculum:
    sweep = sweep_of(ctx)
    return Curriculum(sweep.curriculum, sweep.thresholds["SUM"]["threshold"])


def figure(result: Curriculum, ctx: Context, report: Report) -> None:
    if not result.rows:
        return
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ps = [r["parameters"] for r in result.rows]
    ax.plot(ps, [np.mean(r["alone"]) for r in result.rows], marker="o", label="SUM alone")
    ax.plot(
        ps,
        [np.mean(r["curriculum"]) for r in result.rows],
        marker="s",
        label="MAX+MED, then SUM",
    )
    save_accuracy_plot(fig, ax, report, "curriculum.png", ctx.grid, "SUM test accuracy")


def write(result: Curriculum, ctx: Context, report: Report) -> dict[str, Any]:
    rows, grid, sum_t = result.rows, ctx.grid, result.sum_threshold
    if not rows:
        return {"curriculum": rows}
    report.section(
        "Curriculum: MAX+MED first, then SUM",
        f"Up to {grid.curriculum_steps} steps on MAX+MED (stopping early at "
        f"{grid.base().stop_at:g} validation accuracy), then up to {grid.steps} steps on SUM "
        "(the SUM phase has the same budget and early stopping as SUM alone; the curriculum "
        "run therefore has more steps in all).",
    )
    report.table(
        ["parameters", "SUM alone (per seed)", "MAX+MED then SUM (per seed)"],
        [
            (
                r["parameters"],
                ", ".join(f"{a:.3f}" for a in r["alone"]),
                ", ".join(f"{a:.3f}" for a in r["curriculum"]),
            )
            for r in rows
        ],
    )
    report.figure("curriculum.png", "SUM accuracy with and without MAX+MED pretraining.")
    below = [r for r in rows if sum_t is None or r["parameters"] < sum_t]
    rescued = [
        r["parameters"]
        for r in below
        if learned(r["curriculum"], grid.target) and not learned(r["alone"], grid.target)
    ]
    better = [
        r["parameters"] for r in below if np.mean(r["curriculum"]) > np.mean(r["alone"]) + 0.02
    ]
    report.claim(
        "Pretraining on MAX+MED lets models below the SUM threshold learn SUM.",
        f"SUM threshold {sum_t or 'not within the ladder'}; below it, learned only with "
        f"the curriculum at {rescued or 'no size'}; curriculum more accurate at "
        f"{better or 'no size'}",
        "reproduced" if rescued else ("partly" if better else "not reproduced"),
    )
    return {"curriculum": rows}


def learned(accuracies: list[float], target: float) -> bool:
    """Whether at least half of the seeds reached ``target`` (the study's 'learned')."""
    return sum(a >= target for a in accuracies) >= len(accuracies) / 2


SECTION = Section("curriculum", 0.01, compute, write, figure)
