"""Random-feature energies (DrDAM, papers.md section 2): the LSE energy through a fixed tensor.

Every feature map here approximates the Gaussian kernel of the distance-form LSE energy,

    phi(x) . phi(y)  ~  k(x, y) = exp(-(beta/2) ||x - y||^2)
                     =  exp(-(beta/2) ||x||^2) exp(-(beta/2) ||y||^2) exp(beta x . y),

so that with ``T = sum_mu phi(xi_mu)`` the energy

    E~(x) = -(1/beta) log(max(phi(x) . T, eps))

tends to ``E(x) = -(1/beta) logsumexp_mu(-(beta/2) ||x - xi_mu||^2)`` as the number of
random projections Y grows. With ``s_i`` the rows of S ~ N(0, I) (Y, D), ``h = sqrt(beta) S x``
and ``c = beta ||x||^2``:

- ``"sincos"``: (1/sqrt(Y)) [cos h, sin h] (2Y features). cos h_x cos h_y + sin h_x sin h_y =
  cos(sqrt(beta) s . (x - y)), whose mean over s ~ N(0, I) is k(x, y) (Rahimi and Recht).
- ``"cos"``: sqrt(2/Y) cos(h + b), b ~ U(0, 2 pi) (Y features): the product is
  (1/Y)[cos(h_x - h_y) + cos(h_x + h_y + 2b)] and the second term averages to 0 over b.
- ``"exp"``: (1/sqrt(Y)) exp(h - c) (Y positive features). E_s[exp(sqrt(beta) s . (x + y))]
  = exp((beta/2) ||x + y||^2) = exp((beta/2)||x||^2 + (beta/2)||y||^2 + beta x . y), so the
  product has mean exp(beta x . y - (beta/2)||x||^2 - (beta/2)||y||^2) = k(x, y). The offset is
  c = beta ||x||^2, *not* (beta/2) ||x||^2 (which gives the softmax kernel exp(beta x . y) of
  Performers instead): papers.md's shorthand is right for this kernel.
  ``tests/test_random_features.py`` checks every map against k(x, y) numerically.
- ``"expexp"``: (1/sqrt(2Y)) [exp(h - c), exp(-h - c)] (2Y positive features), the symmetric
  version of "exp" with the same mean (s and -s have the same law).

Since h - c <= (s . x/||x||)^2 / 4, the exponential features never overflow; their variance
grows like exp(beta ||x||^2) though, so they need far more features than the trigonometric
maps once beta ||x||^2 is more than a few.

Where phi(x) . T <= eps the energy is flat, -(1/beta) log(eps) (+inf when eps = 0), and its
gradient is defined as **zero**, as autograd gives through ``clamp_min``. The trigonometric
estimates of phi(x) . T can be negative far from every memory, so this happens there.

Work is chunked over the Y projections (and over patterns when writing T): peak memory grows
with the chunk, never with the number of stored patterns. Shapes: states x (B, D), patterns
(M, D), S (Y, D), b (Y,), T (P * Y,) with P = 2 for "sincos" and "expexp", 1 otherwise.
"""

from __future__ import annotations

import math

import torch

from amlab.energy.chunks import SCORE_BLOCK_ELEMENTS, chunk_ranges, score_block

KERNELS = ("sincos", "cos", "exp", "expexp")
#: rows of S drawn at once in float64 and cast: bounds the float64 temporary, and makes S for
#: one seed the same in float32 and float64 models.
_DRAW_BLOCK = 1 << 15


def num_parts(kernel: str) -> int:
    """Features per projection: 2 for "sincos" and "expexp", 1 for "cos" and "exp"."""
    return 2 if kernel in ("sincos", "expexp") else 1


def draw_projections(
    dim: int,
    num_features: int,
    seed: int | torch.Generator = 0,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S ~ N(0, I) (Y, D) and b ~ U(0, 2 pi) (Y,), drawn on the CPU from ``seed``.

    Drawn in float64 blocks and cast, so float32 and float64 models with one seed share S.
    """
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    S = torch.empty(num_features, dim, dtype=dtype)
    for lo in range(0, num_features, _DRAW_BLOCK):
        hi = min(lo + _DRAW_BLOCK, num_features)
        S[lo:hi] = torch.randn(hi - lo, dim, generator=g, dtype=torch.float64)
    b = (torch.rand(num_features, generator=g, dtype=torch.float64) * (2 * math.pi)).to(dtype)
    return S, b


def _parts(
    x: torch.Tensor, S: torch.Tensor, b: torch.Tensor, beta: float, kernel: str, num_features: int
) -> torch.Tensor:
    """Features phi (B, P, y) of x (B, D) for the projections S (y, D), b (y,) of a chunk,
    normalised for ``num_features`` projections in all. Differentiable by autograd."""
    h = torch.matmul(x, S.T) * math.sqrt(beta)
    if kernel == "sincos":
        return torch.stack((torch.cos(h), torch.sin(h)), 1) / math.sqrt(num_features)
    if kernel == "cos":
        return (torch.cos(h + b) * math.sqrt(2.0 / num_features))[:, None]
    c = beta * (x * x).sum(1, keepdim=True)
    if kernel == "exp":
        return (torch.exp(h - c) / math.sqrt(num_features))[:, None]
    return torch.stack((torch.exp(h - c), torch.exp(-h - c)), 1) / math.sqrt(2.0 * num_features)


def features(
    x: torch.Tensor, S: torch.Tensor, b: torch.Tensor, beta: float, kernel: str
) -> torch.Tensor:
    """The whole feature vector phi(x) (B, P * Y) of x (B, D), laid out like T."""
    return _parts(x, S, b, beta, kernel, S.shape[0]).reshape(x.shape[0], -1)


@torch.no_grad()
def feature_sum(
    patterns: torch.Tensor,
    S: torch.Tensor,
    b: torch.Tensor,
    beta: float,
    kernel: str,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """sum_mu phi(xi_mu) (P * Y,) over patterns (M, D), chunked over patterns and features.

    No (M, Y) block exists: each step holds at most ~SCORE_BLOCK_ELEMENTS features per part.
    ``chunk_size`` is the number of projections per chunk (None: automatic).
    """
    num_features = S.shape[0]
    total = patterns.new_zeros(num_parts(kernel), num_features)
    rows = max(1, SCORE_BLOCK_ELEMENTS // min(num_features, 4096))
    for lo, hi in chunk_ranges(patterns.shape[0], 1, rows):
        block = patterns[lo:hi]
        for flo, fhi in chunk_ranges(num_features, hi - lo, chunk_size):
            total[:, flo:fhi] += _parts(
                block, S[flo:fhi], b[flo:fhi], beta, kernel, num_features
            ).sum(0)
    return total.reshape(-1)


def rf_energy(
    x: torch.Tensor,
    S: torch.Tensor,
    b: torch.Tensor,
    T: torch.Tensor,
    beta: float,
    kernel: str,
    *,
    eps: float = 1e-5,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """E~(x) (B,) = -(1/beta) log(max(phi(x) . T, eps)); differentiable by autograd."""
    num_features = S.shape[0]
    Tp = T.view(num_parts(kernel), num_features)
    z = x.new_zeros(x.shape[0])
    for lo, hi in chunk_ranges(num_features, x.shape[0], chunk_size):
        phi = _parts(x, S[lo:hi], b[lo:hi], beta, kernel, num_features)
        z = z + (phi * Tp[:, lo:hi]).sum((1, 2))
    return -torch.log(z.clamp_min(eps)) / beta


@torch.no_grad()
def rf_energy_grad(
    x: torch.Tensor,
    S: torch.Tensor,
    b: torch.Tensor,
    T: torch.Tensor,
    beta: float,
    kernel: str,
    *,
    eps: float = 1e-5,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E~(x) (B,) and its analytic gradient (B, D) in one pass over the projections.

    With z = phi(x) . T: grad E~ = -(dz/dx) / (beta z) where z > eps, zero elsewhere, and
    dz/dx = sqrt(beta) S^T (d phi/dh . T) (minus 2 beta x z for the exponential maps).
    Each map's derivative is written out (no feature tensor is stacked), since this is the
    step of every retrieval.
    """
    num_features = S.shape[0]
    Tp = T.view(num_parts(kernel), num_features)
    scale = {"sincos": 1.0, "cos": math.sqrt(2.0), "exp": 1.0, "expexp": math.sqrt(0.5)}[kernel]
    scale /= math.sqrt(num_features)
    c = beta * (x * x).sum(1, keepdim=True) if kernel in ("exp", "expexp") else None
    z = x.new_zeros(x.shape[0])
    dz = x.new_zeros(x.shape)
    xb = x * math.sqrt(beta)  # h = sqrt(beta) S x, with the factor folded in once
    for lo, hi in chunk_ranges(num_features, x.shape[0], chunk_size, score_block(x.device)):
        t = Tp[:, lo:hi]
        h = torch.matmul(xb, S[lo:hi].T)
        if kernel == "sincos":  # d/dh [cos, sin] = [-sin, cos]
            cos, sin = torch.cos(h), torch.sin(h)
            z += cos @ t[0] + sin @ t[1]
            g = cos.mul_(t[1]).addcmul_(sin, t[0], value=-1.0)
        elif kernel == "cos":  # d/dh cos(h + b) = -sin(h + b)
            a = h.add_(b[lo:hi])
            z += torch.cos(a) @ t[0]
            g = torch.sin(a).mul_(t[0]).neg_()
        elif kernel == "exp":  # d/dh exp(h - c) = exp(h - c)
            g = torch.exp(h.sub_(c)).mul_(t[0])
            z += g.sum(1)
        else:  # expexp: d/dh [exp(h - c), exp(-h - c)] = [exp(h - c), -exp(-h - c)]
            plus, minus = torch.exp(h - c).mul_(t[0]), torch.exp(h.neg_().sub_(c)).mul_(t[1])
            z += plus.sum(1) + minus.sum(1)
            g = plus.sub_(minus)
        dz.addmm_(g, S[lo:hi], alpha=math.sqrt(beta) * scale)
    z *= scale
    if c is not None:
        dz.sub_(x * (2.0 * beta * z)[:, None])
    live = z > eps
    denom = z.clamp_min(max(eps, torch.finfo(z.dtype).tiny)) * -beta
    grad = torch.where(live[:, None], dz / denom[:, None], 0.0)
    return -torch.log(z.clamp_min(eps)) / beta, grad
