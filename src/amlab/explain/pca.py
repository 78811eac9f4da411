"""Principal axes for the explainer's 2-D maps (the diffusion view's digits, the ListOps
embeddings, the gallery view's pictures), and rows' coordinates on them."""

from __future__ import annotations

import torch


def principal_axes(x: torch.Tensor, k: int = 2) -> dict:
    """The mean (D,) and top-k principal axes (k, D) of the rows of x, rounded to float32 (so
    the export is the same on every machine's LAPACK), each axis signed so that its largest
    entry is positive; and the fraction of the variance each axis explains."""
    centred = x.double() - x.double().mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:k]
    peak = axes.abs().argmax(1)
    axes = axes * axes[torch.arange(k), peak].sign()[:, None]
    explained = (s[:k] ** 2 / (s**2).sum()).float()
    return {
        "mean": x.double().mean(0).float().double().tolist(),
        "axes": axes.float().double().tolist(),
        "explained": [round(v, 4) for v in explained.tolist()],
    }


def map_coordinates(x: torch.Tensor, axes: dict) -> torch.Tensor:
    """Rows (B, D) on the principal axes of :func:`principal_axes`: (x - mean) @ axes.T,
    (B, k) in float64."""
    mean = torch.tensor(axes["mean"], dtype=torch.float64)
    return (x.double() - mean) @ torch.tensor(axes["axes"], dtype=torch.float64).T
