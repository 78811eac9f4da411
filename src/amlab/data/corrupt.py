"""Corruptions of flattened images for denoising and completion experiments.

Every function takes ``x`` (B, D) and returns ``(corrupted, observed)``: ``corrupted`` (B, D)
has x's dtype and device, ``observed`` (B, D) bool is True where the entry is kept exactly
(usable as a clamp mask for image completion). Randomness comes only from ``seed`` (an int or
a ``torch.Generator``), drawn on the CPU so that results do not depend on the device.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from amlab.errors import (
    AmlabError,
    as_float_tensor,
    check_choice,
    check_positive,
    check_positive_int,
)

CORRUPTIONS = ("mask", "block", "noise", "salt_pepper")
Seed = int | torch.Generator


def _batch(x: Any) -> torch.Tensor:
    x = as_float_tensor(x, "x")
    if x.dim() != 2:
        raise AmlabError(
            f"x must be a (batch, D) tensor of flattened images; got shape "
            f"{tuple(x.shape)}: use x.reshape(len(x), -1)."
        )
    return x


def _generator(seed: Seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(check_positive_int(seed, "seed", allow_zero=True))


def _fraction(fraction: Any) -> float:
    f = check_positive(fraction, "fraction", allow_zero=True)
    if f > 1:
        raise AmlabError(f"fraction must lie in [0, 1] (share of pixels per image); got {f}.")
    return f


def _finite(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise AmlabError(f"{name} must be a finite number; got {value!r}.")
    return v


def _pick_per_row(x: torch.Tensor, fraction: Any, g: torch.Generator) -> torch.Tensor:
    """Bool (B, D) with round(fraction * D) True entries per row, chosen uniformly per row."""
    b, d = x.shape
    k = round(_fraction(fraction) * d)
    order = torch.rand(b, d, generator=g).argsort(dim=1)[:, :k]
    return torch.zeros(b, d, dtype=torch.bool).scatter_(1, order, True).to(x.device)


def random_mask(
    x: Any, fraction: float, seed: Seed = 0, fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide round(fraction * D) random entries of each row of x (B, D), setting them to fill."""
    x = _batch(x)
    hidden = _pick_per_row(x, fraction, _generator(seed))
    return x.masked_fill(hidden, _finite(fill, "fill")), ~hidden


def _image_shape(shape: Any, d: int) -> tuple[int, ...]:
    try:
        dims = tuple(check_positive_int(s, "image size") for s in shape)
    except (TypeError, AmlabError):
        dims = ()
    if len(dims) not in (2, 3) or math.prod(dims) != d:
        raise AmlabError(
            f"image shape {shape!r} does not describe the D={d} columns of x; pass "
            "(H, W) or (C, H, W) with product D, e.g. (8, 8) for digits or "
            "(3, 32, 32) for CIFAR-10."
        )
    return dims


_HALVES = {
    "lower_half": lambda h, w: (h // 2, 0, h - h // 2, w),
    "upper_half": lambda h, w: (0, 0, h // 2, w),
    "left_half": lambda h, w: (0, 0, h, w // 2),
    "right_half": lambda h, w: (0, w // 2, h, w - w // 2),
}


def block_mask(
    x: Any,
    shape: tuple[int, ...],
    block: str | tuple[int, int, int, int] = "lower_half",
    fill: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide a rectangle of every image in x (B, D), in all channels, setting it to fill.

    ``shape`` is one image's (H, W) or (C, H, W); ``block`` names a half ("lower_half" hides
    rows H//2.., also "upper_half", "left_half", "right_half") or is (top, left, height, width).
    """
    x = _batch(x)
    dims = _image_shape(shape, x.shape[1])
    h, w = dims[-2:]
    if isinstance(block, str):
        top, left, height, width = _HALVES[check_choice(block, "block", tuple(_HALVES))](h, w)
    else:
        try:
            top, left, height, width = (
                check_positive_int(v, "block", allow_zero=True) for v in block
            )
        except (TypeError, ValueError):
            top = left = height = width = -1
        if min(height, width) < 1 or top + height > h or left + width > w:
            raise AmlabError(
                f"block {block!r} is not a rectangle (top, left, height, width) "
                f"inside the {h}x{w} image; pass one with height, width >= 1, "
                f"top + height <= {h} and left + width <= {w}."
            )
    region = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    region[top : top + height, left : left + width] = True
    hidden = region.expand(dims).reshape(-1)
    return x.masked_fill(hidden, _finite(fill, "fill")), (~hidden).expand_as(x).clone()


def gaussian_noise(
    x: Any, sigma: float, seed: Seed = 0, clip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, D) plus N(0, sigma^2) noise, clipped to [0, 1] if clip; observed is all False."""
    x = _batch(x)
    sigma = check_positive(sigma, "sigma", allow_zero=True)
    noise = torch.randn(x.shape, generator=_generator(seed), dtype=x.dtype).to(x.device)
    noisy = x + sigma * noise
    return (noisy.clamp(0.0, 1.0) if clip else noisy), torch.zeros_like(x, dtype=torch.bool)


def salt_and_pepper(x: Any, fraction: float, seed: Seed = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Set round(fraction * D) random entries of each row of x (B, D) to 0 or 1 (prob 1/2 each)."""
    x = _batch(x)
    g = _generator(seed)
    hidden = _pick_per_row(x, fraction, g)
    salt = (torch.rand(x.shape, generator=g) < 0.5).to(device=x.device, dtype=x.dtype)
    return torch.where(hidden, salt, x), ~hidden


def corrupt(
    x: Any, kind: str, level: float, seed: Seed = 0, shape: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply corruption ``kind`` (one of CORRUPTIONS) to x (B, D) at ``level``.

    level is the hidden fraction for "mask" and "salt_pepper" and sigma for "noise"; "block"
    ignores level and seed and hides the lower half of each image, which needs ``shape``.
    """
    check_choice(kind, "corruption", CORRUPTIONS)
    if kind == "mask":
        return random_mask(x, level, seed)
    if kind == "noise":
        return gaussian_noise(x, level, seed)
    if kind == "salt_pepper":
        return salt_and_pepper(x, level, seed)
    if shape is None:
        raise AmlabError(
            "the 'block' corruption needs the image shape; pass shape=(H, W) or "
            "(C, H, W), e.g. ImageSet.shape."
        )
    return block_mask(x, shape)
