"""What every associative memory in amlab shares: energy, grad, retrieve (and forward, the
retrieved states) over states (B, D), on top of the protocol of :class:`~amlab.models.Model`.

A subclass supplies the energy (:meth:`_energy`, differentiable by autograd), an oracle
per retrieval method (:meth:`_oracle`: energy and descent direction in one pass) and the
dimension. Retrieval always runs through the one descent engine,
:func:`amlab.dynamics.descend`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from amlab.dynamics import EnergyFn, Oracle, StepSize, Trajectory, descend
from amlab.errors import AmlabError, check_choice, check_squares_finite
from amlab.models.model import Model


class AssociativeMemory(Model):
    """Base class: an energy over states (B, D) and descent on it."""

    #: retrieval methods -> (default step size, default tol); the first is the default
    METHODS: ClassVar[dict[str, tuple[float, float]]] = {"gd": (0.1, 1e-6)}
    #: whether retrieval must shrink the batch at the same steps in every process (see
    #: ``lockstep`` in :func:`~amlab.dynamics.descend`): memories sharded over processes
    _LOCKSTEP: ClassVar[bool] = False

    # -- to be supplied by subclasses ------------------------------------------------------
    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        """Energy (B,) of checked states (B, D), differentiable by autograd."""
        raise NotImplementedError

    def _oracle(self, method: str) -> Oracle:
        """``(x, t) -> (energy (B,), descent direction (B, D))`` for ``method``."""
        raise NotImplementedError

    def _retrieval(
        self, method: str, record_energies: bool, step_size: StepSize | None = None
    ) -> tuple[Oracle, EnergyFn | None, bool]:
        """What :meth:`retrieve` descends with (at ``step_size``): the oracle, an energy-only
        evaluation for the final states (None: the oracle's) and whether the oracle returns
        the updated state itself (see ``toward`` in :func:`~amlab.dynamics.descend`). By
        default the ``_oracle`` of ``method``; a subclass may supply cheaper ones."""
        return self._oracle(method), None, False

    # -- the shared surface ----------------------------------------------------------------
    def energy(self, x: Any) -> torch.Tensor:
        """Energy (B,) of states x (B, D) (a scalar for x of shape (D,)); differentiable."""
        x, single = self._states(x)
        e = self._energy(x)
        return e[0] if single else e

    def forward(self, x: Any) -> torch.Tensor:
        """The retrieved states (B, D) (or (D,)): ``retrieve(x).states`` with every default
        (the first method, at most 1000 steps, its default step size and tol), recording no
        energies."""
        return self.retrieve(x, record_energies=False).states

    def grad(self, x: Any) -> torch.Tensor:
        """Analytic gradient dE/dx (B, D) (or (D,))."""
        return self.energy_and_grad(x)[1]

    def energy_and_grad(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy (B,) and analytic gradient (B, D) in one pass."""
        x, single = self._states(x)
        e, g = self._oracle("gd")(x.detach(), 0)
        return (e[0], g[0]) if single else (e, g)

    def retrieve(
        self,
        x: Any,
        steps: int = 1000,
        step_size: StepSize | None = None,
        tol: float | None = None,
        clamp: Any = None,
        method: str | None = None,
        record_states: bool = False,
        on_step: Callable[[int, int], None] | None = None,
        record_energies: bool = True,
    ) -> Trajectory:
        """Descend the energy from states x (B, D) (or (D,)).

        method: one of ``METHODS`` (default: the first, gradient descent).
        step_size: a number or a schedule ``t -> step``; default per method.
        tol: a query stops when no entry moves more than tol in a step; default per method.
        clamp: bool mask (B, D) or (D,), True for observed entries that stay fixed.
        record_states: also return every intermediate state (``path``).
        on_step: progress callback, see :func:`~amlab.dynamics.descend`.
        record_energies: False records no energies (``energies`` is None): T steps then
            cost T passes and nothing else; with them, one energy evaluation more.
        Returns a :class:`~amlab.dynamics.Trajectory`: final states, energy after each step,
        converged flag and number of steps per query.
        """
        method = check_choice(
            next(iter(self.METHODS)) if method is None else method, "method", tuple(self.METHODS)
        )
        default_step, default_tol = self.METHODS[method]
        step_size = default_step if step_size is None else step_size
        oracle, energy, toward = self._retrieval(method, record_energies, step_size)
        x, single = self._states(x)
        mask = None if clamp is None else self._clamp_mask(clamp, x.shape)
        result = descend(
            oracle,
            x.detach(),
            steps=steps,
            step_size=step_size,
            tol=default_tol if tol is None else tol,
            clamp=mask,
            record_states=record_states,
            record_energies=record_energies,
            energy=energy,
            toward=toward,
            on_step=on_step,
            lockstep=self._LOCKSTEP,
        )
        if single:
            result = Trajectory(
                result.states[0],
                None if result.energies is None else result.energies[:, 0],
                result.converged[0],
                result.steps[0],
                None if result.path is None else result.path[:, 0],
                None if result.parts is None else {k: v[:, 0] for k, v in result.parts.items()},
            )
        return result

    # -- checks ----------------------------------------------------------------------------
    def _states(self, x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
        """Checked states as (B, D) in the model's dtype, and whether x was one state (D,)."""
        t = self._as_input(x, name)
        single = t.ndim == 1
        if single:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise AmlabError(
                f"{name} must have shape (B, {self.dim}) or ({self.dim},) to match the "
                f"model; got {tuple(t.shape)}."
            )
        return check_squares_finite(t, name), single

    def _clamp_mask(self, clamp: Any, shape: torch.Size) -> torch.Tensor:
        device = self.device
        mask = (
            clamp.to(device)
            if isinstance(clamp, torch.Tensor)
            else torch.as_tensor(clamp, device=device)
        )
        if mask.dtype != torch.bool:
            if (
                mask.is_floating_point()
                or mask.is_complex()
                or not bool(((mask == 0) | (mask == 1)).all())
            ):
                raise AmlabError(
                    "clamp must be a boolean mask (True = observed entry that stays fixed); "
                    f"got dtype {mask.dtype}."
                )
            mask = mask.bool()
        if mask.shape not in (shape, shape[1:]):
            raise AmlabError(
                f"clamp must have shape {tuple(shape)} or {tuple(shape[1:])} like the states; "
                f"got {tuple(mask.shape)}."
            )
        return mask
