"""The one descent engine: ``x <- x - step * direction(x)``.

Every retrieval in amlab runs through :func:`descend`. The caller supplies an oracle
that returns the energy and a descent direction at the current states: the gradient
itself (gradient descent), or a positively rescaled gradient (LSR's exact centroid
update is the gradient times (eps + Z) / count, taken with step 1). The engine adds
the rest: step-size schedules, clamping of observed entries, a per-query convergence
test (queries that converge stop moving), and the recorded energy trajectory, with the
named parts of the energy when the oracle reports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from amlab.errors import AmlabError, check_positive, check_steps

#: oracle(x (b, D), step index) -> (energy (b,), descent direction (b, D)), optionally
#: followed by a dict of named energy parts, each (b,), the same names at every call
Oracle = Callable[
    [torch.Tensor, int],
    tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
]
StepSize = float | Callable[[int], float]


@dataclass
class Trajectory:
    """What a descent returns.

    states: final states (B, D).
    energies: energy after each step (n + 1, B); row 0 is the start. n is the number of
        steps the slowest query took: T, or fewer when every query converged before the
        last step. A query that has converged keeps its last energy in the later rows.
    converged: (B,) True where the last step moved no free entry by more than ``tol``
        and the energy there is finite.
    steps: (B,) number of steps each query took.
    path: (n + 1, B, D) states after each step, when ``record_states`` was set.
    parts: the named energy parts the oracle reported, each (n + 1, B) and recorded as
        ``energies`` is; None when the oracle reports none.
    """

    states: torch.Tensor
    energies: torch.Tensor
    converged: torch.Tensor
    steps: torch.Tensor
    path: torch.Tensor | None = None
    parts: dict[str, torch.Tensor] | None = None


def cosine_schedule(start: float, end: float, steps: int) -> Callable[[int], float]:
    """Step size falling from ``start`` to ``end`` along a half cosine over ``steps`` steps."""
    start, end = check_positive(start, "start"), check_positive(end, "end")
    steps = check_steps(steps)

    def step_size(t: int) -> float:
        frac = min(t, steps - 1) / max(steps - 1, 1)
        return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * frac))

    return step_size


def descend(
    oracle: Oracle,
    x: torch.Tensor,
    *,
    steps: int,
    step_size: StepSize,
    tol: float = 0.0,
    clamp: torch.Tensor | None = None,
    record_states: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    differentiable: bool = False,
) -> Trajectory:
    """Run ``x <- x - step_size(t) * direction`` for at most ``steps`` steps.

    x: start states (B, D); not modified.
    clamp: optional bool mask (B, D) or (D,), True for entries that never move.
    tol: a query has converged when its step moves no entry by more than ``tol``;
        it then stops (tol = 0 stops only when the state repeats exactly).
    on_step: called as on_step(step, number of queries still moving) after each step
        (for progress bars).
    differentiable: keep the states in the autograd graph, so a loss on the result can be
        differentiated through all the steps (training a model whose forward pass is
        this descent, such as the Energy Transformer). Every query then takes every step
        (no query is frozen), states are never written in place, and the energies (and
        their parts) stay differentiable too; ``converged`` reports the last step's move
        against ``tol``.
    """
    steps = check_steps(steps, allow_zero=True)
    tol = check_positive(tol, "tol", allow_zero=True)
    schedule = (
        step_size if callable(step_size) else _constant(check_positive(step_size, "step_size"))
    )
    free = None
    if clamp is not None:
        free = ~torch.broadcast_to(clamp.to(device=x.device, dtype=torch.bool), x.shape)
    if differentiable:
        return _descend_all(oracle, x, steps, schedule, tol, free, record_states, on_step)
    x = x.detach().clone()
    batch = x.shape[0]

    values, direction, names = _evaluate(oracle, x, 0, None)
    current = [value.detach().clone() for value in values]  # [energy, *parts] of each query
    rows = [[value.clone() for value in current]]
    path = [x.clone()] if record_states else None
    active = torch.arange(batch, device=x.device)
    n_steps = torch.zeros(batch, dtype=torch.long, device=x.device)
    converged = torch.zeros(batch, dtype=torch.bool, device=x.device)

    for t in range(steps):
        if active.numel() == 0:
            break
        h = schedule(t)
        delta = direction.mul(-h)
        if free is not None:
            delta = delta * free[active]
        moved_states = x[active] + delta
        _check_finite(moved_states, t)
        x[active] = moved_states
        n_steps[active] += 1
        moved = delta.abs().amax(1) if x.shape[1] else delta.new_zeros(active.numel())
        new_values, new_direction, _ = _evaluate(oracle, moved_states, t + 1, names)
        for value, new_value in zip(current, new_values, strict=True):
            value[active] = new_value.detach()
        rows.append([value.clone() for value in current])
        if path is not None:
            path.append(x.clone())
        done = moved <= tol
        converged[active[done]] = True
        active = active[~done]
        direction = new_direction[~done]
        if on_step is not None:
            on_step(t + 1, active.numel())

    converged &= torch.isfinite(current[0])
    energies, parts = _columns(rows, names)
    return Trajectory(
        states=x,
        energies=energies,
        converged=converged,
        steps=n_steps,
        path=torch.stack(path) if path is not None else None,
        parts=parts,
    )


def _descend_all(
    oracle: Oracle,
    x: torch.Tensor,
    steps: int,
    schedule: Callable[[int], float],
    tol: float,
    free: torch.Tensor | None,
    record_states: bool,
    on_step: Callable[[int, int], None] | None,
) -> Trajectory:
    """:func:`descend` with every query taking every step, inside the autograd graph."""
    values, direction, names = _evaluate(oracle, x, 0, None)
    rows, path = [values], [x]
    moved = x.new_full((x.shape[0],), math.inf)
    for t in range(steps):
        delta = direction * -schedule(t)
        if free is not None:
            delta = delta * free
        x = x + delta
        _check_finite(x, t)
        moved = delta.detach().abs().amax(1) if x.shape[1] else moved.new_zeros(x.shape[0])
        values, direction, _ = _evaluate(oracle, x, t + 1, names)
        rows.append(values)
        path.append(x)
        if on_step is not None:
            on_step(t + 1, x.shape[0])
    energies, parts = _columns(rows, names)
    return Trajectory(
        states=x,
        energies=energies,
        converged=(moved <= tol) & torch.isfinite(energies[-1].detach()),
        steps=torch.full((x.shape[0],), steps, dtype=torch.long, device=x.device),
        path=torch.stack(path) if record_states else None,
        parts=parts,
    )


def _evaluate(
    oracle: Oracle, x: torch.Tensor, t: int, names: tuple[str, ...] | None
) -> tuple[list[torch.Tensor], torch.Tensor, tuple[str, ...]]:
    """The oracle at states x: [energy, *energy parts] (each (b,)), the descent direction
    and the parts' names, which must be ``names`` (those of the first call) when given."""
    energy, direction, *rest = oracle(x, t)
    parts = rest[0] if rest else {}
    if names is not None and tuple(parts) != names:
        raise AmlabError(
            f"the oracle reported energy parts {list(parts)} at step {t} but {list(names)} "
            "at the start; report the same parts at every call."
        )
    return [energy, *parts.values()], direction, tuple(parts)


def _columns(
    rows: list[list[torch.Tensor]], names: tuple[str, ...]
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The recorded rows [energy, *parts] of each step as energies (n + 1, B) and the parts
    by name, each (n + 1, B) (None when there are none)."""
    energies, *parts = (torch.stack(column) for column in zip(*rows, strict=True))
    return energies, dict(zip(names, parts, strict=True)) or None


def _check_finite(states: torch.Tensor, t: int) -> None:
    if not bool(torch.isfinite((states.detach() * states.detach()).sum(1)).all()):
        raise AmlabError(
            f"descent diverged at step {t + 1}: the states grew beyond the range of "
            f"{states.dtype}. Use a smaller step_size (for the LSE energies a step of at most "
            "1 is stable)."
        )


def _constant(value: float) -> Callable[[int], float]:
    return lambda t: value
