"""The fairness view's models and data, for the browser, and the test vectors of its math.

:func:`export_fairness` writes the shipped text classifiers (``models/fairness-bow``,
``fairness-bow-cda``, ``fairness-transformer``, ``fairness-transformer-clp``: made by
``amlab fairness train``, see ``models/README.md``) as raw float32 (every tensor of the
``state_dict``, one after the other), and ``fairness-data.json``: the token groups and the
balanced test set the view's group metrics are computed on. The browser scores text with
them (``web/src/lib/math/fairness.ts``: tokens as :func:`amlab.data.fairness.words`, the
bag-of-words logit, the transformer's forward of ``transformer.ts``) and computes the metrics
of :mod:`amlab.analysis.fairness` at any threshold; :func:`fairness_vectors` are the numbers
it is tested against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from amlab.analysis.fairness import (
    Bootstrap,
    Pairs,
    Subgroups,
    counterfactual_metrics,
    group_metrics,
)
from amlab.data.fairness import (
    TokenGroups,
    all_terms,
    balanced_test_set,
    counterfactuals,
    encode,
    identity_terms,
    swap,
    term_masks,
    words,
)
from amlab.errors import AmlabError
from amlab.io import atomic_write_text, read_json, write_float32_tensors
from amlab.models.text_classifier import BagOfWordsClassifier, TextClassifier, TextTransformer

MODELS = Path(__file__).parent / "models"
#: the shipped classifiers, by the name the view shows: a baseline and a mitigated model of
#: each kind, all trained on the default biased corpus (6,000 sentences, seed 0)
SHIPPED_FAIRNESS = {
    "bow": MODELS / "fairness-bow",
    "bow+cda": MODELS / "fairness-bow-cda",
    "transformer": MODELS / "fairness-transformer",
    "transformer+clp": MODELS / "fairness-transformer-clp",
}
DATA_FILE = "fairness-data.json"


def load_shipped_classifier(name: str) -> tuple[TextClassifier, dict]:
    """A shipped classifier and its training record (``training.json``)."""
    if name not in SHIPPED_FAIRNESS:
        raise AmlabError(
            f"no shipped fairness model {name!r}; choose from {list(SHIPPED_FAIRNESS)}."
        )
    path = SHIPPED_FAIRNESS[name]
    cls = BagOfWordsClassifier if name.startswith("bow") else TextTransformer
    return cls.load(path), read_json(path / "training.json", "train the model again")


def view_subgroups(texts: list[str], groups: TokenGroups) -> Subgroups:
    """The subgroups the view compares: one per term (the texts that mention it); families:
    each token group and all terms together."""
    masks = {t: np.array(m) for t, m in term_masks(texts, all_terms(groups)).items()}
    return Subgroups(masks, {**groups, "all terms": all_terms(groups)})


def file_name(name: str) -> str:
    """The exported weights' file of a shipped classifier: ``fairness-<name>.bin``."""
    return f"fairness-{name.replace('+', '-')}.bin"


def export_fairness(out: str | Path) -> dict:
    """Write ``fairness-<name>.bin`` for each shipped classifier and ``fairness-data.json``
    (``groups``: the identity terms; ``test``: the balanced test set's texts, labels and
    group column, and its sha256) into ``out``; return the manifest entry: the data file and
    per model its kind, config (vocabulary included), the tensors' names, shapes and offsets
    (in floats) and its training record."""
    out = Path(out)
    groups = identity_terms()
    test = balanced_test_set(groups)
    data = {
        "groups": {name: list(tokens) for name, tokens in groups.items()},
        "test": {
            "texts": test.texts,
            "labels": test.labels,
            "group": test.columns["group"],
            "sha256": test.sha256(),
        },
    }
    atomic_write_text(out / DATA_FILE, json.dumps(data, separators=(",", ":")))
    entry: dict = {"data": DATA_FILE, "models": {}}
    for name in SHIPPED_FAIRNESS:
        model, record = load_shipped_classifier(name)
        tensors = write_float32_tensors(out / file_name(name), model.state_dict())
        config = model.config
        entry["models"][name] = {
            "file": file_name(name),
            "kind": type(model).__name__,
            "config": {
                k: v for k, v in vars(config).items() if k not in ("vocabulary", "dtype", "seed")
            },
            "vocabulary": list(config.vocabulary),
            "tensors": tensors,
            "training": record,
        }
    return entry


# -- test vectors ------------------------------------------------------------------------------
#: texts the tokeniser and the models are tested on: case, punctuation, apostrophes, digits,
#: unknown words, non-ASCII letters (lower-cased alike by Python and JavaScript), empty text
VECTOR_TEXTS = (
    "i am gay",
    "I am STRAIGHT!",
    "my muslim neighbour is kind, and my christian neighbour is kind too.",
    "Shut up you stupid Black idiot",
    "those transgender folks are disgusting",
    "the elderly nurse isn't here... 42 times",
    "zorblax people are wonderful",
    "Straße café naïve KELVIN\u212a İstanbul",
    "",
    "   ,,, !!! ",
    "gay gay gay lesbian",
    "the blind deaf autistic disabled students are vile morons and should leave right now",
)
#: (text, token, other) swaps: every occurrence, any case, whole words only
VECTOR_SWAPS = (
    ("i am gay", "gay", "straight"),
    ("Gay people, GAY people: gay-friendly", "gay", "lesbian"),
    ("gayness and gay's and gay", "gay", "queer"),
    ("the old man is older than the old tree", "old", "young"),
    ("Muslim.muslim muslim2 muslim", "muslim", "jewish"),
)
#: thresholds the group and individual metrics are exported at
VECTOR_THRESHOLDS = (0.3, 0.5, 0.72)


def _logits(model: TextClassifier, texts: list[str]) -> torch.Tensor:
    """(N,) the model's logits of ``texts`` as it reads them: padded to a transformer's
    max_len, to the longest text for the bag of words."""
    longest = 1 + max(len(words(t)) for t in texts)
    max_len = model.config.max_len if isinstance(model, TextTransformer) else longest
    with torch.no_grad():
        return model(encode(texts, model.vocabulary, max_len))


def _values(row: dict) -> dict:
    """A metrics row's point values: each interval's ``value``, and the four-fifths verdict."""
    return {
        k: v["value"] if isinstance(v, dict) else v
        for k, v in row.items()
        if isinstance(v, dict) or k == "four_fifths"
    }


def fairness_vectors() -> dict:
    """The fairness view's test cases: :func:`~amlab.data.fairness.words` and
    :func:`~amlab.data.fairness.swap` of tricky texts; per shipped model the ids, float32
    logits (the model's own forward) and float64 logits (the model in float64) of
    :data:`VECTOR_TEXTS` and its float32 scores of the balanced test set; per model and
    threshold the point values of the group metrics (every subgroup and family of
    :func:`view_subgroups`) and of the counterfactual metrics."""
    groups = identity_terms()
    test = balanced_test_set(groups)
    subgroups = view_subgroups(test.texts, groups)
    swaps = counterfactuals(test.texts, groups)
    index = {text: i for i, text in enumerate(test.texts)}
    if any(s.text not in index for s in swaps):
        raise AmlabError("a swap of the balanced test set is not a text of it.")
    swapped = np.array([index[s.text] for s in swaps], dtype=np.int64)
    point = Bootstrap(len(test), resamples=1)
    texts = list(VECTOR_TEXTS)
    models = {}
    for name in SHIPPED_FAIRNESS:
        model, _ = load_shipped_classifier(name)
        scores = torch.sigmoid(_logits(model, test.texts)).double().numpy()
        encoded = encode(texts, model.vocabulary, 1 + max(len(words(t)) for t in texts))
        ids = [row[: 1 + len(words(t))].tolist() for row, t in zip(encoded, texts, strict=True)]
        pairs = Pairs.from_swaps(swaps, scores, scores[swapped])
        metrics = []
        for threshold in VECTOR_THRESHOLDS:
            group = group_metrics(test.labels, scores, subgroups, point, threshold, min_count=0)
            individual = counterfactual_metrics(pairs, point, threshold)
            metrics.append(
                {
                    "threshold": threshold,
                    "subgroups": {n: _values(r) for n, r in group["subgroups"].items()},
                    "families": {n: _values(r) for n, r in group["families"].items()},
                    "overall": _values(group["overall"]),
                    "individual": {
                        n: _values(r)
                        for n, r in [("all", individual["all"]), *individual["groups"].items()]
                    },
                }
            )
        models[name] = {
            "ids": ids,
            "logits_float32": _logits(model, texts).tolist(),
            "logits_float64": _logits(model.double(), texts).tolist(),
            "test_scores": scores.tolist(),
            "metrics": metrics,
        }
    return {
        "texts": [{"text": t, "words": words(t)} for t in texts],
        "swaps": [{"args": list(args), "result": swap(*args)} for args in VECTOR_SWAPS],
        "families": {n: list(f) for n, f in subgroups.families.items()},
        "models": models,
    }
