"""Log-sum-ReLU (Epanechnikov kernel) energy.

    E(x) = -(1/beta) log(eps + Z(x)),   Z(x) = sum_mu ReLU(1 - (beta/2) ||x - xi_mu||^2)

Memory mu is *active* at x when (beta/2) ||x - xi_mu||^2 < 1: its support is the open
ball of radius r = sqrt(2/beta). Inside the union of supports

    grad E(x) = sum_{mu active} (x - xi_mu) / (eps + Z(x)),

so every critical point is the centroid of its own active set. Outside every support
(no active memory) the energy is -(1/beta) log(eps), +inf when eps = 0, and the
gradient is defined as **zero**: the energy is flat there (the eps > 0 energy is
constant), and descent leaves such a state where it is.

Each piece is written once: the kernel :func:`lsr_weights_` serves all three passes over the
memories (the autograd form :func:`lsr_energy`, the dense :func:`lsr_support_stats` and the
index's :meth:`~amlab.energy.lsr_index.BallIndex.support_stats`); the two statistics passes
share the accumulation :func:`add_block_stats` of (Z, active count, sum of the active
memories) over one block of scores (the autograd form needs only Z); the energy, gradient
and centroid follow from those statistics.
"""

from __future__ import annotations

import torch

from amlab.energy.chunks import chunk_ranges, score_block
from amlab.energy.distances import sq_distances, sq_norms

#: Z (B,), number of active memories (B,) and sum of the active memories (B, D).
SupportStats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def lsr_weights_(d2: torch.Tensor, beta: float) -> torch.Tensor:
    """Kernel weights ReLU(1 - (beta/2) d2) of squared distances d2, written over d2 (no
    copy of a score block); a memory is active where its weight is > 0. Autograd follows
    it (no step needs the overwritten values)."""
    return torch.relu_(d2.mul_(-0.5 * beta).add_(1.0))


def zero_stats(x: torch.Tensor) -> SupportStats:
    """Support statistics of no memories at all, for states x (B, D)."""
    return x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0]), x.new_zeros(x.shape)


def add_block_stats(
    stats: SupportStats,
    weights: torch.Tensor,
    members: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> None:
    """Add one block of kernel weights to the running ``stats``, in place.

    Without ``rows``: weights (B, m) of every state against the memories ``members`` (m, D),
    or, batched, weights (G, B, m) of each group's states against its memories (G, m, D)
    (the stats then (G, B), (G, B), (G, B, D)).
    With ``rows`` (P,): weights (P, L) of state rows[p] against its own memories members[p]
    (P, L, D) (the index's (state, ball) pairs; a state may appear in several rows).
    """
    z, count, active_sum = stats
    active = (weights > 0).to(weights.dtype)
    if rows is None:
        z += weights.sum(-1)
        count += active.sum(-1)
        if weights.ndim == 3:
            active_sum.baddbmm_(active, members)
        else:
            active_sum.addmm_(active, members)
    else:
        z.index_add_(0, rows, weights.sum(1))
        count.index_add_(0, rows, active.sum(1))
        active_sum.index_add_(0, rows, torch.bmm(active[:, None, :], members).squeeze(1))


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
        z = z + lsr_weights_(d2, beta).sum(1)
    return lsr_energy_from_stats(z, beta, eps)


@torch.no_grad()
def lsr_support_stats(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    mem_sq: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> SupportStats:
    """One dense pass over the memories: Z (B,), active count (B,) and sum of active
    memories (B, D).

    Energy, gradient and the exact fixed-point (centroid) update all follow from these.
    :meth:`~amlab.energy.lsr_index.BallIndex.support_stats` computes the same through an
    index, visiting only the memories that can be active.
    """
    if mem_sq is None:
        mem_sq = sq_norms(memories)
    x_sq = (x * x).sum(1)
    stats = zero_stats(x)
    block = score_block(x.device)
    for lo, hi in chunk_ranges(memories.shape[0], x.shape[0], chunk_size, block):
        chunk = memories[lo:hi]
        d2 = sq_distances(x, chunk, x_sq, mem_sq[lo:hi])
        add_block_stats(stats, lsr_weights_(d2, beta), chunk)
    return stats


def lsr_energy_from_stats(z: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """E = -(1/beta) log(eps + Z); +inf where eps + Z = 0."""
    return -torch.log(eps + z) / beta


def lsr_grad_from_stats(x: torch.Tensor, stats: SupportStats, eps: float) -> torch.Tensor:
    """grad E = (count x - active sum) / (eps + Z) (B, D); zero outside every support."""
    z, count, active_sum = stats
    denom = (eps + z).clamp_min(torch.finfo(x.dtype).tiny)
    grad = (count[:, None] * x - active_sum) / denom[:, None]
    return torch.where((count > 0)[:, None], grad, torch.zeros_like(grad))


def lsr_centroid(x: torch.Tensor, stats: SupportStats) -> torch.Tensor:
    """The centroid of each state's active memories (B, D), LSR's exact fixed-point update
    (a step of 1 along the gradient rescaled by (eps + Z) / count); a state with no active
    memory stays where it is.

    A state whose centroid it already is, to within rounding (a few units in the last place),
    stays exactly where it is: the sum of the active memories is rounded differently when the
    batch or the chunking changes (a matrix product splits its work by shape and threads), so
    recomputing a fixed point's centroid may move it by an ulp, and the solver, which stops when
    the state repeats, would take a step more or never stop."""
    _, count, active_sum = stats
    centroid = torch.where((count > 0)[:, None], active_sum / count.clamp_min(1)[:, None], x)
    ulps = ROUNDING_ULPS * torch.finfo(x.dtype).eps * torch.maximum(x.abs(), centroid.abs())
    repeats = ((centroid - x).abs() <= ulps).all(1, keepdim=True)
    return torch.where(repeats, x, centroid)


#: how many units in the last place a recomputed centroid may differ from its state and
#: still be the same fixed point (:func:`lsr_centroid`)
ROUNDING_ULPS = 8


def lsr_energy_grad(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    eps: float = 0.0,
    mem_sq: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LSR energy (B,) and analytic gradient (B, D) by a dense pass; the gradient is zero
    outside the supports."""
    stats = lsr_support_stats(x, memories, beta, mem_sq=mem_sq, chunk_size=chunk_size)
    return lsr_energy_from_stats(stats[0], beta, eps), lsr_grad_from_stats(x, stats, eps)
