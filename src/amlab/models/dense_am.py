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

from amlab.dynamics import EnergyFn, Oracle, StepSize
from amlab.energy.distances import nearest_memory, sq_distances, sq_norms
from amlab.energy.lse import (
    lse_attention_update,
    lse_bound,
    lse_energy,
    lse_energy_from_lse,
    lse_softmax_mean,
    memory_bias,
    memory_extent,
)
from amlab.energy.lsr import (
    SupportStats,
    lsr_centroid,
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
#: Devices on which an LSE update without energy goes through PyTorch's fused attention
#: kernel. Not the CPU: there the streaming pass was as fast or faster (one thread, B = 256,
#: M = 60,000, D = 784: 281 ms against 328 ms, plain torch 350 ms; B = 1,024, M = 150,000,
#: D = 64: 288 ms against 279 ms) and closer to float64 at D = 784.
FUSED_UPDATE_DEVICES = ("cuda",)


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
    scales = {"beta": False, "eps": True}
    METHODS = {"gd": (0.1, 1e-6), "attention": (1.0, 1e-6), "fixed_point": (1.0, 0.0)}
    #: the fewest memories this model may hold (a shard of a sharded memory may hold none)
    _MIN_MEMORIES = 1
    #: whether an update without energy may take the fused attention kernel, which gives
    #: the weighted mean but no log-sum-exp (a sharded memory needs both to merge shards)
    _FUSED_UPDATE = True

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
        if mem.ndim != 2 or mem.shape[0] < self._MIN_MEMORIES or mem.shape[1] == 0:
            raise AmlabError(
                f"memories must have shape (M, D) with M >= {self._MIN_MEMORIES} and D >= 1; "
                f"got {tuple(mem.shape)}. Stack your patterns as rows."
            )
        self.register_buffer("memories", check_squares_finite(mem, "memories").contiguous())
        self.beta = self._scale(beta, "beta", mem.dtype)
        self.eps = self._scale(eps, "eps", mem.dtype)
        self._norms: tuple[tuple, torch.Tensor] | None = None  # (memories key, squared norms)
        self._extent: tuple[tuple, tuple[float, float]] | None = None  # (key, memory_extent)
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
        other.beta = self._scale(beta, "beta", self.dtype)
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

    def _memory_extent(self) -> tuple[float, float]:
        """The largest memory norm and the spread of the LSE form's bias
        (:func:`~amlab.energy.lse.memory_extent`), read back once per memory set."""
        key = (*_key(self.memories), self._lse_form)
        if self._extent is None or self._extent[0] != key:
            mem_sq = self.memory_sq_norms()
            bias = memory_bias(self.memories, self._lse_form, mem_sq)
            self._extent = (key, memory_extent(mem_sq, bias))
        return self._extent[1]

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
        """Energy and gradient (the direction of ``"gd"``), for :meth:`energy_and_grad`."""
        self._check_method(method)
        mem, beta, eps, chunk = self.memories, self.beta, self.eps, self.chunk_size
        mem_sq = self.memory_sq_norms()
        if self.energy_name != "lsr":
            form = self._lse_form
            bias = memory_bias(mem, form, mem_sq)

            def lse_grad(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
                lse, mean = self._lse_pass(x, bias=bias, mem_sq=mem_sq, chunk_size=chunk)
                return lse_energy_from_lse(x, lse, beta), x - mean

            return lse_grad

        def lsr_grad(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            stats = self._lsr_stats(x)
            return lsr_energy_from_stats(stats[0], beta, eps), lsr_grad_from_stats(x, stats, eps)

        return lsr_grad

    def _retrieval(
        self, method: str, record_energies: bool, step_size: StepSize | None = None
    ) -> tuple[Oracle, EnergyFn, bool]:
        """The descent's oracle for ``method``, its energy-only evaluation and whether the
        oracle returns the updated state itself (``"attention"``: the softmax-weighted mean;
        ``"fixed_point"``: the centroid) rather than a direction (``"gd"``).

        One pass over the memories per call, reading nothing back to the host inside the
        loop. Without ``record_energies`` the oracle's energy is None, and on the devices
        of ``FUSED_UPDATE_DEVICES`` the LSE update goes through the fused attention kernel
        (:func:`~amlab.energy.lse.lse_attention_update`). A constant
        ``step_size`` of at most 1 keeps every state within ``sqrt(|x_0|^2 + max |xi|^2)``
        (each step moves the free entries to a convex combination of themselves and a
        convex combination of the memories), so the LSE pass's bound is known on the host
        from the first states, read back once; otherwise the pass keeps a running maximum.
        """
        self._check_method(method)
        mem, beta, eps, chunk = self.memories, self.beta, self.eps, self.chunk_size
        toward = method != "gd"
        if self.energy_name != "lsr":
            bias = memory_bias(mem, self._lse_form, self.memory_sq_norms())
            contracting = isinstance(step_size, (int, float)) and 0 < step_size <= 1
            known: list[tuple[float, float]] = []  # the bound, from the first states seen

            def stream(x: torch.Tensor) -> dict[str, Any]:
                if not contracting:
                    return dict(bias=bias, chunk_size=chunk, host_bound=False)
                if not known:
                    norm, spread = self._memory_extent()
                    norms = torch.linalg.vector_norm(x, dim=1)
                    start = float(norms.max()) if x.shape[0] else 0.0  # once per descent
                    # (1 + 1e-4): room for the rounding of the states
                    known.append(
                        lse_bound(beta, math.hypot(start, norm) * (1 + 1e-4), norm, spread)
                    )
                return dict(bias=bias, chunk_size=chunk, bound=known[0])

            def lse_step(x: torch.Tensor, t: int) -> tuple[torch.Tensor | None, torch.Tensor]:
                fusable = self._FUSED_UPDATE and x.device.type in FUSED_UPDATE_DEVICES
                if not record_energies and fusable:
                    mean = lse_attention_update(x, mem, beta, bias=bias, chunk_size=chunk)
                    return None, (mean if toward else x - mean)
                lse, mean = self._lse_pass(x, **stream(x))
                energy = lse_energy_from_lse(x, lse, beta) if record_energies else None
                return energy, (mean if toward else x - mean)

            def lse_final(x: torch.Tensor) -> torch.Tensor:
                lse = self._lse_pass(x, with_mean=False, **stream(x))[0]
                return lse_energy_from_lse(x, lse, beta)

            return lse_step, lse_final, toward

        def lsr_step(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            stats = self._lsr_stats(x)
            out = lsr_centroid(x, stats) if toward else lsr_grad_from_stats(x, stats, eps)
            return lsr_energy_from_stats(stats[0], beta, eps), out

        return lsr_step, self._lsr_energy, toward

    def _lse_pass(self, x: torch.Tensor, **stream: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One streaming LSE pass over the memories at states x (B, D): log-sum-exp (B,) and
        softmax-weighted mean (B, D) (see :func:`~amlab.energy.lse.lse_softmax_mean`, whose
        keyword arguments ``stream`` are)."""
        return lse_softmax_mean(x, self.memories, self.beta, **stream)

    def _lsr_energy(self, x: torch.Tensor) -> torch.Tensor:
        """LSR energy (B,) at states x (B, D) with no gradient, by the cheapest pass."""
        if self.lsr_index(x) is None:  # Z alone: one matmul per chunk, not two
            return lsr_energy(x, self.memories, self.beta, eps=self.eps, chunk_size=self.chunk_size)
        return lsr_energy_from_stats(self._lsr_stats(x)[0], self.beta, self.eps)

    @torch.no_grad()
    def update(self, x: Any) -> torch.Tensor:
        """One update of states x (B, D) (or (D,)), and nothing else: for the LSE energies the
        attention (Hopfield) update, the softmax-weighted mean of the memories itself (by the
        fused attention kernel on CUDA, by the streaming pass on a CPU); for LSR the
        fixed-point update, the centroid of the active memories (a state with none stays).
        The states of ``retrieve(x, steps=1, method="attention")`` (LSR: ``"fixed_point"``)
        up to rounding, at the cost of one pass over the memories and no energy."""
        x, single = self._states(x)
        method = "fixed_point" if self.energy_name == "lsr" else "attention"
        new = self._retrieval(method, record_energies=False, step_size=1.0)[0](x, 0)[1]
        return new[0] if single else new

    def _check_method(self, method: str) -> None:
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
