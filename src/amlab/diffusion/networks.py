"""Learned denoisers: a residual MLP (for points in a few dimensions) and a small conv net
(for images), optionally class-conditional and optionally *energy-parameterised*.

Both use the preconditioning of Karras et al. (EDM) in the scaled coordinates y = x_0 + s z:

    c_in = 1 / sqrt(s^2 + sd^2),  c_skip = sd^2 / (s^2 + sd^2),  c_out = s sd / sqrt(s^2 + sd^2)

with sd the data's standard deviation (``sigma_data``) and F the network's output (B, D):

- ``energy=False``: the network *is* the denoiser, D(y) = c_skip y + c_out F(c_in y, s, class);
- ``energy=True``: the network defines a scalar energy and the denoiser is its descent step,

      E(y) = 1/2 ||y - G(y)||^2,  G = c_skip y + c_out F(c_in y, s, class),  D(y) = y - grad_y E

  (the "L2" energy of Du et al. 2023), in the units of the empirical LSE energy E_t, so a
  learned model has a landscape that can be plotted next to the DenseAM's and descended.

Classes: an embedding with one extra row for "no class" (label -1), which classifier-free
guidance uses as the unconditional model.

Text: :class:`TextConvDenoiser` is the conv net conditioned on a prompt instead of a class. Its
``labels`` are token ids (B, L) (the index of each word in its ``vocabulary``, -1 for
padding; :func:`amlab.data.captions.tokenize` makes them); a :class:`TextEncoder` sums the
words' embeddings and maps the sum through a small MLP to the conditioning embedding, and the
empty prompt (all -1, which guidance passes for the unconditional model) has an embedding
of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amlab.diffusion.denoiser import NO_CLASS, Denoiser
from amlab.diffusion.schedules import Schedule
from amlab.errors import AmlabError, check_dtype, check_positive, check_positive_int, dtype_name
from amlab.models.model import config_fields, seeded


@dataclass(frozen=True, kw_only=True)
class LearnedDenoiserConfig:
    """The fields every network's config has (see :class:`MLPDenoiser`'s arguments); the
    schedule as its ``Schedule.config()``."""

    schedule: dict[str, Any]
    energy: bool = False
    num_classes: int = 0
    sigma_data: float = 0.5
    embed_dim: int = 64
    seed: int = 0
    dtype: str = "float32"


@dataclass(frozen=True, kw_only=True)
class MLPDenoiserConfig(LearnedDenoiserConfig):
    """What :class:`MLPDenoiser` is built with (see its arguments)."""

    dim: int
    hidden: int = 128
    layers: int = 3


@dataclass(frozen=True, kw_only=True)
class ConvDenoiserConfig(LearnedDenoiserConfig):
    """What :class:`ConvDenoiser` is built with (see its arguments); the shape as (C, H, W)."""

    shape: tuple[int, ...]
    channels: int = 32
    blocks: int = 3


class NoiseEmbedding(nn.Module):
    """Embedding (B, E) of the noise level through sines and cosines of log(s) / 4."""

    def __init__(self, dim: int, frequencies: int = 16) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.logspace(0, 3, frequencies, base=2.0))
        self.net = nn.Sequential(nn.Linear(2 * frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        angle = (s.log() / 4)[:, None] * self.freqs.to(s.dtype)
        return self.net(torch.cat([angle.sin(), angle.cos()], 1))


class LearnedDenoiser(Denoiser):
    """Base of the networks: preconditioning, noise and class embeddings, energy option.

    Subclasses build ``self.body(u (B, D), emb (B, E)) -> F (B, D)``, all their layers
    inside ``seeded(seed)`` (so the initial weights are those ``torch.manual_seed(seed)``
    followed by the construction gives), and convert to their dtype at the end.
    """

    def __init__(
        self,
        schedule: Schedule | dict[str, Any],
        dim: int,
        *,
        energy: bool = False,
        num_classes: int = 0,
        sigma_data: float = 0.5,
        embed_dim: int = 64,
    ) -> None:
        super().__init__(schedule, check_positive_int(dim, "dim"), num_classes)
        check_positive_int(num_classes, "num_classes", allow_zero=True)
        self.has_energy = bool(energy)
        self.sigma_data = check_positive(sigma_data, "sigma_data")
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.noise_embedding = NoiseEmbedding(self.embed_dim)
        self.class_embedding = (
            nn.Embedding(num_classes + 1, self.embed_dim) if num_classes > 0 else None
        )

    def body(self, u: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _shared_config(self) -> dict[str, Any]:
        """The fields of :class:`LearnedDenoiserConfig`, by name."""
        return {
            "schedule": self.schedule.config(),
            "energy": self.has_energy,
            "num_classes": self.num_classes,
            "sigma_data": self.sigma_data,
            "embed_dim": self.embed_dim,
            "seed": self.seed,
            "dtype": dtype_name(self.dtype),
        }

    def _condition(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
        """The conditioning embedding (B, E) added to the noise level's, or None."""
        if self.class_embedding is None:
            if labels is not None:
                raise AmlabError("this network is unconditional; pass labels=None.")
            return None
        lab = torch.full((batch,), NO_CLASS, device=device) if labels is None else labels
        return self.class_embedding(lab + 1)

    def _preconditioned(self, y: torch.Tensor, s: float | torch.Tensor, labels):
        """G = c_skip y + c_out F(c_in y, s, class) (B, D)."""
        s = torch.as_tensor(s, dtype=y.dtype, device=y.device).reshape(-1).expand(y.shape[0])
        sd2 = self.sigma_data**2
        c_in = (s * s + sd2).rsqrt()[:, None]
        c_skip = sd2 / (s * s + sd2)[:, None]
        c_out = s[:, None] * self.sigma_data * c_in
        emb = self.noise_embedding(s)
        condition = self._condition(labels, y.shape[0], y.device)
        if condition is not None:
            emb = emb + condition
        return c_skip * y + c_out * self.body(c_in * y, emb)

    def denoise_scaled(
        self, y: torch.Tensor, s: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not self.has_energy:
            return self._preconditioned(y, s, labels)
        create_graph = torch.is_grad_enabled()  # training differentiates through grad E
        with torch.enable_grad():
            state = y if y.requires_grad else y.detach().requires_grad_(True)
            e = self.energy_scaled(state, s, labels)
            (grad,) = torch.autograd.grad(e.sum(), state, create_graph=create_graph)
        return y - grad

    def energy_scaled(
        self, y: torch.Tensor, s: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not self.has_energy:
            return super().energy_scaled(y, s, labels)
        return 0.5 * ((y - self._preconditioned(y, s, labels)) ** 2).sum(1)


class MLPDenoiser(LearnedDenoiser):
    """A residual MLP denoiser for states (B, dim): ``layers`` blocks of width ``hidden``.

    schedule: a Schedule or its ``config()``. seed: seeds the initial weights (PyTorch's
    default initialisation). dtype: float32 (default) or float64 (a dtype or its name);
    the weights are drawn in float32 and converted.
    """

    Config = MLPDenoiserConfig

    def __init__(
        self,
        dim: int,
        schedule: Schedule | dict[str, Any],
        *,
        hidden: int = 128,
        layers: int = 3,
        energy: bool = False,
        num_classes: int = 0,
        sigma_data: float = 0.5,
        embed_dim: int = 64,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        seed = check_positive_int(seed, "seed", allow_zero=True)
        with seeded(seed):
            super().__init__(
                schedule,
                dim,
                energy=energy,
                num_classes=num_classes,
                sigma_data=sigma_data,
                embed_dim=embed_dim,
            )
            self.seed = seed
            self.hidden = hidden = check_positive_int(hidden, "hidden")
            self.layers = layers = check_positive_int(layers, "layers")
            self.inp = nn.Linear(dim, hidden)
            self.emb = nn.ModuleList(nn.Linear(self.embed_dim, hidden) for _ in range(layers))
            self.blocks = nn.ModuleList(
                nn.Sequential(
                    nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
                )
                for _ in range(layers)
            )
            self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))
        self.to(check_dtype(dtype))

    @property
    def config(self) -> MLPDenoiserConfig:
        return MLPDenoiserConfig(
            dim=self.dim, hidden=self.hidden, layers=self.layers, **self._shared_config()
        )

    def body(self, u: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.inp(u)
        for block, proj in zip(self.blocks, self.emb, strict=True):
            h = h + block(h + proj(emb))
        return self.out(h)


class ConvDenoiser(LearnedDenoiser):
    """A small residual conv net for images of ``shape`` (H, W) or (C, H, W), flattened to
    states (B, C*H*W); ``blocks`` residual blocks of ``channels`` 3x3 convolutions, each
    norm-act-conv then a :class:`ModulatedNormConv` that takes the noise level and class.

    schedule, seed, dtype: as in :class:`MLPDenoiser`.
    """

    Config = ConvDenoiserConfig
    # before amlab 42a42e6 each block added a Linear of the embedding (emb.i) before its
    # second GroupNorm, which subtracted it again
    former_tensors = {
        "emb.0.weight": "saved before its conditioning moved after the GroupNorm, as FiLM, in "
        "amlab commit 42a42e6"
    }

    def __init__(
        self,
        shape: tuple[int, ...],
        schedule: Schedule | dict[str, Any],
        *,
        channels: int = 32,
        blocks: int = 3,
        energy: bool = False,
        num_classes: int = 0,
        sigma_data: float = 0.5,
        embed_dim: int = 64,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        shape = tuple(int(v) for v in shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or min(shape) < 1:
            raise AmlabError(f"shape must be (H, W) or (C, H, W); got {shape}.")
        seed = check_positive_int(seed, "seed", allow_zero=True)
        with seeded(seed):
            super().__init__(
                schedule,
                math.prod(shape),
                energy=energy,
                num_classes=num_classes,
                sigma_data=sigma_data,
                embed_dim=embed_dim,
            )
            self.seed = seed
            self.shape = shape
            self.channels = channels = check_positive_int(channels, "channels")
            self.num_blocks = blocks = check_positive_int(blocks, "blocks")
            groups = math.gcd(8, channels)
            self.inp = nn.Conv2d(shape[0], channels, 3, padding=1)
            self.first = nn.ModuleList(
                _norm_conv(groups, channels, channels) for _ in range(blocks)
            )
            self.second = nn.ModuleList(
                ModulatedNormConv(groups, channels, self.embed_dim) for _ in range(blocks)
            )
            self.out = _norm_conv(groups, channels, shape[0])
        self.to(check_dtype(dtype))

    @property
    def config(self) -> ConvDenoiserConfig:
        return ConvDenoiserConfig(
            shape=self.shape,
            channels=self.channels,
            blocks=self.num_blocks,
            **self._shared_config(),
        )

    def body(self, u: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.inp(u.reshape(-1, *self.shape))
        for first, second in zip(self.first, self.second, strict=True):
            h = h + second(first(h), emb)
        return self.out(h).reshape(u.shape[0], -1)


@dataclass(frozen=True, kw_only=True)
class TextConvDenoiserConfig(ConvDenoiserConfig):
    """What :class:`TextConvDenoiser` is built with: a ConvDenoiser's fields and the words."""

    vocabulary: tuple[str, ...]


class TextEncoder(nn.Module):
    """Prompt embedding (B, E) of token ids (B, L) (-1: padding): the sum of the words'
    embeddings through Linear-SiLU-Linear; a prompt without words has its own embedding."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, dim)
        self.empty = nn.Parameter(torch.zeros(dim))
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        present = ids >= 0
        summed = (self.words(ids.clamp_min(0)) * present[..., None].to(self.empty.dtype)).sum(1)
        return self.net(torch.where(present.any(1, keepdim=True), summed, self.empty))


class TextConvDenoiser(ConvDenoiser):
    """A :class:`ConvDenoiser` conditioned on prompts: ``labels`` are token ids (B, L) of
    words of ``vocabulary`` (-1: padding; a row of -1 is the empty prompt, the unconditional
    model of classifier-free guidance), or (L,) for one prompt shared by the batch.

    The conv net's initial weights are those of the ConvDenoiser of the same seed; the text
    encoder's are drawn after them with seed + 1. The other arguments as ConvDenoiser's.
    """

    Config = TextConvDenoiserConfig

    def __init__(
        self,
        shape: tuple[int, ...],
        schedule: Schedule | dict[str, Any],
        vocabulary: tuple[str, ...] | list[str],
        *,
        channels: int = 32,
        blocks: int = 3,
        energy: bool = False,
        num_classes: int = 0,
        sigma_data: float = 0.5,
        embed_dim: int = 64,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        if num_classes != 0:
            raise AmlabError(
                f"a TextConvDenoiser is prompted by text, not classes; got num_classes="
                f"{num_classes}: pass 0, or build a ConvDenoiser for classes."
            )
        words = tuple(vocabulary)
        if not words or not all(isinstance(w, str) and w and w.split() == [w] for w in words):
            raise AmlabError(f"vocabulary must be a non-empty list of single words; got {words}.")
        if len(set(words)) != len(words):
            raise AmlabError(f"vocabulary lists a word twice: {words}.")
        super().__init__(
            shape,
            schedule,
            channels=channels,
            blocks=blocks,
            energy=energy,
            sigma_data=sigma_data,
            embed_dim=embed_dim,
            seed=seed,
        )
        self.vocabulary = words
        with seeded(self.seed + 1):
            self.text_encoder = TextEncoder(len(words), self.embed_dim)
        self.to(check_dtype(dtype))

    @property
    def conditional(self) -> bool:
        return True

    @property
    def config(self) -> TextConvDenoiserConfig:
        return TextConvDenoiserConfig(vocabulary=self.vocabulary, **config_fields(super().config))

    def _condition(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch, 1), NO_CLASS, device=device)
        return self.text_encoder(labels)

    def _check_labels(self, labels: Any, batch: int) -> torch.Tensor | None:
        if labels is None:
            return None
        ids = torch.as_tensor(labels, device=self.device)
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise AmlabError(
                "a TextConvDenoiser's labels are token ids (B, L) (amlab.data.captions."
                f"tokenize); got dtype {ids.dtype}."
            )
        ids = ids.long()
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim == 2 and ids.shape[0] == 1 and batch != 1:
            ids = ids.expand(batch, -1)
        if ids.ndim != 2 or ids.shape[0] != batch:
            raise AmlabError(
                f"token ids must have shape ({batch}, L) or (L,); got {tuple(ids.shape)}."
            )
        vocab = len(self.vocabulary)
        if ids.numel() and not bool(((ids >= NO_CLASS) & (ids < vocab)).all()):
            raise AmlabError(
                f"token ids must lie in [-1, {vocab - 1}] (-1: padding); got "
                f"{ids.min().item()}..{ids.max().item()}."
            )
        return ids


class ModulatedNormConv(nn.Module):
    """GroupNorm, then a scale and a shift per channel that the embedding sets (FiLM,
    adaptive GroupNorm: h (1 + scale) + shift), SiLU and a 3x3 convolution.

    The conditioning comes after the norm: a constant per channel added before it would be
    subtracted again wherever a group holds one channel. The scale's weights start at zero,
    so a fresh block is the plain norm-act-conv plus a shift per channel.
    """

    def __init__(self, groups: int, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)  # the modulation is its affine
        self.modulation = nn.Linear(embed_dim, 2 * channels)  # (scale, shift)
        with torch.no_grad():
            self.modulation.weight[:channels].zero_()
            self.modulation.bias[:channels].zero_()
        self.act = nn.SiLU()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(emb)[:, :, None, None].chunk(2, 1)
        return self.conv(self.act(self.norm(h) * (1 + scale) + shift))


def _norm_conv(groups: int, channels: int, out_channels: int) -> nn.Sequential:
    """GroupNorm, SiLU and a 3x3 convolution from ``channels`` to ``out_channels``."""
    return nn.Sequential(
        nn.GroupNorm(groups, channels),
        nn.SiLU(),
        nn.Conv2d(channels, out_channels, 3, padding=1),
    )
