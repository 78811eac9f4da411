"""RandomFeatureAM (DrDAM): a Dense Associative Memory held in one fixed-size tensor.

The exact model it approximates is :class:`~amlab.models.DenseAM` with energy ``"lse"``,
the distance form ``E = -(1/beta) logsumexp_mu(-(beta/2) ||x - xi_mu||^2)``, whose kernel
exp(-(beta/2) ||x - xi||^2) is what every feature map of
:mod:`amlab.energy.random_features` estimates. (The dot form ``"lse_dot"`` has the kernel
exp(beta x . xi), which these maps do not estimate: they would need different offsets.)

Storing a pattern adds its features to ``T`` (P * Y,); removing it subtracts them. The model
size (S, b and T) never depends on how many patterns are stored.

    rf = RandomFeatureAM(dim=64, num_features=20_000, beta=10.0).add(patterns)
    rf = RandomFeatureAM.from_dense(dense_am, num_features=20_000)
    out = rf.retrieve(queries, clamp=observed)          # gradient descent on E~
    compare_with_dense(rf, dense_am, queries)            # energy and gradient errors
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from amlab.dynamics import Oracle
from amlab.energy.random_features import (
    KERNELS,
    draw_projections,
    feature_sum,
    num_parts,
    rf_energy,
    rf_energy_grad,
)
from amlab.errors import (
    AmlabError,
    check_choice,
    check_dtype,
    check_positive_int,
)
from amlab.models.base import AssociativeMemory
from amlab.models.dense_am import DenseAM


@dataclass(frozen=True)
class RandomFeatureAMConfig:
    """What :class:`RandomFeatureAM` is built with (see its arguments)."""

    dim: int
    num_features: int
    beta: float
    kernel: str = "sincos"
    seed: int = 0
    eps: float = 1e-5
    dtype: str = "float32"
    chunk_size: int | None = None


class RandomFeatureAM(AssociativeMemory):
    """DrDAM: the LSE energy E~(x) = -(1/beta) log(max(phi(x) . T, eps)), T = sum_mu phi(xi_mu).

    ``forward(x)`` is the retrieved states, ``retrieve(x).states``. The tensors are S, b,
    T and ``stored`` (the number of patterns T holds, an int64 scalar).

    Args:
        dim: D, the dimension of states and patterns.
        num_features: Y, the number of random projections (rows of S); T holds Y features
            ("cos", "exp") or 2Y ("sincos", "expexp").
        beta: inverse temperature, > 0.
        kernel: feature map, one of "sincos" (default), "cos", "exp", "expexp".
        seed: seed of S ~ N(0, I) (Y, D) and b ~ U(0, 2 pi) (Y,) (drawn on the CPU).
        eps: floor of phi(x) . T inside the log (>= 0); below it the energy is flat.
        dtype: float32 (default) or float64 (a dtype or its name).
        chunk_size: projections processed at once (None: automatic); peak memory grows with
            the chunk, not with Y or with the number of stored patterns.
    """

    Config = RandomFeatureAMConfig
    scales = {"beta": False, "eps": True}
    METHODS = {"gd": (0.1, 1e-6)}

    def __init__(
        self,
        dim: int,
        num_features: int,
        beta: float,
        kernel: str = "sincos",
        seed: int = 0,
        eps: float = 1e-5,
        dtype: torch.dtype | str = torch.float32,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim")
        num_features = check_positive_int(num_features, "num_features")
        dtype = check_dtype(dtype)
        self.beta = self._scale(beta, "beta", dtype)
        self.kernel = check_choice(kernel, "kernel", KERNELS)
        self.seed = check_positive_int(seed, "seed", allow_zero=True)
        self.eps = self._scale(eps, "eps", dtype)
        self.chunk_size = (
            None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        )
        S, b = draw_projections(dim, num_features, self.seed, dtype=dtype)
        self.register_buffer("S", S)
        self.register_buffer("b", b)
        self.register_buffer("T", S.new_zeros(num_parts(self.kernel) * num_features))
        self.register_buffer("stored", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_dense(
        cls,
        dense: DenseAM,
        num_features: int,
        kernel: str = "sincos",
        seed: int = 0,
        eps: float = 1e-5,
        chunk_size: int | None = None,
    ) -> RandomFeatureAM:
        """The random-feature approximation of ``dense`` (energy "lse"): same beta, same
        memories, dtype and device."""
        if not isinstance(dense, DenseAM) or dense.energy_name != "lse":
            what = dense.energy_name if isinstance(dense, DenseAM) else type(dense).__name__
            raise AmlabError(
                f"RandomFeatureAM approximates a DenseAM with energy 'lse' (the distance "
                f"form, kernel exp(-beta/2 ||x - xi||^2)); got {what!r}. Build "
                "DenseAM(memories, energy='lse', beta=...) first."
            )
        rf = cls(
            dense.dim,
            num_features,
            dense.beta,
            kernel=kernel,
            seed=seed,
            eps=eps,
            dtype=dense.memories.dtype,
            chunk_size=chunk_size,
        ).to(dense.memories.device)
        return rf.add(dense.memories)

    # -- writing -----------------------------------------------------------------------------
    def add(self, patterns: Any) -> RandomFeatureAM:
        """Store patterns (M, D) or (D,): T += sum_mu phi(xi_mu). Returns self."""
        return self.add_feature_sum(*self.feature_sum_of(patterns))

    def remove(self, patterns: Any) -> RandomFeatureAM:
        """Forget patterns (M, D) or (D,) stored before: T -= sum_mu phi(xi_mu). Returns self.

        T cannot tell which patterns it holds; removing one never added corrupts the memory.
        """
        features, count = self.feature_sum_of(patterns)
        return self.add_feature_sum(-features, -count)

    def feature_sum_of(self, patterns: Any) -> tuple[torch.Tensor, int]:
        """sum_mu phi(xi_mu) (the shape of T) over patterns (M, D) or (D,), and M: what
        :meth:`add` adds to T and to the count of stored patterns."""
        x, _ = self._states(patterns, "patterns")
        features = feature_sum(
            x, self.S, self.b, self.beta, self.kernel, chunk_size=self.chunk_size
        )
        return features, x.shape[0]

    def add_feature_sum(self, features: torch.Tensor, count: int) -> RandomFeatureAM:
        """T += features, and ``count`` more patterns stored (negative: removed; refused when
        more than are stored). Returns self. Writers that compute :meth:`feature_sum_of`
        elsewhere (other processes) add their sums here."""
        # a tensor of another shape would broadcast into T (a scalar: added to every entry)
        if not isinstance(features, torch.Tensor) or features.shape != self.T.shape:
            raise AmlabError(
                f"features must be a tensor of T's shape {tuple(self.T.shape)} (as "
                f"feature_sum_of gives); got {tuple(getattr(features, 'shape', ()))}."
            )
        self._check_placement(features, "features")
        if count < -self.num_stored:
            raise AmlabError(
                f"cannot remove {-count} patterns: only {self.num_stored} are stored. "
                "Remove only patterns that were added."
            )
        self.T += features
        self.stored += count
        return self

    # -- size ------------------------------------------------------------------------------
    @property
    def num_stored(self) -> int:
        """How many patterns T holds (added and not removed)."""
        return int(self.stored)

    @property
    def dim(self) -> int:
        return self.S.shape[1]

    @property
    def num_features(self) -> int:
        return self.S.shape[0]

    @property
    def num_parameters(self) -> int:
        """Numbers held: S (Y * D), b (Y) and T (P * Y); independent of num_stored.

        S and b can be re-drawn from the seed, so the memory proper is T alone.
        """
        return sum(t.numel() for t in (self.S, self.b, self.T))

    @property
    def nbytes(self) -> int:
        """Bytes of S, b and T; independent of num_stored."""
        return sum(t.numel() * t.element_size() for t in (self.S, self.b, self.T))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_features={self.num_features}, beta={self.beta:g}, "
            f"kernel={self.kernel!r}, eps={self.eps:g}, num_stored={self.num_stored}, "
            f"dtype={self.S.dtype}"
        )

    # -- the energy and its oracle ---------------------------------------------------------
    def _args(self) -> tuple:
        return self.S, self.b, self.T, self.beta, self.kernel

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return rf_energy(x, *self._args(), eps=self.eps, chunk_size=self.chunk_size)

    def _oracle(self, method: str) -> Oracle:
        args, eps, chunk = self._args(), self.eps, self.chunk_size
        return lambda x, t: rf_energy_grad(x, *args, eps=eps, chunk_size=chunk)


@torch.no_grad()
def compare_with_dense(rf: RandomFeatureAM, dense: DenseAM, x: Any) -> dict[str, Any]:
    """Errors of ``rf`` against the exact ``dense`` (energy "lse", same beta) at states x (B, D).

    Returns ``energy_error`` (mean |E - E~|), ``grad_error`` (mean over queries and entries of
    |grad E - grad E~|, the paper's mean absolute error) as floats, and the per-query
    ``energy_errors`` (B,) and ``grad_errors`` (B,) (mean over entries).
    """
    if not isinstance(dense, DenseAM) or dense.energy_name != "lse":
        raise AmlabError("compare_with_dense needs the exact model: a DenseAM with energy 'lse'.")
    if dense.dim != rf.dim or not math.isclose(dense.beta, rf.beta, rel_tol=1e-12):
        raise AmlabError(
            f"the models differ (dim {dense.dim} vs {rf.dim}, beta {dense.beta:g} vs "
            f"{rf.beta:g}); compare a RandomFeatureAM with the DenseAM it approximates."
        )
    e_rf, g_rf = rf.energy_and_grad(x)
    e, g = dense.energy_and_grad(x)
    if e.ndim == 0:
        e, g, e_rf, g_rf = e[None], g[None], e_rf[None], g_rf[None]
    de, dg = (e - e_rf.to(e.dtype)).abs(), (g - g_rf.to(g.dtype)).abs().mean(1)
    return {
        "energy_error": de.mean().item(),
        "grad_error": dg.mean().item(),
        "energy_errors": de,
        "grad_errors": dg,
    }
