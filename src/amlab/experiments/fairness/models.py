"""Train every model of the grid on the biased corpus and audit it on the balanced test set;
the later sections read the audits from ``ctx.results``. Each model is saved under
``out/models/<name>/`` (safetensors + JSON), ready for ``amlab fairness audit --model``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from amlab.data.fairness import (
    CorpusConfig,
    all_terms,
    balanced_test_set,
    identity_terms,
    training_corpus,
)
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.tasks.fairness import (
    AuditSettings,
    ClassifierSpec,
    audit,
    save_classifier,
    train_classifier,
)

RUNS = "Models and audits"


def compute(ctx: Context, progress: Progress) -> dict[str, Any]:
    groups = identity_terms()
    corpus = training_corpus(CorpusConfig(size=ctx.grid.corpus_size, seed=ctx.seed), groups)
    test = balanced_test_set(groups)
    settings = AuditSettings(resamples=ctx.grid.resamples, seed=ctx.seed)
    runs = {}
    for i, (kind, mitigation) in enumerate(ctx.grid.models):
        spec = ClassifierSpec(
            kind=kind, mitigation=mitigation, steps=ctx.grid.transformer_steps, seed=ctx.seed
        )
        progress(f"training {spec.name}", i / len(ctx.grid.models))
        model, record = train_classifier(spec, corpus, groups)
        save_classifier(model, record, ctx.out / "models" / spec.name.replace("+", "-"))
        runs[spec.name] = {"training": record, "audit": audit(test, groups, settings, model=model)}
    cells = Counter(zip(corpus.columns["term"], corpus.labels, strict=True))
    toxic_share = {t: cells[t, 1] / max(cells[t, 0] + cells[t, 1], 1) for t in all_terms(groups)}
    return {
        "runs": runs,
        "groups": groups,
        "corpus": {"size": len(corpus), "toxic_share_by_term": toxic_share},
        "test": {"size": len(test), "sha256": test.sha256()},
    }


def write(result: dict[str, Any], ctx: Context, report: Report) -> dict[str, Any]:
    report.section(
        RUNS,
        f"Every model trained on the same {result['corpus']['size']} sentences and audited on "
        f"the balanced test set ({result['test']['size']} texts, sha256 "
        f"`{result['test']['sha256'][:12]}`) at threshold 0.5. `bow`: logistic regression "
        "on word counts (scikit-learn); `transformer`: one pre-norm block, dim 32, "
        f"{ctx.grid.transformer_steps} AdamW steps. `+reweight`: Kamiran-Calders weights "
        "(term and label independent); `+cda`: every sentence also with each other term of "
        "its group; `+clp`: counterfactual logit pairing (weight 1).",
    )
    rows = []
    for name, run in result["runs"].items():
        t, h = run["training"], run["audit"]["headline"]
        rows.append(
            (
                name,
                t["parameters"],
                t["training_texts"],
                t["training_accuracy"],
                h["accuracy"],
                h["auc"],
                t["seconds"],
            )
        )
    report.table(
        [
            "model",
            "parameters",
            "training texts",
            "training accuracy",
            "test accuracy",
            "test AUC",
            "seconds",
        ],
        rows,
    )
    planted = result["corpus"]["toxic_share_by_term"]
    return {
        "test_set": result["test"],
        "corpus_toxic_share_by_term": planted,
        "models": {
            name: {"training": run["training"], "headline": run["audit"]["headline"]}
            for name, run in result["runs"].items()
        },
        "audits": {name: run["audit"] for name, run in result["runs"].items()},
    }


SECTION = Section(RUNS, 0.9, compute, write)
