"""Fairness metrics of a binary classifier's scores, group and individual, each with a
bootstrap confidence interval.

Everything is computed under resampling weights: a :class:`Bootstrap` holds ``(1 + B, N)``
weights, row 0 all ones (the point estimate on the data as given) and B rows of multinomial
counts (resamples of the N texts with replacement). A metric is a ratio of weighted sums,
so one matrix product gives it on every resample at once; the interval is the percentile
interval of the B resampled values. Counterfactual pairs take the weight of the text they
were made from, so group and individual metrics are resampled together.

Group metrics (per subgroup, a boolean mask over the texts; toxic = label 1, flagged =
score >= threshold):

- positive rate (flagged), FPR, FNR, TPR (fairlearn's ``selection_rate``,
  ``false_positive_rate``, ... on the subgroup's rows);
- subgroup AUC (within the subgroup), BPSN AUC (background positives, subgroup negatives)
  and BNSP AUC (subgroup positives, background negatives), Borkan et al. 2019; the
  background is every text outside the subgroup;
- average equality gaps: positive AEG = 1/2 - P(score of a toxic subgroup text > score of a
  toxic background text) (ties count 1/2), negative AEG the same over non-toxic texts;
  negative values: the subgroup's scores are shifted up;
- over a family of subgroups (fairlearn's ``between_groups`` semantics): demographic parity
  difference (max - min positive rate) and ratio (min / max), equalized odds difference
  (the larger of the TPR and FPR differences) and ratio (the smaller of the two ratios), and
  the four-fifths rule (demographic parity ratio >= 0.8).

Individual metrics (over counterfactual pairs: a text and the text with one identity term
swapped for another of its group):

- counterfactual token fairness gap: mean |f(x) - f(x')| (Garg et al. 2019);
- flip rate: the fraction of pairs whose decision at the threshold differs;
- the swap matrix: mean f(x') - f(x) over the pairs that swap term a for term b;
- nearest-neighbour consistency (Zemel et al. 2013): 1 - mean |yhat_i - mean of yhat over
  the k nearest neighbours of i| on the model's own embeddings.

A subgroup with fewer than ``min_count`` toxic or non-toxic texts gets a warning: its rates
and AUCs rest on too few texts to say much.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from amlab.errors import AmlabError, check_positive_int

#: the per-subgroup group metrics, in the order of the tables
GROUP_METRICS = (
    "positive_rate",
    "fpr",
    "fnr",
    "tpr",
    "subgroup_auc",
    "bpsn_auc",
    "bnsp_auc",
    "positive_aeg",
    "negative_aeg",
)
#: the metrics over a family of subgroups
FAMILY_METRICS = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "fpr_difference",
    "fnr_difference",
)
FOUR_FIFTHS = 0.8


class Bootstrap:
    """Resampling weights (1 + resamples, n): row 0 ones, then multinomial counts drawn
    with ``seed``; ``level`` is the intervals' coverage."""

    def __init__(self, n: int, resamples: int = 1000, seed: int = 0, level: float = 0.95):
        check_positive_int(n, "the number of texts")
        check_positive_int(resamples, "resamples")
        if not 0.0 < level < 1.0:
            raise AmlabError(f"level must lie in (0, 1); got {level!r}.")
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
        self.weights = np.vstack([np.ones((1, n)), draws])
        self.level = level

    def interval(self, values: np.ndarray) -> dict[str, float]:
        """{value, low, high}: row 0 of ``values`` (1 + resamples,) and the percentile
        interval of the others (NaN where every resample is NaN)."""
        rest = values[1:][np.isfinite(values[1:])]
        tail = 100 * (1 - self.level) / 2
        low, high = np.percentile(rest, [tail, 100 - tail]) if rest.size else (np.nan, np.nan)
        return {"value": float(values[0]), "low": float(low), "high": float(high)}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan
        )


def weighted_rate(weights: np.ndarray, hits: np.ndarray, among: np.ndarray) -> np.ndarray:
    """(K,) the weighted fraction of the rows ``among`` that are ``hits``, per weight row."""
    among = among.astype(np.float64)
    return _ratio(weights @ (hits * among), weights @ among)


def weighted_auc(
    weights: np.ndarray, scores: np.ndarray, positive: np.ndarray, negative: np.ndarray
) -> np.ndarray:
    """(K,) the weighted probability that a ``positive`` row scores above a ``negative`` one
    (ties 1/2), per weight row: the ROC AUC with sample weights. Disjoint masks."""
    rows = np.flatnonzero(positive | negative)
    order = rows[np.argsort(scores[rows], kind="stable")]
    s = scores[order]
    w = weights[:, order]
    neg = negative[order].astype(np.float64)
    below_and_at = np.cumsum(w * neg, axis=1)
    # each row's tie block [first, last] of equal scores
    starts = np.r_[True, s[1:] != s[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(s)), 0))
    ends = np.r_[s[1:] != s[:-1], True]
    last = np.minimum.accumulate(np.where(ends, np.arange(len(s)), len(s))[::-1])[::-1]
    below = np.where(first > 0, below_and_at[:, np.maximum(first - 1, 0)], 0.0)
    tied = below_and_at[:, last] - below
    pos = positive[order].astype(np.float64)
    wins = (w * pos * (below + 0.5 * tied)).sum(1)
    return _ratio(wins, (w @ pos) * (w @ neg))


def _spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max - min, min / max) over the subgroups (axis 1), NaN subgroups left out (a resample
    where all are NaN gives NaN and is left out of the interval)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        high, low = np.nanmax(values, axis=1), np.nanmin(values, axis=1)
    return high - low, _ratio(low, high)


@dataclass(frozen=True)
class Subgroups:
    """Subgroups as boolean masks over the N texts, by name, and families of them (a
    family's subgroups are compared with one another)."""

    masks: dict[str, np.ndarray]
    families: dict[str, tuple[str, ...]]


def group_metrics(
    labels: Sequence[int],
    scores: Sequence[float],
    subgroups: Subgroups,
    bootstrap: Bootstrap,
    threshold: float = 0.5,
    min_count: int = 10,
) -> dict:
    """The group metrics of every subgroup and family, each ``{value, low, high}``.

    Returns ``{"subgroups": {name: {"count", "toxic", "non_toxic", metric: interval}},
    "families": {family: {metric: interval, "four_fifths": bool}}, "overall": {...},
    "warnings": [...]}``.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    flagged = s >= threshold
    w = bootstrap.weights
    everyone = np.ones_like(y)
    values: dict[str, dict[str, np.ndarray]] = {}
    warnings = []
    table = {}
    for name, mask in subgroups.masks.items():
        name, mask = str(name), np.asarray(mask, dtype=bool)
        out = ~mask
        values[name] = {
            "positive_rate": weighted_rate(w, flagged, mask),
            "fpr": weighted_rate(w, flagged, mask & ~y),
            "fnr": weighted_rate(w, ~flagged, mask & y),
            "tpr": weighted_rate(w, flagged, mask & y),
            "subgroup_auc": weighted_auc(w, s, mask & y, mask & ~y),
            "bpsn_auc": weighted_auc(w, s, out & y, mask & ~y),
            "bnsp_auc": weighted_auc(w, s, mask & y, out & ~y),
            "positive_aeg": 0.5 - weighted_auc(w, s, mask & y, out & y),
            "negative_aeg": 0.5 - weighted_auc(w, s, mask & ~y, out & ~y),
        }
        toxic, harmless = int((mask & y).sum()), int((mask & ~y).sum())
        table[name] = {"count": int(mask.sum()), "toxic": toxic, "non_toxic": harmless}
        table[name] |= {k: bootstrap.interval(v) for k, v in values[name].items()}
        if min(toxic, harmless) < min_count:
            warnings.append(
                f"subgroup {name!r} has {toxic} toxic and {harmless} non-toxic texts (fewer "
                f"than {min_count}): its rates and AUCs say little; add texts that mention it."
            )
    families = {}
    for family, names in subgroups.families.items():
        stack = {
            k: np.stack([values[n][k] for n in names], axis=1)
            for k in ("positive_rate", "fpr", "fnr", "tpr")
        }
        dp_diff, dp_ratio = _spread(stack["positive_rate"])
        fpr_diff, fpr_ratio = _spread(stack["fpr"])
        tpr_diff, tpr_ratio = _spread(stack["tpr"])
        fnr_diff, _ = _spread(stack["fnr"])
        summary = {
            "demographic_parity_difference": dp_diff,
            "demographic_parity_ratio": dp_ratio,
            "equalized_odds_difference": np.fmax(tpr_diff, fpr_diff),
            "equalized_odds_ratio": np.fmin(tpr_ratio, fpr_ratio),
            "fpr_difference": fpr_diff,
            "fnr_difference": fnr_diff,
        }
        families[family] = {k: bootstrap.interval(v) for k, v in summary.items()}
        families[family]["four_fifths"] = bool(dp_ratio[0] >= FOUR_FIFTHS)
    overall = {
        "positive_rate": bootstrap.interval(weighted_rate(w, flagged, everyone)),
        "fpr": bootstrap.interval(weighted_rate(w, flagged, ~y)),
        "fnr": bootstrap.interval(weighted_rate(w, ~flagged, y)),
        "accuracy": bootstrap.interval(weighted_rate(w, flagged == y, everyone)),
        "auc": bootstrap.interval(weighted_auc(w, s, y, ~y)),
    }
    return {"subgroups": table, "families": families, "overall": overall, "warnings": warnings}


@dataclass(frozen=True)
class Pairs:
    """Counterfactual pairs: the index of each pair's source text, its group, the term
    swapped out and the term swapped in, and the scores of both texts."""

    source: np.ndarray
    group: list[str]
    token: list[str]
    other: list[str]
    score: np.ndarray
    swapped_score: np.ndarray

    @classmethod
    def from_swaps(cls, swaps, score: np.ndarray, swapped_score: np.ndarray) -> Pairs:
        """The pairs of ``swaps`` (:class:`amlab.data.fairness.Swap`, each with ``source``,
        ``group``, ``token`` and ``other``), given the scores of all source texts and those of
        the swapped texts in the swaps' order."""
        source = np.array([s.source for s in swaps], dtype=np.int64)
        return cls(
            source=source,
            group=[s.group for s in swaps],
            token=[s.token for s in swaps],
            other=[s.other for s in swaps],
            score=np.asarray(score)[source],
            swapped_score=np.asarray(swapped_score),
        )


def counterfactual_metrics(pairs: Pairs, bootstrap: Bootstrap, threshold: float = 0.5) -> dict:
    """The counterfactual token fairness gap and flip rate over all pairs, per group and per
    term swapped out (each ``{value, low, high}``), and the swap matrix per group
    (``{"terms": [...], "mean_change": rows a, columns b: mean f(x with b) - f(x with a)}``).
    """
    if len(pairs.source) == 0:
        raise AmlabError("no text mentions a token of the groups, so nothing can be swapped.")
    w = bootstrap.weights[:, pairs.source]
    gap = np.abs(pairs.swapped_score - pairs.score)
    flip = (pairs.swapped_score >= threshold) != (pairs.score >= threshold)

    def over(select: np.ndarray) -> dict:
        return {
            "pairs": int(select.sum()),
            "gap": bootstrap.interval(weighted_rate(w, gap, select)),
            "flip_rate": bootstrap.interval(weighted_rate(w, flip.astype(np.float64), select)),
        }

    groups = np.asarray(pairs.group)
    tokens = np.asarray(pairs.token)
    others = np.asarray(pairs.other)
    change = pairs.swapped_score - pairs.score
    matrices = {}
    for group in dict.fromkeys(pairs.group):
        mine = groups == group
        terms = list(dict.fromkeys(np.concatenate([tokens[mine], others[mine]])))
        names = np.asarray(terms)
        # each pair's cell (row: its term swapped out, column: the term swapped in)
        row = (tokens[mine][:, None] == names).argmax(1)
        cell = row * len(terms) + (others[mine][:, None] == names).argmax(1)
        size = len(terms) ** 2
        total = np.bincount(cell, weights=change[mine], minlength=size)
        count = np.bincount(cell, minlength=size)
        matrix = _ratio(total, count).reshape(len(terms), len(terms))
        matrices[group] = {"terms": terms, "mean_change": matrix.tolist()}
    return {
        "all": over(np.ones(len(gap), dtype=bool)),
        "groups": {g: over(groups == g) for g in dict.fromkeys(pairs.group)},
        "terms": {t: over(tokens == t) for t in dict.fromkeys(pairs.token)},
        "swap_matrices": matrices,
    }


def neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """(N, k) the indices of each row's k nearest other rows (Euclidean; ties by index)."""
    from sklearn.neighbors import NearestNeighbors

    check_positive_int(k, "k")
    if len(embeddings) <= k:
        raise AmlabError(f"nearest-neighbour consistency needs more than k = {k} texts.")
    found = NearestNeighbors(n_neighbors=k + 1).fit(embeddings).kneighbors(embeddings)[1]
    # a row's own index is among its k + 1 nearest (distance 0) unless k + 1 others tie with
    # it; move it last (a stable sort keeps the others' order) and keep the first k
    own = found == np.arange(len(found))[:, None]
    return np.take_along_axis(found, np.argsort(own, axis=1, kind="stable"), axis=1)[:, :k]


def consistency(
    embeddings: np.ndarray,
    scores: Sequence[float],
    bootstrap: Bootstrap,
    threshold: float = 0.5,
    k: int = 5,
) -> dict[str, float]:
    """Nearest-neighbour consistency of the decisions at ``threshold``:
    1 - mean_i |yhat_i - mean_{j in kNN(i)} yhat_j|, as ``{value, low, high}``."""
    flagged = (np.asarray(scores) >= threshold).astype(np.float64)
    near = neighbours(np.asarray(embeddings, dtype=np.float64), k)
    disagreement = np.abs(flagged - flagged[near].mean(1))
    everyone = np.ones(len(flagged), dtype=bool)
    return bootstrap.interval(1.0 - weighted_rate(bootstrap.weights, disagreement, everyone))
