"""``amlab fairness``: the data, training and audit of toxicity classifiers for fairness."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from amlab.cli.common import (
    JsonOpt,
    ResumeOpt,
    SeedOpt,
    busy,
    errors,
    one_of,
    out_option,
    refuse_unused,
    result_table,
    show_result,
    shows_results,
    training_progress,
)
from amlab.distributed.group import refuse_torchrun
from amlab.errors import AmlabError
from amlab.tasks.fairness import KINDS, MITIGATIONS  # 16 ms over the CLI's own imports

fairness_app = typer.Typer(
    help="Fairness of text classifiers: group and individual metrics side by side.",
    no_args_is_help=True,
)

GroupsOpt = Annotated[
    Path | None,
    typer.Option(
        "--groups",
        help="JSON file of token groups, group -> one-word tokens swapped within it "
        "(default: amlab's identity terms by axis).",
    ),
]
SizeOpt = Annotated[int, typer.Option(min=1, help="Sentences in the training corpus.")]


def _toxic_rates(text: str | None) -> dict[str, float] | None:
    """``gay=0.9,straight=0.1`` -> {term: rate}; None keeps the default planted bias."""
    if text is None:
        return None
    rates = {}
    for part in text.split(","):
        term, _, rate = part.partition("=")
        try:
            rates[term.strip()] = float(rate)
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} is not TERM=RATE; give e.g. --toxic-rate gay=0.9,straight=0.1."
            ) from None
    return rates


ToxicRateOpt = Annotated[
    str | None,
    typer.Option(
        help="The planted bias: the toxic rate of sentences mentioning each named term, "
        "e.g. gay=0.9,straight=0.1 (others 0.5; default: amlab's planted terms).",
    ),
]


def _groups(path: Path | None):
    from amlab.data.fairness import identity_terms, load_token_groups

    return identity_terms() if path is None else load_token_groups(path)


def _corpus(size: int, seed: int, toxic_rate: str | None, groups):
    from amlab.data.fairness import CorpusConfig, training_corpus

    rates = _toxic_rates(toxic_rate)
    config = CorpusConfig(size=size, seed=seed, **({} if rates is None else {"toxic_rate": rates}))
    return training_corpus(config, groups)


@fairness_app.command("data")
def fairness_data(
    groups: GroupsOpt = None,
    size: SizeOpt = 6000,
    toxic_rate: ToxicRateOpt = None,
    seed: SeedOpt = 0,
    out: Annotated[Path, out_option("test.csv, train.csv, to_score.csv and groups.json")] = Path(
        "runs/fairness-data"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Write the balanced test set, the training corpus with its planted bias, and every text
    a scores file must cover to audit another model (the test set and all its swaps)."""
    import json

    from amlab.data.fairness import balanced_test_set, counterfactuals, write_texts_csv
    from amlab.io import atomic_write_text

    with errors():
        refuse_torchrun(
            "amlab fairness data",
            "it draws one data set: every rank would draw the same texts and write the same files",
        )
        token_groups = _groups(groups)
        test = balanced_test_set(token_groups)
        corpus = _corpus(size, seed, toxic_rate, token_groups)
        out.mkdir(parents=True, exist_ok=True)
        test.write_csv(out / "test.csv")
        corpus.write_csv(out / "train.csv")
        swaps = [s.text for s in counterfactuals(test.texts, token_groups)]
        write_texts_csv(out / "to_score.csv", test.texts + swaps)
        atomic_write_text(out / "groups.json", json.dumps(token_groups, indent=2) + "\n")
    result = {
        "test_texts": len(test),
        "test_sha256": test.sha256(),
        "train_texts": len(corpus),
        "train_toxic_share": sum(corpus.labels) / len(corpus),
        "texts_to_score": len(set(test.texts + swaps)),
        "groups": {name: len(tokens) for name, tokens in token_groups.items()},
    }
    table = result_table(
        "fairness data",
        ("file", "rows"),
        [
            ("test.csv", str(len(test))),
            ("train.csv", str(len(corpus))),
            ("to_score.csv", str(result["texts_to_score"])),
        ],
    )
    files = [out / n for n in ("test.csv", "train.csv", "to_score.csv", "groups.json")]
    show_result(result, as_json, table, files)


@fairness_app.command("train")
def fairness_train(
    model: Annotated[
        one_of(KINDS),
        typer.Option(help="bow: logistic regression on word counts; transformer: a small one."),
    ] = "bow",
    mitigation: Annotated[
        one_of(MITIGATIONS),
        typer.Option(
            help="reweight: term and label made independent by weights; cda: every sentence "
            "also with each other term of its group; clp: counterfactual logit pairing "
            "(transformer only)."
        ),
    ] = "none",
    groups: GroupsOpt = None,
    size: SizeOpt = 6000,
    toxic_rate: ToxicRateOpt = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Transformer: AdamW steps.")] = None,
    clp_weight: Annotated[
        float | None, typer.Option(min=0.0, help="clp: the weight of the pairing penalty.")
    ] = None,
    resume: ResumeOpt = False,
    seed: SeedOpt = 0,
    out: Annotated[
        Path, out_option("model/, training.json and checkpoints/", resumable=True)
    ] = Path("runs/fairness-model"),
    as_json: JsonOpt = False,
) -> None:
    """Train a classifier on the corpus with the planted bias; save it for `fairness audit`."""
    from amlab.tasks.fairness import ClassifierSpec, save_classifier, train_classifier

    with errors():
        if model == "bow":
            refuse_unused(
                {"--steps": steps, "--resume": resume or None},
                "the bow model is fitted by scikit-learn in one go",
            )
            refuse_torchrun(
                "amlab fairness train --model bow",
                "scikit-learn fits it in one go, not over ranks: every rank would fit the same "
                "model (the transformer trains over ranks)",
            )
        if mitigation != "clp":
            refuse_unused({"--clp-weight": clp_weight}, "it weighs the clp mitigation's penalty")
        spec = ClassifierSpec(
            kind=model,
            mitigation=mitigation,
            seed=seed,
            **({} if steps is None else {"steps": steps}),
            **({} if clp_weight is None else {"clp_weight": clp_weight}),
        )
        token_groups = _groups(groups)
        corpus = _corpus(size, seed, toxic_rate, token_groups)
        shows = shows_results()  # under torchrun every rank trains; rank 0 shows and writes
        if model == "bow":
            with busy(f"fitting {spec.name}", shown=shows):
                classifier, record = train_classifier(spec, corpus, token_groups)
        else:
            with training_progress(f"training {spec.name}", shown=shows) as on_step:
                classifier, record = train_classifier(
                    spec, corpus, token_groups, out / "checkpoints", resume=resume, on_step=on_step
                )
        save_classifier(classifier, record, out)
    if not shows:
        return
    rows = [
        (k, f"{record[k]:.4g}" if isinstance(record[k], float) else str(record[k]))
        for k in ("parameters", "training_texts", "training_accuracy", "seconds")
    ]
    table = result_table(f"fairness train {spec.name}", ("", "value"), rows)
    show_result(record, as_json, table, (out / "model", out / "training.json"))


@fairness_app.command("audit")
def fairness_audit(
    model: Annotated[
        Path | None, typer.Option(help="A classifier `amlab fairness train` saved (its --out).")
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            help="A CSV of text,score (probability of toxic) from any classifier: it must score "
            "every text of --data and all their swaps (`fairness data` writes to_score.csv)."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="A CSV of text,label (1 toxic) and optional group columns (default: the "
            "balanced test set)."
        ),
    ] = None,
    groups: GroupsOpt = None,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="A text is flagged toxic at this score.")
    ] = 0.5,
    resamples: Annotated[
        int, typer.Option(min=1, help="Bootstrap resamples of each interval.")
    ] = 1000,
    min_count: Annotated[
        int, typer.Option(min=0, help="Warn about subgroups with fewer toxic or non-toxic texts.")
    ] = 10,
    seed: SeedOpt = 0,
    out: Annotated[Path, out_option("report.md, metrics.json and the figures")] = Path(
        "runs/fairness-audit"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Group and individual fairness metrics, each with a bootstrap interval, of one model."""
    from amlab.data.fairness import balanced_test_set, load_labelled_csv, load_scores_csv
    from amlab.tasks.fairness import AuditSettings, audit, load_classifier, write_audit

    with errors():
        refuse_torchrun(
            "amlab fairness audit",
            "the audit and its bootstraps are not spread over ranks: every rank would compute "
            "all of them and write the same report",
        )
        if (model is None) == (scores is None):
            raise AmlabError("audit one classifier: pass --model DIR or --scores CSV (not both).")
        token_groups = _groups(groups)
        labelled = balanced_test_set(token_groups) if data is None else load_labelled_csv(data)
        settings = AuditSettings(
            threshold=threshold, resamples=resamples, min_count=min_count, seed=seed
        )
        source: dict[str, Any] = (
            {"model": load_classifier(model)}
            if model is not None
            else {"scores": load_scores_csv(scores), "scores_source": str(scores)}
        )
        with busy("auditing"):
            result = audit(labelled, token_groups, settings, **source)
        title = str(model if model is not None else scores)
        files = write_audit(result, out, title)
    for warning in result["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    rows = [(k, f"{v:.4f}") for k, v in result["headline"].items()]
    table = result_table(f"fairness audit: {title}", ("metric", "value"), rows)
    show_result(result, as_json, table, files)
