"""A small transformer that reads a ListOps expression and predicts its value.

Pre-norm encoder blocks (multi-head self-attention, then a GELU MLP, each added to the
residual stream), learned positions, and a linear read-out of the class token that
starts every sequence. ``share_weights`` uses one block ``layers`` times (a looped
transformer). ``ablate`` zeroes the attention or MLP output of every block, for the
ablation study.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from amlab.errors import AmlabError, check_positive, check_positive_int
from amlab.io import load_module, save_model

KIND = "ListOpsTransformer"


@dataclass(frozen=True)
class ModelConfig:
    """vocab_size and classes come from the tokenizer and modulus; max_len counts the
    class token."""

    vocab_size: int
    classes: int
    dim: int = 32
    layers: int = 2
    heads: int = 2
    mlp_ratio: float = 2.0
    max_len: int = 64
    share_weights: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "classes", "dim", "layers", "heads", "max_len"):
            check_positive_int(getattr(self, name), name)
        check_positive(self.mlp_ratio, "mlp_ratio")
        if self.dim % self.heads:
            raise AmlabError(
                f"dim ({self.dim}) must be a multiple of heads ({self.heads}); change one."
            )
        if self.hidden < 1:
            raise AmlabError(f"mlp_ratio {self.mlp_ratio} leaves the MLP no hidden units.")

    @property
    def hidden(self) -> int:
        return int(round(self.dim * self.mlp_ratio))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.norm2 = nn.LayerNorm(config.dim)
        self.up = nn.Linear(config.dim, config.hidden)
        self.down = nn.Linear(config.hidden, config.dim)

    def attention(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return self.proj(y.transpose(1, 2).reshape(b, n, d))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(self.norm2(x))))

    def forward(self, x: torch.Tensor, keep: torch.Tensor, ablate: frozenset) -> torch.Tensor:
        if "attention" not in ablate:
            x = x + self.attention(x, keep)
        if "mlp" not in ablate:
            x = x + self.mlp(x)
        return x


class ListOpsTransformer(nn.Module):
    """tokens (B, L) int64, padding id 0, class token first -> logits (B, classes)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.position = nn.Embedding(config.max_len, config.dim)
        count = 1 if config.share_weights else config.layers
        self.blocks = nn.ModuleList(Block(config) for _ in range(count))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.classes)
        self.ablate: frozenset = frozenset()
        nn.init.normal_(self.embed.weight, std=0.5)
        nn.init.normal_(self.position.weight, std=0.1)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, dim): the residual stream after the last block, before the final norm."""
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise AmlabError(f"tokens must be a (B, L) int64 tensor; got {tuple(tokens.shape)}.")
        if tokens.shape[1] > self.config.max_len:
            raise AmlabError(
                f"sequences of {tokens.shape[1]} tokens exceed max_len {self.config.max_len}; "
                "build the model with a larger max_len."
            )
        keep = tokens != 0
        x = self.embed(tokens) + self.position.weight[: tokens.shape[1]]
        for i in range(self.config.layers):
            x = self.blocks[0 if self.config.share_weights else i](x, keep, self.ablate)
        return x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.hidden_states(tokens)[:, 0]))

    def num_parameters(self) -> int:
        """The exact number of trainable numbers (shared weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | os.PathLike) -> None:
        save_model(path, KIND, asdict(self.config), self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ListOpsTransformer:
        return load_module(path, KIND, lambda config: cls(ModelConfig(**config)))
