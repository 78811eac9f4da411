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

import math

import torch

from amlab.energy.chunks import chunk_ranges, score_block
from amlab.energy.distances import sq_norms


def memory_bias(
    memories: torch.Tensor, form: str, mem_sq: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The per-memory score offset b (M,) of ``form`` ("distance" or "dot"); ``mem_sq``
    (M,) may pass the memories' squared norms precomputed."""
    if form == "dot":
        return None
    return -0.5 * (sq_norms(memories) if mem_sq is None else mem_sq)


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
    mem_sq: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One streaming pass: ``logsumexp_mu(s_mu)`` (B,) and ``sum_mu softmax(s)_mu xi_mu`` (B, D).

    The softmax-weighted mean of the memories is the attention (Hopfield) update.

    The pass keeps, per query, an offset and the sums ``total = sum exp(s - offset)`` and
    ``acc = sum exp(s - offset) xi`` over the chunks seen so far. The first chunk sets the
    offset to its row maximum. Every later chunk is exponentiated against the offset as it
    stands, with no maximum pass: one matmul (into a block holding ``b - offset``), one exp,
    one row sum, one matmul. A row whose total would leave the safe range (a score far
    above the offset: a much better match later in the memories, at a large beta) has just
    that chunk redone with its offset raised to the new maximum. beta is folded into x and
    b once, not into every score block. ``bias`` (M,) and the memories' squared norms
    ``mem_sq`` (M,) may be passed precomputed.
    """
    batch = x.shape[0]
    if batch == 0:
        return x.new_zeros(0), x.new_zeros(x.shape)
    xs = x * beta
    bs = memories.new_zeros(memories.shape[0]) if bias is None else bias * beta
    # total <= safe keeps acc <= safe * max|xi| < the dtype's maximum: |xi|^2 is finite
    safe = math.sqrt(torch.finfo(x.dtype).max) / 4
    # exponents below log(tiny) give subnormals or zeros, which torch's CPU exp and the
    # matmuls that read them handle up to 100x slower; clamped, such a weight is at most
    # exp(floor) (1e-35 in float32), nothing next to a total >= 1
    floor = math.log(torch.finfo(x.dtype).tiny) + 8.0
    # no score lies more than beta (2 |x| max|xi| + max b - min b) below its row's maximum
    # (Cauchy-Schwarz); when that spread is above the floor, the clamp pass is skipped
    if mem_sq is None:
        mem_sq = sq_norms(memories)
    spread = 2 * beta * float(torch.linalg.vector_norm(x, dim=1).max()) * math.sqrt(
        float(mem_sq.max())
    ) + float(bs.max() - bs.min())
    clamp = spread > -floor
    offset = x.new_full((batch, 1), float("-inf"))
    total = x.new_zeros((batch, 1))
    acc = x.new_zeros(x.shape)
    buffer = None
    for lo, hi in chunk_ranges(memories.shape[0], batch, chunk_size, score_block(x.device)):
        chunk, chunk_bias = memories[lo:hi], bs[lo:hi]
        if buffer is None:
            buffer = x.new_empty(batch * (hi - lo))
        scores = buffer[: batch * (hi - lo)].view(batch, hi - lo)
        if lo == 0:
            torch.addmm(chunk_bias, xs, chunk.T, out=scores)
            offset = scores.amax(1, keepdim=True)
            total = _exp(scores.sub_(offset), clamp, floor).sum(1, keepdim=True)
        else:
            _exp(torch.sub(chunk_bias, offset, out=scores).addmm_(xs, chunk.T), clamp, floor)
            chunk_total = scores.sum(1, keepdim=True)
            jumped = ~(total + chunk_total <= safe).squeeze(1)
            if bool(jumped.any()):
                rows = jumped.nonzero().squeeze(1)
                exact = torch.addmm(chunk_bias, xs[rows], chunk.T)
                new_offset = torch.maximum(offset[rows], exact.amax(1, keepdim=True))
                rescale = torch.exp(offset[rows] - new_offset)
                total[rows] *= rescale
                acc[rows] *= rescale
                offset[rows] = new_offset
                scores[rows] = _exp(exact.sub_(new_offset), clamp, floor)
                chunk_total[rows] = scores[rows].sum(1, keepdim=True)
            total += chunk_total
        acc.addmm_(scores, chunk)
    return (offset + total.log()).squeeze(1), acc.div_(total)


def _exp(scores: torch.Tensor, clamp: bool, floor: float) -> torch.Tensor:
    """exp of scores in place, first raised to ``floor`` where ``clamp``."""
    return (scores.clamp_min_(floor) if clamp else scores).exp_()


def lse_energy_grad(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    form: str = "distance",
    bias: torch.Tensor | None = None,
    mem_sq: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LSE energy (B,) and its analytic gradient (B, D) in one pass over the memories.

    ``bias`` and ``mem_sq`` (the memories' squared norms) may be passed precomputed.
    """
    if mem_sq is None:
        mem_sq = sq_norms(memories)
    if bias is None:
        bias = memory_bias(memories, form, mem_sq)
    lse, mean = lse_softmax_mean(x, memories, beta, bias=bias, mem_sq=mem_sq, chunk_size=chunk_size)
    return -lse / beta + 0.5 * (x * x).sum(1), x - mean
