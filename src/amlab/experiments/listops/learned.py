"""What the models learned: the number-token embeddings, a parity probe and an
attention/MLP ablation of the sweep's largest models on three mixes, and of the SUM model
at its initialisation for reference (the measurements are :mod:`.analysis`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from amlab.experiments.listops.analysis import ablation, embedding_structure, parity_probe
from amlab.experiments.listops.sweep import sweep_of
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.models.listops import ListOpsTransformer
from amlab.tasks.figures import plt, save_figure
from amlab.tasks.listops import RunSpec, make_data
from amlab.tasks.listops_sweep import mix_name

#: the models the analysis looks at (largest size, first seed)
ANALYSED = (("sum",), ("max", "med"), ("max", "med", "sum"))
UNTRAINED = "SUM, untrained"


@dataclass(frozen=True)
class Learned:
    """Per model (the mix's name, or :data:`UNTRAINED`): its embedding structure, parity
    probe and ablation; ``seed``: the models' seed."""

    models: dict[str, dict[str, Any]]
    seed: int


def analysed(specs: list[RunSpec]) -> dict[str, RunSpec]:
    """The runs of :data:`ANALYSED` at the largest size with the first seed, by mix name."""
    first, largest = min(s.seed for s in specs), max(s.dim for s in specs)
    return {
        mix_name(ops): next(
            s
            for s in specs
            if s.ops == ops and s.dim == largest and s.seed == first and not s.pretrain_ops
        )
        for ops in ANALYSED
    }


def compute(ctx: Context, progress: Progress) -> Learned:
    progress("embeddings, parity probe, ablation", 0.0)
    chosen = analysed(sweep_of(ctx).specs)
    tests = {name: make_data(spec)["test"] for name, spec in chosen.items()}
    first = chosen["SUM"].seed
    models: dict[str, dict[str, Any]] = {}
    for name in [*chosen, UNTRAINED]:
        spec, test = chosen.get(name, chosen["SUM"]), tests.get(name, tests["SUM"])
        if name == UNTRAINED:  # the initialisation: what any structure is measured against
            model = ListOpsTransformer(spec.model_config())
        else:
            model = ListOpsTransformer.load(ctx.out / "sweep" / "models" / spec.key())
        ablated = ablation(model, test)
        models[name] = {
            "embedding": embedding_structure(model, 10),
            "parity_probe": parity_probe(model, test, seed=first),
            "ablation": {k: v["accuracy"] for k, v in ablated.items()},
            "ablation_per_op": {k: v["per_op"] for k, v in ablated.items()},
        }
    return Learned(models, first)


def figure(result: Learned, ctx: Context, report: Report) -> None:
    models = result.models
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.6))
    for ax, (name, r) in zip(axes, models.items(), strict=True):
        xy = np.array(r["embedding"]["pca"])
        ax.scatter(
            xy[:, 0], xy[:, 1], c=["tab:blue" if v % 2 == 0 else "tab:red" for v in range(10)]
        )
        for v in range(10):
            ax.annotate(str(v), xy[v], fontsize=10, xytext=(3, 3), textcoords="offset points")
        ax.plot(xy[:, 0], xy[:, 1], color="grey", lw=0.5)
        ex = r["embedding"]["explained"]
        ax.set_title(f"{name}: PC1 {ex[0]:.0%}, PC2 {ex[1]:.0%}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        "number-token embeddings, first two principal axes (blue even, red odd)", fontsize=9
    )
    save_figure(fig, report.path("embeddings.png"))

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    names = [n for n in models if n != UNTRAINED]
    for i, part in enumerate(("none", "attention", "mlp")):
        ax.bar(
            np.arange(len(names)) + (i - 1) * 0.27,
            [models[n]["ablation"][part] for n in names],
            width=0.27,
            label={"none": "intact", "attention": "attention zeroed", "mlp": "MLP zeroed"}[part],
        )
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    save_figure(fig, report.path("ablation.png"))


def write(result: Learned, ctx: Context, report: Report) -> dict[str, Any]:
    report.section(
        "What the models learned",
        f"Models of the largest size ({max(ctx.grid.dims)}-dim embeddings), seed "
        f"{result.seed}, and the same SUM model at its random initialisation for reference. "
        "*order*: largest |rank correlation| between a top-2 principal coordinate of the "
        "number-token embeddings and the value (1: the values lie in order along an axis); "
        "*even/odd* and *low/high (embeddings)*: the fraction of all 126 splits of the 10 "
        "values into two groups of 5 that separate their embeddings no better than even/odd "
        "(or 0-4 against 5-9) does (1: the clearest split; about 0.5 by chance; on a number "
        "line low/high is near 1 and even/odd near 0, as neighbours differ in parity); "
        "*parity (state)*: logistic probe for the parity of the expression's value on the "
        "class token's final state, half of the test set to fit, half to score; ablation: "
        "test accuracy with every block's attention or MLP output zeroed.",
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
            for n, r in result.models.items()
        ],
    )
    report.figure("embeddings.png", "PCA of the number-token embeddings.")
    report.figure("ablation.png", "Accuracy with attention or MLP zeroed in every block.")
    _claim_number_line(result.models, report)
    return {"analysis": result.models}


def _claim_number_line(models: dict[str, dict[str, Any]], report: Report) -> None:
    emb = {name: r["embedding"] for name, r in models.items()}
    alone, mixed, init = emb["SUM"], emb["MAX+MED+SUM"], emb[UNTRAINED]
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
        f"{emb['MAX+MED']['order']:.2f}, untrained {init['order']:.2f}; low/high split "
        f"rank: mix {mixed['low_high']:.2f}, SUM alone {alone['low_high']:.2f}, untrained "
        f"{init['low_high']:.2f}; even/odd split rank: mix {mixed['parity']:.2f}, SUM alone "
        f"{alone['parity']:.2f}",
        verdict,
    )


SECTION = Section("analysis", 0.13, compute, write, figure)
