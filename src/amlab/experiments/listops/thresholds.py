"""Threshold per task mix: the smallest model on the size ladder that learns each mix.

Its compute is the sweep itself (every run of the study, resumable), which the later
sections read from ``ctx.results``.
"""

from __future__ import annotations

from typing import Any

from amlab.experiments.listops.sweep import (
    RUNS_THE_SWEEP,
    Sweep,
    mean_by_size,
    run_sweep,
    runs_on,
    save_accuracy_plot,
)
from amlab.experiments.report import Context, Report, Section
from amlab.tasks.figures import plt
from amlab.tasks.listops_sweep import MIXES, mix_name

SINGLES = ("MAX", "MIN", "MED")


def figure(sweep: Sweep, ctx: Context, report: Report) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for ops in MIXES:
        mix = tuple(ops.split(","))
        runs = runs_on(sweep.records, mix)
        sizes, means = mean_by_size(sweep.thresholds[mix_name(mix)])
        (line,) = ax.plot(sizes, means, marker="o", label=mix_name(mix))
        ax.scatter(
            [r["parameters"] for r in runs],
            [r["test_accuracy"] for r in runs],
            color=line.get_color(),
            s=12,
            alpha=0.5,
        )
    save_accuracy_plot(
        fig,
        ax,
        report,
        "accuracy_vs_parameters.png",
        ctx.grid,
        "test accuracy (dots: single seeds)",
    )


def write(sweep: Sweep, ctx: Context, report: Report) -> dict[str, Any]:
    table = sweep.thresholds
    report.section(
        "Threshold per task mix",
        "The smallest model on the ladder at which the mix is learned "
        f"(test accuracy >= {ctx.grid.target:g} for at least half of the seeds).",
    )
    rows = []
    for ops in MIXES:
        row = table[mix_name(ops.split(","))]
        sizes = "; ".join(
            f"{s['parameters']}: {s['learned']}/{s['seeds']} "
            f"(acc {', '.join(f'{a:.3f}' for a in s['accuracies'])})"
            for s in row["sizes"]
        )
        rows.append((mix_name(ops.split(",")), row["threshold"] or "not within the ladder", sizes))
    report.table(["mix", "threshold (parameters)", "per size: seeds learned (test accuracy)"], rows)
    report.figure("accuracy_vs_parameters.png", "Test accuracy against parameter count per mix.")
    sum_t = table["SUM"]["threshold"]
    singles = {m: table[m]["threshold"] for m in SINGLES}
    lowest = sum_lowest_everywhere(table)
    report.claim(
        "SUM (mod 10) alone is the hardest single operation: it needs the most parameters.",
        f"thresholds: SUM {sum_t or 'none'}, "
        + ", ".join(f"{m} {t or 'none'}" for m, t in singles.items())
        + f"; SUM has the lowest mean accuracy at every size: {lowest}",
        hardest_verdict(table),
    )
    runs = [
        {k: r[k] for k in ("key", "parameters", "test_accuracy", "test_per_op", "steps_done")}
        for r in sweep.records
    ]
    return {"thresholds": table, "runs": runs}


def sum_lowest_everywhere(table: dict[str, dict[str, Any]]) -> bool:
    """Whether SUM's mean accuracy is at most every single operation's at every size."""
    means = {m: mean_by_size(row)[1] for m, row in table.items()}
    return all(
        means["SUM"][i] <= min(means[m][i] for m in SINGLES) for i in range(len(means["SUM"]))
    )


def hardest_verdict(table: dict[str, dict[str, Any]]) -> str:
    """Is SUM the hardest single operation: its threshold at least every other's and above
    one of them (no threshold counts as infinitely many parameters), and its mean accuracy
    the lowest at every size?"""
    sum_t = table["SUM"]["threshold"]
    singles = [table[m]["threshold"] for m in SINGLES]
    if sum_t is None and not any(singles):
        return "undetermined: no single operation was learned within the ladder"
    big = float("inf")
    hardest = all((sum_t or big) >= (t or big) for t in singles) and any(
        (sum_t or big) > (t or big) for t in singles
    )
    lowest = sum_lowest_everywhere(table)
    if hardest and lowest:
        return "reproduced"
    return "partly" if hardest or lowest else "not reproduced"


SECTION = Section(RUNS_THE_SWEEP, 0.85, run_sweep, write, figure)
