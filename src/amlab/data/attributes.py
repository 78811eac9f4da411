"""Measured attributes of a digit image: stroke thickness, slant and size.

Each function takes grey-level images (B, H*W) or (B, H, W) with ink in [0, 1] (0 = paper) and
the image shape (H, W), and returns one number per image (B,), computed from the ink alone:

- **thickness** ``2 A / P``: the ink mass A over half the total variation P (the summed
  absolute differences between neighbouring pixels, the image padded with paper). A stroke of
  width w and length L has A = w L and an outline of length about 2 L, so this is w in pixels.
- **slant** ``cov(column, up) / var(up)``: the ink-weighted shear of the digit, how many
  columns its ink moves to the right per row it rises (the classic deskewing moment). An
  image sheared by x' = x + a * up measures a more.
- **size** ``sqrt(var(row) + var(column)) / H``: the ink's radius of gyration, as a fraction
  of the image height; a digit drawn twice as large measures twice as much.

An image with no ink measures 0 for all three.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from amlab.errors import AmlabError, as_float_tensor

#: the measured attributes, in the order captions name them
ATTRIBUTES = ("thickness", "size", "slant")


def as_images(images: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """``images`` (B, H*W) or (B, H, W) as (B, H, W) ink in [0, 1] (out-of-range values are
    clipped, as a generated image's are before it is shown)."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise AmlabError(f"attributes are measured on grey images of shape (H, W); got {shape}.")
    x = as_float_tensor(images, "images")
    if x.ndim == 2 and x.shape[1] == shape[0] * shape[1]:
        x = x.reshape(-1, *shape)
    if x.ndim != 3 or tuple(x.shape[1:]) != shape:
        raise AmlabError(
            f"images must have shape (B, {shape[0] * shape[1]}) or (B, {shape[0]}, {shape[1]}); "
            f"got {tuple(x.shape)}."
        )
    return x.clamp(0.0, 1.0)


def thickness(images: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """Stroke width in pixels (B,): ink mass over half the image's total variation."""
    x = torch.nn.functional.pad(as_images(images, shape), (1, 1, 1, 1))
    variation = x.diff(dim=1).abs().sum((1, 2)) + x.diff(dim=2).abs().sum((1, 2))
    return 2 * x.sum((1, 2)) / variation.clamp_min(1e-12)


class _Moments(NamedTuple):
    """The ink's mass, var(up), cov(column, up) and var(column), each (B,); up = -row."""

    mass: torch.Tensor
    var_up: torch.Tensor
    cov: torch.Tensor
    var_column: torch.Tensor


def _moments(images: Any, shape: tuple[int, ...]) -> _Moments:
    """The ink's moments that :func:`slant` and :func:`size` read."""
    x = as_images(images, shape)
    h, w = x.shape[1:]
    rows = torch.arange(h, dtype=x.dtype)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=x.dtype)[None, :].expand(h, w)
    mass = x.sum((1, 2))
    safe = mass.clamp_min(1e-12)

    def mean(f: torch.Tensor) -> torch.Tensor:
        return (x * f).sum((1, 2)) / safe

    r0, c0 = mean(rows), mean(cols)
    var_r = mean(rows**2) - r0**2
    var_c = mean(cols**2) - c0**2
    cov_rc = mean(rows * cols) - r0 * c0
    return _Moments(mass, var_r.clamp_min(0.0), -cov_rc, var_c.clamp_min(0.0))


def _slant(m: _Moments) -> torch.Tensor:
    return torch.where((m.mass > 0) & (m.var_up > 0), m.cov / m.var_up.clamp_min(1e-12), 0.0)


def _size(m: _Moments, shape: tuple[int, ...]) -> torch.Tensor:
    return (m.var_up + m.var_column).sqrt() / int(shape[-2])  # H of (H, W) or (1, H, W)


def slant(images: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """Columns moved right per row risen (B,): cov(column, up) / var(up) of the ink."""
    return _slant(_moments(images, shape))


def size(images: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """The ink's radius of gyration over the image height (B,)."""
    return _size(_moments(images, shape), shape)


def measure(images: Any, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Every attribute of :data:`ATTRIBUTES` of the images, by name, each (B,) (the moments
    that size and slant share computed once)."""
    moments = _moments(images, shape)
    values = {
        "thickness": thickness(images, shape),
        "size": _size(moments, shape),
        "slant": _slant(moments),
    }
    return {name: values[name] for name in ATTRIBUTES}
