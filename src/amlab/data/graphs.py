"""Attributed graphs with anomalous nodes: a generator and a loader for files a user has.

The generator draws a stochastic block model whose nodes carry features centred on
their community's mean, then injects the two standard kinds of anomaly (Ding et al.,
"Deep anomaly detection on attributed networks", 2019):

- structural: small groups of random nodes are joined into cliques, so they gain dense
  links across communities;
- contextual: a node's features are replaced by those of the most distant of a few
  random candidates, so they no longer fit its neighbourhood (they may still look
  ordinary on their own, which a features-only detector cannot tell apart).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from amlab.errors import AmlabError, check_positive_int
from amlab.io import read_text


@dataclass(frozen=True)
class Graph:
    """An undirected attributed graph with binary anomaly labels.

    features: (N, F) float32. edges: (E, 2) int64, each undirected edge once, u < v.
    labels: (N,) int64, 1 for anomalous nodes. kind: (N,) int64, 0 normal, 1 structural,
    2 contextual, 3 both (-1 when unknown, as for loaded graphs).
    """

    features: torch.Tensor
    edges: torch.Tensor
    labels: torch.Tensor
    kind: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.features.shape[0]

    def pairs(self) -> torch.Tensor:
        """Both directions of every edge, int64 (2, 2E): row 0 the node that receives,
        row 1 its neighbour (the (query, key) pairs of sparse graph attention)."""
        return torch.cat([self.edges.T, self.edges.T.flip(0)], dim=1)

    def adjacency(self) -> torch.Tensor:
        """Bool (N, N), symmetric, no self loops."""
        n = self.num_nodes
        a = torch.zeros(n, n, dtype=torch.bool)
        a[self.edges[:, 0], self.edges[:, 1]] = True
        a[self.edges[:, 1], self.edges[:, 0]] = True
        a.fill_diagonal_(False)
        return a


def _canonical_edges(pairs: np.ndarray) -> torch.Tensor:
    """Each undirected edge once, as u < v, without self loops: int64 (E, 2)."""
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.sort(pairs, axis=1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
    return torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)


def anomalous_block_graph(
    nodes: int = 1000,
    communities: int = 5,
    p_in: float = 0.05,
    p_out: float = 0.002,
    feature_dim: int = 16,
    feature_noise: float = 1.0,
    clique_size: int = 10,
    structural: int = 30,
    contextual: int = 30,
    candidates: int = 50,
    seed: int = 0,
) -> Graph:
    """A stochastic block model with ``structural`` nodes in cliques of ``clique_size``
    and ``contextual`` nodes with swapped features (distinct nodes drawn at random)."""
    n = check_positive_int(nodes, "nodes")
    k = check_positive_int(communities, "communities")
    check_positive_int(feature_dim, "feature_dim")
    if not (0 <= p_out <= 1 and 0 <= p_in <= 1):
        raise AmlabError(f"p_in and p_out are probabilities; got {p_in!r}, {p_out!r}.")
    if clique_size < 2 or structural % clique_size:
        raise AmlabError(
            f"structural ({structural}) must be a multiple of clique_size ({clique_size} >= 2)."
        )
    if structural + contextual > n:
        raise AmlabError(f"{structural + contextual} anomalies do not fit in {n} nodes.")
    rng = np.random.default_rng(seed)
    community = rng.integers(0, k, size=n)
    same = community[:, None] == community[None, :]
    upper = np.triu(rng.random((n, n)) < np.where(same, p_in, p_out), k=1)
    pairs = np.argwhere(upper)
    centres = rng.normal(0.0, 3.0, size=(k, feature_dim))
    features = centres[community] + feature_noise * rng.normal(size=(n, feature_dim))

    chosen = rng.permutation(n)
    kind = np.zeros(n, dtype=np.int64)
    extra = []
    for clique in chosen[:structural].reshape(-1, clique_size):
        extra += [(u, v) for i, u in enumerate(clique) for v in clique[i + 1 :]]
        kind[clique] = 1
    if extra:
        pairs = np.concatenate([pairs, np.asarray(extra)], axis=0)
    original = features.copy()
    for node in chosen[structural : structural + contextual]:
        pool = rng.choice(n, size=min(candidates, n), replace=False)
        far = pool[np.argmax(((original[pool] - original[node]) ** 2).sum(1))]
        features[node] = original[far]
        kind[node] += 2
    return Graph(
        features=torch.as_tensor(features, dtype=torch.float32),
        edges=_canonical_edges(pairs),
        labels=torch.as_tensor(kind > 0, dtype=torch.long),
        kind=torch.as_tensor(kind),
    )


def load_graph(
    edges: str | os.PathLike, features: str | os.PathLike, labels: str | os.PathLike
) -> Graph:
    """Read a graph from text files: ``edges`` one ``u v`` pair per line (0-based node
    numbers, whitespace or comma separated, ``#`` comments); ``features`` one row of
    numbers per node; ``labels`` one 0/1 per node."""
    feats = _read_matrix(features, "features")
    n = feats.shape[0]
    labs = _read_matrix(labels, "labels").reshape(-1)
    if labs.shape[0] != n:
        raise AmlabError(f"{labels} has {labs.shape[0]} labels but {features} has {n} nodes.")
    if not np.isin(labs, (0, 1)).all():
        raise AmlabError(f"{labels} must hold only 0 (normal) and 1 (anomalous).")
    pairs = _read_matrix(edges, "edges", allow_empty=True)
    if pairs.size and (pairs.shape[1] != 2 or (pairs != np.round(pairs)).any()):
        raise AmlabError(f"{edges} must hold two whole node numbers per line.")
    pairs = pairs.astype(np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
        raise AmlabError(
            f"{edges} names node {int(pairs.max()) if pairs.max() >= n else int(pairs.min())}"
            f", outside 0..{n - 1} (nodes are numbered from 0, one per row of {features})."
        )
    return Graph(
        features=torch.as_tensor(feats, dtype=torch.float32),
        edges=_canonical_edges(pairs),
        labels=torch.as_tensor(labs, dtype=torch.long),
        kind=torch.full((n,), -1, dtype=torch.long),
    )


def _read_matrix(path, what: str, allow_empty: bool = False) -> np.ndarray:
    """The rows of numbers in a text file (whitespace or commas, ``#`` comments), parsed by
    numpy's C reader: float64 (rows, columns)."""
    path = Path(path)
    if not path.is_file():
        raise AmlabError(f"the {what} file {path} does not exist.")
    text = read_text(path, f"pass the {what} as a text file of numbers").replace(",", " ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # numpy's "empty input" warning
        try:
            matrix = np.loadtxt(io.StringIO(text), dtype=np.float64, comments="#", ndmin=2)
        except ValueError as exc:
            raise AmlabError(
                f"{path} is not rows of numbers of the same length ({exc}; rows count "
                "from 0 and skip comments and blank lines)."
            ) from None
    if matrix.size == 0:
        if allow_empty:
            return np.zeros((0, 2))
        raise AmlabError(f"the {what} file {path} holds no rows.")
    if not np.isfinite(matrix).all():
        raise AmlabError(f"{path} holds NaN or infinite values.")
    return matrix


def split_nodes(
    labels: torch.Tensor, fractions: tuple[float, float] = (0.4, 0.2), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified (train, validation, test) node indices; the rest after train and
    validation is the test set. Each class is split in the same proportions."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[], [], []]
    for cls in labels.unique():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        a = round(fractions[0] * len(idx))
        b = a + round(fractions[1] * len(idx))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:]), strict=True):
            part.append(chunk)
    return tuple(torch.cat(p).sort().values for p in parts)  # type: ignore[return-value]
