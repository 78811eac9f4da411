"""One retrieval step from a memory, chunked over the memories in both directions.

For queries q (G, N, D), keys k (G, M, D), values v (G, M, E) and inverse temperature beta,
one read-out is the kernel-weighted mean of the values and the energy of the query:

    out_n = sum_mu w_{n mu} v_mu,    w_{n mu} = K(a_{n mu}) / (eps + sum_nu K(a_{n nu}))

with per-pair scores ``a`` and kernels K of the three energies of :mod:`amlab.energy`:

- ``"lse"`` (distance form): ``a = beta (q . k - |k|^2 / 2)``, K = exp, eps = 0: the
  softmax of -(beta/2) |q - k|^2 (the |q|^2 term cancels); E = -(1/beta) logsumexp(a) + |q|^2 / 2
- ``"lse_dot"``: ``a = beta q . k``, K = exp: E = -(1/beta) logsumexp(a) + |q|^2 / 2
- ``"lsr"``: ``a = -(beta/2) |q - k|^2``, K(a) = ReLU(1 + a) (Epanechnikov, exactly zero
  outside the support radius sqrt(2/beta)); E = -(1/beta) log(eps + Z), Z = sum K(a)

With the keys as values, the LSE read-out is the attention (Hopfield) update, a descent step
on the LSE energy that never raises it. The LSR read-out weighs each memory by its kernel,
so it is exactly sparse: outside every support all weights are zero, so are the output
and its gradient (the energy is +inf there when eps = 0, with zero gradient, as in
:mod:`amlab.energy.lsr`). It is not LSR's own descent step: that one (the centroid of the
active memories, ``DenseAM.retrieve(method="fixed_point")``) is piecewise constant in the
query, so no gradient would reach the query through it. Repeated LSR read-outs can raise
the LSR energy (on 500 noisy digits against 500 stored ones, beta 0.15, 10 steps: 181
queries saw a rise), which the energies the layers return show.

:func:`memory_read` is a ``torch.autograd.Function``. Its forward streams over chunks of
memories (an online log-sum-exp for LSE, running sums for LSR) and saves only the queries,
the output and one normaliser per query; its backward streams over the same chunks again,
recomputing each chunk's weights. Neither pass holds more than a few (G, N, chunk)
blocks, so training with 10^5-10^6 memories never keeps a (G, N, M) activation.
Gradients flow to the queries, keys, values and beta, from both the output and the energy.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from amlab.energy.chunks import SCORE_BLOCK_ELEMENTS, chunk_ranges, score_block
from amlab.energy.distances import sq_distances, sq_norms
from amlab.energy.lsr import lsr_weights_

#: the energies a memory read-out may use (the names of :class:`~amlab.models.DenseAM`)
ENERGIES = ("lse", "lse_dot", "lsr")


def memory_read(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    beta: torch.Tensor,
    *,
    energy: str = "lse",
    eps: float = 0.0,
    padding_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One read-out (see the module docstring): output (G, N, E) and energy (G, N).

    Args:
        queries: (G, N, D); keys: (G, M, D); values: (G, M, E); beta: a 0-dim tensor > 0.
        energy: "lse", "lse_dot" or "lsr"; eps: LSR's floor inside the log (>= 0).
        padding_mask: (G, M) bool, True where a memory is padding (ignored); every set
            must hold at least one memory that is not padding.
        chunk_size: memories per chunk (None: picked from G * N and the device).

    The layers of :mod:`amlab.nn` check their input; this function does not.
    """
    return _MemoryRead.apply(queries, keys, values, beta, energy, eps, padding_mask, chunk_size)


@torch.no_grad()
def read_weights(
    queries: torch.Tensor,
    keys: torch.Tensor,
    beta: torch.Tensor,
    *,
    energy: str = "lse",
    eps: float = 0.0,
    padding_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The read-out's weights w (G, N, M), for inspection (they hold G * N * M numbers):
    softmax for LSE, ``ReLU(1 + a) / (eps + Z)`` for LSR (exact zeros outside the supports)."""
    chunks = _Chunks(queries, keys, beta, energy, padding_mask)
    norm = _normaliser_pass(chunks, keys[..., :0], eps, chunk_size)[1]
    return torch.cat(
        [chunks.weights(lo, hi, norm, eps)[0] for lo, hi in _ranges(queries, keys, chunk_size)],
        dim=-1,
    )


def _ranges(queries: torch.Tensor, keys: torch.Tensor, chunk_size: int | None):
    batch = queries.shape[0] * queries.shape[1]
    return chunk_ranges(keys.shape[1], batch, chunk_size, score_block(queries.device))


class _Chunks:
    """Scores and weights of one chunk of memories, as both passes compute them."""

    def __init__(self, q, k, beta, energy, padding_mask):
        self.q, self.k, self.beta, self.energy, self.pad = q, k, beta, energy, padding_mask
        rows = max(1, SCORE_BLOCK_ELEMENTS // q.shape[-1])  # no (M, D) temporary
        self.q_sq = sq_norms(q.reshape(-1, q.shape[-1]), rows).reshape(q.shape[:-1])
        self.k_sq = sq_norms(k.reshape(-1, k.shape[-1]), rows).reshape(k.shape[:-1])

    def scores(self, lo: int, hi: int) -> torch.Tensor:
        """LSE: the scores a (G, N, m). LSR: the kernel K(a) = ReLU(1 + a) (G, N, m)."""
        k = self.k[:, lo:hi]
        if self.energy == "lsr":
            d2 = sq_distances(self.q, k, self.q_sq, self.k_sq[:, lo:hi])
            return lsr_weights_(d2, self.beta)
        if self.energy == "lse_dot":
            return torch.bmm(self.q, k.transpose(1, 2)).mul_(self.beta)
        bias = self.k_sq[:, None, lo:hi] * -0.5
        return torch.baddbmm(bias, self.q, k.transpose(1, 2)).mul_(self.beta)

    def padding(self, lo: int, hi: int) -> torch.Tensor | None:
        return None if self.pad is None else self.pad[:, None, lo:hi]

    def weights(self, lo, hi, norm, eps) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, s) of one chunk: the weights (G, N, m) and the scores (LSE) or kernel (LSR),
        padding at zero weight. ``norm`` is logsumexp(a) (LSE) or Z (LSR), (G, N)."""
        s = self.scores(lo, hi)
        pad = self.padding(lo, hi)
        if self.energy == "lsr":
            if pad is not None:
                s = s.masked_fill(pad, 0.0)
            return s / (eps + norm).clamp_min(torch.finfo(s.dtype).tiny)[..., None], s
        w = torch.exp(s - norm[..., None])
        return (w if pad is None else w.masked_fill(pad, 0.0)), s


@torch.no_grad()
def _normaliser_pass(chunks: _Chunks, v, eps, chunk_size):
    """Forward: (output (G, N, E), normaliser (G, N), energy (G, N)); the normaliser is
    logsumexp(a) for LSE and Z for LSR."""
    q, k, beta = chunks.q, chunks.k, chunks.beta
    acc = q.new_zeros(*q.shape[:2], v.shape[-1])
    if chunks.energy == "lsr":
        z = q.new_zeros(q.shape[:2])
        for lo, hi in _ranges(q, k, chunk_size):
            kernel = chunks.scores(lo, hi)
            pad = chunks.padding(lo, hi)
            if pad is not None:
                kernel.masked_fill_(pad, 0.0)
            z += kernel.sum(-1)
            acc.baddbmm_(kernel, v[:, lo:hi])
        out = acc / (eps + z).clamp_min(torch.finfo(q.dtype).tiny)[..., None]
        return out, z, -torch.log(eps + z) / beta
    top = q.new_full(q.shape[:2], float("-inf"))
    total = q.new_zeros(q.shape[:2])
    for lo, hi in _ranges(q, k, chunk_size):
        a = chunks.scores(lo, hi)
        pad = chunks.padding(lo, hi)
        if pad is not None:
            a.masked_fill_(pad, float("-inf"))
        new_top = torch.maximum(top, a.amax(-1))
        shift = torch.where(torch.isfinite(new_top), new_top, 0.0)  # rows with no memory yet
        rescale = torch.exp(top - shift)
        e = torch.exp(a.sub_(shift[..., None]))
        total = total * rescale + e.sum(-1)
        acc = acc.mul_(rescale[..., None]).baddbmm_(e, v[:, lo:hi])
        top = new_top
    lse = top + torch.log(total)
    return acc / total[..., None], lse, -lse / beta + 0.5 * chunks.q_sq


class _MemoryRead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, energy, eps, padding_mask, chunk_size):
        chunks = _Chunks(q, k, beta, energy, padding_mask)
        out, norm, e = _normaliser_pass(chunks, v, eps, chunk_size)
        ctx.save_for_backward(q, k, v, beta, out, norm)
        ctx.settings = (energy, eps, padding_mask, chunk_size)
        ctx.values_are_keys = v is k
        return out, e

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_energy):
        q, k, v, beta, out, norm = ctx.saved_tensors
        energy, eps, padding_mask, chunk_size = ctx.settings
        need_q, need_k, need_v, need_beta = ctx.needs_input_grad[:4]
        # values that are the keys (auto-association) get one gradient buffer, not two
        shared = ctx.values_are_keys and need_k
        need_v = need_v and not shared
        if g_out is None:
            g_out = torch.zeros_like(out)
        if g_energy is None:
            g_energy = torch.zeros_like(norm)
        chunks = _Chunks(q, k, beta, energy, padding_mask)
        lsr = energy == "lsr"
        tiny = torch.finfo(q.dtype).tiny
        # d loss / d a = w (h - delta - g_E / beta) for LSE, active (h - ...) / (eps + Z) for
        # LSR, with h = g_out . v_mu and delta = g_out . out
        offset = ((g_out * out).sum(-1) + g_energy / beta)[..., None]
        if lsr:  # 1 / (eps + Z), and 0 outside every support (where no weight is active)
            inv = torch.where(eps + norm > 0, 1.0 / (eps + norm), 0.0)[..., None]
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k) if need_k else None
        dv = torch.zeros_like(v) if need_v else None
        row_sum = q.new_zeros(q.shape[:2])  # sum_mu d loss / d a (LSR's |q|^2 term)
        d_beta = q.new_zeros(())  # sum d loss / d a * a / beta
        for lo, hi in _ranges(q, k, chunk_size):
            w, s = chunks.weights(lo, hi, norm, eps)
            vc, kc = v[:, lo:hi], k[:, lo:hi]
            h = torch.bmm(g_out, vc.transpose(1, 2))
            if lsr:
                da = (h - offset).mul_(inv).mul_(s > 0)
                d_beta += (da * (s - 1.0)).sum()  # a = kernel - 1 where active
                row_sum += da.sum(-1)
            else:
                da = (h - offset).mul_(w)
                d_beta += (da * s).sum()
            dv_c = torch.bmm(w.transpose(1, 2), g_out) if need_v or shared else None
            if need_v:
                dv[:, lo:hi] = dv_c
            dq.baddbmm_(da, kc)
            if need_k:
                dk_c = torch.bmm(da.transpose(1, 2), q)
                if energy != "lse_dot":  # the -|k|^2 / 2 in a
                    dk_c -= da.sum(1)[..., None] * kc
                dk[:, lo:hi] = dk_c.mul_(beta) if not shared else dk_c.mul_(beta).add_(dv_c)
        dq *= beta
        if lsr:
            dq -= (beta * row_sum)[..., None] * q
            log_norm = torch.where(inv[..., 0] > 0, torch.log((eps + norm).clamp_min(tiny)), 0.0)
        else:
            dq += g_energy[..., None] * q  # the |q|^2 / 2 in E
            log_norm = norm
        # E = -log_norm / beta (+ |q|^2 / 2): its explicit beta dependence
        d_beta = d_beta / beta + (g_energy * log_norm).sum() / beta**2
        return (
            dq if need_q else None,
            dk,
            dv,
            d_beta.reshape(beta.shape) if need_beta else None,
            None,
            None,
            None,
            None,
        )
