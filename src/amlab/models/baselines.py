"""Baselines the Energy Transformer's graph task is compared with: a two-layer GCN and a
features-only MLP. Both map node features (N, F) and (node, neighbour) pairs (2, P) to one
anomaly logit per node (N,) (``forward``), like :class:`~amlab.models.graph_et.GraphET`.
Their weights are PyTorch's default initialisation of a linear layer, drawn under ``seed``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amlab.errors import AmlabError, check_dtype, check_positive_int
from amlab.models.model import Model, seeded


@dataclass(frozen=True)
class BaselineConfig:
    """What :class:`GCN` and :class:`MLP` are built with: the number of features per node,
    the hidden width, the seed of the initial weights and the dtype."""

    feature_dim: int
    hidden: int = 32
    seed: int = 0
    dtype: str = "float32"


class _NodeClassifier(Model):
    """What the two baselines share: construction from a :class:`BaselineConfig`'s fields
    and the check of the node features."""

    Config = BaselineConfig

    def __init__(
        self,
        feature_dim: int,
        hidden: int = 32,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__()
        self.feature_dim = check_positive_int(feature_dim, "feature_dim")
        self.hidden = check_positive_int(hidden, "hidden")
        self.seed = check_positive_int(seed, "seed", allow_zero=True)
        with seeded(self.seed):
            self._build(self.feature_dim, self.hidden)
        self.to(check_dtype(dtype))

    def _build(self, feature_dim: int, hidden: int) -> None:
        raise NotImplementedError

    def _features(self, features: Any) -> torch.Tensor:
        features = self._as_input(features, "features")
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise AmlabError(
                f"features must be (N, {self.feature_dim}); got {tuple(features.shape)}."
            )
        return features


class GCN(_NodeClassifier):
    """Two graph convolutions: logits = Â relu(Â X W1) W2, Â = D^-1/2 (A + I) D^-1/2.
    Built from the fields of :class:`BaselineConfig`."""

    def _build(self, feature_dim: int, hidden: int) -> None:
        self.first = nn.Linear(feature_dim, hidden)
        self.second = nn.Linear(hidden, 1)

    def forward(self, features: Any, pairs: torch.Tensor) -> torch.Tensor:
        """Anomaly logits (N,) of node features (N, F) over the (node, neighbour) pairs (2, P)."""
        features = self._features(features)
        node, neighbour = pairs
        ones = features.new_ones(len(features))
        degree = ones.index_add(0, node, features.new_ones(node.shape[0]))
        norm = degree.rsqrt()[:, None]

        def propagate(h: torch.Tensor) -> torch.Tensor:  # Â h, sparse
            scaled = norm * h
            return norm * scaled.index_add(0, node, scaled[neighbour])

        h = torch.relu(propagate(self.first(features)))
        return propagate(self.second(h)).squeeze(-1)


class MLP(_NodeClassifier):
    """Features only: logits = W2 relu(W1 x). Built from the fields of :class:`BaselineConfig`."""

    def _build(self, feature_dim: int, hidden: int) -> None:
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: Any, pairs: torch.Tensor) -> torch.Tensor:
        """Anomaly logits (N,) of node features (N, F); the graph is not used."""
        return self.net(self._features(features)).squeeze(-1)
