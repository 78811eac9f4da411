"""GraphET: an Energy Transformer over the nodes of a graph, for anomaly detection.

Every node is a token (a linear encoding of its features); attention is restricted to
graph neighbours (query c attends key b only along an edge, never itself); the block's
dynamics run T steps; the anomaly score of a node is a linear read-out of its final
token after the block's layer norm (papers.md section 3, graph anomaly detection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from amlab.errors import AmlabError, as_float_tensor, check_positive_int
from amlab.models.energy_transformer import EnergyTransformer, ETOutput


class GraphET(nn.Module):
    """Node features (N, F) and the graph's (node, neighbour) pairs (2, P) -> anomaly
    logits (N,). Attention is sparse: a step costs O(P), not O(N^2)."""

    def __init__(
        self,
        feature_dim: int,
        dim: int = 32,
        heads: int = 4,
        head_dim: int = 8,
        hopfield_memories: int | None = None,
        steps: int = 6,
        alpha: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.feature_dim = check_positive_int(feature_dim, "feature_dim")
        dim = check_positive_int(dim, "dim")
        self.block = EnergyTransformer(
            dim,
            heads,
            head_dim,
            hopfield_memories,
            steps=steps,
            alpha=alpha,
            seed=seed,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.encoder = nn.Linear(self.feature_dim, dim)
            self.head = nn.Linear(dim, 1)

    def run(self, features: Any, pairs: Any, differentiable: bool | None = None) -> ETOutput:
        """The block's dynamics on the node tokens; see EnergyTransformer.forward.

        pairs: int64 (2, P), node c attends neighbour b for each column (c, b); give both
        directions of an undirected edge (``Graph.pairs()``)."""
        features = as_float_tensor(features, "features", dtype=self.encoder.weight.dtype)
        if features.ndim != 2 or features.shape[1] != self.feature_dim or not len(features):
            raise AmlabError(
                f"features must be (N, {self.feature_dim}); got {tuple(features.shape)}."
            )
        pairs = torch.as_tensor(pairs)
        if pairs.dtype != torch.int64 or pairs.ndim != 2 or pairs.shape[0] != 2:
            raise AmlabError(
                f"pairs must be int64 (2, P) (node, neighbour) columns; got dtype {pairs.dtype}"
                f", shape {tuple(pairs.shape)}. Graph.pairs() gives them."
            )
        differentiable = self.training if differentiable is None else differentiable
        tokens = self.encoder(features)[None]
        return self.block(tokens, mask=pairs, differentiable=differentiable)

    def forward(self, features: Any, pairs: Any, differentiable: bool | None = None):
        """Anomaly logits (N,): higher means more anomalous."""
        out = self.run(features, pairs, differentiable)
        return self.head(self.block.layer_norm(out.tokens[0])).squeeze(-1)
