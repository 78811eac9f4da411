"""The text classifiers (models.text_classifier), their training and the audit
(tasks.fairness), and `amlab fairness data/train/audit`."""

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from amlab.cli import app
from amlab.data.fairness import (
    CorpusConfig,
    LabelledTexts,
    balanced_test_set,
    build_vocabulary,
    encode,
    identity_terms,
    training_corpus,
)
from amlab.errors import AmlabError
from amlab.experiments.fairness.group import bias_found, planted_gaps
from amlab.models.text_classifier import (
    BagOfWordsClassifier,
    TextTransformer,
    TextTransformerConfig,
)
from amlab.tasks.fairness import (
    AuditSettings,
    ClassifierSpec,
    audit,
    load_classifier,
    reweighting,
    save_classifier,
    score_texts,
    train_classifier,
)

GROUPS = identity_terms()


@pytest.fixture(scope="module")
def corpus():
    return training_corpus(CorpusConfig(size=3000), GROUPS)


@pytest.fixture(scope="module")
def bow_audits(corpus):
    test = balanced_test_set(GROUPS)
    settings = AuditSettings(resamples=50)
    out = {}
    for mitigation in ("none", "reweight", "cda"):
        model, _ = train_classifier(ClassifierSpec(mitigation=mitigation), corpus, GROUPS)
        out[mitigation] = (model, audit(test, GROUPS, settings, model=model))
    return out


def test_bag_of_words_scores_equal_sklearns_probabilities(corpus):
    texts = corpus.texts[:400]
    vocabulary = build_vocabulary(texts)
    model = BagOfWordsClassifier(vocabulary, dtype="float64")
    tokens = encode(texts, vocabulary, 20)
    counts = model.embed(tokens).numpy()
    fitted = LogisticRegression(max_iter=2000).fit(counts, corpus.labels[:400])
    model.set_coefficients(torch.as_tensor(fitted.coef_[0]), fitted.intercept_[0])
    expected = fitted.predict_proba(counts)[:, 1]
    assert np.allclose(model.score(tokens).detach().numpy(), expected, atol=1e-12)


def test_transformer_ignores_padding_and_round_trips(tmp_path):
    vocabulary = build_vocabulary(["a b c d"])
    model = TextTransformer(TextTransformerConfig(vocabulary, max_len=8, seed=1))
    short = encode(["a b c", "d"], vocabulary, 4)
    long = encode(["a b c", "d"], vocabulary, 8)
    assert torch.allclose(model(short), model(long), atol=1e-6)
    model.save(tmp_path / "m")
    loaded = load_classifier(tmp_path / "m")
    assert isinstance(loaded, TextTransformer) and loaded.config == model.config
    assert torch.equal(loaded(long), model.eval()(long))
    with pytest.raises(AmlabError, match="int64"):
        model(long.float())
    with pytest.raises(AmlabError, match="vocabulary must start with"):
        TextTransformerConfig(("a", "b", "c", "d"))


def test_saved_bow_classifier_loads_and_scores_alike(tmp_path, bow_audits):
    model = bow_audits["none"][0]
    save_classifier(model, {"model": "bow"}, tmp_path / "run")
    loaded = load_classifier(tmp_path / "run")
    texts = balanced_test_set(GROUPS).texts[:50]
    assert np.array_equal(score_texts(loaded, texts), score_texts(model, texts))
    with pytest.raises(AmlabError, match="holds no saved classifier"):
        load_classifier(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(AmlabError, match="not valid JSON"):
        load_classifier(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text("[1]")
    with pytest.raises(AmlabError, match="not a text classifier"):
        load_classifier(tmp_path / "bad")


def test_reweighting_makes_term_and_label_independent(corpus):
    w = reweighting(corpus)
    terms, labels = np.array(corpus.columns["term"]), np.array(corpus.labels)
    for term in ("gay", "straight", "deaf", ""):
        mass = w[terms == term]
        assert np.average(labels[terms == term], weights=mass) == pytest.approx(labels.mean())


def test_bow_baseline_shows_the_planted_bias_and_mitigations_shrink_their_gaps(bow_audits):
    headline = {m: a["headline"] for m, (_, a) in bow_audits.items()}
    gaps = planted_gaps(bow_audits["none"][1])
    assert bias_found(gaps), gaps
    assert gaps["over_fpr"] > gaps["others_fpr"] + 0.1
    group_gap = "mean_group_equalized_odds_difference"
    assert headline["reweight"][group_gap] < headline["none"][group_gap]
    # augmentation gives every term of a group the same contexts: the swap gap vanishes
    assert headline["none"]["counterfactual_gap"] > 0.02
    assert headline["cda"]["counterfactual_gap"] < 1e-6
    assert headline["cda"]["flip_rate"] == 0.0


def test_audit_checks_its_input(bow_audits):
    model = bow_audits["none"][0]
    test = balanced_test_set(GROUPS)
    with pytest.raises(AmlabError, match="exactly one"):
        audit(test, GROUPS)
    with pytest.raises(AmlabError, match="unknown tokens.*martian"):
        audit(test, {"aliens": ("martian", "gay")}, model=model)
    with pytest.raises(AmlabError, match="no score for"):
        audit(test, GROUPS, scores={test.texts[0]: 0.5})
    with pytest.raises(AmlabError, match="clp"):
        ClassifierSpec(kind="bow", mitigation="clp")
    with pytest.raises(AmlabError, match="threshold"):
        AuditSettings(threshold=1.0)
    # five texts: every subgroup is too small, and five is too few for 5 neighbours
    few = LabelledTexts(
        ["i am gay", "gay people are vile", "i am straight", "straight idiots", "hello"],
        [0, 1, 0, 1, 0],
    )
    result = audit(few, {"o": ("gay", "straight")}, AuditSettings(resamples=20), model=model)
    assert "consistency" not in result["individual"]
    assert sum("fewer than 10" in w for w in result["warnings"]) == 2
    assert any("consistency needs more than 5 texts" in w for w in result["warnings"])


def _cli(*args):
    result = CliRunner().invoke(app, ["fairness", *map(str, args)])
    return result


def test_fairness_commands_end_to_end_and_a_scores_file_audits_alike(tmp_path, bow_audits):
    data = tmp_path / "data"
    assert _cli("data", "--out", data, "--size", 500).exit_code == 0
    test = balanced_test_set(GROUPS)
    assert (data / "test.csv").read_text() == test.to_csv()
    run = _cli("train", "--out", tmp_path / "m", "--size", 2000, "--json")
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["model"] == "bow"
    audited = _cli("audit", "--model", tmp_path / "m", "--out", tmp_path / "a", "--resamples", 50)
    assert audited.exit_code == 0, audited.output
    by_model = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for name in ("report.md", "error_rates.png", "swap_matrix.png", "gap_per_group.png"):
        assert (tmp_path / "a" / name).stat().st_size > 1000
    # score every text a scores file must cover with the saved model, then audit the file
    model = load_classifier(tmp_path / "m")
    with open(data / "to_score.csv", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    scores_csv = tmp_path / "scores.csv"
    with open(scores_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "score"])
        writer.writerows(zip(texts, map(repr, score_texts(model, texts).tolist()), strict=True))
    args = ("audit", "--scores", scores_csv, "--out", tmp_path / "s", "--resamples", 50)
    assert _cli(*args).exit_code == 0
    by_scores = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert by_scores["group"] == by_model["group"]
    assert "consistency" not in by_scores["individual"]
    by_model["individual"].pop("consistency")
    assert by_scores["individual"] == by_model["individual"]
    # a scores file that misses texts, and one with a non-numeric score
    lines = scores_csv.read_text().splitlines()
    scores_csv.write_text("\n".join(lines[:-5]) + "\n")
    missing = _cli(*args)
    assert missing.exit_code == 2 and "no score for 5 of the" in missing.output
    scores_csv.write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",oops"]) + "\n")
    assert "is not a number in [0, 1]" in _cli(*args).output
    both = _cli("audit", "--model", tmp_path / "m", "--scores", scores_csv)
    assert both.exit_code == 2 and "not both" in both.output
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"faith": []}))
    empty = _cli("audit", "--model", tmp_path / "m", "--groups", groups, "--out", tmp_path / "e")
    assert empty.exit_code == 2 and "group 'faith' is empty" in empty.output
    unused = _cli("train", "--steps", 10, "--out", tmp_path / "x")
    assert unused.exit_code == 2 and "--steps would do nothing" in unused.output


def test_transformer_training_command_checkpoints_and_resumes(tmp_path):
    args = ("train", "--model", "transformer", "--steps", 4, "--size", 300, "--out", tmp_path)
    first = _cli(*args, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["steps"] == 4
    assert (tmp_path / "checkpoints" / "latest").is_file()
    again = _cli(*args)  # a checkpoint is there: never overwritten silently
    assert again.exit_code == 2 and "--resume" in again.output
    other = _cli(*args, "--resume", "--toxic-rate", "gay=0.5")  # another corpus
    assert other.exit_code == 2 and "other settings" in other.output
    resumed = _cli(*args, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert isinstance(load_classifier(tmp_path), TextTransformer)
