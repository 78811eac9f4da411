"""Baselines the Energy Transformer's graph task is compared with: a two-layer GCN and a
features-only MLP. Both map node features (N, F) and (node, neighbour) pairs (2, P) to one
anomaly logit per node (N,), like :class:`~amlab.models.graph_et.GraphET`."""

from __future__ import annotations

import torch
from torch import nn


class GCN(nn.Module):
    """Two graph convolutions: logits = Â relu(Â X W1) W2, Â = D^-1/2 (A + I) D^-1/2."""

    def __init__(self, feature_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.first = nn.Linear(feature_dim, hidden)
        self.second = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        node, neighbour = pairs
        degree = torch.ones(len(features)).index_add(0, node, torch.ones(node.shape[0]))
        norm = degree.rsqrt()[:, None]

        def propagate(h: torch.Tensor) -> torch.Tensor:  # Â h, sparse
            scaled = norm * h
            return norm * scaled.index_add(0, node, scaled[neighbour])

        h = torch.relu(propagate(self.first(features)))
        return propagate(self.second(h)).squeeze(-1)


class MLP(nn.Module):
    """Features only: logits = W2 relu(W1 x)."""

    def __init__(self, feature_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)
