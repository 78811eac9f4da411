"""MaskedImageET: masked image completion with one Energy Transformer block.

As in the paper's image experiments (papers.md section 3): an image is cut into square
patches; each patch becomes a token through a linear encoder; the tokens of masked
patches are replaced by a learned MASK token; learned position embeddings are added and
a learned CLS token is put in front; the Energy Transformer's dynamics run for T steps;
a linear decoder turns each final token back into a patch. Training scores a share of
the patches: most of them masked, a few left visible (``sample_masks``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from amlab.dynamics import Trajectory
from amlab.errors import AmlabError, check_dtype, check_positive_int, dtype_name
from amlab.models.energy_transformer import EnergyTransformer
from amlab.models.model import Model, config_from


@dataclass(frozen=True)
class MaskedImageETConfig:
    """What :class:`MaskedImageET` is built with (see its arguments); ``hopfield_memories``
    holds the value its default resolved to."""

    image_shape: tuple[int, ...]
    patch: int = 2
    dim: int = 64
    heads: int = 4
    head_dim: int = 16
    hopfield_memories: int | None = None
    hopfield: str = "relu"
    steps: int = 12
    step_size: float = 0.1
    seed: int = 0
    init_std: float = 0.02
    dtype: str = "float32"


@dataclass
class Completion:
    """What :meth:`MaskedImageET.complete` returns.

    patches: predicted patches (B, N, P) for every position, masked or not.
    images: the input images with the masked patches replaced by the prediction (B, D).
    trajectory: the block's dynamics (:meth:`EnergyTransformer.retrieve`): final tokens
        (B, N + 1, D), CLS first, and the energy and its parts ``"attention"`` and
        ``"hopfield"`` per step (T + 1, B).
    """

    patches: torch.Tensor
    images: torch.Tensor
    trajectory: Trajectory


class MaskedImageET(Model):
    """Patch tokens, CLS, MASK token, learned positions, linear encoder and decoder
    around one :class:`EnergyTransformer` block.

    ``forward(images, masked)`` is the completed images (B, D), ``complete(...).images``.

    Args:
        image_shape: (H, W) or (C, H, W) of one image; H and W divisible by ``patch``.
        patch: side of the square patches.
        dim, heads, head_dim, hopfield_memories, hopfield, steps, step_size: the block's
            configuration (see EnergyTransformer); hopfield_memories defaults to 4 * dim.
        seed: seeds every initial weight.
        init_std: standard deviation of the initial CLS, MASK and position embeddings and
            of the block's weights (see EnergyTransformer).
        dtype: float32 (default) or float64 (a dtype or its name); the weights are drawn in
            float32 and converted.
    """

    Config = MaskedImageETConfig

    def __init__(
        self,
        image_shape: tuple[int, ...],
        patch: int = 2,
        dim: int = 64,
        heads: int = 4,
        head_dim: int = 16,
        hopfield_memories: int | None = None,
        hopfield: str = "relu",
        steps: int = 12,
        step_size: float = 0.1,
        seed: int = 0,
        init_std: float = 0.02,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        self.patch = check_positive_int(patch, "patch")
        if len(shape) != 3 or min(shape) < 1 or shape[1] % patch or shape[2] % patch:
            raise AmlabError(
                f"image_shape must be (H, W) or (C, H, W) with H and W divisible by the patch "
                f"size {patch}; got {tuple(image_shape)}."
            )
        self.image_shape = tuple(int(s) for s in image_shape)
        self.channels, self.height, self.width = shape
        self.grid = (shape[1] // patch, shape[2] // patch)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_dim = shape[0] * patch * patch
        dim = check_positive_int(dim, "dim")
        self.block = EnergyTransformer(
            dim,
            heads,
            head_dim,
            hopfield_memories,
            hopfield,
            steps=steps,
            step_size=step_size,
            seed=seed,
            init_std=init_std,
        )
        gen = torch.Generator().manual_seed(seed + 1)

        def normal(*size: int) -> nn.Parameter:
            return nn.Parameter(init_std * torch.randn(*size, generator=gen))

        def linear(fan_in: int, fan_out: int) -> nn.Linear:
            layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out)  # no draw from torch's RNG
            bound = 1 / math.sqrt(fan_in)
            with torch.no_grad():
                layer.weight.copy_(torch.rand(fan_out, fan_in, generator=gen) * 2 * bound - bound)
                layer.bias.zero_()
            return layer

        self.encoder = linear(self.patch_dim, dim)
        self.decoder = linear(dim, self.patch_dim)
        self.cls_token = normal(dim)
        self.mask_token = normal(dim)
        self.positions = normal(self.num_patches + 1, dim)
        self.to(check_dtype(dtype))

    @property
    def config(self) -> MaskedImageETConfig:
        return config_from(
            MaskedImageETConfig,
            self.block.config,
            image_shape=self.image_shape,
            patch=self.patch,
            dtype=dtype_name(self.dtype),
        )

    # -- patches ---------------------------------------------------------------------------
    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """Flat images (B, D) -> patches (B, N, P), row by row, each patch channel-first."""
        c, p, (gh, gw) = self.channels, self.patch, self.grid
        x = images.reshape(-1, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, self.num_patches, self.patch_dim)

    def images(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (B, N, P) -> flat images (B, D); the inverse of :meth:`patches`."""
        c, p, (gh, gw) = self.channels, self.patch, self.grid
        x = patches.reshape(-1, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(patches.shape[0], -1)

    def pixel_mask(self, masked: torch.Tensor) -> torch.Tensor:
        """Patch mask (B, N) -> pixel mask (B, D), True on the pixels of masked patches."""
        return self.images(masked[..., None].expand(*masked.shape, self.patch_dim))

    # -- completion ------------------------------------------------------------------------
    def complete(self, images: Any, masked: Any, differentiable: bool | None = None) -> Completion:
        """Complete flat images (B, D) whose patches ``masked`` (B, N, bool) are hidden.

        differentiable: keep the graph through the T steps (default: in training mode).
        """
        images, masked = self._check(images, masked)
        differentiable = self.training if differentiable is None else differentiable
        tokens = self.encoder(self.patches(images))
        tokens = torch.where(masked[..., None], self.mask_token, tokens)
        cls = self.cls_token.expand(tokens.shape[0], 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.positions
        trajectory = self.block.retrieve(tokens, differentiable=differentiable)
        patches = self.decoder(trajectory.states[:, 1:])
        completed = torch.where(self.pixel_mask(masked), self.images(patches), images)
        return Completion(patches, completed, trajectory)

    def forward(self, images: Any, masked: Any, differentiable: bool | None = None) -> torch.Tensor:
        """The completed images (B, D): ``complete(images, masked, differentiable).images``."""
        return self.complete(images, masked, differentiable).images

    def _check(self, images: Any, masked: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._as_input(images, "images")
        d = self.channels * self.height * self.width
        if images.ndim != 2 or images.shape[1] != d or images.shape[0] == 0:
            raise AmlabError(
                f"images must be flat (B, {d}) for image shape {self.image_shape}; got "
                f"{tuple(images.shape)}."
            )
        masked = torch.as_tensor(masked, device=self.device)
        if masked.dtype != torch.bool or masked.shape != (images.shape[0], self.num_patches):
            raise AmlabError(
                f"masked must be a bool tensor (B, {self.num_patches}), True on hidden "
                f"patches; got dtype {masked.dtype}, shape {tuple(masked.shape)}."
            )
        return images, masked


def sample_masks(
    batch: int,
    num_patches: int,
    scored_fraction: float,
    masked_share: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``round(scored_fraction * N)`` patches per image to score; of those, a
    share ``masked_share`` (at least one) is hidden behind the MASK token and the rest
    stay visible. Returns (scored, masked), bool (batch, N), masked a subset of scored.

    The paper's ImageNet setting is 100 of 196 patches scored, 90 of them masked:
    scored_fraction = 100/196, masked_share = 0.9.
    """
    if not 0.0 < scored_fraction <= 1.0 or not 0.0 < masked_share <= 1.0:
        raise AmlabError(
            f"scored_fraction and masked_share must lie in (0, 1]; got {scored_fraction!r} "
            f"and {masked_share!r}."
        )
    n_scored = max(1, round(scored_fraction * num_patches))
    n_masked = max(1, round(masked_share * n_scored))
    order = torch.rand(batch, num_patches, generator=generator).argsort(dim=1)
    rank = order.argsort(dim=1)  # position of each patch in the random order
    return rank < n_scored, rank < n_masked
