"""GraphET: an Energy Transformer over the nodes of a graph, for anomaly detection.

Every node is a token (a linear encoding of its features); attention is restricted to
graph neighbours (query c attends key b only along an edge, never itself); the block's
dynamics run T steps; the anomaly score of a node is a linear read-out of its final
token after the block's layer norm (papers.md section 3, graph anomaly detection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amlab.dynamics import Trajectory
from amlab.errors import AmlabError, check_dtype, check_positive_int, dtype_name
from amlab.models.energy_transformer import EnergyTransformer
from amlab.models.model import Model, config_from, seeded


@dataclass(frozen=True)
class GraphETConfig:
    """What :class:`GraphET` is built with (see its arguments); ``hopfield_memories`` holds
    the value its default resolved to."""

    feature_dim: int
    dim: int = 32
    heads: int = 4
    head_dim: int = 8
    hopfield_memories: int | None = None
    steps: int = 6
    step_size: float = 0.1
    seed: int = 0
    dtype: str = "float32"


class GraphET(Model):
    """Node features (N, F) and the graph's (node, neighbour) pairs (2, P) -> anomaly
    logits (N,) (``forward``). Attention is sparse: a step costs O(P), not O(N^2).

    Args:
        feature_dim: F, the number of features per node.
        dim, heads, head_dim, hopfield_memories, steps, step_size: the block's configuration
            (see EnergyTransformer); hopfield_memories defaults to 4 * dim.
        seed: seeds the block (as EnergyTransformer's seed) and, through ``seed + 1``, the
            encoder and read-out (PyTorch's default initialisation of a linear layer).
        dtype: float32 (default) or float64 (a dtype or its name); the weights are drawn in
            float32 and converted.
    """

    Config = GraphETConfig

    def __init__(
        self,
        feature_dim: int,
        dim: int = 32,
        heads: int = 4,
        head_dim: int = 8,
        hopfield_memories: int | None = None,
        steps: int = 6,
        step_size: float = 0.1,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
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
            step_size=step_size,
            seed=seed,
        )
        with seeded(self.block.seed + 1):
            self.encoder = nn.Linear(self.feature_dim, dim)
            self.head = nn.Linear(dim, 1)
        self.to(check_dtype(dtype))

    @property
    def config(self) -> GraphETConfig:
        return config_from(
            GraphETConfig,
            self.block.config,
            feature_dim=self.feature_dim,
            dtype=dtype_name(self.dtype),
        )

    def run(self, features: Any, pairs: Any, differentiable: bool | None = None) -> Trajectory:
        """The block's dynamics on the node tokens (one sequence of N tokens); see
        EnergyTransformer.retrieve.

        pairs: int64 (2, P), node c attends neighbour b for each column (c, b); give both
        directions of an undirected edge (``Graph.pairs()``).
        differentiable: keep the graph through the T steps (default: in training mode)."""
        features = self._as_input(features, "features")
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
        return self.block.retrieve(tokens, mask=pairs, differentiable=differentiable)

    def forward(
        self, features: Any, pairs: Any, differentiable: bool | None = None
    ) -> torch.Tensor:
        """Anomaly logits (N,): higher means more anomalous."""
        tokens = self.run(features, pairs, differentiable).states
        return self.head(self.block.layer_norm(tokens[0])).squeeze(-1)
