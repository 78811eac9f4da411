"""Reproduction of the ListOps joint-training study (arXiv 2505.18369, "Small Models,
Smarter Learning"): the fewest parameters at which a small transformer learns each task
mix, the MAX+MED -> SUM curriculum, the number-token embeddings and an attention/MLP
ablation. ``run`` writes report.md, PNG figures and metrics.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from amlab.errors import AmlabError
from amlab.experiments.listops.analysis import ablation, embedding_structure, parity_probe
from amlab.experiments.report import Progress, Report, no_progress
from amlab.models.listops import ListOpsTransformer
from amlab.tasks.figures import plt, save_figure
from amlab.tasks.listops import STUDY_DATA, RunSpec, make_data
from amlab.tasks.listops_sweep import MIXES, mix_name, summarize, sweep_grid


@dataclass(frozen=True)
class Grid:
    """The sweep: model sizes (embedding dims, 2 layers, 2 heads), seeds, step budget."""

    dims: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    curriculum_steps: int
    target: float = 0.9
    train_size: int = 20000
    val_size: int = 1000
    test_size: int = 2000
    workers: int = 2

    def base(self) -> RunSpec:
        return RunSpec(
            steps=self.steps,
            lr=3e-3,
            warmup=100,
            batch_size=128,
            eval_every=100,
            stop_at=0.97,
            patience=20,
            data=dict(STUDY_DATA),
            train_size=self.train_size,
            val_size=self.val_size,
            test_size=self.test_size,
        )

    def model_seeds(self, seed: int) -> list[int]:
        """The model seeds of a run started with ``seed``: ``seeds`` offset by it."""
        return [seed + s for s in self.seeds]

    def specs(self, seed: int) -> list[RunSpec]:
        """The sweep of a run started with ``seed`` (also its data seed)."""
        return sweep_grid(
            replace(self.base(), data_seed=seed),
            MIXES,
            self.dims,
            self.model_seeds(seed),
            self.curriculum_steps,
        )


FULL = Grid(dims=(8, 16, 32, 48), seeds=(0, 1, 2), steps=2500, curriculum_steps=1000)
QUICK = Grid(dims=(8, 16, 32), seeds=(0,), steps=800, curriculum_steps=400)


#: the models the analysis looks at (largest size, first seed)
ANALYSED = (("sum",), ("max", "med"), ("max", "med", "sum"))


def run(
    out: str | os.PathLike,
    quick: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Run the sweep (resuming from ``out/sweep``), analyse, and write the report."""
    if data_dir is not None:
        raise AmlabError(
            f"repro listops generates its own expressions; drop --data-dir ({data_dir})."
        )
    grid = QUICK if quick else FULL
    out = Path(out)
    specs = grid.specs(seed)
    workers = max(1, min(grid.workers, os.cpu_count() or 1))
    summary = summarize(
        specs,
        out / "sweep",
        grid.target,
        workers=workers,
        save_models=True,
        on_done=lambda r, n, total: progress(f"sweep: {n}/{total} runs", 0.85 * n / total),
    )
    report = Report(
        out,
        "ListOps: how few parameters a small transformer needs (arXiv 2505.18369)",
        _intro(grid, seed, workers),
    )
    metrics: dict[str, Any] = {
        "grid": {**grid.__dict__, "seeds": grid.model_seeds(seed)},
        "data": STUDY_DATA,
        "thresholds": summary["thresholds"],
        "curriculum": summary["curriculum"],
    }
    _section_thresholds(report, summary, grid)
    metrics["sum_in_mix"] = _section_sum_in_mix(report, summary["records"], grid)
    _section_curriculum(report, summary, grid)
    progress("analysis: embeddings, parity probe, ablation", 0.9)
    metrics["analysis"] = _section_analysis(report, out, specs, grid)
    metrics["claims"] = [
        dict(zip(("paper", "measured", "verdict"), c, strict=True)) for c in report.claims
    ]
    metrics["runs"] = [
        {k: r[k] for k in ("key", "parameters", "test_accuracy", "test_per_op", "steps_done")}
        for r in summary["records"]
    ]
    progress("writing the report", 1.0)
    return report.write(metrics)


def _intro(grid: Grid, seed: int, workers: int) -> str:
    base = grid.base()
    return f"""
Each run trains a transformer ({base.layers} pre-norm blocks, {base.heads} heads, MLP ratio
{base.mlp_ratio:g}, learned positions, class-token read-out) to predict the value of a
ListOps expression over 0..9. Data: the generator of the original ListOps with at most
{STUDY_DATA["max_depth"]} nested operators of 2..{STUDY_DATA["max_args"]} arguments (leaf
probability {STUDY_DATA["leaf_prob"]}), so that models of a few thousand parameters can be
trained on a CPU; {grid.train_size} distinct training expressions per mix, {grid.val_size}
validation and {grid.test_size} test expressions disjoint from them.
Size ladder: embedding sizes {", ".join(map(str, grid.dims))}; model seeds
{", ".join(map(str, grid.model_seeds(seed)))}; at most {grid.steps} AdamW steps of
{base.batch_size} expressions (peak learning rate {base.lr:g}, cosine decay), stopping early
once validation accuracy reaches {base.stop_at:g} or has not improved for {base.patience}
checks (every {base.eval_every} steps). A mix counts as learned at a size when at least
half of the seeds reach {grid.target:g} test accuracy.
The paper's own grid, budgets and data sizes are not public (no code was released), so
the numbers below are this implementation's, on {workers} CPU worker(s).
"""


def _by(records, ops):
    """The records of the runs on the mix ``ops`` without pretraining."""
    return [
        r
        for r in records
        if tuple(r["spec"]["ops"]) == tuple(ops) and r["spec"].get("pretrain_ops") is None
    ]


def _mean_by_size(row: dict) -> tuple[list[int], list[float]]:
    """(parameter counts, mean test accuracy over seeds) of a mix's :func:`thresholds` row."""
    sizes = row["sizes"]
    return [s["parameters"] for s in sizes], [float(np.mean(s["accuracies"])) for s in sizes]


def _save_accuracy_plot(fig, ax, report: Report, name: str, grid: Grid, ylabel: str) -> None:
    """Accuracy (mean over seeds) against parameters, log x, the target as a dashed line."""
    ax.axhline(grid.target, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # labels overlapped
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{ylabel}, mean over seeds")
    ax.legend(fontsize=8)
    save_figure(fig, report.path(name))


def _section_thresholds(report: Report, summary: dict, grid: Grid) -> None:
    records, table = summary["records"], summary["thresholds"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for ops in MIXES:
        mix = tuple(ops.split(","))
        runs = _by(records, mix)
        sizes, means = _mean_by_size(table[mix_name(mix)])
        (line,) = ax.plot(sizes, means, marker="o", label=mix_name(mix))
        ax.scatter(
            [r["parameters"] for r in runs],
            [r["test_accuracy"] for r in runs],
            color=line.get_color(),
            s=12,
            alpha=0.5,
        )
    _save_accuracy_plot(
        fig, ax, report, "accuracy_vs_parameters.png", grid, "test accuracy (dots: single seeds)"
    )
    report.section(
        "Threshold per task mix",
        "The smallest model on the ladder at which the mix is learned "
        f"(test accuracy >= {grid.target:g} for at least half of the seeds).",
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
    singles = {m: table[m]["threshold"] for m in ("MAX", "MIN", "MED")}
    big = float("inf")
    hardest = all((sum_t or big) >= (t or big) for t in singles.values()) and any(
        (sum_t or big) > (t or big) for t in singles.values()
    )
    means = {m: _mean_by_size(row)[1] for m, row in table.items()}
    lowest = all(
        means["SUM"][i] <= min(means[m][i] for m in ("MAX", "MIN", "MED"))
        for i in range(len(means["SUM"]))
    )
    if sum_t is None and not any(singles.values()):
        verdict = "undetermined: no single operation was learned within the ladder"
    else:
        verdict = (
            "reproduced"
            if hardest and lowest
            else "partly"
            if hardest or lowest
            else "not reproduced"
        )
    report.claim(
        "SUM (mod 10) alone is the hardest single operation: it needs the most parameters.",
        f"thresholds: SUM {sum_t or 'none'}, "
        + ", ".join(f"{m} {t or 'none'}" for m, t in singles.items())
        + f"; SUM has the lowest mean accuracy at every size: {lowest}",
        verdict,
    )


def _section_sum_in_mix(report: Report, records, grid: Grid) -> dict[str, Any]:
    alone = _by(records, ("sum",))
    mixed = _by(records, ("max", "med", "sum"))
    sizes = sorted({r["parameters"] for r in alone} & {r["parameters"] for r in mixed})
    rows, data = [], []
    for p in sizes:
        a = [r["test_accuracy"] for r in alone if r["parameters"] == p]
        m = [r["test_per_op"].get("sum", float("nan")) for r in mixed if r["parameters"] == p]
        rows.append((p, float(np.mean(a)), float(np.mean(m))))
        data.append({"parameters": p, "sum_alone": a, "sum_in_mix": m})
    report.section(
        "SUM inside a mix",
        "Accuracy on test expressions whose outermost operation is SUM, for models trained "
        "on SUM alone and on MAX+MED+SUM (same test protocol; in the mix a third of the "
        "training expressions have SUM at the root, and inner nodes mix all three).",
    )
    report.table(["parameters", "SUM alone", "SUM-rooted, in MAX+MED+SUM"], rows)
    # sizes where both are near chance (0.1) say nothing either way
    informative = [(p, a, m) for p, a, m in rows if max(a, m) >= 0.2]
    easier = [m > a + 0.02 for _, a, m in informative]
    harder = [m < a - 0.02 for _, a, m in informative]
    if not informative:
        verdict = "undetermined: SUM stayed near chance (0.1) both ways"
    elif all(easier):
        verdict = "reproduced"
    else:
        verdict = "partly" if any(easier) else "not reproduced" if any(harder) else "no difference"
    report.claim(
        "SUM is easier to learn inside a mix with MAX and MED than alone.",
        "; ".join(f"{p} params: alone {a:.3f}, in mix {m:.3f}" for p, a, m in rows),
        verdict,
    )
    return {"rows": data}


def _section_curriculum(report: Report, summary: dict, grid: Grid) -> None:
    rows = summary["curriculum"]
    if not rows:
        return
    sum_t = summary["thresholds"]["SUM"]["threshold"]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ps = [r["parameters"] for r in rows]
    ax.plot(ps, [np.mean(r["alone"]) for r in rows], marker="o", label="SUM alone")
    ax.plot(ps, [np.mean(r["curriculum"]) for r in rows], marker="s", label="MAX+MED, then SUM")
    _save_accuracy_plot(fig, ax, report, "curriculum.png", grid, "SUM test accuracy")
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
    half = lambda accs: sum(a >= grid.target for a in accs) >= len(accs) / 2  # noqa: E731
    rescued = [r["parameters"] for r in below if half(r["curriculum"]) and not half(r["alone"])]
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


def _section_analysis(report: Report, out: Path, specs, grid: Grid) -> dict[str, Any]:
    first = min(s.seed for s in specs)
    chosen = {}
    for ops in ANALYSED:
        spec = next(
            s
            for s in specs
            if s.ops == ops and s.dim == max(grid.dims) and s.seed == first and not s.pretrain_ops
        )
        chosen[mix_name(ops)] = spec
    tests = {name: make_data(spec)["test"] for name, spec in chosen.items()}
    results: dict[str, Any] = {}
    fig, axes = plt.subplots(1, len(chosen) + 1, figsize=(3.6 * (len(chosen) + 1), 3.6))
    untrained = "SUM, untrained"
    for ax, name in zip(axes, [*chosen, untrained], strict=True):
        spec, data = chosen.get(name, chosen["SUM"]), tests.get(name, tests["SUM"])
        if name == untrained:  # the initialisation: what any structure is measured against
            torch.manual_seed(spec.seed)
            model = ListOpsTransformer(spec.model_config())
        else:
            model = ListOpsTransformer.load(out / "sweep" / "models" / spec.key())
        structure = embedding_structure(model, 10)
        ablated = ablation(model, data)
        results[name] = {
            "embedding": structure,
            "parity_probe": parity_probe(model, data, seed=first),
            "ablation": {k: v["accuracy"] for k, v in ablated.items()},
            "ablation_per_op": {k: v["per_op"] for k, v in ablated.items()},
        }
        xy = np.array(structure["pca"])
        ax.scatter(
            xy[:, 0], xy[:, 1], c=["tab:blue" if v % 2 == 0 else "tab:red" for v in range(10)]
        )
        for v in range(10):
            ax.annotate(str(v), xy[v], fontsize=10, xytext=(3, 3), textcoords="offset points")
        ax.plot(xy[:, 0], xy[:, 1], color="grey", lw=0.5)
        ex = structure["explained"]
        ax.set_title(f"{name}: PC1 {ex[0]:.0%}, PC2 {ex[1]:.0%}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        "number-token embeddings, first two principal axes (blue even, red odd)", fontsize=9
    )
    save_figure(fig, report.path("embeddings.png"))

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    names = [n for n in results if n != untrained]
    for i, part in enumerate(("none", "attention", "mlp")):
        ax.bar(
            np.arange(len(names)) + (i - 1) * 0.27,
            [results[n]["ablation"][part] for n in names],
            width=0.27,
            label={"none": "intact", "attention": "attention zeroed", "mlp": "MLP zeroed"}[part],
        )
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    save_figure(fig, report.path("ablation.png"))

    report.section(
        "What the models learned",
        f"Models of the largest size ({max(grid.dims)}-dim embeddings), seed {first}, and "
        "the same SUM model at its random initialisation for reference. "
        "*order*: largest |rank correlation| between a top-2 principal coordinate of the "
        "number-token embeddings and the value (1: the values lie in order along an axis); "
        "*even/odd* and *low/high (embeddings)*: the fraction of all 126 splits of the 10 "
        "values into two groups of 5 that separate their embeddings no better than even/odd "
        "(or 0-4 against 5-9) does (1: the clearest split; about 0.5 by chance; on a number "
        "line low/high is near 1 and even/odd near 0, as neighbours differ in parity); "
        "*parity (state)*: logistic probe for "
        "the parity of the "
        "expression's value on the class token's final state, half of the test set to fit, "
        "half to score; ablation: test accuracy with every block's attention or MLP output "
        "zeroed.",
    )
    report.table(
        [
            "model",
            "test acc",
            "order",
            "PC1+PC2 variance",
            "even/odd (embeddings)",
            "low/high (embeddings)",
            "parity (state) / majority",
            "attention zeroed",
            "MLP zeroed",
        ],
        [
            (
                n,
                r["ablation"]["none"],
                r["embedding"]["order"],
                sum(r["embedding"]["explained"]),
                r["embedding"]["parity"],
                r["embedding"]["low_high"],
                f"{r['parity_probe']['probe']:.3f} / {r['parity_probe']['majority']:.3f}",
                r["ablation"]["attention"],
                r["ablation"]["mlp"],
            )
            for n, r in results.items()
        ],
    )
    report.figure("embeddings.png", "PCA of the number-token embeddings.")
    report.figure("ablation.png", "Accuracy with attention or MLP zeroed in every block.")
    alone, mixed = results["SUM"]["embedding"], results["MAX+MED+SUM"]["embedding"]
    init = results[untrained]["embedding"]
    # ordered: an axis sorts the values, or the values cluster into low and high
    ordered = mixed["order"] >= 0.8 or mixed["low_high"] >= 0.95
    beats = [mixed[k] > max(alone[k], init[k]) + 0.1 for k in ("order", "low_high")]
    if ordered and all(beats):
        verdict = "reproduced (one model per mix)"
    elif any(beats):
        verdict = "partly (one model per mix)"
    else:
        verdict = "not reproduced"
    report.claim(
        "Models trained on a mix learn number-like embeddings (ordered values), unlike "
        "SUM-only models.",
        f"order: MAX+MED+SUM {mixed['order']:.2f}, SUM alone {alone['order']:.2f}, MAX+MED "
        f"{results['MAX+MED']['embedding']['order']:.2f}, untrained "
        f"{results[untrained]['embedding']['order']:.2f}; low/high split rank: mix "
        f"{mixed['low_high']:.2f}, SUM alone {alone['low_high']:.2f}, untrained "
        f"{init['low_high']:.2f}; even/odd split rank: mix {mixed['parity']:.2f}, SUM alone "
        f"{alone['parity']:.2f}",
        verdict,
    )
    return results
