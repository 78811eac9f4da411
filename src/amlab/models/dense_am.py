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
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from amlab.dynamics import StepSize, Trajectory, descend
from amlab.energy.distances import nearest_memory, sq_norms
from amlab.energy.lse import lse_energy, lse_energy_grad, memory_bias
from amlab.energy.lsr import lsr_energy, lsr_energy_from_stats, lsr_energy_grad, lsr_support_stats
from amlab.errors import (
    AmlabError,
    as_float_tensor,
    check_choice,
    check_positive,
    check_positive_int,
)
from amlab.io import load_model, save_model

ENERGIES = ("lse", "lsr", "lse_dot")
METHODS = ("gd", "attention", "fixed_point")
_DEFAULT_STEP = {"gd": 0.1, "attention": 1.0, "fixed_point": 1.0}
_DEFAULT_TOL = {"gd": 1e-6, "attention": 1e-6, "fixed_point": 0.0}


class DenseAM(nn.Module):
    """Dense Associative Memory over ``memories`` (M, D).

    Args:
        memories: (M, D) stored patterns; float32 unless given float64.
        energy: "lse", "lsr" or "lse_dot".
        beta: inverse temperature, > 0.
        eps: LSR's floor inside the log (>= 0); ignored by the LSE energies.
        chunk_size: memories processed at once (None picks it from the batch size);
            peak memory grows with the chunk, not with M.
    """

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
        self.register_buffer("memories", mem.contiguous())

    # -- facts ---------------------------------------------------------------------------
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

    # -- energy and gradient -------------------------------------------------------------
    def energy(self, x: Any) -> torch.Tensor:
        """Energy (B,) of states x (B, D) (or a scalar for x of shape (D,)).

        Differentiable by autograd (in x and in the memories).
        """
        x, single = self._states(x)
        if self.energy_name == "lsr":
            e = lsr_energy(x, self.memories, self.beta, eps=self.eps, chunk_size=self.chunk_size)
        else:
            e = lse_energy(
                x, self.memories, self.beta, form=self._lse_form, chunk_size=self.chunk_size
            )
        return e[0] if single else e

    forward = energy

    def grad(self, x: Any) -> torch.Tensor:
        """Analytic gradient dE/dx (B, D) (or (D,))."""
        return self.energy_and_grad(x)[1]

    def energy_and_grad(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy (B,) and analytic gradient (B, D) in one pass over the memories."""
        x, single = self._states(x)
        e, g = self._energy_grad_oracle()(x.detach(), 0)
        return (e[0], g[0]) if single else (e, g)

    # -- retrieval -----------------------------------------------------------------------
    def retrieve(
        self,
        x: Any,
        steps: int = 1000,
        step_size: StepSize | None = None,
        tol: float | None = None,
        clamp: Any = None,
        method: str = "gd",
        record_states: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Trajectory:
        """Descend the energy from states x (B, D) (or (D,)).

        step_size: a number or a schedule ``t -> step``; default 0.1 for "gd", 1 otherwise.
        tol: a query stops when no entry moves more than tol in a step; default 1e-6,
            and 0 for "fixed_point" (stop when the active set repeats).
        clamp: bool mask (B, D) or (D,), True for observed entries that stay fixed.
        on_step: progress callback, see :func:`~amlab.dynamics.descend`.
        Returns a :class:`~amlab.dynamics.Trajectory` (states, energies per step,
        converged flag and number of steps per query).
        """
        method = check_choice(method, "method", METHODS)
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
        x, single = self._states(x)
        mask = None if clamp is None else self._clamp_mask(clamp, x.shape)
        oracle = (
            self._fixed_point_oracle() if method == "fixed_point" else self._energy_grad_oracle()
        )
        result = descend(
            oracle,
            x.detach(),
            steps=steps,
            step_size=_DEFAULT_STEP[method] if step_size is None else step_size,
            tol=_DEFAULT_TOL[method] if tol is None else tol,
            clamp=mask,
            record_states=record_states,
            on_step=on_step,
        )
        if single:
            result = Trajectory(
                result.states[0],
                result.energies[:, 0],
                result.converged[0],
                result.steps[0],
                None if result.path is None else result.path[:, 0],
            )
        return result

    def nearest(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Index (B,) of the nearest memory to each state and the distance (B,) to it."""
        x, single = self._states(x)
        idx, dist = nearest_memory(x, self.memories, chunk_size=self.chunk_size)
        return (idx[0], dist[0]) if single else (idx, dist)

    # -- saving --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the memories (safetensors) and the configuration (JSON) into directory path."""
        save_model(
            path,
            "DenseAM",
            {
                "energy": self.energy_name,
                "beta": self.beta,
                "eps": self.eps,
                "chunk_size": self.chunk_size,
            },
            {"memories": self.memories},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> DenseAM:
        """Load a DenseAM written by :meth:`save`."""
        config, tensors = load_model(path, "DenseAM")
        if set(tensors) != {"memories"}:
            raise AmlabError(
                f"{path} holds tensors {sorted(tensors)}, expected only "
                "'memories'; re-save the model."
            )
        try:
            return cls(tensors["memories"], **config)
        except TypeError as exc:
            raise AmlabError(
                f"the configuration in {path} does not fit DenseAM ({exc}); re-save the model."
            ) from None

    # -- internals -----------------------------------------------------------------------
    @property
    def _lse_form(self) -> str:
        return "dot" if self.energy_name == "lse_dot" else "distance"

    def _energy_grad_oracle(self):
        mem, beta, chunk = self.memories, self.beta, self.chunk_size
        if self.energy_name == "lsr":
            mem_sq = sq_norms(mem)
            return lambda x, t: lsr_energy_grad(
                x, mem, beta, eps=self.eps, mem_sq=mem_sq, chunk_size=chunk
            )
        form = self._lse_form
        bias = memory_bias(mem, form)
        return lambda x, t: lse_energy_grad(x, mem, beta, form=form, bias=bias, chunk_size=chunk)

    def _fixed_point_oracle(self):
        mem, beta, eps, chunk = self.memories, self.beta, self.eps, self.chunk_size
        mem_sq = sq_norms(mem)

        def oracle(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            z, count, active_sum = lsr_support_stats(x, mem, beta, mem_sq=mem_sq, chunk_size=chunk)
            centroid = active_sum / count.clamp_min(1)[:, None]
            direction = torch.where((count > 0)[:, None], x - centroid, torch.zeros_like(x))
            return lsr_energy_from_stats(z, beta, eps), direction

        return oracle

    def _states(self, x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
        """Checked states as (B, D) in the memories' dtype, and whether x was one state (D,)."""
        t = as_float_tensor(x, name, dtype=self.memories.dtype)
        if t.device != self.memories.device:
            raise AmlabError(
                f"{name} is on {t.device} but the memories are on "
                f"{self.memories.device}; move one of them, e.g. "
                f"model.to({str(t.device)!r})."
            )
        single = t.ndim == 1
        if single:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise AmlabError(
                f"{name} must have shape (B, {self.dim}) or ({self.dim},) to match "
                f"the memories; got {tuple(t.shape)}."
            )
        return t, single

    def _clamp_mask(self, clamp: Any, shape: torch.Size) -> torch.Tensor:
        mask = (
            torch.as_tensor(clamp, device=self.memories.device)
            if not isinstance(clamp, torch.Tensor)
            else clamp.to(self.memories.device)
        )
        if mask.dtype != torch.bool:
            if (
                mask.is_floating_point()
                or mask.is_complex()
                or not bool(((mask == 0) | (mask == 1)).all())
            ):
                raise AmlabError(
                    "clamp must be a boolean mask (True = observed entry that "
                    f"stays fixed); got dtype {mask.dtype}."
                )
            mask = mask.bool()
        if mask.shape not in (shape, shape[1:]):
            raise AmlabError(
                f"clamp must have shape {tuple(shape)} or {tuple(shape[1:])} like "
                f"the states; got {tuple(mask.shape)}."
            )
        return mask
