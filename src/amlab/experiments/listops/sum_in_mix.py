"""SUM inside a mix: SUM-rooted test accuracy of models trained on SUM alone and on
MAX+MED+SUM, size by size (from the sweep's records)."""

from __future__ import annotations

from typing import Any

import numpy as np

from amlab.experiments.listops.sweep import runs_on, sweep_of
from amlab.experiments.report import Context, Progress, Report, Section


def compute(ctx: Context, progress: Progress) -> list[dict[str, Any]]:
    """Per size trained both ways: the SUM test accuracy of each SUM-only seed
    (``sum_alone``) and the accuracy on SUM-rooted expressions of each MAX+MED+SUM seed
    (``sum_in_mix``)."""
    records = sweep_of(ctx).records
    alone = runs_on(records, ("sum",))
    mixed = runs_on(records, ("max", "med", "sum"))
    sizes = sorted({r["parameters"] for r in alone} & {r["parameters"] for r in mixed})
    return [
        {
            "parameters": p,
            "sum_alone": [r["test_accuracy"] for r in alone if r["parameters"] == p],
            "sum_in_mix": [
                r["test_per_op"].get("sum", float("nan")) for r in mixed if r["parameters"] == p
            ],
        }
        for p in sizes
    ]


def write(rows: list[dict[str, Any]], ctx: Context, report: Report) -> dict[str, Any]:
    means = [
        (r["parameters"], float(np.mean(r["sum_alone"])), float(np.mean(r["sum_in_mix"])))
        for r in rows
    ]
    report.section(
        "SUM inside a mix",
        "Accuracy on test expressions whose outermost operation is SUM, for models trained "
        "on SUM alone and on MAX+MED+SUM (same test protocol; in the mix a third of the "
        "training expressions have SUM at the root, and inner nodes mix all three).",
    )
    report.table(["parameters", "SUM alone", "SUM-rooted, in MAX+MED+SUM"], means)
    report.claim(
        "SUM is easier to learn inside a mix with MAX and MED than alone.",
        "; ".join(f"{p} params: alone {a:.3f}, in mix {m:.3f}" for p, a, m in means),
        easier_verdict(means),
    )
    return {"sum_in_mix": {"rows": rows}}


def easier_verdict(means: list[tuple[int, float, float]]) -> str:
    """Is SUM more accurate in the mix, from (parameters, mean alone, mean in the mix)?"""
    # sizes where both are near chance (0.1) say nothing either way
    informative = [(p, a, m) for p, a, m in means if max(a, m) >= 0.2]
    easier = [m > a + 0.02 for _, a, m in informative]
    harder = [m < a - 0.02 for _, a, m in informative]
    if not informative:
        return "undetermined: SUM stayed near chance (0.1) both ways"
    if all(easier):
        return "reproduced"
    return "partly" if any(easier) else "not reproduced" if any(harder) else "no difference"


SECTION = Section("sum in mix", 0.01, compute, write)
