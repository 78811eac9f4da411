"""Figures shared by the experiments (matplotlib, written as PNG, no screen needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from amlab.io import atomic_write  # noqa: E402


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Lay out ``fig``, write it to ``path`` atomically (the format from its suffix), close it."""
    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix[1:]))
    plt.close(fig)


def image_grid(
    rows: Sequence[tuple[str, torch.Tensor]],
    shape: tuple[int, ...],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> None:
    """Save a grid of images: one labelled row per (label, images (n, D)) pair.

    ``shape`` is one image's shape, (H, W) or channel-first (C, H, W); values in [0, 1].
    """
    n = max(images.shape[0] for _, images in rows)
    fig, axes = plt.subplots(
        len(rows), n, figsize=(0.9 * n + 1.2, 0.95 * len(rows) + 0.4), squeeze=False
    )
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < images.shape[0]:
                ax.imshow(
                    _picture(images[c], shape),
                    cmap="gray",
                    vmin=0.0,
                    vmax=1.0,
                    interpolation="nearest",
                )
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _picture(image: torch.Tensor, shape: tuple[int, ...]):
    pic = image.detach().float().cpu().clamp(0.0, 1.0).reshape(shape)
    if pic.ndim == 3:  # channel-first colour
        pic = pic.permute(1, 2, 0)
    return pic.numpy()
