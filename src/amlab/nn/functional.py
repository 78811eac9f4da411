"""Retrieval from a memory, chunked over the memories in both directions: the read-out
(:func:`memory_read`) and the move of a state (:func:`memory_step`).

For queries q (G, N, D), keys k (G, M, D), values v (G, M, E) and inverse temperature beta,
one read-out is the kernel-weighted mean of the values and the energy of the query:

    out_n = sum_mu w_{n mu} v_mu,    w_{n mu} = K(a_{n mu}) / (eps + sum_nu K(a_{n nu}))

with per-pair scores ``a`` and kernels K of the three energies of :mod:`amlab.energy`:

- ``"lse"`` (distance form): ``a = beta (q . k - |k|^2 / 2)``, K = exp, eps = 0: the
  softmax of -(beta/2) |q - k|^2 (the |q|^2 term cancels); E = -(1/beta) logsumexp(a) + |q|^2 / 2
- ``"lse_dot"``: ``a = beta q . k``, K = exp: E = -(1/beta) logsumexp(a) + |q|^2 / 2
- ``"lsr"``: ``a = -(beta/2) |q - k|^2``, K(a) = ReLU(1 + a) (Epanechnikov, exactly zero
  outside the support radius sqrt(2/beta)); E = -(1/beta) log(eps + Z), Z = sum K(a)

The LSR read-out weighs each memory by its kernel, so it is exactly sparse: outside every
support all weights are zero, so are the output and its gradient (the energy is +inf there
when eps = 0, with zero gradient, as in :mod:`amlab.energy.lsr`).

A state move (:func:`memory_step`, the first ``steps - 1`` steps of a layer) never raises
the energy. For LSE it is the read-out with the keys as values: the attention (Hopfield)
update, a descent step on the LSE energy. The LSR read-out is not one (repeated, it raised
the LSR energy of 241 of 500 noisy digits, sigma 0.2, read against the 500 stored ones,
beta 0.15, 10 steps), so LSR's move is the *damped centroid step*: with S the support of x
(the memories with K > 0, padding excluded), n = |S|, c the mean of the xi_mu over S and
Z = Z(x),

    y = x + alpha (c - x),    alpha = Z / n in (0, 1]  (the mean kernel value over S),

and y = x when S is empty. It never raises E: Q(y) = sum_{mu in S} (1 - (beta/2)|y - xi_mu|^2)
= n - (beta/2) (n |y - c|^2 + sum_S |xi_mu - c|^2) is below Z everywhere (ReLU(t) >= t, and
the memories outside S add K >= 0) and equal to it at x. On the segment y = x + alpha (c - x),
0 <= alpha <= 2, y - c = (1 - alpha)(x - c) is no longer than x - c, so Q(y) >= Q(x), hence
Z(y) >= Q(y) >= Q(x) = Z(x) and E(y) <= E(x). Its fixed points (x = c) are those of LSR's
centroid dynamics (``DenseAM.retrieve(method="fixed_point")``), but unlike the plain centroid,
which is piecewise constant in x, it passes gradients to the query (through 1 - alpha and
alpha(x): grad alpha = -beta (x - c)), to the memories (through c and Z) and to beta (through
Z; n is piecewise constant). Unlike the read-out it is not continuous in x: where a memory
enters or leaves the support (its kernel 0 there) Z is continuous but n and c change at once,
and so does y; the gradient is that of the piece x is on.

:func:`memory_read` and the LSR step are each one ``torch.autograd.Function``. Their
forwards stream over chunks of memories (an online log-sum-exp for LSE; running sums of the
kernel, the active count and the active memories for LSR) and save only per-query tensors;
their backwards stream over the same chunks again, recomputing each chunk's weights (or support).
Neither pass holds more than a few (G, N, chunk) blocks, so training with 10^5-10^6 memories
never keeps a (G, N, M) activation. Gradients flow to the queries, keys, values and beta,
from both the output and the energy.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from amlab.energy.chunks import SCORE_BLOCK_ELEMENTS, chunk_ranges, score_block
from amlab.energy.distances import sq_distances, sq_norms
from amlab.energy.lsr import add_block_stats, lsr_energy_from_stats, lsr_weights_
from amlab.errors import AmlabError

#: the energies a memory read-out may use (the names of :class:`~amlab.models.DenseAM`)
ENERGIES = ("lse", "lse_dot", "lsr")

#: what a compiled read raises (a RuntimeError, from the device) for a set that is all padding
EMPTY_SET = (
    "padding_mask marks every memory of an example as padding; each example needs at least "
    "one memory to read from."
)


def check_every_set_has_memory(padding_mask: torch.Tensor | None) -> None:
    """Every set (row of the bool ``padding_mask`` (G, M), True at padding) holds at least one
    memory that is not padding: a set that is all padding has no read-out (LSE's would be
    0 / 0 = NaN). Eagerly this reads one value back to the host and raises AmlabError naming
    the sets; under ``torch.compile`` it runs on the device instead
    (``torch._assert_async``: a RuntimeError saying :data:`EMPTY_SET`), so that the compiled
    graph neither breaks nor waits. (torch has no public device-side assert; the private
    ``torch._check`` and ``torch._check_tensor_all`` compile to an ``.item()``, a value read
    back to the host, and lose the message: docs/nn.md.)"""
    if padding_mask is None:
        return
    empty = padding_mask.all(1)
    if torch.compiler.is_compiling():  # a value read back to the host would break the graph
        torch._assert_async(~empty.any(), EMPTY_SET)  # checked on the device: a RuntimeError
    elif bool(empty.any()):
        raise AmlabError(
            f"padding_mask marks every memory of example(s) {empty.nonzero()[:, 0].tolist()[:10]}"
            " as padding; each example needs at least one memory to read from."
        )


def memory_read(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor | None,
    beta: torch.Tensor,
    *,
    energy: str = "lse",
    eps: float = 0.0,
    padding_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One read-out (see the module docstring): output (G, N, E) and energy (G, N).

    Args:
        queries: (G, N, D); keys: (G, M, D); values: (G, M, E), or None to read out the
            keys themselves (auto-association); beta: a 0-dim tensor > 0.
        energy: "lse", "lse_dot" or "lsr"; eps: LSR's floor inside the log (>= 0).
        padding_mask: (G, M) bool, True where a memory is padding (ignored); every set
            must hold at least one memory that is not padding
            (:func:`check_every_set_has_memory`, which this function runs).
        chunk_size: memories per chunk (None: picked from G * N and the device).

    The layers of :mod:`amlab.nn` check their input; this function checks only that no set
    is all padding (where the read-out is undefined, not merely wrong).
    """
    check_every_set_has_memory(padding_mask)
    return unchecked_read(queries, keys, values, beta, energy, eps, padding_mask, chunk_size)


def memory_step(
    queries: torch.Tensor,
    keys: torch.Tensor,
    beta: torch.Tensor,
    *,
    energy: str = "lse",
    eps: float = 0.0,
    padding_mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One move of the states that never raises their energy (see the module docstring): the
    new states (G, N, D) and the energy (G, N) of the states it started from. LSE: the
    read-out of the keys (the attention update); LSR: the damped centroid step. Arguments
    (and the one check) as :func:`memory_read`."""
    check_every_set_has_memory(padding_mask)
    return unchecked_step(queries, keys, beta, energy, eps, padding_mask, chunk_size)


def unchecked_read(queries, keys, values, beta, energy, eps, padding_mask, chunk_size):
    """:func:`memory_read` without its check, for a caller that ran
    :func:`check_every_set_has_memory` once for many steps (a layer)."""
    return _MemoryRead.apply(queries, keys, values, beta, energy, eps, padding_mask, chunk_size)


def unchecked_step(queries, keys, beta, energy, eps, padding_mask, chunk_size):
    """:func:`memory_step` without its check, as :func:`unchecked_read`."""
    if energy == "lsr":
        return _LSRStep.apply(queries, keys, beta, eps, padding_mask, chunk_size)
    return _MemoryRead.apply(queries, keys, None, beta, energy, eps, padding_mask, chunk_size)


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
    softmax for LSE, ``ReLU(1 + a) / (eps + Z)`` for LSR (exact zeros outside the supports).
    Arguments (and the one check) as :func:`memory_read`."""
    check_every_set_has_memory(padding_mask)
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

    def kernel(self, lo: int, hi: int) -> torch.Tensor:
        """LSR: the kernel (G, N, m) with padding at zero (a memory is active where > 0)."""
        kernel = self.scores(lo, hi)
        pad = self.padding(lo, hi)
        return kernel if pad is None else kernel.masked_fill_(pad, 0.0)

    def weights(self, lo, hi, norm, eps) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, s) of one chunk: the weights (G, N, m) and the scores (LSE) or kernel (LSR),
        padding at zero weight. ``norm`` is logsumexp(a) (LSE) or Z (LSR), (G, N)."""
        if self.energy == "lsr":
            s = self.kernel(lo, hi)
            return s / (eps + norm).clamp_min(torch.finfo(s.dtype).tiny)[..., None], s
        s = self.scores(lo, hi)
        pad = self.padding(lo, hi)
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
            kernel = chunks.kernel(lo, hi)
            z += kernel.sum(-1)
            acc.baddbmm_(kernel, v[:, lo:hi])
        out = acc / (eps + z).clamp_min(torch.finfo(q.dtype).tiny)[..., None]
        return out, z, lsr_energy_from_stats(z, beta, eps)
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


def _inverse_and_log(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """1 / (eps + Z) and log(eps + Z), both 0 where eps + Z = 0: outside every support with
    eps = 0, where E = +inf is flat and its gradient defined as zero."""
    inside = eps + z > 0
    safe = torch.where(inside, eps + z, 1.0)
    return torch.where(inside, 1.0 / safe, 0.0), torch.where(inside, torch.log(safe), 0.0)


class _MemoryRead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, energy, eps, padding_mask, chunk_size):
        chunks = _Chunks(q, k, beta, energy, padding_mask)
        out, norm, e = _normaliser_pass(chunks, k if v is None else v, eps, chunk_size)
        ctx.save_for_backward(q, k, v, beta, out, norm)
        ctx.settings = (energy, eps, padding_mask, chunk_size)
        return out, e

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_energy):
        q, k, v, beta, out, norm = ctx.saved_tensors
        energy, eps, padding_mask, chunk_size = ctx.settings
        need_q, need_k, need_v, need_beta = ctx.needs_input_grad[:4]
        # values that are the keys (v None: auto-association) share the keys' gradient buffer
        shared = v is None and need_k
        if v is None:
            v, need_v = k, False
        if g_out is None:
            g_out = torch.zeros_like(out)
        if g_energy is None:
            g_energy = torch.zeros_like(norm)
        chunks = _Chunks(q, k, beta, energy, padding_mask)
        lsr = energy == "lsr"
        # d loss / d a = w (h - delta - g_E / beta) for LSE, active (h - ...) / (eps + Z) for
        # LSR, with h = g_out . v_mu and delta = g_out . out
        offset = ((g_out * out).sum(-1) + g_energy / beta)[..., None]
        if lsr:
            inv, log_norm = _inverse_and_log(norm, eps)
            inv = inv[..., None]
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


class _LSRStep(torch.autograd.Function):
    """LSR's damped centroid step y = x + alpha (c - x), alpha = Z / n (module docstring),
    from the support statistics Z, n and A = sum_S xi_mu (c = A / n) of one chunked pass."""

    @staticmethod
    def forward(ctx, x, k, beta, eps, padding_mask, chunk_size):
        chunks = _Chunks(x, k, beta, "lsr", padding_mask)
        with torch.no_grad():
            stats = (x.new_zeros(x.shape[:2]), x.new_zeros(x.shape[:2]), torch.zeros_like(x))
            for lo, hi in _ranges(x, k, chunk_size):
                add_block_stats(stats, chunks.kernel(lo, hi), k[:, lo:hi])
            z, count, active_sum = stats
            n = count.clamp_min(1.0)[..., None]  # an empty support: z = 0, A = 0, so y = x
            y = x + (z[..., None] / n) * (active_sum / n - x)
        ctx.save_for_backward(x, k, beta, z, count, active_sum)
        ctx.settings = (eps, padding_mask, chunk_size)
        return y, lsr_energy_from_stats(z, beta, eps)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_energy):
        x, k, beta, z, count, active_sum = ctx.saved_tensors
        eps, padding_mask, chunk_size = ctx.settings
        need_x, need_k, need_beta = ctx.needs_input_grad[:3]
        if g_y is None:
            g_y = torch.zeros_like(x)
        if g_energy is None:
            g_energy = torch.zeros_like(z)
        n = count.clamp_min(1.0)
        alpha = z / n
        centroid = active_sum / n[..., None]
        # E = -log(eps + Z) / beta: dE/dZ = -1 / (beta (eps + Z)), 0 outside every support
        inv, log_norm = _inverse_and_log(z, eps)
        # y depends on Z through alpha = Z / n, and on A through alpha A / n
        g_z = (g_y * (centroid - x)).sum(-1) / n - g_energy * inv / beta
        g_active_sum = (alpha / n)[..., None] * g_y
        # Z = sum_S (1 - (beta/2)|x - xi|^2): dZ/dx = -beta (n x - A), dZ/dbeta = -(n - Z)/beta
        dx = dk = d_beta = None
        if need_x:
            dx = (1.0 - alpha)[..., None] * g_y - (beta * g_z)[..., None] * (
                count[..., None] * x - active_sum
            )
        if need_k:  # dZ/dxi = beta (x - xi) and dA/dxi = 1 for each xi in S
            chunks = _Chunks(x, k, beta, "lsr", padding_mask)
            pull = (beta * g_z)[..., None] * x + g_active_sum  # (G, N, D)
            dk = torch.zeros_like(k)
            for lo, hi in _ranges(x, k, chunk_size):
                active = (chunks.kernel(lo, hi) > 0).to(x.dtype).transpose(1, 2)  # (G, m, N)
                dk_c = torch.bmm(active, pull)
                dk_c -= beta * torch.bmm(active, g_z[..., None]) * k[:, lo:hi]
                dk[:, lo:hi] = dk_c
        if need_beta:
            d_beta = (-(g_z * (count - z)).sum() + (g_energy * log_norm).sum() / beta) / beta
            d_beta = d_beta.reshape(beta.shape)
        return dx, dk, d_beta, None, None, None
