"""The Energy Transformer's energies (papers.md section 3), on tokens x (B, N, D).

- Energy layer norm ``g = gamma (x - mean x) / sqrt(var x + eps) + delta`` (scalar gamma,
  delta (D,), biased variance over D) is the gradient of the per-token Lagrangian
  ``L(x) = D gamma sqrt(var x + eps) + delta . x``.
- Attention (no value matrix), heads H, head dim Y, weights (H, Y, D):
  ``K = W_K g``, ``Q = W_Q g``, ``A_hBC = K_hB . Q_hC`` (key B, query C) and
  ``E_ATT = -(1/beta) sum_h sum_C log sum_{B allowed for C} exp(beta A_hBC)``.
- Hopfield: ``"relu"``: ``E_HN = -1/2 sum_B sum_mu ReLU(xi_mu . g_B)^2``;
  ``"softmax"``: ``E_HN = -(1/beta) sum_B logsumexp_mu(beta xi_mu . g_B)``.

Energies are (B,), summed over tokens; gradients are with respect to g, (B, N, D).
"""

from __future__ import annotations

import torch

HOPFIELD_KINDS = ("relu", "softmax")


def _centered(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x - mean x (B, N, D) and sqrt(var x + eps) (B, N, 1), over the last axis."""
    xc = x - x.mean(-1, keepdim=True)
    return xc, ((xc * xc).mean(-1, keepdim=True) + eps).sqrt()


def layer_norm(
    x: torch.Tensor, gamma: torch.Tensor | float, delta: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Energy layer norm g (..., D) of tokens x (..., D); the gradient of
    :func:`layer_norm_lagrangian`."""
    xc, sigma = _centered(x, eps)
    return gamma * xc / sigma + delta


def layer_norm_lagrangian(
    x: torch.Tensor, gamma: torch.Tensor | float, delta: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """L(x) = D gamma sqrt(var x + eps) + delta . x per token, shape (...,) for x (..., D)."""
    _, sigma = _centered(x, eps)
    return x.shape[-1] * gamma * sigma[..., 0] + (x * delta).sum(-1)


def attention_mask(
    n: int, exclude_self: bool = True, mask: torch.Tensor | None = None, device=None
) -> torch.Tensor:
    """Allowed (query, key) pairs: bool (N, N) or (B, N, N), ``[c, b]`` True where query c
    may attend key b; ``mask`` (same layout) restricts further, ``exclude_self`` drops b = c."""
    allowed = torch.ones(n, n, dtype=torch.bool, device=device) if mask is None else mask
    if exclude_self:
        allowed = allowed & ~torch.eye(n, dtype=torch.bool, device=allowed.device)
    return allowed


def attention_log_partition(
    g: torch.Tensor,
    w_k: torch.Tensor,
    w_q: torch.Tensor,
    beta: float,
    allowed: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-query log-partitions ``log sum_{b allowed} exp(beta A_hbc)`` (B, H, N), 0 for a
    query with no allowed key; also the attention probabilities (B, H, N_query, N_key)
    (rows of such queries are 0), keys and queries (B, H, N, Y).

    g: (B, N, D); w_k, w_q: (H, Y, D); allowed: bool (N, N) or (B, N, N) from
    :func:`attention_mask`.
    """
    k = torch.einsum("hyd,bnd->bhny", w_k, g)
    q = torch.einsum("hyd,bnd->bhny", w_q, g)
    allowed = allowed if allowed.ndim == 2 else allowed[:, None]
    any_key = allowed.any(-1)  # (N,) or (B, 1, N)
    # queries with no key get an all-zero row so logsumexp and its gradient stay finite
    keep = allowed | ~any_key[..., None]
    scores = (beta * q @ k.transpose(-1, -2)).masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    probs = torch.exp(scores - lse[..., None]) * any_key[..., None]
    return torch.where(any_key, lse, torch.zeros_like(lse)), probs, k, q


def attention_energy(
    g: torch.Tensor, w_k: torch.Tensor, w_q: torch.Tensor, beta: float, allowed: torch.Tensor
) -> torch.Tensor:
    """E_ATT (B,) of normalised tokens g (B, N, D); differentiable by autograd.

    allowed: a bool mask (N, N) or (B, N, N) from :func:`attention_mask`, or a sparse
    list of (query, key) pairs, int64 (2, P), shared by the batch (see
    :func:`pair_attention_energy_grad`)."""
    if not allowed.dtype == torch.bool:
        return pair_attention_energy_grad(g, w_k, w_q, beta, allowed, with_grad=False)[0]
    return -attention_log_partition(g, w_k, w_q, beta, allowed)[0].sum((1, 2)) / beta


def attention_energy_grad(
    g: torch.Tensor, w_k: torch.Tensor, w_q: torch.Tensor, beta: float, allowed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """E_ATT (B,) and its analytic gradient dE_ATT/dg (B, N, D); ``allowed`` as in
    :func:`attention_energy`.

    With P the softmax over keys, each token is pulled as a key and as a query:
    ``dE/dg_a = -sum_h [sum_c P_h[c, a] W_K^T Q_hc + sum_b P_h[a, b] W_Q^T K_hb]``.
    """
    if not allowed.dtype == torch.bool:
        return pair_attention_energy_grad(g, w_k, w_q, beta, allowed)  # type: ignore[return-value]
    lse, p, k, q = attention_log_partition(g, w_k, w_q, beta, allowed)
    as_key = torch.einsum("hyd,bhny->bnd", w_k, p.transpose(-1, -2) @ q)
    as_query = torch.einsum("hyd,bhny->bnd", w_q, p @ k)
    return -lse.sum((1, 2)) / beta, -(as_key + as_query)


def pair_attention_energy_grad(
    g: torch.Tensor,
    w_k: torch.Tensor,
    w_q: torch.Tensor,
    beta: float,
    pairs: torch.Tensor,
    with_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The attention energy and gradient when only the listed (query c, key b) pairs may
    attend, pairs int64 (2, P) (rows: queries, keys), as for the edges of a sparse graph.

    The same energy as the dense form with ``allowed[c, b]`` True exactly on the pairs, at
    a cost of O(P H Y) instead of O(N^2 H Y): the log-sum-exp over each query's keys is a
    scatter (max, then sum), and the gradient gathers the softmax-weighted keys of each
    query and queries of each key. Differentiable by autograd as well.
    """
    query, key = pairs[0], pairs[1]
    b, n, _ = g.shape
    heads = w_k.shape[0]
    k = torch.einsum("hyd,bnd->bnhy", w_k, g)
    q = torch.einsum("hyd,bnd->bnhy", w_q, g)
    scores = beta * (q[:, query] * k[:, key]).sum(-1)  # (B, P, H)
    index = query[None, :, None].expand_as(scores)
    peak = scores.new_full((b, n, heads), float("-inf"))
    peak = peak.scatter_reduce(1, index, scores.detach(), "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # queries w/o keys
    weights = torch.exp(scores - peak[:, query])
    total = scores.new_zeros(b, n, heads).index_add(1, query, weights)  # >= 1 where any key
    has_key = total > 0
    lse = torch.where(has_key, peak + torch.log(torch.where(has_key, total, 1.0)), 0.0)
    energy = -lse.sum((1, 2)) / beta
    if not with_grad:
        return energy, None
    p = (weights / total[:, query])[..., None]  # (B, P, H, 1)
    keys_of_query = k.new_zeros(k.shape).index_add(1, query, p * k[:, key])
    queries_of_key = q.new_zeros(q.shape).index_add(1, key, p * q[:, query])
    grad = torch.einsum("bnhy,hyd->bnd", keys_of_query, w_q) + torch.einsum(
        "bnhy,hyd->bnd", queries_of_key, w_k
    )
    return energy, -grad


def hopfield_energy_grad(
    g: torch.Tensor, memories: torch.Tensor, kind: str = "relu", beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """E_HN (B,) of g (B, N, D) with memories (K, D), and its gradient dE_HN/dg (B, N, D):
    ``-ReLU(g xi^T) xi`` ("relu") or ``-softmax(beta g xi^T) xi`` ("softmax")."""
    return _hopfield(g, memories, kind, beta, with_grad=True)


def hopfield_energy(
    g: torch.Tensor, memories: torch.Tensor, kind: str = "relu", beta: float = 1.0
) -> torch.Tensor:
    """E_HN (B,) of g (B, N, D) with memories (K, D); ``beta`` is used by "softmax" only.
    Differentiable by autograd."""
    return _hopfield(g, memories, kind, beta, with_grad=False)[0]


def _hopfield(
    g: torch.Tensor, memories: torch.Tensor, kind: str, beta: float, with_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    h = g @ memories.T  # (B, N, K)
    if kind == "relu":
        r = torch.relu(h)
        return -0.5 * (r * r).sum((1, 2)), (-(r @ memories) if with_grad else None)
    s = beta * h
    energy = -torch.logsumexp(s, -1).sum(1) / beta
    return energy, (-(torch.softmax(s, -1) @ memories) if with_grad else None)
