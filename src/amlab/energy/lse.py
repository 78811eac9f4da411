"""Log-sum-exp (Gaussian kernel) energies, in the distance and the dot-product form.

Both forms are one computation. With scores ``s_mu = beta * (x . xi_mu + b_mu)``:

    E(x) = -(1/beta) logsumexp_mu(s_mu) + 1/2 ||x||^2,    grad E(x) = x - sum_mu softmax(s)_mu xi_mu

- distance form, ``b_mu = -1/2 ||xi_mu||^2``: E = -(1/beta) logsumexp(-(beta/2) ||x - xi_mu||^2)
- dot form, ``b_mu = 0``: E = -(1/beta) logsumexp(beta xi_mu . x) + 1/2 ||x||^2

The sum over memories streams chunk by chunk (an online log-sum-exp; the gradient pass,
:func:`lse_softmax_mean`, drops the per-query offset where a bound shows it is not needed),
so the (B, M) score matrix never exists in full and no exponential overflows at any beta.
The chunks' sums join float64 totals (see ``GROUP_MEMORIES``), so the pass is closer to
float64 than a plain ``softmax(s) @ memories``, whose one float32 matmul sums all M terms.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

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
    with_mean: bool = True,
    host_bound: bool = True,
    bound: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One streaming pass: ``logsumexp_mu(s_mu)`` (B,) and ``sum_mu softmax(s)_mu xi_mu`` (B, D)
    (None with ``with_mean=False``: then the pass makes no second matmul).

    The softmax-weighted mean of the memories is the attention (Hopfield) update. beta is
    folded into x and b once, not into every score block. ``bias`` (M,) and the memories'
    squared norms ``mem_sq`` (M,) may be passed precomputed.

    Two passes compute the same sums. With ``host_bound`` (the default) a Cauchy-Schwarz
    bound, read back to the host, picks one: where it shows that every ``exp(beta x . xi)``
    and ``exp(beta (b - max b))`` is a normal float and no sum can overflow (moderate beta
    and norms), :func:`_unshifted_pass` needs no per-query offset at all; otherwise
    :func:`_running_max_pass` keeps one per query. A caller that knows the bound on the host
    passes it as ``bound = (reach, width)``: upper bounds on ``|beta x . xi|`` over every
    pair and on the spread ``beta (max b - min b)`` of the scaled bias (see
    :func:`lse_bound`); then nothing is read back. ``host_bound=False`` (and no ``bound``)
    always takes the running-max pass, which reads nothing back either (for loops on an
    accelerator, where waiting for the bound would stall the device at every step).
    """
    batch = x.shape[0]
    if batch == 0:
        return x.new_zeros(0), (x.new_zeros(x.shape) if with_mean else None)
    xs = x * beta
    bs = None if bias is None else bias * beta
    # exponents below log(tiny) give subnormals or zeros, which torch's CPU exp and the
    # matmuls that read them handle much more slowly (benchmarks/bench_lse_clamp.py: the
    # clamp makes the pass 1.3 to 14x faster); clamped, such a weight is at most
    # exp(floor) = tiny * e^8 (3.5e-35 in float32), nothing next to a total >= 1
    floor = math.log(torch.finfo(x.dtype).tiny) + 8.0
    chunks = chunk_ranges(memories.shape[0], batch, chunk_size, score_block(x.device))
    if bound is None and not host_bound:
        return _running_max_pass(xs, memories, bs, chunks, floor, with_mean)
    # total <= safe keeps acc <= safe * max|xi| < the dtype's maximum: |xi|^2 is finite
    safe = math.sqrt(torch.finfo(x.dtype).max) / 4
    if bound is None:
        if mem_sq is None:
            mem_sq = sq_norms(memories)
        x_norm = float(torch.linalg.vector_norm(x, dim=1).max())
        bound = lse_bound(beta, x_norm, *memory_extent(mem_sq, bias))
    reach, width = bound
    if reach + width <= -floor and reach <= math.log(safe / max(memories.shape[0], 1)):
        return _unshifted_pass(xs, memories, bs, chunks, with_mean)
    # no score lies more than 2 reach + width below its row's maximum; when that spread is
    # above the floor, the clamp pass is skipped
    clamp = 2 * reach + width > -floor
    return _running_max_pass(xs, memories, bs, chunks, floor if clamp else None, with_mean)


def memory_extent(mem_sq: torch.Tensor, bias: torch.Tensor | None) -> tuple[float, float]:
    """The largest memory norm and the spread ``max b - min b`` of the bias (0 for none),
    read back to the host: what :func:`lse_bound` needs of the memories."""
    if bias is None:
        return float(mem_sq.max().sqrt()), 0.0
    norm, top, bottom = torch.stack([mem_sq.max().sqrt(), bias.max(), bias.min()]).tolist()
    return norm, top - bottom


def lse_bound(
    beta: float, x_norm: float, memory_norm: float, bias_spread: float
) -> tuple[float, float]:
    """``(reach, width)`` for :func:`lse_softmax_mean`'s ``bound``: by Cauchy-Schwarz
    ``|beta x . xi| <= beta |x| |xi| <= reach`` for states no longer than ``x_norm`` and
    memories no longer than ``memory_norm``; the scaled bias spans ``beta bias_spread``."""
    return beta * x_norm * memory_norm, beta * bias_spread


#: A pass's sums gather, chunk by chunk, in partial sums in the states' dtype (where the
#: matmul adds into them), which join the whole sums, in float64, once they hold
#: GROUP_MEMORIES memories or GROUP_CHUNKS chunks. The rounding of a pass is then that of
#: a chunk's matmul and a few additions in the dtype, not that of the number of chunks
#: (thousands at M = 600,000 when a 1 MiB score block holds 256 memories of a batch of
#: 1,024). Float32 at B = 256, M = 60,000, D = 784, chunks of 1,024: the mean's largest
#: relative row error (16 rows) against float64 is 5e-8 with 8 chunks a group, 8e-8 with
#: 16, 1.5e-7 with 32 or with a float32 whole; a plain ``softmax(s) @ memories`` in one
#: matmul's, 1.2e-7 to 2.9e-7. A fold is one float64 addition of (B, D), about B D ns on
#: a CPU, next to the 4 B D GROUP_MEMORIES flops of the group's matmuls: under 1%.
GROUP_MEMORIES = 8192
GROUP_CHUNKS = 32


class _Sums:
    """A pass's running sums in two levels: the whole ``total`` (``total_shape``) and
    ``acc`` (B, D) (None without the mean), in float64, and the partial sums of the current
    group of chunks, in the states' dtype, which join the whole when :meth:`next_chunk` says
    (:meth:`fold`)."""

    def __init__(self, xs: torch.Tensor, total_shape: tuple[int, ...], with_mean: bool) -> None:
        wide = torch.float64
        self.total = xs.new_zeros(total_shape, dtype=wide)
        self.part_total = xs.new_zeros(total_shape)
        self.acc = xs.new_zeros(xs.shape, dtype=wide) if with_mean else None
        self.part_acc = xs.new_zeros(xs.shape) if with_mean else None
        self.chunks = self.members = 0  # in the current group

    def add_weighted(self, weights: torch.Tensor, members: torch.Tensor) -> None:
        """acc += weights (B, m) @ members (m, D), into the group's partial sum."""
        if self.part_acc is not None:
            self.part_acc.addmm_(weights, members)

    def rescale(self, factor: torch.Tensor) -> None:
        """Multiply the group's partial sums by factor (B, 1)."""
        self.part_total.mul_(factor.view(self.part_total.shape))
        if self.part_acc is not None:
            self.part_acc.mul_(factor)

    def next_chunk(self, size: int) -> bool:
        """Count a chunk of ``size`` memories; True when the group is complete and should
        be folded."""
        self.chunks += 1
        self.members += size
        if self.chunks < GROUP_CHUNKS and self.members < GROUP_MEMORIES:
            return False
        self.chunks = self.members = 0
        return True

    def fold(self, factor: torch.Tensor | None = None) -> None:
        """Add the partial sums to the whole, first multiplied by factor (B, 1) if given."""
        for whole, part in ((self.total, self.part_total), (self.acc, self.part_acc)):
            if whole is not None:
                if factor is not None:  # (B, 1), as the running-max pass's total: it broadcasts
                    whole.mul_(factor)
                whole.add_(part)
                part.zero_()

    def mean(self, dtype: torch.dtype) -> torch.Tensor | None:
        """acc / total in ``dtype`` (None without the mean), after the last :meth:`fold`."""
        if self.acc is None:
            return None
        return self.acc.div_(self.total.view(-1, 1)).to(dtype)


def _unshifted_pass(xs, memories, bs, chunks, with_mean=True):
    """The sums with no offset: ``w = exp(xs . xi + b - max b)``, a normal float by the
    caller's bound, so no exponential under- or overflows and the largest weight of a row
    needs no tracking. One matmul, one exp, one row sum and one matmul per chunk; the
    offsets ``b - max b`` are added to the score block in place (where ``addmm`` would copy
    them into the block first and the matmul then read it back). When the batch is at least
    the dimension the factor ``exp(b - max b)`` scales the chunk's memories instead (fewer
    numbers than the score block): ``w = exp(xs . xi)`` times it.
    """
    batch, dim = xs.shape
    shift = None if bs is None else bs - bs.max()
    sums = _Sums(xs, (batch,), with_mean)
    blocks = scaled = weight = None
    for lo, hi in chunks:
        chunk = memories[lo:hi]
        if blocks is None:
            blocks = xs.new_empty(batch * (hi - lo))
            if shift is not None and batch >= dim and with_mean:
                weight, scaled = torch.exp(shift), xs.new_empty(chunk.shape)
        scores = torch.mm(xs, chunk.T, out=blocks[: batch * (hi - lo)].view(batch, hi - lo))
        if shift is not None and weight is None:
            scores.add_(shift[lo:hi])
        scores.exp_()
        if weight is None:
            sums.part_total += scores.sum(1)
        else:
            sums.part_total.addmv_(scores, weight[lo:hi])
            chunk = torch.mul(chunk, weight[lo:hi, None], out=scaled[: hi - lo])
        sums.add_weighted(scores, chunk)
        if sums.next_chunk(hi - lo):
            sums.fold()
    sums.fold()
    lse = sums.total.log().to(xs.dtype)
    if bs is not None:
        lse += bs.max()
    return lse, sums.mean(xs.dtype)


def _running_max_pass(xs, memories, bs, chunks, floor, with_mean=True):
    """The sums against a per-query offset, the running maximum of the query's scores, for
    any beta and norms (the online softmax of flash attention).

    Per chunk: one matmul (into a block holding the bias), the block's row maxima, which
    raise the offset where they exceed it (the sums so far are rescaled by
    ``exp(old - new)``), one exp against the offset, one row sum, one matmul. Nothing is
    read back to the host. Exponents are first raised to ``floor`` unless it is None.
    The whole sums (see :class:`_Sums`) are rescaled only when a group joins them.
    """
    batch = xs.shape[0]
    offset = xs.new_full((batch, 1), float("-inf"))
    folded_at = offset  # the offset the whole sums are taken against
    sums = _Sums(xs, (batch, 1), with_mean)
    blocks = None
    for lo, hi in chunks:
        chunk = memories[lo:hi]
        if blocks is None:
            blocks = xs.new_empty(batch * (hi - lo))
        scores = blocks[: batch * (hi - lo)].view(batch, hi - lo)
        if bs is None:
            torch.mm(xs, chunk.T, out=scores)
        else:
            torch.addmm(bs[lo:hi], xs, chunk.T, out=scores)
        raised = torch.maximum(offset, scores.amax(1, keepdim=True))
        sums.rescale(torch.exp(offset - raised))  # 0 at the first chunk (offset -inf)
        offset = raised
        _exp(scores.sub_(offset), floor)
        sums.part_total.add_(scores.sum(1, keepdim=True))
        sums.add_weighted(scores, chunk)
        if sums.next_chunk(hi - lo):
            sums.fold(torch.exp(folded_at - offset))
            folded_at = offset
    sums.fold(torch.exp(folded_at - offset))
    lse = (offset + sums.total.log().to(xs.dtype)).squeeze(1)
    return lse, sums.mean(xs.dtype)


def _exp(scores: torch.Tensor, floor: float | None) -> torch.Tensor:
    """exp of scores in place, first raised to ``floor`` unless it is None."""
    return (scores if floor is None else scores.clamp_min_(floor)).exp_()


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
    return lse_energy_from_lse(x, lse, beta), x - mean


def lse_energy_from_lse(x: torch.Tensor, lse: torch.Tensor, beta: float) -> torch.Tensor:
    """E = -(1/beta) lse + 1/2 ||x||^2 (B,) from a pass's log-sum-exp (B,)."""
    return -lse / beta + 0.5 * (x * x).sum(1)


#: The fused kernels :func:`lse_attention_update` may use; never the math backend, which
#: would hold the whole (B, M) score matrix.
_FUSED_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)


@torch.no_grad()
def lse_attention_update(
    x: torch.Tensor,
    memories: torch.Tensor,
    beta: float,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """The attention (Hopfield) update ``sum_mu softmax(s)_mu xi_mu`` (B, D) of states x (B, D):
    the softmax-weighted mean itself (not x minus the gradient), with no energy.

    It is attention with the states as queries, the memories as keys and values, scale beta
    and the scaled bias ``beta b`` (M,) as an additive mask broadcast over the queries (the
    distance form; the dot form has none), so PyTorch's fused kernel
    (``scaled_dot_product_attention``: flash attention on a CPU, flash or memory-efficient
    on CUDA) computes it in one pass. (Appending the bias as a key column and a column of
    ones to the queries gives the same scores without a mask, but D + 1 columns made the
    CPU kernel 1.5 to 5x slower here.) Where no fused kernel takes x's device, dtype and
    shapes (or with ``fused=False``), the streaming pass does, in chunks of ``chunk_size``
    memories, reading nothing back to the host. Either way the result is the same to
    rounding.
    """
    if fused and x.shape[0] and x.device.type in ("cpu", "cuda"):
        keys = memories[None, None]
        mask = None if bias is None else (beta * bias).to(x.dtype)[None, None, None]
        try:
            with warnings.catch_warnings(), sdpa_kernel(list(_FUSED_BACKENDS)):
                warnings.simplefilter("ignore")  # why a kernel does not apply: we fall back
                return F.scaled_dot_product_attention(
                    x[None, None], keys, keys, attn_mask=mask, scale=beta
                )[0, 0]
        except RuntimeError:  # no fused kernel for these inputs: the streaming pass below
            pass
    stream = lse_softmax_mean(x, memories, beta, bias=bias, chunk_size=chunk_size, host_bound=False)
    return stream[1]
