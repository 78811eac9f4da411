"""The study's point on our numbers: do group and individual metrics rank the models
differently? Models are ranked by a group metric (the equalized odds difference, mean over
the token groups) and by an individual one (the counterfactual token fairness gap), lower
being fairer; the two rankings are compared by Kendall's tau-b, by the pairs of models they
order oppositely, and by which model each calls fairest."""

from __future__ import annotations

from itertools import combinations
from typing import Any

from amlab.experiments.fairness.models import RUNS
from amlab.experiments.report import Context, Report, Section

#: (metric in an audit's headline, what it is called in the report), lower is fairer
GROUP, INDIVIDUAL = (
    ("mean_group_equalized_odds_difference", "EO difference"),
    ("counterfactual_gap", "counterfactual gap"),
)
#: every metric of each kind compared in the robustness table: (headline key, name, sign);
#: the sign makes lower fairer (AUCs and consistency are fairer when higher)
GROUP_METRICS = (
    (GROUP[0], GROUP[1], 1.0),
    ("demographic_parity_difference", "DP difference", 1.0),
    ("worst_bpsn_auc", "worst BPSN AUC", -1.0),
)
INDIVIDUAL_METRICS = (
    (INDIVIDUAL[0], INDIVIDUAL[1], 1.0),
    ("flip_rate", "flip rate", 1.0),
    ("consistency", "NN consistency", -1.0),
)


def compare(values: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """For {model: (group metric, individual metric)}: the rank of each model by each
    (1 fairest, ties share the lowest rank), Kendall's tau-b, the pairs ordered oppositely,
    and the fairest model(s) by each."""
    from scipy.stats import kendalltau

    names = list(values)
    group = [values[n][0] for n in names]
    individual = [values[n][1] for n in names]

    def ranks(xs):
        return {n: 1 + sum(y < x for y in xs) for n, x in zip(names, xs, strict=True)}

    opposite = [
        (a, b)
        for a, b in combinations(names, 2)
        if (values[a][0] - values[b][0]) * (values[a][1] - values[b][1]) < 0
    ]
    tau = kendalltau(group, individual).statistic if len(names) > 1 else float("nan")
    return {
        "group_rank": ranks(group),
        "individual_rank": ranks(individual),
        "kendall_tau": float(tau),
        "opposite_pairs": opposite,
        "pairs": len(names) * (len(names) - 1) // 2,
        "fairest_by_group": [n for n in names if values[n][0] == min(group)],
        "fairest_by_individual": [n for n in names if values[n][1] == min(individual)],
    }


def verdict(c: dict[str, Any]) -> str:
    """reproduced: the two kinds call different models fairest; partly: the same fairest
    model but some pairs ordered oppositely; not reproduced: no pair ordered oppositely."""
    if not set(c["fairest_by_group"]) & set(c["fairest_by_individual"]):
        return "reproduced"
    if c["opposite_pairs"]:
        opposite = len(c["opposite_pairs"])
        return f"partly: same fairest model, {opposite} of {c['pairs']} pairs ordered oppositely"
    return "not reproduced"


def write(result: None, ctx: Context, report: Report) -> dict[str, Any]:
    runs = ctx.results[RUNS]["runs"]
    values = {
        name: (run["audit"]["headline"][GROUP[0]], run["audit"]["headline"][INDIVIDUAL[0]])
        for name, run in runs.items()
    }
    c = compare(values)
    report.section(
        "Do group and individual metrics rank the models alike?",
        f"Each model ranked by the group metric ({GROUP[1]}, mean over the token groups) and "
        f"by the individual one ({INDIVIDUAL[1]}); rank 1 is the fairest, ties share a rank.",
    )
    report.table(
        ["model", GROUP[1], "group rank", INDIVIDUAL[1], "individual rank"],
        [
            (n, values[n][0], c["group_rank"][n], values[n][1], c["individual_rank"][n])
            for n in values
        ],
    )
    report.text(
        f"Kendall's tau-b between the two: {c['kendall_tau']:.3f}. Pairs ordered oppositely: "
        + (", ".join(f"{a} / {b}" for a, b in c["opposite_pairs"]) or "none")
        + f". Fairest by the group metric: {', '.join(c['fairest_by_group'])}; by the "
        f"individual metric: {', '.join(c['fairest_by_individual'])}."
    )
    headlines = {name: run["audit"]["headline"] for name, run in runs.items()}
    pairs = {}
    for gkey, gname, gsign in GROUP_METRICS:
        for ikey, iname, isign in INDIVIDUAL_METRICS:
            pairs[f"{gname} vs {iname}"] = compare(
                {n: (gsign * h[gkey], isign * h[ikey]) for n, h in headlines.items()}
            )
    report.text(
        "The same comparison for every pair of a group metric (EO difference, DP difference, "
        "worst BPSN AUC) and an individual one (counterfactual gap, flip rate, "
        "nearest-neighbour consistency); higher AUCs and consistency count as fairer:"
    )
    report.table(
        [
            "group metric vs individual metric",
            "Kendall tau-b",
            "pairs ordered oppositely",
            "same fairest model",
        ],
        [
            (
                name,
                p["kendall_tau"],
                f"{len(p['opposite_pairs'])} of {p['pairs']}",
                "yes" if set(p["fairest_by_group"]) & set(p["fairest_by_individual"]) else "no",
            )
            for name, p in pairs.items()
        ],
    )
    report.claim(
        "Group and individual fairness metrics rank the same models differently (so "
        "practitioners shown one or the other pick different models as fair).",
        f"Kendall tau-b {c['kendall_tau']:.3f}; {len(c['opposite_pairs'])} of {c['pairs']} "
        f"pairs ordered oppositely; fairest: {', '.join(c['fairest_by_group'])} (group) vs "
        f"{', '.join(c['fairest_by_individual'])} (individual)",
        verdict(c),
    )
    differ = [name for name, p in pairs.items() if verdict(p) == "reproduced"]
    taus = [p["kendall_tau"] for p in pairs.values()]
    report.claim(
        "The same holds whichever group and individual metric is shown.",
        f"over the {len(pairs)} pairs of one group and one individual metric: Kendall tau-b "
        f"from {min(taus):.3f} to {max(taus):.3f}; a different fairest model in "
        f"{len(differ)} ({', '.join(differ) or 'none'})",
        all_pairs_verdict(len(differ), len(pairs)),
    )
    return {"ranking": c, "ranking_all_pairs": pairs}


def all_pairs_verdict(differ: int, pairs: int) -> str:
    """reproduced: most pairs of metrics call different models fairest; partly: some do."""
    if 2 * differ > pairs:
        return "reproduced"
    return f"partly: {differ} of {pairs} pairs" if differ else "not reproduced"


SECTION = Section("Ranking", 0.04, lambda ctx, progress: None, write)
