"""DenseAM: a Dense Associative Memory holding M memories of dimension D.

Energies (papers.md section 1):

- ``"lse"``: E = -(1/beta) logsumexp_mu(-(beta/2) ||x - xi_mu||^2)
- ``"lse_dot"``: E = -(1/beta) logsumexp_mu(beta xi_mu . x) + 1/2 ||x||^2
- ``"lsr"``: E = -(1/beta) log(eps + sum_mu ReLU(1 - (beta/2) ||x - xi_mu||^2)),
  support radius sqrt(2/beta); +inf outside every support when eps = 0, where the
  gradient is defined as zero (see :mod:`amlab.energy.lsr`).

Retrieval methods, all through the one descent engine (:func:`amlab.dynamics.descend`):

- ``"gd"``: gradient descent, x <- x - step_size * grad E(x).
- ``"attention"`` (LSE energies): x <- sum_mu softmax_mu(.) xi_mu, which is gradient
  descent with step 1.
- ``"fixed_point"`` (LSR): x <- mean of the memories active at x, LSR's exact solver
  (a step of 1 along the gradient rescaled by (eps + Z) / count). It stops when the
  active set, hence the state, repeats.

LSR's passes can go through an exact index (:class:`~amlab.energy.lsr_index.BallIndex`):
memories grouped into balls, so a query visits only the balls that can reach its support.
Results are those of the dense pass up to rounding (energy, gradient and retrieval; an energy
that autograd must follow takes the dense formula); ``index="auto"`` (the default) builds
it, on first use, for M >= ``AUTO_INDEX_MIN_MEMORIES`` when a sample shows small supports.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from amlab.dynamics import Oracle
from amlab.energy.distances import nearest_memory, sq_distances, sq_norms
from amlab.energy.lse import lse_energy, lse_energy_grad, memory_bias
from amlab.energy.lsr import (
    SupportStats,
    lsr_centroid_step,
    lsr_energy,
    lsr_energy_from_stats,
    lsr_grad_from_stats,
    lsr_support_stats,
)
from amlab.energy.lsr_index import BallIndex
from amlab.errors import (
    AmlabError,
    as_float_tensor,
    check_choice,
    check_dtype,
    check_positive_int,
    check_scale,
    check_squares_finite,
    dtype_name,
)
from amlab.models.base import AssociativeMemory
from amlab.models.model import config_fields

ENERGIES = ("lse", "lsr", "lse_dot")
INDEXES = ("auto", "clusters", "none")

#: ``index="auto"`` indexes LSR memories from this many on (below, a dense pass is cheap).
AUTO_INDEX_MIN_MEMORIES = 50_000
#: ... when, on a sample of memories, the first queries' supports hold at most this fraction.
AUTO_INDEX_MAX_SUPPORT_FRACTION = 0.05
_SUPPORT_SAMPLE = 2048


@dataclass(frozen=True)
class DenseAMConfig:
    """What :class:`DenseAM` is built with besides its memories (see its arguments)."""

    energy: str = "lse"
    beta: float = 1.0
    eps: float = 0.0
    chunk_size: int | None = None
    index: str = "auto"
    dtype: str = "float32"


class DenseAM(AssociativeMemory):
    """Dense Associative Memory over ``memories`` (M, D).

    ``forward(x)`` is the retrieved states, ``retrieve(x).states``.

    Args:
        memories: (M, D) stored patterns.
        energy: "lse", "lsr" or "lse_dot".
        beta: inverse temperature, > 0.
        eps: LSR's floor inside the log (>= 0); ignored by the LSE energies.
        chunk_size: memories processed at once (None picks it from the batch size);
            peak memory grows with the chunk, not with M.
        index: LSR only: "clusters" passes through an exact ball index (built on first use,
            extended by :meth:`add`), "none" always scans every memory, "auto" indexes from
            ``AUTO_INDEX_MIN_MEMORIES`` memories on when the supports are small. Either way
            the results are the dense pass's up to rounding; the dense pass is also used
            whenever a batch's supports are too large for the index to skip much.
        dtype: float32 or float64 (a dtype or its name); None keeps float64 memories
            float64 and makes anything else float32.
    """

    Config = DenseAMConfig
    METHODS = {"gd": (0.1, 1e-6), "attention": (1.0, 1e-6), "fixed_point": (1.0, 0.0)}

    def __init__(
        self,
        memories: Any,
        energy: str = "lse",
        beta: float = 1.0,
        eps: float = 0.0,
        chunk_size: int | None = None,
        index: str = "auto",
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__()
        self.energy_name = check_choice(energy, "energy", ENERGIES)
        self.index = check_choice(index, "index", INDEXES)
        self.chunk_size = (
            None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        )
        dtype = None if dtype is None else check_dtype(dtype)
        mem = as_float_tensor(memories, "memories", dtype=dtype).detach()
        if mem.ndim != 2 or mem.shape[0] == 0 or mem.shape[1] == 0:
            raise AmlabError(
                f"memories must have shape (M, D) with M >= 1 and D >= 1; got "
                f"{tuple(mem.shape)}. Stack your patterns as rows."
            )
        self.register_buffer("memories", check_squares_finite(mem, "memories").contiguous())
        self.beta = check_scale(beta, "beta", mem.dtype)
        self.eps = check_scale(eps, "eps", mem.dtype, allow_zero=True)
        self._norms: tuple[tuple, torch.Tensor] | None = None  # (memories key, squared norms)
        self._ball_index: tuple[tuple, BallIndex | None] | None = None  # (key, index)

    def with_beta(self, beta: float) -> DenseAM:
        """This memory at inverse temperature ``beta``: the same memories tensor, neither
        checked nor copied again, with its cached squared norms (for sweeping beta, as the
        diffusion denoiser does at every noise level). Memories added to either one later
        are not added to the other."""
        other = copy.copy(self)
        other._buffers = dict(self._buffers)  # its own buffer table over the same tensors
        # no shared LSR index: :meth:`add` extends an index in place, which would leave the
        # other model's index covering memories it does not have (and an index is per beta)
        other._ball_index = None
        other.beta = check_scale(beta, "beta", self.dtype)
        return other

    def add(self, patterns: Any) -> DenseAM:
        """Store more memories (N, D) (or one (D,)) after the existing ones; returns self.

        A built LSR index takes them in (each joins its nearest ball) instead of being rebuilt.
        """
        new, _ = self._states(patterns, "patterns")
        old_key = _key(self.memories)
        self.memories = torch.cat([self.memories, new])
        key = _key(self.memories)
        if self._norms is not None and self._norms[0] == old_key:
            self._norms = (key, torch.cat([self._norms[1], sq_norms(new)]))
        if self._ball_index is not None and self._ball_index[0][1:] == old_key:
            index = self._ball_index[1]
            if index is not None:
                index.add(new)
            self._ball_index = ((self.beta, *key), index)
        return self

    @property
    def config(self) -> DenseAMConfig:
        return DenseAMConfig(
            self.energy_name,
            self.beta,
            self.eps,
            self.chunk_size,
            self.index,
            dtype_name(self.dtype),
        )

    @property
    def num_memories(self) -> int:
        return self.memories.shape[0]

    @property
    def dim(self) -> int:
        return self.memories.shape[1]

    def memory_sq_norms(self) -> torch.Tensor:
        """Squared norms (M,) of the memories, computed once per memory set."""
        key = _key(self.memories)
        if self._norms is None or self._norms[0] != key:
            self._norms = (key, sq_norms(self.memories))
        return self._norms[1]

    def lsr_index(self, x: torch.Tensor | None = None) -> BallIndex | None:
        """The LSR ball index (None: dense passes), built on first use, rebuilt if the
        memories were changed other than by :meth:`add`. With ``index="auto"`` the states x
        (B, D) about to be evaluated decide whether an index is worth building."""
        if self.index == "none" or self.energy_name != "lsr":
            return None
        key = (self.beta, *_key(self.memories))
        if self._ball_index is not None and self._ball_index[0] == key:
            return self._ball_index[1]
        index = None
        if self.index == "clusters" or (
            self.num_memories >= AUTO_INDEX_MIN_MEMORIES
            and x is not None
            and self._support_fraction(x) <= AUTO_INDEX_MAX_SUPPORT_FRACTION
        ):
            index = BallIndex.build(self.memories)
        self._ball_index = (key, index)
        return index

    @torch.no_grad()
    def _support_fraction(self, x: torch.Tensor) -> float:
        """Fraction of a fixed sample of memories within the support radius of states x."""
        gen = torch.Generator().manual_seed(0)
        ids = torch.randperm(self.num_memories, generator=gen)[:_SUPPORT_SAMPLE]
        sample = self.memories[ids.to(self.memories.device)]
        d2 = sq_distances(x, sample, (x * x).sum(1), self.memory_sq_norms()[ids])
        return float((d2 < self.support_radius**2).to(x.dtype).mean())

    @property
    def support_radius(self) -> float:
        """LSR's support radius sqrt(2/beta)."""
        return math.sqrt(2.0 / self.beta)

    def extra_repr(self) -> str:
        return (
            f"energy={self.energy_name!r}, beta={self.beta:g}, eps={self.eps:g}, "
            f"memories=({self.num_memories}, {self.dim}), dtype={self.memories.dtype}, "
            f"index={self.index!r}"
        )

    def nearest(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Index (B,) of the nearest memory to each state and the distance (B,) to it."""
        x, single = self._states(x)
        idx, dist = nearest_memory(x, self.memories, chunk_size=self.chunk_size)
        return (idx[0], dist[0]) if single else (idx, dist)

    # -- the energy and its oracles ------------------------------------------------------
    @property
    def _lse_form(self) -> str:
        return "dot" if self.energy_name == "lse_dot" else "distance"

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        if self.energy_name == "lsr":
            if torch.is_grad_enabled() and x.requires_grad:  # autograd follows the formula
                return lsr_energy(
                    x, self.memories, self.beta, eps=self.eps, chunk_size=self.chunk_size
                )
            z, _, _ = self._lsr_stats(x)
            return lsr_energy_from_stats(z, self.beta, self.eps)
        form = self._lse_form
        return lse_energy(
            x,
            self.memories,
            self.beta,
            form=form,
            bias=memory_bias(self.memories, form, self.memory_sq_norms()),
            chunk_size=self.chunk_size,
        )

    def _oracle(self, method: str) -> Oracle:
        if method == "attention" and self.energy_name == "lsr":
            raise AmlabError(
                'method "attention" is the LSE update; for energy "lsr" use '
                'method="fixed_point" (exact) or "gd".'
            )
        if method == "fixed_point" and self.energy_name != "lsr":
            raise AmlabError(
                'method "fixed_point" is LSR\'s exact solver; for LSE energies '
                'use method="attention" or "gd".'
            )
        mem, beta, eps, chunk = self.memories, self.beta, self.eps, self.chunk_size
        mem_sq = self.memory_sq_norms()
        if self.energy_name != "lsr":  # gd and attention: the gradient, steps 0.1 and 1
            form = self._lse_form
            bias = memory_bias(mem, form, mem_sq)
            return lambda x, t: lse_energy_grad(
                x, mem, beta, form=form, bias=bias, mem_sq=mem_sq, chunk_size=chunk
            )

        fixed_point = method == "fixed_point"  # else gd

        def lsr_step(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            stats = self._lsr_stats(x)
            direction = (
                lsr_centroid_step(x, stats) if fixed_point else lsr_grad_from_stats(x, stats, eps)
            )
            return lsr_energy_from_stats(stats[0], beta, eps), direction

        return lsr_step

    def _lsr_stats(self, x: torch.Tensor) -> SupportStats:
        """LSR's support statistics (Z, active count, active sum) at states x (B, D):
        through the index when there is one, else by a dense pass."""
        index = self.lsr_index(x)
        stats = lsr_support_stats if index is None else index.support_stats
        return stats(
            x,
            self.memories,
            self.beta,
            mem_sq=self.memory_sq_norms(),
            chunk_size=self.chunk_size,
        )

    @classmethod
    def from_saved(cls, config: DenseAMConfig, tensors: dict[str, torch.Tensor]) -> DenseAM:
        """The memory over the saved tensor ``memories``."""
        return cls(tensors["memories"], **config_fields(config))


def _key(memories: torch.Tensor) -> tuple:
    """What identifies a memory set's contents: a change in place bumps ``_version``."""
    return (
        memories.data_ptr(),
        memories._version,
        tuple(memories.shape),
        memories.dtype,
        memories.device,
    )
