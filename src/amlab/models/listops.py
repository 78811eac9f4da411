"""A small transformer that reads a ListOps expression and predicts its value.

Pre-norm encoder blocks (multi-head self-attention, then a GELU MLP, each added to the
residual stream), learned positions, and a linear read-out of the class token that
starts every sequence. ``share_weights`` uses one block ``layers`` times (a looped
transformer). ``ablate`` zeroes the attention or MLP output of every block, for the
ablation study. :class:`CausalListOpsTransformer` is the next-token model of the same
architecture: each token attends to itself and the tokens before it, and the read-out gives
the next token's logits at every position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from amlab.errors import (
    AmlabError,
    check_dtype,
    check_positive,
    check_positive_int,
    check_steps,
    dtype_name,
)
from amlab.models.model import Model, seeded


@dataclass(frozen=True)
class ListOpsTransformerConfig:
    """What :class:`ListOpsTransformer` is built from. vocab_size and classes come from the
    tokenizer and modulus; max_len counts the class token; seed seeds the initial weights
    (PyTorch's default initialisation, embeddings from N(0, 0.5^2) and N(0, 0.1^2)); dtype
    is "float32" or "float64"."""

    vocab_size: int
    classes: int
    dim: int = 32
    layers: int = 2
    heads: int = 2
    mlp_ratio: float = 2.0
    max_len: int = 64
    share_weights: bool = False
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "classes", "dim", "heads", "max_len"):
            check_positive_int(getattr(self, name), name)
        check_steps(self.layers, "layers")  # with shared weights, the steps of a loop
        check_positive_int(self.seed, "seed", allow_zero=True)
        check_positive(self.mlp_ratio, "mlp_ratio")
        check_dtype(self.dtype)
        if self.dim % self.heads:
            raise AmlabError(
                f"dim ({self.dim}) must be a multiple of heads ({self.heads}); change one."
            )
        if self.hidden < 1:
            raise AmlabError(f"mlp_ratio {self.mlp_ratio} leaves the MLP no hidden units.")

    @property
    def hidden(self) -> int:
        return int(round(self.dim * self.mlp_ratio))


def attention_mask(tokens: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1 or L, L) bool for tokens (B, L): True where a query (row) may read a key
    (column): every key that is not padding (id 0), and in a causal model only keys at or
    before the query."""
    mask = (tokens != 0)[:, None, :]
    if causal:
        n = tokens.shape[1]
        mask = mask & torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
    return mask


class Block(nn.Module):
    def __init__(self, config: ListOpsTransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.norm2 = nn.LayerNorm(config.dim)
        self.up = nn.Linear(config.dim, config.hidden)
        self.down = nn.Linear(config.hidden, config.dim)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mask: (B, 1, 1 or L, L) bool, True where a query (row) may read a key (column)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(self.norm2(x))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ablate: frozenset) -> torch.Tensor:
        if "attention" not in ablate:
            x = x + self.attention(x, mask)
        if "mlp" not in ablate:
            x = x + self.mlp(x)
        return x


class ListOpsTransformer(Model):
    """tokens (B, L) int64, padding id 0, class token first -> logits (B, classes)
    (``forward``; a causal model's: (B, L, classes), the next token's at every position).
    Built from a :class:`ListOpsTransformerConfig`."""

    Config = ListOpsTransformerConfig
    takes_config = True
    #: whether each token reads only itself and the tokens before it, and every position is
    #: read out (:class:`CausalListOpsTransformer`)
    causal = False

    def __init__(self, config: ListOpsTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, ListOpsTransformerConfig):
            raise AmlabError(
                f"ListOpsTransformer is built from a ListOpsTransformerConfig; got "
                f"{type(config).__name__}."
            )
        self._config = config  # the constructor's input; its fields are never changed
        with seeded(config.seed):
            self.embed = nn.Embedding(config.vocab_size, config.dim)
            self.position = nn.Embedding(config.max_len, config.dim)
            count = 1 if config.share_weights else config.layers
            self.blocks = nn.ModuleList(Block(config) for _ in range(count))
            self.norm = nn.LayerNorm(config.dim)
            self.head = nn.Linear(config.dim, config.classes)
            nn.init.normal_(self.embed.weight, std=0.5)
            nn.init.normal_(self.position.weight, std=0.1)
        self.to(check_dtype(config.dtype))
        self.ablate: frozenset = frozenset()

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, dim): the residual stream after the last block, before the final norm."""
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise AmlabError(f"tokens must be a (B, L) int64 tensor; got {tuple(tokens.shape)}.")
        config = self._config
        if tokens.shape[1] > config.max_len:
            raise AmlabError(
                f"sequences of {tokens.shape[1]} tokens exceed max_len {config.max_len}; "
                "build the model with a larger max_len."
            )
        self._check_placement(tokens, "tokens")
        mask = attention_mask(tokens, self.causal)[:, None]
        x = self.embed(tokens) + self.position.weight[: tokens.shape[1]]
        for i in range(config.layers):
            x = self.blocks[0 if config.share_weights else i](x, mask, self.ablate)
        return x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) read from the class token; a causal model's (B, L, classes):
        the next token's, read at every position."""
        hidden = self.hidden_states(tokens)
        return self.head(self.norm(hidden if self.causal else hidden[:, 0]))

    @property
    def config(self) -> ListOpsTransformerConfig:
        return replace(self._config, dtype=dtype_name(self.dtype))

    def num_parameters(self) -> int:
        """The exact number of trainable numbers (shared weights counted once)."""
        return sum(p.numel() for p in self.parameters())


class CausalListOpsTransformer(ListOpsTransformer):
    """The next-token model: tokens (B, L) -> logits (B, L, classes), each position's
    prediction of the token after it, reading only the tokens up to it (``forward``). Built
    from a :class:`ListOpsTransformerConfig` whose classes is the vocabulary size."""

    causal = True

    def __init__(self, config: ListOpsTransformerConfig) -> None:
        if isinstance(config, ListOpsTransformerConfig) and config.classes != config.vocab_size:
            raise AmlabError(
                f"a causal model predicts tokens: classes ({config.classes}) must be the "
                f"vocabulary size ({config.vocab_size})."
            )
        super().__init__(config)
