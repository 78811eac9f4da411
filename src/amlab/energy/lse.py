"""Log-sum-exp (Gaussian kernel) energies, in the distance and the dot-product form.

Both forms are one computation. With scores ``s_mu = beta * (x . xi_mu + b_mu)``:

    E(x) = -(1/beta) logsumexp_mu(s_mu) + 1/2 ||x||^2,    grad E(x) = x - sum_mu softmax(s)_mu xi_mu

- distance form, ``b_mu = -1/2 ||xi_mu||^2``: E = -(1/beta) logsumexp(-(beta/2) ||x - xi_mu||^2)
- dot form, ``b_mu = 0``: E = -(1/beta) logsumexp(beta xi_mu . x) + 1/2 ||x||^2

The sum over memories streams chunk by chunk with an online log-sum-exp (running
maximum), so the (B, M) score matrix never exists in full and no exponential
overflows at any beta.
"""

from __future__ import annotations

import torch

from amlab.energy.chunks import chunk_ranges
from amlab.energy.distances import sq_norms


def memory_bias(memories: torch.Tensor, form: str) -> torch.Tensor | None:
    """The per-memory score offset b (M,) of ``form`` ("distance" or "dot")."""
    if form == "dot":
        return None
    return -0.5 * sq_norms(memories)


def lse_energy(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    form: str = "distance",
    bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """LSE energy (B,) of states x (B, D). Differentiable by autograd in x and memories.

    ``bias`` (M,) may be passed precomputed (see :func:`memory_bias`).
    """
    if bias is None:
        bias = memory_bias(memories, form)
    total = x.new_full((x.shape[0],), float("-inf"))
    for lo, hi in chunk_ranges(memories.shape[0], x.shape[0], chunk_size):
        scores = x @ memories[lo:hi].T
        if bias is not None:
            scores = scores + bias[lo:hi]
        total = torch.logaddexp(total, torch.logsumexp(beta * scores, dim=1))
    return -total / beta + 0.5 * (x * x).sum(1)


@torch.no_grad()
def lse_softmax_mean(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One streaming pass: ``logsumexp_mu(s_mu)`` (B,) and ``sum_mu softmax(s)_mu xi_mu`` (B, D).

    The softmax-weighted mean of the memories is the attention (Hopfield) update.
    """
    batch = x.shape[0]
    run_max = x.new_full((batch, 1), float("-inf"))
    run_sum = x.new_zeros((batch, 1))
    run_mean = x.new_zeros(x.shape)
    for lo, hi in chunk_ranges(memories.shape[0], batch, chunk_size):
        chunk = memories[lo:hi]
        if bias is None:
            scores = torch.matmul(x, chunk.T).mul_(beta)
        else:
            scores = torch.addmm(bias[lo:hi], x, chunk.T).mul_(beta)
        new_max = torch.maximum(run_max, scores.amax(1, keepdim=True))
        rescale = torch.exp(run_max - new_max)
        weights = scores.sub_(new_max).exp_()
        run_sum.mul_(rescale).add_(weights.sum(1, keepdim=True))
        run_mean.mul_(rescale).addmm_(weights, chunk)
        run_max = new_max
    return (run_max + run_sum.log()).squeeze(1), run_mean.div_(run_sum)


def lse_energy_grad(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    form: str = "distance",
    bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LSE energy (B,) and its analytic gradient (B, D) in one pass over the memories."""
    if bias is None:
        bias = memory_bias(memories, form)
    lse, mean = lse_softmax_mean(x, memories, beta, bias=bias, chunk_size=chunk_size)
    return -lse / beta + 0.5 * (x * x).sum(1), x - mean
