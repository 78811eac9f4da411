"""Log-sum-ReLU (Epanechnikov kernel) energy.

    E(x) = -(1/beta) log(eps + Z(x)),   Z(x) = sum_mu ReLU(1 - (beta/2) ||x - xi_mu||^2)

Memory mu is *active* at x when (beta/2) ||x - xi_mu||^2 < 1: its support is the open
ball of radius r = sqrt(2/beta). Inside the union of supports

    grad E(x) = sum_{mu active} (x - xi_mu) / (eps + Z(x)),

so every critical point is the centroid of its own active set. Outside every support
(no active memory) the energy is -(1/beta) log(eps), +inf when eps = 0, and the
gradient is defined as **zero**: the energy is flat there (the eps > 0 energy is
constant), and descent leaves such a state where it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from amlab.energy.chunks import chunk_ranges, score_block
from amlab.energy.distances import sq_distances, sq_norms

if TYPE_CHECKING:
    from amlab.energy.lsr_index import BallIndex


def lsr_energy(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    eps: float = 0.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """LSR energy (B,) of states x (B, D); +inf outside the supports when eps = 0.

    Differentiable by autograd inside the supports.
    """
    x_sq = (x * x).sum(1)
    mem_sq = sq_norms(memories)
    z = x.new_zeros(x.shape[0])
    for lo, hi in chunk_ranges(memories.shape[0], x.shape[0], chunk_size):
        d2 = sq_distances(x, memories[lo:hi], x_sq, mem_sq[lo:hi])
        z = z + torch.relu(1.0 - 0.5 * beta * d2).sum(1)
    return lsr_energy_from_stats(z, beta, eps)


@torch.no_grad()
def lsr_support_stats(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    mem_sq: torch.Tensor | None = None,
    chunk_size: int | None = None,
    index: BallIndex | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over the memories: Z (B,), active count (B,) and sum of active memories (B, D).

    Energy, gradient and the exact fixed-point (centroid) update all follow from these.
    With an ``index`` (:class:`~amlab.energy.lsr_index.BallIndex` over these memories) the
    pass visits only the clusters that can hold an active memory; the result is the same up
    to rounding (see :mod:`amlab.energy.lsr_index`).
    """
    if index is not None:
        return index.support_stats(x, memories, beta, mem_sq=mem_sq, chunk_size=chunk_size)
    if mem_sq is None:
        mem_sq = sq_norms(memories)
    x_sq = (x * x).sum(1)
    z = x.new_zeros(x.shape[0])
    count = x.new_zeros(x.shape[0])
    active_sum = x.new_zeros(x.shape)
    block = score_block(x.device)
    for lo, hi in chunk_ranges(memories.shape[0], x.shape[0], chunk_size, block):
        chunk = memories[lo:hi]
        weight = sq_distances(x, chunk, x_sq, mem_sq[lo:hi]).mul_(-0.5 * beta).add_(1.0)
        active = (weight > 0).to(x.dtype)
        z += weight.clamp_min_(0.0).sum(1)
        count += active.sum(1)
        active_sum.addmm_(active, chunk)
    return z, count, active_sum


def lsr_energy_from_stats(z: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """E = -(1/beta) log(eps + Z); +inf where eps + Z = 0."""
    return -torch.log(eps + z) / beta


def lsr_energy_grad(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    eps: float = 0.0,
    mem_sq: torch.Tensor | None = None,
    chunk_size: int | None = None,
    index: BallIndex | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LSR energy (B,) and analytic gradient (B, D); the gradient is zero outside the supports."""
    z, count, active_sum = lsr_support_stats(
        x, memories, beta, mem_sq=mem_sq, chunk_size=chunk_size, index=index
    )
    denom = (eps + z).clamp_min(torch.finfo(x.dtype).tiny)
    grad = (count[:, None] * x - active_sum) / denom[:, None]
    grad = torch.where((count > 0)[:, None], grad, torch.zeros_like(grad))
    return lsr_energy_from_stats(z, beta, eps), grad
