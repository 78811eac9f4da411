"""amlab.data.fairness: the generated data pinned, swaps, token groups and the CSV loaders,
with their errors."""

import json
from collections import Counter

import pytest
import torch

from amlab.data.fairness import (
    PLANTED_BIAS,
    TEST_NONTOXIC,
    TEST_TOXIC,
    CorpusConfig,
    balanced_test_set,
    build_vocabulary,
    check_groups_in_texts,
    counterfactuals,
    encode,
    identity_terms,
    load_labelled_csv,
    load_scores_csv,
    load_token_groups,
    scores_for,
    swap,
    training_corpus,
    words,
)
from amlab.errors import AmlabError

TEST_SET_SHA256 = "bf4544283d573e606df60fa828e70a655b68ec18880def3983fb9e3f91e54f6e"
CORPUS_500_SHA256 = "5cb050bf10f6f0873a34193bb8ce6aa115f27941e7804850219ca4c736d11bd1"


def test_identity_terms_cover_the_seven_axes_with_distinct_one_word_terms():
    groups = identity_terms()
    assert list(groups) == [
        "gender",
        "sexual_orientation",
        "religion",
        "race_ethnicity",
        "nationality",
        "disability",
        "age",
    ]
    terms = [t for tokens in groups.values() for t in tokens]
    assert len(terms) == len(set(terms)) == 34
    assert all(words(t) == [t] for t in terms)


def test_balanced_test_set_is_pinned_and_every_term_is_equally_toxic_and_not():
    test = balanced_test_set()
    assert test.sha256() == TEST_SET_SHA256
    assert len(test) == 34 * (len(TEST_TOXIC) + len(TEST_NONTOXIC))
    counts = Counter()
    for text, label in zip(test.texts, test.labels, strict=True):
        (term,) = [t for tokens in identity_terms().values() for t in tokens if t in words(text)]
        counts[term, label] += 1
    assert set(counts.values()) == {len(TEST_TOXIC)} and len(TEST_TOXIC) == len(TEST_NONTOXIC)


def test_training_corpus_is_deterministic_and_carries_the_planted_bias():
    assert training_corpus(CorpusConfig(size=500)).sha256() == CORPUS_500_SHA256
    config = CorpusConfig(size=20000, seed=3)
    corpus = training_corpus(config)
    assert corpus.sha256() == training_corpus(config).sha256()
    assert corpus.sha256() != training_corpus(CorpusConfig(size=20000, seed=4)).sha256()
    by_term = Counter(zip(corpus.columns["term"], corpus.labels, strict=True))
    noise = config.label_noise
    for term, rate in {**PLANTED_BIAS, "deaf": 0.5, "": 0.5}.items():
        n = by_term[term, 0] + by_term[term, 1]
        expected = rate * (1 - noise) + (1 - rate) * noise
        assert abs(by_term[term, 1] / n - expected) < 4 * (expected * (1 - expected) / n) ** 0.5
    # a sentence never mentions a term its row does not name
    terms = {t for tokens in identity_terms().values() for t in tokens}
    for text, term in zip(corpus.texts, corpus.columns["term"], strict=True):
        assert terms.intersection(words(text)) == ({term} if term else set())


def test_corpus_settings_are_checked():
    with pytest.raises(AmlabError, match="toxic_rate names martian"):
        training_corpus(CorpusConfig(size=10, toxic_rate={"martian": 0.9}))
    with pytest.raises(AmlabError, match=r"toxic_rate\[gay\] must be a rate"):
        CorpusConfig(toxic_rate={"gay": 1.5})
    with pytest.raises(AmlabError, match="label_noise"):
        CorpusConfig(label_noise=0.5)


def test_swap_replaces_whole_words_only():
    assert swap("Gay people and gayness, gay!", "gay", "straight") == (
        "straight people and gayness, straight!"
    )
    assert swap("the old man's old-fashioned hat", "old", "young") == (
        "the young man's young-fashioned hat"
    )
    groups = {"age": ("young", "old"), "faith": ("muslim", "jewish", "hindu")}
    swaps = counterfactuals(["a young muslim", "nobody here"], groups)
    assert [(s.source, s.group, s.token, s.other, s.text) for s in swaps] == [
        (0, "age", "young", "old", "a old muslim"),
        (0, "faith", "muslim", "jewish", "a young jewish"),
        (0, "faith", "muslim", "hindu", "a young hindu"),
    ]


@pytest.mark.parametrize(
    "value, message",
    [
        ([], "non-empty JSON object"),
        ({"faith": []}, "group 'faith' is empty"),
        ({"faith": "muslim"}, "must be a list of tokens"),
        ({"faith": ["muslim man"]}, "not one lower-case word"),
        ({"faith": ["Muslim"]}, "not one lower-case word"),
        ({"a": ["gay"], "b": ["gay"]}, "'gay' is in both 'a' and 'b'"),
    ],
)
def test_bad_group_files_are_refused(tmp_path, value, message):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps(value))
    with pytest.raises(AmlabError, match=message):
        load_token_groups(path)


def test_group_files_must_fit_the_data_and_the_model(tmp_path):
    texts = ["the gay guy", "a muslim neighbour"]
    check_groups_in_texts({"o": ("gay",), "r": ("muslim",)}, texts)
    with pytest.raises(AmlabError, match="no text mentions any token of the group.*age"):
        check_groups_in_texts({"o": ("gay",), "age": ("old", "young")}, texts)
    with pytest.raises(AmlabError, match=r"unknown tokens.*gey \(o\)"):
        check_groups_in_texts({"o": ("gay", "gey")}, texts)
    with pytest.raises(AmlabError, match=r"not in the model's vocabulary: muslim \(r\)"):
        check_groups_in_texts({"r": ("muslim",)}, texts, vocabulary=("<pad>", "gay"))
    with pytest.raises(AmlabError, match="does not exist"):
        load_token_groups("/nonexistent/groups.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AmlabError, match="bad.json is not valid JSON"):
        load_token_groups(bad)


def test_labelled_csv_with_group_columns_and_its_errors(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label,gender\n"hello, you",0,f\nyou idiot,1,\n')
    data = load_labelled_csv(path)
    assert data.texts == ["hello, you", "you idiot"] and data.labels == [0, 1]
    assert data.columns == {"gender": ["f", ""]}
    assert load_labelled_csv(data.write_csv(tmp_path / "again.csv")).to_csv() == data.to_csv()
    for body, message in [
        ("text\nhello\n", "no column label"),
        ("text,label\n", "no rows"),
        ("text,label\nhello,2\n", "line 2: label '2' is not 0 or 1"),
        ("text,label\nhello,1,extra\n", "not as many fields"),
    ]:
        path.write_text(body)
        with pytest.raises(AmlabError, match=message):
            load_labelled_csv(path)


def test_scores_csv_and_its_errors(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("text,score\na,0.25\nb,1\na,0.25\n")
    assert load_scores_csv(path) == {"a": 0.25, "b": 1.0}
    for body, message in [
        ("text,score\na,high\n", "line 2: score 'high' is not a number"),
        ("text,score\na,nan\n", "not a number in"),
        ("text,score\na,1.5\n", "not a number in"),
        ("text,score\na,0.1\na,0.2\n", "'a' has two different scores"),
        ("text,prob\na,0.1\n", "no column score"),
    ]:
        path.write_text(body)
        with pytest.raises(AmlabError, match=message):
            load_scores_csv(path)
    with pytest.raises(AmlabError, match="no score for 1 of the 2 texts.*'c'"):
        scores_for({"a": 0.1}, ["a", "c", "a"], "scores.csv")


def test_vocabulary_and_encoding():
    vocabulary = build_vocabulary(["b a a", "c a"], extra=("z",))
    assert vocabulary == ("<pad>", "<unk>", "<cls>", "a", "b", "c", "z")
    ids = encode(["a z", "q b a"], vocabulary, 5)
    assert torch.equal(ids, torch.tensor([[2, 3, 6, 0, 0], [2, 1, 4, 3, 0]]))
    with pytest.raises(AmlabError, match="has 3 words, more than the model reads"):
        encode(["a b c"], vocabulary, 3)
