"""Squared distances between states and memories, the nearest memory (or k of them), and
each point's nearest other point, chunked."""

from __future__ import annotations

import torch

from amlab.energy.chunks import chunk_ranges
from amlab.errors import check_positive_int


def sq_distances(
    x: torch.Tensor, chunk: torch.Tensor, x_sq: torch.Tensor, chunk_sq: torch.Tensor
) -> torch.Tensor:
    """||x - xi||^2 (B, m) from x (B, D), chunk (m, D) and their squared norms (B,), (m,);
    batched: (G, N, m) from x (G, N, D), chunk (G, m, D), norms (G, N) and (G, m).

    Uses the expansion ||x||^2 - 2 x.xi + ||xi||^2 (one matmul), clamped at 0 against
    rounding.
    """
    if x.dim() == 3:
        sums = x_sq[..., None] + chunk_sq[:, None, :]
        return torch.baddbmm(sums, x, chunk.transpose(1, 2), alpha=-2.0).clamp_min(0.0)
    return torch.addmm(x_sq[:, None] + chunk_sq[None, :], x, chunk.T, alpha=-2.0).clamp_min(0.0)


def sq_norms(rows: torch.Tensor, block: int = 1 << 16) -> torch.Tensor:
    """Squared norms (M,) of rows (M, D), a block of rows at a time (no (M, D) temporary)."""
    return torch.cat([(part * part).sum(1) for part in rows.split(block)])


@torch.no_grad()
def nearest_memory(
    x: torch.Tensor, memories: torch.Tensor, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (B,) of each state's nearest memory and the Euclidean distance (B,) to it."""
    x_sq = (x * x).sum(1)
    mem_sq = sq_norms(memories)
    best = x.new_full((x.shape[0],), float("inf"))
    index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for lo, hi in chunk_ranges(memories.shape[0], x.shape[0], chunk_size):
        d2, arg = sq_distances(x, memories[lo:hi], x_sq, mem_sq[lo:hi]).min(1)
        better = d2 < best
        best = torch.where(better, d2, best)
        index = torch.where(better, arg + lo, index)
    return index, best.sqrt()


@torch.no_grad()
def nearest_memories(
    x: torch.Tensor, memories: torch.Tensor, k: int, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (B, k) of each state's ``k`` nearest memories, nearest first (ties: the lower
    index first, as :func:`nearest_memory` decides them), and the Euclidean distances (B, k);
    k >= 0 (a negative k would cut the sorted columns from the end: a silently wrong answer)."""
    k = min(check_positive_int(k, "k", allow_zero=True), memories.shape[0])
    x_sq = (x * x).sum(1)
    mem_sq = sq_norms(memories)
    best = x.new_empty((x.shape[0], 0))
    index = torch.zeros((x.shape[0], 0), dtype=torch.long, device=x.device)
    for lo, hi in chunk_ranges(memories.shape[0], x.shape[0], chunk_size):
        d2 = torch.cat([best, sq_distances(x, memories[lo:hi], x_sq, mem_sq[lo:hi])], 1)
        chunk = torch.arange(lo, hi, device=x.device).expand(x.shape[0], -1)
        # the kept ones have lower indices than the chunk's: a stable sort keeps index order
        order = d2.sort(dim=1, stable=True).indices[:, :k]
        best, index = d2.gather(1, order), torch.cat([index, chunk], 1).gather(1, order)
    return index, best.sqrt()


def nearest_other_distances(
    points: torch.Tensor, rows: torch.Tensor | None = None, block: int = 2048
) -> torch.Tensor:
    """Distance from each of ``points[rows]`` (every row by default) to its nearest *other*
    row of ``points`` (N, D), ``block`` rows of the distance matrix at a time."""
    rows = torch.arange(points.shape[0]) if rows is None else rows
    nearest = points.new_empty(len(rows))
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        d = torch.cdist(points[part], points)
        d[torch.arange(len(part)), part] = float("inf")
        nearest[start : start + len(part)] = d.min(1).values
    return nearest
