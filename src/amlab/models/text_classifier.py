"""Two binary text classifiers (toxic or not) for the fairness audits: a bag-of-words logistic
regression and a small transformer. Both read token ids (B, L) int64 (``<pad>`` 0, ``<unk>``
1, ``<cls>`` 2 first; :func:`amlab.data.fairness.encode` makes them from text with the
model's ``config.vocabulary``) and give one logit per text (``forward``), the probability of
toxic (``score``) and the representation the logit is read from (``embed``).

The bag-of-words model is fitted by scikit-learn (:mod:`amlab.tasks.fairness`) and keeps only
its coefficients, so both models save as every amlab model does (safetensors and JSON) and
can be exported to the browser as plain weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from amlab.errors import AmlabError, check_dtype, check_positive, check_positive_int, dtype_name
from amlab.models.listops import Block, attention_mask
from amlab.models.model import Model, seeded


def _check_vocabulary(vocabulary: tuple[str, ...]) -> None:
    if len(vocabulary) < 4 or vocabulary[:3] != ("<pad>", "<unk>", "<cls>"):
        raise AmlabError(
            "vocabulary must start with <pad>, <unk>, <cls> and hold words; build it with "
            "amlab.data.fairness.build_vocabulary."
        )


class TextClassifier(Model):
    """What both classifiers share: the token check and ``score``."""

    def _tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
            raise AmlabError(
                "tokens must be a (B, L) int64 tensor of ids; see data.fairness.encode."
            )
        self._check_placement(tokens, "tokens")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= len(self.vocabulary)):
            raise AmlabError(f"token ids must lie in [0, {len(self.vocabulary)}).")
        return tokens

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self._config.vocabulary

    def score(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) the probability that each text is toxic: sigmoid of the logit."""
        return torch.sigmoid(self(tokens))


@dataclass(frozen=True)
class BagOfWordsConfig:
    """The vocabulary (ids are positions) and the dtype of :class:`BagOfWordsClassifier`."""

    vocabulary: tuple[str, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_vocabulary(self.vocabulary)
        check_dtype(self.dtype)


class BagOfWordsClassifier(TextClassifier):
    """logit = bias + sum over the words of a text of weight[word]: logistic regression on
    word counts. ``weight`` (V,) and ``bias`` (1,) start at zero; the specials' weights
    stay zero (:meth:`set_coefficients`)."""

    Config = BagOfWordsConfig

    def __init__(self, vocabulary: tuple[str, ...], dtype: str | torch.dtype = "float32") -> None:
        super().__init__()
        self._config = BagOfWordsConfig(tuple(vocabulary), dtype_name(check_dtype(dtype)))
        size = len(self._config.vocabulary)
        self.weight = nn.Parameter(torch.zeros(size, dtype=check_dtype(dtype)))
        self.bias = nn.Parameter(torch.zeros(1, dtype=check_dtype(dtype)))

    def set_coefficients(self, weight: torch.Tensor, bias: float) -> None:
        """Take a fitted logistic regression's coefficients, one per vocabulary entry (the
        specials' are set to zero)."""
        if weight.shape != self.weight.shape:
            raise AmlabError(f"weight must have shape {tuple(self.weight.shape)}.")
        with torch.no_grad():
            self.weight.copy_(weight)
            self.weight[:3] = 0.0
            self.bias.fill_(float(bias))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, V) the word counts, the specials' columns zeroed: what the logit reads."""
        tokens = self._tokens(tokens)
        counts = torch.zeros(
            tokens.shape[0], len(self.vocabulary), dtype=self.dtype, device=tokens.device
        )
        counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=self.dtype))
        counts[:, :3] = 0.0
        return counts

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) logits."""
        tokens = self._tokens(tokens)
        return self.bias + self.weight[tokens].sum(-1)

    @property
    def config(self) -> BagOfWordsConfig:
        return replace(self._config, dtype=dtype_name(self.dtype))


@dataclass(frozen=True)
class TextTransformerConfig:
    """What :class:`TextTransformer` is built from: the vocabulary (ids are positions), the
    block sizes (as :class:`~amlab.models.listops.ListOpsTransformerConfig`), the longest
    input in tokens (``<cls>`` included), the seed of the initial weights and the dtype."""

    vocabulary: tuple[str, ...]
    dim: int = 32
    layers: int = 1
    heads: int = 2
    mlp_ratio: float = 2.0
    max_len: int = 24
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_vocabulary(self.vocabulary)
        for name in ("dim", "layers", "heads", "max_len"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.seed, "seed", allow_zero=True)
        check_positive(self.mlp_ratio, "mlp_ratio")
        check_dtype(self.dtype)
        if self.dim % self.heads:
            raise AmlabError(f"dim ({self.dim}) must be a multiple of heads ({self.heads}).")
        if self.hidden < 1:
            raise AmlabError(f"mlp_ratio {self.mlp_ratio} leaves the MLP no hidden units.")

    @property
    def hidden(self) -> int:
        return int(round(self.dim * self.mlp_ratio))


class TextTransformer(TextClassifier):
    """Token and position embeddings, ``layers`` pre-norm blocks (those of the ListOps
    transformer: attention over the non-padding tokens, then a GELU MLP), a final norm, and
    a linear read-out of the ``<cls>`` token: tokens (B, L) -> logits (B,)."""

    Config = TextTransformerConfig
    takes_config = True

    def __init__(self, config: TextTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, TextTransformerConfig):
            raise AmlabError(
                "TextTransformer is built from a TextTransformerConfig; got "
                f"{type(config).__name__}."
            )
        self._config = config
        with seeded(config.seed):
            self.embed_tokens = nn.Embedding(len(config.vocabulary), config.dim)
            self.position = nn.Embedding(config.max_len, config.dim)
            self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
            self.norm = nn.LayerNorm(config.dim)
            self.head = nn.Linear(config.dim, 1)
            nn.init.normal_(self.embed_tokens.weight, std=0.5)
            nn.init.normal_(self.position.weight, std=0.1)
        self.to(check_dtype(config.dtype))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, dim) the normalised ``<cls>`` state after the last block: what the head reads."""
        tokens = self._tokens(tokens)
        if tokens.shape[1] > self._config.max_len:
            raise AmlabError(
                f"inputs of {tokens.shape[1]} tokens exceed max_len {self._config.max_len}."
            )
        mask = attention_mask(tokens, causal=False)[:, None]  # (B, 1, 1, L): the non-padding
        x = self.embed_tokens(tokens) + self.position.weight[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, mask, frozenset())
        return self.norm(x[:, 0])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) logits."""
        return self.head(self.embed(tokens))[:, 0]

    @property
    def config(self) -> TextTransformerConfig:
        return replace(self._config, dtype=dtype_name(self.dtype))
