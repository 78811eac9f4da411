"""Individual metrics: the counterfactual token fairness gap, the flip rate and
nearest-neighbour consistency of every model, the swap matrix of the transformer baseline,
and whether counterfactual data augmentation and logit pairing shrink the gap they target."""

from __future__ import annotations

from typing import Any

from amlab.experiments.fairness.group import kinds
from amlab.experiments.fairness.models import RUNS
from amlab.experiments.report import Context, Report, Section
from amlab.tasks.fairness import fmt_interval, plot_swap_matrix

MATRIX = "swap_matrix.png"


def _shown(runs: dict[str, Any]) -> str:
    """The baseline whose swap matrix is drawn: the transformer's if trained."""
    return "transformer" if "transformer" in runs else kinds(runs)[0]


def figure(result: None, ctx: Context, report: Report) -> None:
    runs = ctx.results[RUNS]["runs"]
    plot_swap_matrix(
        runs[_shown(runs)]["audit"]["individual"]["swap_matrices"], report.path(MATRIX)
    )


def write(result: None, ctx: Context, report: Report) -> dict[str, Any]:
    runs = ctx.results[RUNS]["runs"]
    report.section(
        "Individual metrics",
        "Per model: the counterfactual token fairness gap (mean |f(x) - f(x')| over every "
        "swap of a term for another of its group), the fraction of swaps that flip the "
        "decision, and nearest-neighbour consistency (5 neighbours, the model's own "
        "embeddings), each with its 95% bootstrap interval.",
    )

    rows = []
    for name, run in runs.items():
        ind = run["audit"]["individual"]
        worst = max(ind["groups"], key=lambda g: ind["groups"][g]["gap"]["value"])
        rows.append(
            (
                name,
                fmt_interval(ind["all"]["gap"], 4),
                fmt_interval(ind["all"]["flip_rate"], 4),
                fmt_interval(ind["consistency"], 4),
                f"{worst} ({ind['groups'][worst]['gap']['value']:.4f})",
            )
        )
    report.table(
        ["model", "counterfactual gap", "flip rate", "consistency", "group with the largest gap"],
        rows,
    )
    report.figure(
        MATRIX,
        f"{_shown(runs)}: mean score change when the row's term is swapped for the column's "
        "(blocks: token groups).",
    )
    shrinks = {}
    for kind in kinds(runs):
        for mitigation in ("cda", "clp"):
            name = f"{kind}+{mitigation}"
            if name not in runs:
                continue
            before = runs[kind]["audit"]["headline"]["counterfactual_gap"]
            after = runs[name]["audit"]["headline"]["counterfactual_gap"]
            shrinks[name] = after < before
            report.claim(
                f"{mitigation.upper()} shrinks the {kind} model's counterfactual token "
                "fairness gap.",
                f"{before:.4f} -> {after:.4f}",
                "shrinks" if after < before else "does not shrink",
            )
    return {"mitigation_shrinks_counterfactual_gap": shrinks}


SECTION = Section("Individual metrics", 0.03, lambda ctx, progress: None, write, figure)
