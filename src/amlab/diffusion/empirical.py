"""The exact optimal denoiser of a finite training set: an LSE Dense Associative Memory.

For K training points xi_mu and x_t = alpha_t x_0 + sigma_t z with x_0 drawn uniformly from
them, the posterior mean is (papers.md section 4)

    E[x_0 | x_t = x] = sum_mu softmax_mu(-||y - xi_mu||^2 / (2 s_t^2)) xi_mu,   y = x / alpha_t,

which is one attention (Hopfield) update of ``DenseAM(xi, energy="lse", beta=1/s_t^2)`` at y:
gradient descent with step 1 on E_t(y) = -s_t^2 log sum_mu exp(-||y - xi_mu||^2 / (2 s_t^2)).
For a VE schedule y = x and s_t = sigma_t, so beta_t = 1 / sigma_t^2; for VP, beta_t =
alpha_t^2 / sigma_t^2 on the rescaled state x / alpha_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from amlab.diffusion.denoiser import Denoiser
from amlab.diffusion.schedules import Schedule
from amlab.errors import AmlabError, dtype_name
from amlab.models.dense_am import DenseAM


@dataclass(frozen=True)
class EmpiricalDenoiserConfig:
    """What :class:`EmpiricalDenoiser` is built with besides its data; the schedule as its
    ``Schedule.config()``."""

    schedule: dict[str, Any]
    chunk_size: int | None = None
    dtype: str = "float32"


class EmpiricalDenoiser(Denoiser):
    """The exact denoiser of the training set ``data`` (K, D) under ``schedule`` (a Schedule
    or its ``config()``).

    ``memory_at(t)`` is the DenseAM it is at time t; :meth:`denoise` is one attention step of
    that DenseAM and :meth:`energy` its LSE energy. chunk_size: memories per chunk, as in
    DenseAM (peak memory does not grow with K). dtype: as DenseAM's (None: float64 data
    stay float64, anything else becomes float32). Its one tensor is ``memory.memories``.
    """

    Config = EmpiricalDenoiserConfig

    def __init__(
        self,
        data: Any,
        schedule: Schedule | dict[str, Any],
        chunk_size: int | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        memory = DenseAM(data, energy="lse", beta=1.0, chunk_size=chunk_size, dtype=dtype)
        super().__init__(schedule, memory.dim)
        self.memory = memory

    @property
    def config(self) -> EmpiricalDenoiserConfig:
        return EmpiricalDenoiserConfig(
            self.schedule.config(), self.memory.chunk_size, dtype_name(self.dtype)
        )

    @classmethod
    def from_saved(
        cls, config: EmpiricalDenoiserConfig, tensors: dict[str, torch.Tensor]
    ) -> EmpiricalDenoiser:
        """The denoiser of the saved training set ``memory.memories``."""
        return cls(tensors["memory.memories"], config.schedule, config.chunk_size, config.dtype)

    @property
    def memories(self) -> torch.Tensor:
        """The training set (K, D)."""
        return self.memory.memories

    def dense_am(self, beta: float) -> DenseAM:
        """The LSE DenseAM over the training set at inverse temperature beta."""
        return self.memory.with_beta(beta)

    def memory_at(self, t: float) -> DenseAM:
        """The DenseAM whose attention step is the denoiser at time t (beta = 1/s_t^2),
        acting on the scaled states x / alpha_t."""
        return self.dense_am(self.schedule.beta(self.schedule.check_time(t)))

    def denoise_scaled(
        self, y: torch.Tensor, s: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        am = self.dense_am(_scalar_level(s) ** -2)
        return am.update(y)  # one attention step: the softmax-weighted mean of the data

    def energy_scaled(
        self, y: torch.Tensor, s: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.dense_am(_scalar_level(s) ** -2).energy(y)


def _scalar_level(s: float | torch.Tensor) -> float:
    if isinstance(s, torch.Tensor):
        if s.numel() == 0 or not bool((s == s.reshape(-1)[0]).all()):
            raise AmlabError(
                "the empirical denoiser takes one noise level per call (one DenseAM); "
                "group states by noise level."
            )
        s = s.reshape(-1)[0].item()
    return float(s)
