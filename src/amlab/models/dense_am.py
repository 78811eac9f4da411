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
"""

from __future__ import annotations

import math
from typing import Any

import torch

from amlab.dynamics import Oracle
from amlab.energy.distances import nearest_memory, sq_norms
from amlab.energy.lse import lse_energy, lse_energy_grad, memory_bias
from amlab.energy.lsr import lsr_energy, lsr_energy_from_stats, lsr_energy_grad, lsr_support_stats
from amlab.errors import (
    AmlabError,
    as_float_tensor,
    check_choice,
    check_positive,
    check_positive_int,
    check_squares_finite,
)
from amlab.models.base import AssociativeMemory

ENERGIES = ("lse", "lsr", "lse_dot")


class DenseAM(AssociativeMemory):
    """Dense Associative Memory over ``memories`` (M, D).

    Args:
        memories: (M, D) stored patterns; float32 unless given float64.
        energy: "lse", "lsr" or "lse_dot".
        beta: inverse temperature, > 0.
        eps: LSR's floor inside the log (>= 0); ignored by the LSE energies.
        chunk_size: memories processed at once (None picks it from the batch size);
            peak memory grows with the chunk, not with M.
    """

    METHODS = {"gd": (0.1, 1e-6), "attention": (1.0, 1e-6), "fixed_point": (1.0, 0.0)}

    def __init__(
        self,
        memories: Any,
        energy: str = "lse",
        beta: float = 1.0,
        eps: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.energy_name = check_choice(energy, "energy", ENERGIES)
        self.beta = check_positive(beta, "beta")
        self.eps = check_positive(eps, "eps", allow_zero=True)
        self.chunk_size = (
            None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        )
        mem = as_float_tensor(memories, "memories").detach()
        if mem.ndim != 2 or mem.shape[0] == 0 or mem.shape[1] == 0:
            raise AmlabError(
                f"memories must have shape (M, D) with M >= 1 and D >= 1; got "
                f"{tuple(mem.shape)}. Stack your patterns as rows."
            )
        self.register_buffer("memories", check_squares_finite(mem, "memories").contiguous())

    @property
    def num_memories(self) -> int:
        return self.memories.shape[0]

    @property
    def dim(self) -> int:
        return self.memories.shape[1]

    @property
    def support_radius(self) -> float:
        """LSR's support radius sqrt(2/beta)."""
        return math.sqrt(2.0 / self.beta)

    def extra_repr(self) -> str:
        return (
            f"energy={self.energy_name!r}, beta={self.beta:g}, eps={self.eps:g}, "
            f"memories=({self.num_memories}, {self.dim}), dtype={self.memories.dtype}"
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

    def _reference(self) -> torch.Tensor:
        return self.memories

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        if self.energy_name == "lsr":
            return lsr_energy(x, self.memories, self.beta, eps=self.eps, chunk_size=self.chunk_size)
        return lse_energy(
            x, self.memories, self.beta, form=self._lse_form, chunk_size=self.chunk_size
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
        if self.energy_name != "lsr":  # gd and attention: the gradient, steps 0.1 and 1
            form = self._lse_form
            bias = memory_bias(mem, form)
            return lambda x, t: lse_energy_grad(
                x, mem, beta, form=form, bias=bias, chunk_size=chunk
            )
        mem_sq = sq_norms(mem)
        if method == "gd":
            return lambda x, t: lsr_energy_grad(
                x, mem, beta, eps=eps, mem_sq=mem_sq, chunk_size=chunk
            )

        def centroid_step(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            z, count, active_sum = lsr_support_stats(x, mem, beta, mem_sq=mem_sq, chunk_size=chunk)
            centroid = active_sum / count.clamp_min(1)[:, None]
            direction = torch.where((count > 0)[:, None], x - centroid, torch.zeros_like(x))
            return lsr_energy_from_stats(z, beta, eps), direction

        return centroid_step

    # -- saving --------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "energy": self.energy_name,
            "beta": self.beta,
            "eps": self.eps,
            "chunk_size": self.chunk_size,
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"memories": self.memories}

    @classmethod
    def _from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> DenseAM:
        if set(tensors) != {"memories"}:
            raise AmlabError(
                f"expected only the tensor 'memories', found {sorted(tensors)}; re-save the model."
            )
        return cls(tensors["memories"], **config)
