"""What every denoiser shares: D(x, t) ~ E[x_0 | x_t = x], and the score and energy it implies.

A subclass works in the scaled coordinates ``y = x / alpha_t = x_0 + s_t z`` (see
:mod:`amlab.diffusion.schedules`) and supplies

- ``denoise_scaled(y, s, labels)``: the denoised states (B, D) at noise level s, and
- ``energy_scaled(y, s, labels)``: an energy (B,) whose descent step of size 1 *is* the
  denoiser, ``D(y) = y - grad_y E(y)`` (where the model has one).

The energy is in the units of a DenseAM's LSE energy: for K stored points it is exactly
``E_t(y) = -s^2 log sum_mu exp(-||y - xi_mu||^2 / (2 s^2))``, the LSE energy with beta = 1/s^2,
so ``-log p_t(x) = E_t(x / alpha_t) / s_t^2 + const`` and ``score = -grad_x E_t / s_t^2``.

Class conditioning: ``labels`` (B,) holds a class index per state, or -1 for "no class"
(the unconditional model). Classifier-free guidance with scale w combines the two:
``D_w = D_uncond + w (D_cond - D_uncond)`` (and the same for the energy), so w = 0 is the
unconditional model, w = 1 the conditional one, and w > 1 pushes further towards the class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from amlab.diffusion.samplers import ScoreFn
from amlab.diffusion.schedules import Schedule, schedule_from_config
from amlab.dynamics import StepSize, Trajectory, descend
from amlab.errors import AmlabError, check_positive
from amlab.models.model import Model

#: label meaning "no class": the unconditional model
NO_CLASS = -1


class Denoiser(Model):
    """Base class of the denoisers; ``dim`` is the state dimension D; ``schedule`` a
    Schedule or its ``config()``. ``forward(x, t, ...)`` is the denoised states,
    :meth:`denoise`."""

    #: whether :meth:`energy_scaled` exists (and the denoiser is its descent step)
    has_energy = True

    def __init__(self, schedule: Schedule | dict[str, Any], dim: int, num_classes: int = 0) -> None:
        super().__init__()
        if isinstance(schedule, dict):
            schedule = schedule_from_config(schedule)
        if not isinstance(schedule, Schedule):
            raise AmlabError(
                f"schedule must be a VESchedule or VPSchedule; got {type(schedule).__name__}."
            )
        self.schedule = schedule
        self.dim = int(dim)
        self.num_classes = int(num_classes)

    @property
    def conditional(self) -> bool:
        """Whether the denoiser takes labels (classes, or a prompt's token ids)."""
        return self.num_classes > 0

    # -- supplied by subclasses ----------------------------------------------------------------
    def denoise_scaled(
        self, y: torch.Tensor, s: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Denoised states (B, D) from scaled states y (B, D) at noise level s (float or (B,))."""
        raise NotImplementedError

    def energy_scaled(
        self, y: torch.Tensor, s: float | torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Energy (B,) of scaled states y at noise level s; D = y - grad_y E."""
        raise AmlabError(f"{type(self).__name__} has no energy; build it with energy=True.")

    # -- the shared surface --------------------------------------------------------------------
    def denoise(self, x: Any, t: float, labels: Any = None, guidance: float = 1.0) -> torch.Tensor:
        """D(x, t) (B, D): the estimate of the clean data x_0 given x_t = x (B, D).

        labels: (B,) class per state (-1: none) for a class-conditional model, or None.
        guidance: classifier-free guidance scale w (used only with labels).
        """
        y, s, labels = self._inputs(x, t, labels)
        return self._guided(lambda lab: self.denoise_scaled(y, s, lab), labels, guidance)

    def forward(self, x: Any, t: float, labels: Any = None, guidance: float = 1.0) -> torch.Tensor:
        """The denoised states D(x, t) (B, D): :meth:`denoise`."""
        return self.denoise(x, t, labels, guidance)

    def score(self, x: Any, t: float, labels: Any = None, guidance: float = 1.0) -> torch.Tensor:
        """grad_x log p_t(x) (B, D) implied by the denoiser: (alpha_t D(x, t) - x) / sigma_t^2."""
        x = self._check_states(x)
        t = self.schedule.check_time(t)
        denoised = self.denoise(x, t, labels, guidance)
        return (self.schedule.alpha(t) * denoised - x) / self.schedule.sigma(t) ** 2

    def energy(self, x: Any, t: float, labels: Any = None, guidance: float = 1.0) -> torch.Tensor:
        """E_t(x / alpha_t) (B,): score = -grad_x E_t / s_t^2; differentiable by autograd."""
        y, s, labels = self._inputs(x, t, labels)
        return self._guided(lambda lab: self.energy_scaled(y, s, lab), labels, guidance)

    def score_fn(self, labels: Any = None, guidance: float = 1.0) -> ScoreFn:
        """``(x, t) -> score``, for :func:`amlab.diffusion.sample`."""
        return lambda x, t: self.score(x, t, labels, guidance)

    def grad(self, x: Any, t: float, labels: Any = None, guidance: float = 1.0) -> torch.Tensor:
        """grad_x E_t (B, D) at states x (B, D), by autograd (score = -grad / s_t^2)."""
        return self.energy_and_grad(x, t, labels, guidance)[1]

    def energy_and_grad(
        self, x: Any, t: float, labels: Any = None, guidance: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """E_t (B,) and grad_x E_t (B, D) at states x (B, D), detached."""
        return self._energy_and_grad(self._check_states(x), t, labels, guidance)

    def _energy_and_grad(
        self, x: torch.Tensor, t: float, labels: Any, guidance: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`energy_and_grad` of states x that are already a tensor; :meth:`energy`
        checks them (once: a descent step pays one finiteness check, not two)."""
        with torch.enable_grad():
            state = x.detach().requires_grad_(True)
            e = self.energy(state, t, labels, guidance)
            (g,) = torch.autograd.grad(e.sum(), state)
        return e.detach(), g.detach()

    def energy_oracle(
        self, t: float, labels: Any = None, guidance: float = 1.0
    ) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
        """``(x, step) -> (E_t (B,), grad_x E_t (B, D))`` at a fixed time t, for plain energy
        descent with :func:`amlab.dynamics.descend`."""
        t = self.schedule.check_time(t)
        return lambda x, step: self._energy_and_grad(x, t, labels, guidance)

    def retrieve(
        self,
        x: Any,
        t: float,
        steps: int = 1000,
        step_size: StepSize = 1.0,
        tol: float = 1e-6,
        labels: Any = None,
        guidance: float = 1.0,
        record_states: bool = False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Trajectory:
        """Gradient descent ``x <- x - step_size grad_x E_t`` on the energy at the fixed time t
        from states x (B, D) (for a VE schedule a step of 1 is x <- D(x, t)); the rest as in
        :func:`~amlab.dynamics.descend`."""
        return descend(
            self.energy_oracle(t, labels, guidance),
            self._check_states(x),
            steps=steps,
            step_size=step_size,
            tol=tol,
            record_states=record_states,
            on_step=on_step,
        )

    # -- checks --------------------------------------------------------------------------------
    def _check_states(self, x: Any) -> torch.Tensor:
        t = self._as_input(x)
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise AmlabError(f"x must have shape (B, {self.dim}); got {tuple(t.shape)}.")
        return t

    def _check_labels(self, labels: Any, batch: int) -> torch.Tensor | None:
        if labels is None:
            return None
        if self.num_classes == 0:
            raise AmlabError(
                f"{type(self).__name__} is unconditional; pass labels=None or build it with "
                "num_classes > 0."
            )
        lab = torch.as_tensor(labels, device=self.device)
        if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
            raise AmlabError(f"labels must be integers (class indices); got dtype {lab.dtype}.")
        lab = lab.long().reshape(-1) if lab.ndim == 0 else lab.long()
        if lab.numel() == 1 and batch != 1:
            lab = lab.expand(batch)
        if lab.shape != (batch,):
            raise AmlabError(f"labels must have shape ({batch},); got {tuple(lab.shape)}.")
        if lab.numel() and not bool(((lab >= NO_CLASS) & (lab < self.num_classes)).all()):
            raise AmlabError(
                f"labels must lie in [-1, {self.num_classes - 1}] (-1: no class); got "
                f"{lab.min().item()}..{lab.max().item()}."
            )
        return lab

    def _inputs(self, x: Any, t: float, labels: Any):
        x = self._check_states(x)
        t = self.schedule.check_time(t)
        return (
            x / self.schedule.alpha(t),
            self.schedule.noise_level(t),
            self._check_labels(labels, x.shape[0]),
        )

    def _guided(self, f, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        if labels is None:
            return f(None)
        w = check_positive(guidance, "guidance", allow_zero=True)
        unconditional = f(torch.full_like(labels, NO_CLASS))
        return unconditional + w * (f(labels) - unconditional)
