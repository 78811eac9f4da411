"""amlab.analysis.fairness against fairlearn, scikit-learn, scipy and hand-computed
fixtures; the bootstrap intervals' coverage on simulated scores."""

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from amlab.analysis.fairness import (
    Bootstrap,
    Pairs,
    Subgroups,
    consistency,
    counterfactual_metrics,
    group_metrics,
    neighbours,
    weighted_auc,
    weighted_rate,
)
from amlab.errors import AmlabError


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    y = rng.random(n) < np.where(group == "a", 0.4, 0.6)
    scores = np.clip(0.3 * y + rng.random(n) * 0.7 + 0.1 * (group == "b"), 0, 1).round(2)
    return y.astype(int), scores, group


def _subgroups(group):
    names = sorted(set(group))
    return Subgroups({g: group == g for g in names}, {"all": tuple(names)})


def test_group_rates_and_family_metrics_equal_fairlearn():
    y, scores, group = _data()
    threshold = 0.55
    result = group_metrics(y, scores, _subgroups(group), Bootstrap(len(y), 10), threshold)
    pred = (scores >= threshold).astype(int)
    frame = MetricFrame(
        metrics={
            "positive_rate": selection_rate,
            "fpr": false_positive_rate,
            "fnr": false_negative_rate,
            "tpr": true_positive_rate,
        },
        y_true=y,
        y_pred=pred,
        sensitive_features=group,
    )
    for g in "abc":
        for metric in ("positive_rate", "fpr", "fnr", "tpr"):
            ours = result["subgroups"][g][metric]["value"]
            assert ours == pytest.approx(frame.by_group.loc[g, metric], abs=1e-12)
    family = result["families"]["all"]
    kwargs = {"y_true": y, "y_pred": pred, "sensitive_features": group}
    for name, reference in [
        ("demographic_parity_difference", demographic_parity_difference),
        ("demographic_parity_ratio", demographic_parity_ratio),
        ("equalized_odds_difference", equalized_odds_difference),
        ("equalized_odds_ratio", equalized_odds_ratio),
    ]:
        assert family[name]["value"] == pytest.approx(reference(**kwargs), abs=1e-12), name
    assert family["four_fifths"] == (demographic_parity_ratio(**kwargs) >= 0.8)
    overall = result["overall"]
    assert overall["auc"]["value"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert overall["fpr"]["value"] == pytest.approx(false_positive_rate(y, pred), abs=1e-12)


def test_subgroup_bpsn_bnsp_auc_and_equality_gaps_equal_sklearn_and_scipy():
    y, scores, group = _data(seed=1)
    result = group_metrics(y, scores, _subgroups(group), Bootstrap(len(y), 10))
    for g in "abc":
        sub, pos = group == g, y == 1
        row = result["subgroups"][g]

        def auc(positive, negative):
            keep = positive | negative
            return roc_auc_score(positive[keep], scores[keep])

        assert row["subgroup_auc"]["value"] == pytest.approx(auc(sub & pos, sub & ~pos))
        assert row["bpsn_auc"]["value"] == pytest.approx(auc(~sub & pos, sub & ~pos))
        assert row["bnsp_auc"]["value"] == pytest.approx(auc(sub & pos, ~sub & ~pos))
        for name, label in (("positive_aeg", True), ("negative_aeg", False)):
            a, b = scores[sub & (pos == label)], scores[~sub & (pos == label)]
            u = mannwhitneyu(a, b).statistic  # pairs a > b, ties counted 1/2
            assert row[name]["value"] == pytest.approx(0.5 - u / (len(a) * len(b)))


def test_weighted_metrics_equal_sklearn_with_sample_weights():
    y, scores, _ = _data(n=120, seed=2)
    weights = np.random.default_rng(0).integers(0, 4, size=(5, len(y))).astype(float)
    ours = weighted_auc(weights, scores, y == 1, y == 0)
    for row, value in zip(weights, ours, strict=True):
        assert value == pytest.approx(roc_auc_score(y, scores, sample_weight=row))
    flagged = scores >= 0.5
    fpr = weighted_rate(weights, flagged, y == 0)
    for row, value in zip(weights, fpr, strict=True):
        assert value == pytest.approx(
            false_positive_rate(y, flagged.astype(int), sample_weight=row)
        )


def test_hand_computed_fixture():
    # 6 texts; subgroup s = rows 0..2. flagged at 0.5: rows 0, 3, 4
    y = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.9, 0.2, 0.4, 0.6, 0.7, 0.3])
    sub = np.array([True, True, True, False, False, False])
    masks = Subgroups({"s": sub, "rest": ~sub}, {"both": ("s", "rest")})
    result = group_metrics(y, scores, masks, Bootstrap(6, 5), min_count=1)
    s, rest = result["subgroups"]["s"], result["subgroups"]["rest"]
    assert s["positive_rate"]["value"] == pytest.approx(1 / 3)
    assert s["fpr"]["value"] == 0.0 and s["fnr"]["value"] == 0.0
    assert rest["fpr"]["value"] == 1.0 and rest["fnr"]["value"] == 0.5
    assert s["subgroup_auc"]["value"] == 1.0
    # BPSN: background positives {0.6, 0.3} vs subgroup negatives {0.2, 0.4}: 3 of 4 pairs
    assert s["bpsn_auc"]["value"] == pytest.approx(0.75)
    # BNSP: subgroup positive {0.9} vs background negative {0.7}
    assert s["bnsp_auc"]["value"] == 1.0
    # positive AEG: 0.9 beats both background positives -> 0.5 - 1
    assert s["positive_aeg"]["value"] == pytest.approx(-0.5)
    family = result["families"]["both"]
    assert family["fpr_difference"]["value"] == 1.0
    assert family["demographic_parity_difference"]["value"] == pytest.approx(2 / 3 - 1 / 3)
    assert family["equalized_odds_difference"]["value"] == pytest.approx(1.0)
    assert not family["four_fifths"]  # 1/3 / 2/3 = 0.5 < 0.8
    assert result["warnings"] == []


def test_small_subgroups_get_a_warning():
    y, scores, group = _data(n=60)
    result = group_metrics(y, scores, _subgroups(group), Bootstrap(60, 10), min_count=10)
    assert any("subgroup 'c'" in w and "fewer than 10" in w for w in result["warnings"])


def test_counterfactual_metrics_hand_computed():
    # source texts 0 (score 0.8) and 1 (score 0.3); pairs swap terms within one group
    pairs = Pairs(
        source=np.array([0, 0, 1]),
        group=["g", "g", "g"],
        token=["a", "a", "b"],
        other=["b", "c", "a"],
        score=np.array([0.8, 0.8, 0.3]),
        swapped_score=np.array([0.4, 0.7, 0.6]),
    )
    result = counterfactual_metrics(pairs, Bootstrap(2, 50))
    assert result["all"]["gap"]["value"] == pytest.approx((0.4 + 0.1 + 0.3) / 3)
    assert result["all"]["flip_rate"]["value"] == pytest.approx(2 / 3)
    assert result["terms"]["a"]["gap"]["value"] == pytest.approx(0.25)
    matrix = result["swap_matrices"]["g"]
    assert matrix["terms"] == ["a", "b", "c"]
    change = np.array(matrix["mean_change"])
    assert change[0, 1] == pytest.approx(-0.4) and change[0, 2] == pytest.approx(-0.1)
    assert change[1, 0] == pytest.approx(0.3) and np.isnan(change[2, 0])
    empty = Pairs(np.array([], dtype=int), [], [], [], np.array([]), np.array([]))
    with pytest.raises(AmlabError, match="nothing can be swapped"):
        counterfactual_metrics(empty, Bootstrap(2, 5))


def test_consistency_hand_computed():
    # two clusters on a line; one text of the right cluster is decided against its cluster
    embeddings = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.6])
    value = consistency(embeddings, scores, Bootstrap(6, 5), k=2)["value"]
    # |yhat - mean of 2 neighbours|: 0,0,0 | 0.5, 0.5, 1
    assert value == pytest.approx(1 - 2 / 6)
    with pytest.raises(AmlabError, match="more than k = 6"):
        consistency(embeddings, scores, Bootstrap(6, 5), k=6)


def test_bootstrap_intervals_cover_the_true_value_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    reps, n = 300, 200
    covered_rate = covered_auc = 0
    true_fpr, shift = 0.3, 1.0
    from scipy.stats import norm

    true_auc = norm.cdf(shift / np.sqrt(2))
    for rep in range(reps):
        boot = Bootstrap(n, 300, seed=rep)
        y = np.arange(n) % 2 == 0
        flagged = rng.random(n) < true_fpr
        fpr = boot.interval(weighted_rate(boot.weights, flagged, ~y))
        covered_rate += fpr["low"] <= true_fpr <= fpr["high"]
        scores = rng.normal(size=n) + shift * y
        auc = boot.interval(weighted_auc(boot.weights, scores, y, ~y))
        covered_auc += auc["low"] <= true_auc <= auc["high"]
    # nominal 0.95; 300 repetitions have a binomial sd of 0.0126
    assert 0.91 <= covered_rate / reps <= 0.985
    assert 0.91 <= covered_auc / reps <= 0.985


def test_bootstrap_settings_are_checked():
    with pytest.raises(AmlabError, match="level"):
        Bootstrap(10, 10, level=1.0)
    with pytest.raises(AmlabError, match="resamples"):
        Bootstrap(10, 0)


def test_neighbours_are_the_k_nearest_others():
    """Each row's k nearest other rows, nearest first; never the row itself, even when more
    than k others tie with it at distance 0."""
    line = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_array_equal(neighbours(line, 1), [[1], [0], [1], [2]])
    np.testing.assert_array_equal(neighbours(line, 2), [[1, 2], [0, 2], [1, 0], [2, 1]])
    tied = np.array([[0.0], [0.0], [0.0], [0.0], [5.0], [6.0]])
    found = neighbours(tied, 2)
    assert found.shape == (6, 2)
    for i, row in enumerate(found):
        assert i not in row and len(set(row)) == 2
    assert set(found[:4].ravel()) <= {0, 1, 2, 3}
    with pytest.raises(AmlabError, match="more than k"):
        neighbours(line, 4)
