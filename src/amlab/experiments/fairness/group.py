"""Group metrics: the planted bias found in the baselines (over-prediction for the terms
planted mostly toxic, under-prediction for those planted mostly harmless), per-term false
positive rates with intervals, and whether reweighting shrinks the gap it targets (the
equalized odds difference)."""

from __future__ import annotations

from typing import Any

import numpy as np

from amlab.data.fairness import PLANTED_BIAS, all_terms
from amlab.experiments.fairness.models import RUNS
from amlab.experiments.report import Context, Report, Section
from amlab.tasks.fairness import error_bars
from amlab.tasks.figures import plt, save_figure

OVER = tuple(t for t, r in PLANTED_BIAS.items() if r > 0.5)
UNDER = tuple(t for t, r in PLANTED_BIAS.items() if r < 0.5)


def planted_gaps(audit: dict[str, Any]) -> dict[str, float]:
    """Mean FPR and BPSN AUC of the terms planted mostly toxic, mean FPR and BNSP AUC of
    those planted mostly harmless, and the same means over every other term."""
    table = audit["group"]["subgroups"]
    others = [t for t in all_terms(audit["groups"]) if t not in PLANTED_BIAS]

    def mean(terms, metric):
        return float(np.mean([table[t][metric]["value"] for t in terms]))

    return {
        "over_fpr": mean(OVER, "fpr"),
        "under_fpr": mean(UNDER, "fpr"),
        "others_fpr": mean(others, "fpr"),
        "over_bpsn_auc": mean(OVER, "bpsn_auc"),
        "others_bpsn_auc": mean(others, "bpsn_auc"),
        "under_bnsp_auc": mean(UNDER, "bnsp_auc"),
        "others_bnsp_auc": mean(others, "bnsp_auc"),
    }


def bias_found(gaps: dict[str, float]) -> bool:
    """Over-prediction for the planted-toxic terms (higher FPR, lower BPSN AUC than the
    others) and under-prediction for the planted-harmless ones (lower BNSP AUC)."""
    return (
        gaps["over_fpr"] > gaps["others_fpr"]
        and gaps["over_bpsn_auc"] < gaps["others_bpsn_auc"]
        and gaps["under_bnsp_auc"] < gaps["others_bnsp_auc"]
    )


def kinds(runs: dict[str, Any]) -> list[str]:
    return [name for name in runs if "+" not in name]


def figure(result: None, ctx: Context, report: Report) -> None:
    runs = ctx.results[RUNS]["runs"]
    groups = ctx.results[RUNS]["groups"]
    terms = all_terms(groups)
    x = np.arange(len(terms))
    fig, axes = plt.subplots(
        len(kinds(runs)), 1, figsize=(10, 2.8 * len(kinds(runs))), squeeze=False
    )
    for ax, kind in zip(axes[:, 0], kinds(runs), strict=True):
        names = [n for n in runs if n.split("+")[0] == kind]
        for j, name in enumerate(names):
            table = runs[name]["audit"]["group"]["subgroups"]
            value, err = error_bars([table[t]["fpr"] for t in terms])
            offset = (j - (len(names) - 1) / 2) * 0.18
            ax.errorbar(x + offset, value, yerr=err, fmt="o", ms=3, capsize=1.5, lw=0.8, label=name)
        for t in OVER + UNDER:
            ax.axvspan(
                terms.index(t) - 0.45,
                terms.index(t) + 0.45,
                color="tab:red" if t in OVER else "tab:green",
                alpha=0.12,
                lw=0,
            )
        ax.set_ylabel("false positive rate")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(x, terms, rotation=90, fontsize=7)
        ax.legend(fontsize=7, ncol=len(names), loc="upper left")
    save_figure(fig, report.path("fpr_per_term.png"))


def write(result: None, ctx: Context, report: Report) -> dict[str, Any]:
    runs = ctx.results[RUNS]["runs"]
    report.section(
        "Group metrics",
        "Per model: the equalized odds difference (largest minus smallest TPR or FPR) over "
        "all 34 terms and its mean over the 7 token groups, the demographic parity "
        "difference over all terms, the worst BPSN AUC, and the planted terms' rates against "
        f"the others' (planted toxic: {', '.join(OVER)}; planted harmless: "
        f"{', '.join(UNDER)}). Intervals are in metrics.json (`audits`).",
    )
    rows, gaps = [], {}
    for name, run in runs.items():
        h = run["audit"]["headline"]
        gaps[name] = planted_gaps(run["audit"])
        g = gaps[name]
        rows.append(
            (
                name,
                h["equalized_odds_difference"],
                h["mean_group_equalized_odds_difference"],
                h["demographic_parity_difference"],
                h["worst_bpsn_auc"],
                f"{g['over_fpr']:.3f} / {g['under_fpr']:.3f} / {g['others_fpr']:.3f}",
                f"{g['over_bpsn_auc']:.3f} / {g['others_bpsn_auc']:.3f}",
                f"{g['under_bnsp_auc']:.3f} / {g['others_bnsp_auc']:.3f}",
            )
        )
    report.table(
        [
            "model",
            "EO difference (all terms)",
            "EO difference (mean over groups)",
            "DP difference",
            "worst BPSN AUC",
            "FPR planted toxic / harmless / others",
            "BPSN AUC planted toxic / others",
            "BNSP AUC planted harmless / others",
        ],
        rows,
    )
    report.figure(
        "fpr_per_term.png",
        "False positive rate per term with 95% bootstrap intervals (red band: planted mostly "
        "toxic, green: mostly harmless).",
    )
    for kind in kinds(runs):
        g = gaps[kind]
        report.claim(
            f"A {kind} model trained on the biased corpus over-predicts toxicity for the terms "
            "planted mostly toxic and under-predicts for those planted mostly harmless.",
            f"FPR {g['over_fpr']:.3f} vs {g['others_fpr']:.3f} for other terms; BPSN AUC "
            f"{g['over_bpsn_auc']:.3f} vs {g['others_bpsn_auc']:.3f}; BNSP AUC of the harmless "
            f"ones {g['under_bnsp_auc']:.3f} vs {g['others_bnsp_auc']:.3f}",
            "found" if bias_found(g) else "not found",
        )
    shrinks = {}
    for kind in kinds(runs):
        name = f"{kind}+reweight"
        if name in runs:
            before = runs[kind]["audit"]["headline"]["mean_group_equalized_odds_difference"]
            after = runs[name]["audit"]["headline"]["mean_group_equalized_odds_difference"]
            shrinks[name] = after < before
            report.claim(
                f"Reweighting (group-fair) shrinks the {kind} model's equalized odds difference.",
                f"mean over groups {before:.3f} -> {after:.3f}",
                "shrinks" if after < before else "does not shrink",
            )
    return {"planted_gaps": gaps, "reweighting_shrinks_group_gap": shrinks}


SECTION = Section("Group metrics", 0.03, lambda ctx, progress: None, write, figure)
