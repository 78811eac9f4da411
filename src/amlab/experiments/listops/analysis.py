"""What a trained ListOps model has learned: the geometry of its number-token embeddings,
a linear probe for parity, and accuracy with attention or MLP zeroed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from amlab.data.listops import Tokenizer
from amlab.errors import AmlabError
from amlab.models.listops import ListOpsTransformer
from amlab.tasks.listops import Encoded, accuracy


def number_embeddings(model: ListOpsTransformer, modulus: int) -> torch.Tensor:
    """(modulus, dim): the embedding rows of the values 0..modulus-1."""
    tok = Tokenizer(modulus)
    ids = torch.tensor([tok.value_id(v) for v in range(modulus)])
    return model.embed.weight.detach()[ids]


def pca(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Project rows (N, D) on their top-k principal axes: (coords (N, k), the fraction of
    variance each axis explains (k,))."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise AmlabError(f"pca needs a (N, D) matrix with N >= 2; got {tuple(x.shape)}.")
    centred = x.double() - x.double().mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s**2
    return centred @ vh[:k].T, var[:k] / var.sum()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def linear_probe(
    features: torch.Tensor, labels: torch.Tensor, seed: int = 0, train_fraction: float = 0.5
) -> float:
    """Held-out accuracy of a logistic-regression probe (features (N, D), labels (N,));
    classes are weighted to balance, so a probe that learned nothing scores about chance."""
    n = features.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(n * train_fraction)
    if cut < 2 or cut >= n:
        raise AmlabError(f"a probe needs at least 2 training and 1 test example; got {n}.")
    x, y = features.double().numpy(), labels.numpy()
    train, test = order[:cut].numpy(), order[cut:].numpy()
    if len(set(y[train].tolist())) < 2:
        return float((y[test] == y[train][0]).mean())
    probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(x[train], y[train])
    return float(probe.score(x[test], y[test]))


def partition_rank(points: torch.Tensor, labels: torch.Tensor) -> float:
    """How well a two-class labelling separates points, against every other balanced split.

    Score of a split: mean distance between the groups minus mean distance within them.
    Returns the fraction of all splits into two groups of the same sizes whose score is at
    most the labelling's (1.0: no split separates the points better; about 0.5 expected
    for labels unrelated to the points). Exact, by enumeration (N up to ~16)."""
    from itertools import combinations

    n, k = len(labels), int(labels.sum())
    if not 0 < k < n or n > 16:
        raise AmlabError(f"partition_rank needs 2..16 points in two classes; got {n}.")
    d = torch.cdist(points.double(), points.double())

    def score(group: torch.Tensor) -> float:
        between = d[group][:, ~group].mean()
        within = (d[group][:, group].sum() + d[~group][:, ~group].sum()) / (
            k * (k - 1) + (n - k) * (n - k - 1)
        )
        return float(between - within)

    mine = score(labels.bool())
    scores = []
    for chosen in combinations(range(n), k):
        group = torch.zeros(n, dtype=torch.bool)
        group[list(chosen)] = True
        scores.append(score(group))
    return sum(s <= mine + 1e-12 for s in scores) / len(scores)


def embedding_structure(model: ListOpsTransformer, modulus: int) -> dict[str, Any]:
    """Does the number-token embedding order the values, separate parity?

    ``order``: the largest |rank correlation| between a top-2 principal coordinate and the
    value; ``parity`` and ``low_high``: :func:`partition_rank` of the even/odd split and of
    the split 0..n/2-1 | n/2..n-1 (each about 0.5 by chance). On a number line the low/high
    split ranks near 1 and the even/odd split near 0 (neighbours differ in parity).
    """
    emb = number_embeddings(model, modulus)
    coords, explained = pca(emb)
    values = np.arange(modulus)
    order = max(abs(rank_correlation(coords[:, k].numpy(), values)) for k in range(2))
    return {
        "pca": coords.tolist(),
        "explained": explained.tolist(),
        "order": order,
        "parity": partition_rank(emb, torch.tensor(values % 2)),
        "low_high": partition_rank(emb, torch.tensor(values >= modulus // 2).long()),
    }


@torch.no_grad()
def parity_probe(model: ListOpsTransformer, data: Encoded, seed: int = 0) -> dict[str, float]:
    """Probe the class token's final state (before the read-out) for the parity of the
    expression's value; ``majority`` is the accuracy of always guessing the commoner one."""
    states = model.hidden_states(data.tokens)[:, 0]
    parity = data.labels % 2
    majority = float(max(parity.float().mean(), 1 - parity.float().mean()))
    return {"probe": linear_probe(states, parity, seed), "majority": majority}


@torch.no_grad()
def ablation(model: ListOpsTransformer, data: Encoded) -> dict[str, dict[str, Any]]:
    """Test accuracy (overall and per root operation) with nothing, every attention
    output, or every MLP output zeroed."""
    before = model.ablate
    try:
        result = {}
        for name, parts in (("none", ()), ("attention", ("attention",)), ("mlp", ("mlp",))):
            model.ablate = frozenset(parts)
            result[name] = accuracy(model, data)
        return result
    finally:
        model.ablate = before
