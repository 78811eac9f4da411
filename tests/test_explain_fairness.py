"""amlab.explain.fairness: the shipped text classifiers load and are what `amlab fairness
train` makes, their export for the browser round-trips, and the view's test vectors are the
analysis package's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amlab.analysis.fairness import Bootstrap, group_metrics
from amlab.data.fairness import CorpusConfig, balanced_test_set, identity_terms, training_corpus
from amlab.errors import AmlabError
from amlab.explain.fairness import (
    SHIPPED_FAIRNESS,
    export_fairness,
    fairness_vectors,
    load_shipped_classifier,
    view_subgroups,
)
from amlab.models.text_classifier import BagOfWordsClassifier, TextTransformer
from amlab.tasks.fairness import ClassifierSpec, score_texts, subgroups_of, train_classifier


@pytest.fixture(scope="module")
def vectors():
    return fairness_vectors()


def test_the_shipped_models_load_with_their_training_record():
    corpus = training_corpus(CorpusConfig(), identity_terms())
    for name, path in SHIPPED_FAIRNESS.items():
        model, record = load_shipped_classifier(name)
        assert record["model"] == name
        assert record["corpus_sha256"] == corpus.sha256()  # the default biased corpus
        assert sum(p.numel() for p in model.parameters()) == record["parameters"]
        kind = BagOfWordsClassifier if name.startswith("bow") else TextTransformer
        assert isinstance(model, kind)
        assert (path / "tensors.safetensors").stat().st_size < 80_000
    with pytest.raises(AmlabError, match="choose from"):
        load_shipped_classifier("svm")


def test_the_shipped_bow_model_is_what_fairness_train_fits():
    """The bag of words is fitted in a second: refit it and compare the coefficients."""
    groups = identity_terms()
    spec = ClassifierSpec(**load_shipped_classifier("bow")[1]["spec"])
    refit, _ = train_classifier(spec, training_corpus(CorpusConfig(), groups), groups)
    shipped, _ = load_shipped_classifier("bow")
    assert refit.vocabulary == shipped.vocabulary
    torch.testing.assert_close(refit.weight, shipped.weight, rtol=1e-4, atol=1e-5)


def test_the_shipped_models_show_the_planted_bias_and_its_mitigation():
    """The baselines score a harmless sentence higher with a term planted toxic than with one
    planted harmless; the mitigated models much less so."""
    texts = ["i met my gay neighbour at the park", "i met my straight neighbour at the park"]
    gap = {}
    for name in SHIPPED_FAIRNESS:
        model, _ = load_shipped_classifier(name)
        scores = score_texts(model, texts)
        gap[name] = scores[0] - scores[1]
    assert gap["bow"] > 0.05 and gap["transformer"] > 0.05, gap
    assert (
        abs(gap["bow+cda"]) < gap["bow"] / 5
        and abs(gap["transformer+clp"]) < gap["transformer"] / 5
    )


def test_the_export_round_trips(tmp_path):
    entry = export_fairness(tmp_path)
    data = json.loads((tmp_path / entry["data"]).read_text())
    test = balanced_test_set()
    assert data["test"]["texts"] == test.texts and data["test"]["labels"] == test.labels
    assert data["test"]["group"] == test.columns["group"]
    assert data["test"]["sha256"] == test.sha256()
    assert data["groups"] == {k: list(v) for k, v in identity_terms().items()}
    assert list(entry["models"]) == list(SHIPPED_FAIRNESS)
    for name, info in entry["models"].items():
        model, record = load_shipped_classifier(name)
        assert info["vocabulary"] == list(model.vocabulary) and info["training"] == record
        flat = np.frombuffer((tmp_path / info["file"]).read_bytes(), dtype="<f4")
        state = model.state_dict()
        assert [t["name"] for t in info["tensors"]] == list(state)
        assert len(flat) == sum(v.numel() for v in state.values())
        for t in info["tensors"]:
            size = int(np.prod(t["shape"]))
            got = flat[t["offset"] : t["offset"] + size].reshape(t["shape"])
            assert np.array_equal(got, state[t["name"]].numpy()), (name, t["name"])
        if info["kind"] == "TextTransformer":
            config = model.config
            assert info["config"] == {
                "dim": config.dim,
                "layers": config.layers,
                "heads": config.heads,
                "mlp_ratio": config.mlp_ratio,
                "max_len": config.max_len,
            }


def test_vectors_are_the_models_and_the_analysis_numbers(vectors):
    groups = identity_terms()
    test = balanced_test_set(groups)
    # the view's subgroups are the audit's per-term subgroups and token-group families
    audit = subgroups_of(test, groups)
    view = view_subgroups(test.texts, groups)
    for term, mask in view.masks.items():
        assert np.array_equal(mask, audit.masks[term])
    assert all(view.families[f] == audit.families[f] for f in view.families)
    for name, case in vectors["models"].items():
        model, _ = load_shipped_classifier(name)
        np.testing.assert_allclose(case["test_scores"], score_texts(model, test.texts), rtol=0)
        np.testing.assert_allclose(
            case["logits_float32"], case["logits_float64"], rtol=1e-4, atol=1e-5
        )
        at_half = next(m for m in case["metrics"] if m["threshold"] == 0.5)
        direct = group_metrics(
            test.labels, case["test_scores"], view, Bootstrap(len(test), 1), 0.5, min_count=0
        )
        assert at_half["subgroups"]["gay"]["fpr"] == direct["subgroups"]["gay"]["fpr"]["value"]
        flagged = np.array(case["test_scores"]) >= 0.5
        gay = np.array(view.masks["gay"]) & (np.array(test.labels) == 0)
        assert at_half["subgroups"]["gay"]["fpr"] == flagged[gay].mean()
