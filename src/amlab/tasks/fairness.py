"""Fairness of text classifiers: train a classifier on the biased corpus (with or without a
mitigation) and audit any classifier, group and individual metrics side by side.

Models (:data:`KINDS`): ``bow``, logistic regression on word counts fitted by scikit-learn
(:class:`~amlab.models.text_classifier.BagOfWordsClassifier` keeps its coefficients), and
``transformer``, a small :class:`~amlab.models.text_classifier.TextTransformer` trained by
the shared loop (:func:`amlab.training.train`) with binary cross-entropy.

Mitigations (:data:`MITIGATIONS`):

- ``reweight`` (group fairness): each training text is weighted by
  P(term) P(label) / P(term, label) (Kamiran & Calders), so that no identity term predicts
  the label in the weighted corpus;
- ``cda`` (counterfactual data augmentation): every training text that mentions a term is
  added again once per other term of its group, with the same label;
- ``clp`` (counterfactual logit pairing, transformer only): the loss adds
  ``clp_weight * mean |logit(x) - logit(x')|`` over pairs of a training text and one of its
  swaps (Garg et al. 2019).

:func:`audit` computes every metric of :mod:`amlab.analysis.fairness` for a model or for a
scores file; :func:`write_audit` writes its report.md, metrics.json and figures.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from amlab.analysis.fairness import (
    FAMILY_METRICS,
    Bootstrap,
    Pairs,
    Subgroups,
    consistency,
    counterfactual_metrics,
    group_metrics,
)
from amlab.data.fairness import (
    LabelledTexts,
    TokenGroups,
    all_terms,
    build_vocabulary,
    check_groups_in_texts,
    counterfactuals,
    encode,
    scores_for,
    term_masks,
    words,
)
from amlab.distributed.group import is_main_process
from amlab.errors import AmlabError, check_choice, check_positive, check_positive_int
from amlab.io import CONFIG_FILE, atomic_write_text, read_json, write_metrics
from amlab.models.text_classifier import (
    BagOfWordsClassifier,
    TextClassifier,
    TextTransformer,
    TextTransformerConfig,
)
from amlab.training import OnStep, TrainConfig, train

KINDS = ("bow", "transformer")
MITIGATIONS = ("none", "reweight", "cda", "clp")
#: the saved model's kind (config.json) -> its class
CLASSES = {"BagOfWordsClassifier": BagOfWordsClassifier, "TextTransformer": TextTransformer}


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier to train. ``C``: the inverse L2 strength of the logistic regression;
    dim, layers, heads, steps, lr, batch_size: the transformer and its training;
    ``word_dropout``: the fraction of words read as ``<unk>`` in training (so that words
    training never showed read as neutral); ``clp_weight``: the pairing penalty's weight."""

    kind: str = "bow"
    mitigation: str = "none"
    C: float = 1.0
    dim: int = 32
    layers: int = 1
    heads: int = 2
    steps: int = 600
    lr: float = 3e-3
    batch_size: int = 64
    word_dropout: float = 0.1
    clp_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.kind, "model kind", KINDS)
        check_choice(self.mitigation, "mitigation", MITIGATIONS)
        if self.mitigation == "clp" and self.kind != "transformer":
            raise AmlabError(
                "counterfactual logit pairing (clp) trains through the logits' gradient: use "
                "it with the transformer, or choose reweight or cda for bow."
            )
        for name in ("dim", "layers", "heads", "steps", "batch_size"):
            check_positive_int(getattr(self, name), name)
        check_positive(self.C, "C")
        check_positive(self.lr, "lr")
        check_positive(self.clp_weight, "clp_weight")
        if not 0.0 <= self.word_dropout < 1.0:
            raise AmlabError(f"word_dropout must lie in [0, 1); got {self.word_dropout!r}.")

    @property
    def name(self) -> str:
        return self.kind if self.mitigation == "none" else f"{self.kind}+{self.mitigation}"


def reweighting(data: LabelledTexts) -> np.ndarray:
    """Kamiran & Calders' weights P(term) P(label) / P(term, label) of each text, by its
    ``term`` column ("" for none), normalised to mean 1."""
    terms = data.columns["term"]
    cells = Counter(zip(terms, data.labels, strict=True))
    by_term, by_label = Counter(terms), Counter(data.labels)
    n = len(data)
    w = np.array(
        [
            by_term[t] * by_label[y] / (n * cells[t, y])
            for t, y in zip(terms, data.labels, strict=True)
        ]
    )
    return w / w.mean()


def augmented(data: LabelledTexts, groups: TokenGroups) -> LabelledTexts:
    """``data`` with every swap of every text, each with its source's label and the term
    swapped in as its ``term``."""
    swaps = counterfactuals(data.texts, groups)
    columns = {"term": data.columns["term"] + [s.other for s in swaps]}
    labels = data.labels + [data.labels[s.source] for s in swaps]
    return LabelledTexts(data.texts + [s.text for s in swaps], labels, columns)


def max_len_of(texts: list[str]) -> int:
    """The tokens of the longest text, ``<cls>`` included."""
    return 1 + max(len(words(t)) for t in texts)


def train_classifier(
    spec: ClassifierSpec,
    corpus: LabelledTexts,
    groups: TokenGroups,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    on_step: OnStep | None = None,
) -> tuple[TextClassifier, dict[str, Any]]:
    """Train ``spec``'s classifier on ``corpus`` (with a ``term`` column); returns the model
    and a record of the training (the corpus's hash, texts, loss, accuracy on the training
    texts, seconds). ``out`` (transformer only): the training loop's checkpoints; a resumed
    run must have the same spec and corpus."""
    started = time.perf_counter()
    data = augmented(corpus, groups) if spec.mitigation == "cda" else corpus
    weights = reweighting(data) if spec.mitigation == "reweight" else np.ones(len(data))
    terms = all_terms(groups)
    vocabulary = build_vocabulary(data.texts, extra=terms)
    labels = torch.tensor(data.labels, dtype=torch.float32)
    if spec.kind == "bow":
        from sklearn.linear_model import LogisticRegression

        model = BagOfWordsClassifier(vocabulary)
        counts = model.embed(encode(data.texts, vocabulary, max_len_of(data.texts))).numpy()
        fitted = LogisticRegression(C=spec.C, solver="newton-cholesky", tol=1e-8, max_iter=100)
        fitted.fit(counts, data.labels, sample_weight=weights)
        model.set_coefficients(
            torch.as_tensor(fitted.coef_[0], dtype=model.dtype), fitted.intercept_[0]
        )
        record: dict[str, Any] = {"iterations": int(fitted.n_iter_[0])}
    else:
        config = TextTransformerConfig(
            vocabulary, dim=spec.dim, layers=spec.layers, heads=spec.heads, seed=spec.seed
        )
        model = TextTransformer(config)
        tokens = encode(data.texts, vocabulary, config.max_len)
        pairs = None
        if spec.mitigation == "clp":
            swaps = counterfactuals(data.texts, groups)
            pairs = (
                tokens[[s.source for s in swaps]],
                encode([s.text for s in swaps], vocabulary, config.max_len),
            )
        loss = _transformer_loss(
            tokens, labels, torch.tensor(weights, dtype=torch.float32), pairs, spec
        )
        result = train(
            model,
            loss,
            TrainConfig(steps=spec.steps, lr=spec.lr, warmup=spec.steps // 10, seed=spec.seed),
            out=out,
            resume=resume,
            on_step=on_step,
            describe={"spec": asdict(spec), "corpus_sha256": corpus.sha256()},
        )
        model.eval()
        record = {"final_loss": result.losses[-1], "steps": len(result.losses)}
    scores = score_texts(model, data.texts)
    record |= {
        "model": spec.name,
        "spec": asdict(spec),
        "corpus_sha256": corpus.sha256(),
        "training_texts": len(data),
        "vocabulary": len(vocabulary),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training_accuracy": float(np.mean((scores >= 0.5) == np.array(data.labels, dtype=bool))),
        "seconds": time.perf_counter() - started,
    }
    return model, record


def _transformer_loss(tokens, labels, weights, pairs, spec: ClassifierSpec):
    """The shared loop's loss: weighted binary cross-entropy on a batch drawn with
    replacement, words dropped to ``<unk>``, plus the pairing penalty on a batch of pairs."""

    def dropped(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        drop = (torch.rand(batch.shape, generator=generator) < spec.word_dropout) & (batch > 2)
        return torch.where(drop, torch.ones_like(batch), batch)

    def loss(model, step, generator):
        index = torch.randint(len(tokens), (spec.batch_size,), generator=generator)
        logits = model(dropped(tokens[index], generator))
        value = F.binary_cross_entropy_with_logits(logits, labels[index], weight=weights[index])
        accuracy = float(((logits > 0).float() == labels[index]).float().mean())
        metrics = {"accuracy": accuracy}
        if pairs is not None:
            j = torch.randint(len(pairs[0]), (spec.batch_size,), generator=generator)
            penalty = (model(pairs[0][j]) - model(pairs[1][j])).abs().mean()
            value = value + spec.clp_weight * penalty
            metrics["pairing_penalty"] = float(penalty.detach())
        return value, metrics

    return loss


@torch.no_grad()
def score_texts(model: TextClassifier, texts: list[str], batch: int = 2048) -> np.ndarray:
    """(N,) the model's probability of toxic for each text."""
    return _batched(model.score, model, texts, batch)


@torch.no_grad()
def embed_texts(model: TextClassifier, texts: list[str], batch: int = 2048) -> np.ndarray:
    """(N, E) the model's own representation of each text (what its logit is read from)."""
    return _batched(model.embed, model, texts, batch)


def _batched(fn, model: TextClassifier, texts: list[str], batch: int) -> np.ndarray:
    max_len = model.config.max_len if isinstance(model, TextTransformer) else max_len_of(texts)
    parts = [
        fn(encode(texts[i : i + batch], model.vocabulary, max_len).to(model.device))
        for i in range(0, len(texts), batch)
    ]
    return torch.cat(parts).double().cpu().numpy()


def save_classifier(model: TextClassifier, record: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write ``out/model/`` (safetensors + config.json) and ``out/training.json``; under
    torchrun on rank 0 only (every rank trained the same model)."""
    out = Path(out)
    if is_main_process():
        model.save(out / "model")
        write_metrics(out / "training.json", record)
    return out


def load_classifier(path: str | os.PathLike) -> TextClassifier:
    """The classifier saved in ``path`` (a directory :func:`save_classifier` wrote, or its
    ``model/``)."""
    path = Path(path)
    if (path / "model" / CONFIG_FILE).is_file():
        path = path / "model"
    if not (path / CONFIG_FILE).is_file():
        raise AmlabError(
            f"{path} holds no saved classifier (no {CONFIG_FILE}); pass the --out directory "
            "of `amlab fairness train`."
        )
    saved = read_json(path / CONFIG_FILE, "save the classifier again")
    kind = saved.get("kind") if isinstance(saved, dict) else None
    if kind not in CLASSES:
        raise AmlabError(
            f"{path} holds a {kind!r} model, not a text classifier ({', '.join(CLASSES)})."
        )
    return CLASSES[kind].load(path)


# -- the audit --------------------------------------------------------------------------------
def subgroups_of(data: LabelledTexts, groups: TokenGroups) -> Subgroups:
    """One subgroup per token (the texts that mention it) and per value of each group
    column ("column=value"); families: each token group, all tokens, each group column."""
    terms = all_terms(groups)
    masks = {t: np.array(m) for t, m in term_masks(data.texts, terms).items()}
    families = {name: tuple(tokens) for name, tokens in groups.items()}
    families["all terms"] = terms
    for column, values in data.columns.items():
        names = []
        for value in sorted(set(values) - {""}):
            name = f"{column}={value}"
            masks[name] = np.array([v == value for v in values])
            names.append(name)
        if len(names) > 1:
            families[column] = tuple(names)
    return Subgroups(masks, families)


@dataclass(frozen=True)
class AuditSettings:
    """threshold: a text is flagged toxic when its score is at least this; resamples and
    level: the bootstrap; min_count: fewer toxic or non-toxic texts in a subgroup than this
    gets a warning; neighbours: k of the nearest-neighbour consistency; seed: the
    bootstrap's."""

    threshold: float = 0.5
    resamples: int = 1000
    level: float = 0.95
    min_count: int = 10
    neighbours: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise AmlabError(f"threshold must lie in (0, 1); got {self.threshold!r}.")
        check_positive_int(self.resamples, "resamples")
        check_positive_int(self.min_count, "min_count", allow_zero=True)
        check_positive_int(self.neighbours, "neighbours")


def audit(
    data: LabelledTexts,
    groups: TokenGroups,
    settings: AuditSettings = AuditSettings(),
    *,
    model: TextClassifier | None = None,
    scores: dict[str, float] | None = None,
    scores_source: str = "the scores file",
) -> dict[str, Any]:
    """Every metric of :mod:`amlab.analysis.fairness` for ``model`` or for ``scores`` (a
    scores file's {text: score}, which must cover the texts and all their swaps) on
    ``data``, with ``groups`` as the token groups. Nearest-neighbour consistency needs the
    model's embeddings, so a scores audit has none."""
    if (model is None) == (scores is None):
        raise AmlabError("audit a model or a scores file: give exactly one of them.")
    check_groups_in_texts(groups, data.texts, None if model is None else model.vocabulary)
    swaps = counterfactuals(data.texts, groups)
    swapped = [s.text for s in swaps]
    if model is not None:
        score, swapped_score = score_texts(model, data.texts), score_texts(model, swapped)
    else:
        score = np.array(scores_for(scores, data.texts, scores_source))
        swapped_score = np.array(scores_for(scores, swapped, scores_source))
    bootstrap = Bootstrap(len(data), settings.resamples, settings.seed, settings.level)
    t = settings.threshold
    group = group_metrics(
        data.labels, score, subgroups_of(data, groups), bootstrap, t, settings.min_count
    )
    pairs = Pairs.from_swaps(swaps, score, swapped_score)
    individual = counterfactual_metrics(pairs, bootstrap, t)
    warnings = list(group["warnings"])
    if model is not None and len(data) > settings.neighbours:
        embeddings = embed_texts(model, data.texts)
        individual["consistency"] = consistency(
            embeddings, score, bootstrap, t, settings.neighbours
        )
    elif model is not None:
        warnings.append(
            f"nearest-neighbour consistency needs more than {settings.neighbours} texts; "
            f"the data has {len(data)}, so it is left out."
        )
    return {
        "settings": asdict(settings),
        "texts": len(data),
        "swaps": len(swaps),
        "groups": {name: list(tokens) for name, tokens in groups.items()},
        "group": group,
        "individual": individual,
        "headline": headline(group, individual),
        "warnings": warnings,
    }


def headline(group: dict, individual: dict) -> dict[str, float]:
    """The numbers one model is summed up by (values only): accuracy and AUC; the group gap
    (equalized odds difference over all terms, and its mean over the token groups); the
    worst BPSN AUC; the counterfactual gap, flip rate and consistency."""
    token_groups = [f for f in group["families"] if f in individual["groups"]]
    return {
        "accuracy": group["overall"]["accuracy"]["value"],
        "auc": group["overall"]["auc"]["value"],
        "equalized_odds_difference": group["families"]["all terms"]["equalized_odds_difference"][
            "value"
        ],
        "mean_group_equalized_odds_difference": float(
            np.mean(
                [group["families"][f]["equalized_odds_difference"]["value"] for f in token_groups]
            )
        ),
        "demographic_parity_difference": group["families"]["all terms"][
            "demographic_parity_difference"
        ]["value"],
        "worst_bpsn_auc": min(
            g["bpsn_auc"]["value"] for n, g in group["subgroups"].items() if "=" not in n
        ),
        "counterfactual_gap": individual["all"]["gap"]["value"],
        "flip_rate": individual["all"]["flip_rate"]["value"],
        **(
            {"consistency": individual["consistency"]["value"]}
            if "consistency" in individual
            else {}
        ),
    }


# -- the audit's files -------------------------------------------------------------------------
def fmt_interval(interval: dict[str, float], digits: int = 3) -> str:
    """``value [low, high]`` of a bootstrap interval, ``digits`` decimals each."""
    return (
        f"{interval['value']:.{digits}f} [{interval['low']:.{digits}f}, "
        f"{interval['high']:.{digits}f}]"
    )


def write_audit(result: dict[str, Any], out: str | os.PathLike, title: str) -> list[Path]:
    """Write ``out/report.md``, ``out/metrics.json`` and the figures of one audit."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "error_rates.png": "Per-term false positive and false negative rates with bootstrap "
        "intervals (balanced data: a fair model's would be equal).",
        "swap_matrix.png": "Mean score change when the row's term is swapped for the column's.",
        "gap_per_group.png": "Counterfactual token fairness gap per token group, with intervals.",
    }
    plot_error_rates(result, out / "error_rates.png")
    plot_swap_matrix(result["individual"]["swap_matrices"], out / "swap_matrix.png")
    plot_gap_per_group(result, out / "gap_per_group.png")
    settings = result["settings"]
    level = f"{settings['level']:.0%}"
    lines = [
        f"# Fairness audit: {title}",
        "",
        f"{result['texts']} texts, {result['swaps']} swaps within the token groups, threshold "
        f"{settings['threshold']:g}; intervals: {level} percentile bootstrap over the texts "
        f"({settings['resamples']} resamples).",
        "",
        "## Summary",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in result["headline"].items()],
        "",
    ]
    if result["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in result["warnings"]], ""]
    lines += [
        "## Group metrics per family",
        "",
        "| family | " + " | ".join(FAMILY_METRICS) + " | four-fifths rule |",
        "|---|" + "---|" * (len(FAMILY_METRICS) + 1),
    ]
    for family, row in result["group"]["families"].items():
        cells = " | ".join(fmt_interval(row[m]) for m in FAMILY_METRICS)
        lines.append(f"| {family} | {cells} | {'passes' if row['four_fifths'] else 'fails'} |")
    columns = ("positive_rate", "fpr", "fnr", "subgroup_auc", "bpsn_auc", "bnsp_auc")
    lines += [
        "",
        "## Group metrics per subgroup",
        "",
        "| subgroup | texts | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, row in result["group"]["subgroups"].items():
        lines.append(
            f"| {name} | {row['count']} | "
            + " | ".join(fmt_interval(row[c]) for c in columns)
            + " |"
        )
    individual = result["individual"]
    lines += [
        "",
        "## Individual metrics",
        "",
        "| pairs of | pairs | counterfactual gap | flip rate |",
        "|---|---|---|---|",
        f"| all | {individual['all']['pairs']} | {fmt_interval(individual['all']['gap'])} | "
        f"{fmt_interval(individual['all']['flip_rate'])} |",
    ]
    for name, row in individual["groups"].items():
        lines.append(
            f"| {name} | {row['pairs']} | {fmt_interval(row['gap'])} | "
            f"{fmt_interval(row['flip_rate'])} |"
        )
    if "consistency" in individual:
        lines += [
            "",
            f"Nearest-neighbour consistency ({settings['neighbours']} neighbours, the "
            f"model's embeddings): {fmt_interval(individual['consistency'])}.",
        ]
    else:
        lines += [
            "",
            "No nearest-neighbour consistency: it needs the model's embeddings (audit with "
            "--model) and more texts than neighbours.",
        ]
    lines.append("")
    for name, caption in figures.items():
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    write_metrics(out / "metrics.json", result)
    return [out / "report.md", out / "metrics.json", *(out / name for name in figures)]


def error_bars(intervals: list[dict[str, float]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The values of bootstrap intervals and matplotlib's ``yerr`` for them (the distances
    down to ``low`` and up to ``high``)."""
    value = np.array([i["value"] for i in intervals])
    low = np.array([i["low"] for i in intervals])
    high = np.array([i["high"] for i in intervals])
    return value, [value - low, high - value]


def plot_error_rates(result: dict[str, Any], path: Path) -> None:
    from amlab.tasks.figures import plt, save_figure

    groups = result["groups"]
    table = result["group"]["subgroups"]
    terms = all_terms(groups)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.28 * len(terms) + 1.5), 5.4), sharex=True)
    colours = plt.get_cmap("tab10")
    x = np.arange(len(terms))
    for ax, metric, label in (
        (axes[0], "fpr", "false positive rate"),
        (axes[1], "fnr", "false negative rate"),
    ):
        for g, (name, tokens) in enumerate(groups.items()):
            idx = [terms.index(t) for t in tokens]
            value, yerr = error_bars([table[t][metric] for t in tokens])
            ax.errorbar(
                x[idx],
                value,
                yerr=yerr,
                fmt="o",
                ms=4,
                capsize=2,
                color=colours(g % 10),
                label=name,
            )
        overall = result["group"]["overall"][metric]["value"]
        ax.axhline(overall, color="grey", lw=0.8, ls="--")
        ax.set_ylabel(label)
        ax.set_ylim(-0.03, 1.03)
    axes[1].set_xticks(x, terms, rotation=90, fontsize=8)
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    save_figure(fig, path)


def plot_swap_matrix(matrices: dict[str, Any], path: Path) -> None:
    from amlab.tasks.figures import plt, save_figure

    terms = [t for m in matrices.values() for t in m["terms"]]
    full = np.full((len(terms), len(terms)), np.nan)
    start = 0
    for m in matrices.values():
        n = len(m["terms"])
        full[start : start + n, start : start + n] = np.array(m["mean_change"], dtype=float)
        start += n
    bound = max(float(np.nanmax(np.abs(full))) if np.isfinite(full).any() else 0.0, 1e-6)
    size = max(5.0, 0.22 * len(terms) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(full, cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_xticks(range(len(terms)), terms, rotation=90, fontsize=7)
    ax.set_yticks(range(len(terms)), terms, fontsize=7)
    ax.set_xlabel("swapped in")
    ax.set_ylabel("swapped out")
    fig.colorbar(image, ax=ax, label="mean score change", shrink=0.8)
    save_figure(fig, path)


def plot_gap_per_group(result: dict[str, Any], path: Path) -> None:
    from amlab.tasks.figures import plt, save_figure

    rows = result["individual"]["groups"]
    names = list(rows)
    value, yerr = error_bars([rows[n]["gap"] for n in names])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), value, yerr=yerr, capsize=3, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean |f(x) - f(x')|")
    save_figure(fig, path)
