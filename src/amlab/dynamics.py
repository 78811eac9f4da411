"""The one descent engine: ``x <- x - step * direction(x)``.

Every retrieval in amlab runs through :func:`descend`. The caller supplies an oracle
that returns the energy and a descent direction at the current states: the gradient
itself (gradient descent), or a positively rescaled gradient (LSR's exact centroid
update is the gradient times (eps + Z) / count, taken with step 1). An oracle whose update
has a closed form may return the state a step of 1 reaches instead (``toward``: the
attention update's weighted mean, LSR's centroid), which a step then reaches exactly. The
engine adds the rest: step-size schedules, clamping of observed entries, a per-query
convergence test (queries that converge stop moving), and the recorded energy trajectory,
with the named parts of the energy when the oracle reports them. It evaluates the oracle
once per step and never waits for the device inside the loop (see :func:`descend`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from amlab.errors import AmlabError, check_positive, check_steps

#: oracle(x (b, D), step index) -> (energy (b,), descent direction (b, D)), optionally
#: followed by a dict of named energy parts, each (b,), the same names at every call; with
#: ``toward`` the second output is the state a step of 1 reaches, x - direction
Oracle = Callable[
    [torch.Tensor, int],
    tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
]
StepSize = float | Callable[[int], float]
#: energy(x (b, D)) -> energy (b,), or (energy, dict of the oracle's named parts)
EnergyFn = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Trajectory:
    """What a descent returns.

    states: final states (B, D).
    energies: energy after each step (n + 1, B); row 0 is the start. n is the number of
        steps the slowest query took: T, or fewer when every query converged before the
        last step. A query that has converged keeps its last energy in the later rows.
        None when the descent was run with ``record_energies=False``.
    converged: (B,) True where the last step moved no free entry by more than ``tol``
        and the energy there is finite.
    steps: (B,) number of steps each query took.
    path: (n + 1, B, D) states after each step, when ``record_states`` was set.
    parts: the named energy parts the oracle reported, each (n + 1, B) and recorded as
        ``energies`` is; None when the oracle reports none or energies were not recorded.
    """

    states: torch.Tensor
    energies: torch.Tensor | None
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
    record_energies: bool = True,
    energy: EnergyFn | None = None,
    toward: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    differentiable: bool = False,
    lockstep: bool = False,
) -> Trajectory:
    """Run ``x <- x - step_size(t) * direction`` for at most ``steps`` steps.

    Each step evaluates the oracle once, at the states it moves from; the energies after
    the last step come from one more evaluation, by ``energy`` when given (cheaper than the
    oracle: no direction), so T steps cost T oracle calls and one energy evaluation, and with
    ``record_energies=False`` T oracle calls and nothing else.

    x: start states (B, D); not modified.
    clamp: optional bool mask (B, D) or (D,), True for entries that never move.
    tol: a query has converged when its step moves no entry by more than ``tol``;
        it then stops (tol = 0 stops only when the state repeats exactly).
    record_energies: False: no energies (``energies`` and ``parts`` are None) and no
        evaluation after the last step; the oracle may then return None for the energy.
        ``converged`` then checks the energy of the state each query's last step started
        from, where the oracle reported one.
    energy: ``energy(x (b, D)) -> energy (b,)``, or ``(energy, parts)`` with the oracle's
        parts, for the energies after the last step; default: the oracle's.
    toward: the oracle's second output is the state a step of 1 reaches (x minus the
        direction: the attention update's weighted mean, LSR's centroid), and a step of size
        h goes to ``torch.lerp(x, that state, h)``: at h = 1 that state itself, with no
        digits lost to forming ``x - (x - mean)``.
    on_step: called as on_step(step, number of queries still moving) after each step
        (for progress bars; on an accelerator the count may lag a step or two behind).
    differentiable: keep the states in the autograd graph, so a loss on the result can be
        differentiated through all the steps (training a model whose forward pass is
        this descent, such as the Energy Transformer). Every query then takes every step
        (no query is frozen), states are never written in place, and the energies (and
        their parts) stay differentiable too; ``converged`` reports the last step's move
        against ``tol``.
    lockstep: read how many queries still move after every step, waiting for the device,
        so that the batch shrinks at the same steps in every run of the same numbers (an
        oracle whose passes are collectives over processes needs every process to drop
        the same queries at the same step). Changes nothing on a CPU, where the count is
        known at once.

    Nothing inside the loop waits for the device: the finiteness check and the convergence
    bookkeeping stay on it, and the host learns how many queries still move (to stop early
    and to drop converged queries from the batch) through a non-blocking copy that it reads
    once it has arrived (at once on a CPU). A divergence raises when that copy shows it, at
    the latest at the end.
    """
    steps = check_steps(steps, allow_zero=True)
    tol = check_positive(tol, "tol", allow_zero=True)
    schedule = (
        step_size if callable(step_size) else _constant(check_positive(step_size, "step_size"))
    )
    free = None
    if clamp is not None:
        free = ~torch.broadcast_to(clamp.to(device=x.device, dtype=torch.bool), x.shape)
    move = _Mover(schedule, tol, toward)
    if differentiable:
        return _descend_all(
            oracle, x, steps, move, free, record_states, record_energies, energy, on_step
        )
    x = x.detach().clone()  # the final states (B, D), written when queries leave the batch
    batch = x.shape[0]
    n_steps = torch.zeros(batch, dtype=torch.long, device=x.device)
    converged = torch.zeros(batch, dtype=torch.bool, device=x.device)
    last = x.new_zeros(batch)  # energy at the state each query's latest step started from
    rows: list[list[torch.Tensor]] = []  # [energy, *parts] (B,) at the states of each step
    path = [x.clone()] if record_states else None
    work = _Batch.start(x, free, steps)
    names: tuple[str, ...] | None = None
    pending: list[_HostCopy] = []
    moving = batch
    for t in range(steps):
        if moving == 0:
            break
        values, target, names = _evaluate(oracle, work.x, t, names)
        if record_energies:
            values = [value.detach() for value in values]
            rows.append([work.scatter(value, value.new_zeros(batch)) for value in values])
        if values[0] is not None:
            last = work.scatter(values[0].detach(), last)
        work.step(move, target.detach(), t)
        if path is not None:
            full = x.clone()
            work.write_into(full)
            path.append(full)
        pending.append(_HostCopy(torch.stack([work.running.sum(), work.diverged_at]), work.running))
        while pending and (lockstep or pending[0].arrived()):
            report = pending.pop(0)
            moving, diverged_at = report.values()
            _raise_if_diverged(diverged_at, steps, x.dtype)
            if moving < work.size:  # drop the queries that stopped (the count is known: no wait)
                work.write_into(x, n_steps, converged)
                work = work.keep(report.mask, moving)
                pending.clear()  # the copies still on their way describe the old batch
        if on_step is not None:
            on_step(t + 1, moving)
    work.write_into(x, n_steps, converged)
    longest = n_steps.max() if batch else n_steps.new_zeros(())
    n, diverged_at = (int(v) for v in torch.stack([longest, work.diverged_at]))  # waits, once
    _raise_if_diverged(diverged_at, steps, x.dtype)
    energies = parts = None
    if record_energies:
        final, names = _evaluate_energy(oracle, energy, x, steps, names)
        # a query that stopped after s steps has its final energy from row s on
        after = torch.arange(n + 1, device=x.device)[:, None] >= n_steps[None, :]
        energies, parts = _columns([*rows[:n], final], names, after)
        last = final[0]
    converged &= torch.isfinite(last)
    return Trajectory(
        states=x,
        energies=energies,
        converged=converged,
        steps=n_steps,
        path=torch.stack(path[: n + 1]) if path is not None else None,
        parts=parts,
    )


def _descend_all(
    oracle: Oracle,
    x: torch.Tensor,
    steps: int,
    move: _Mover,
    free: torch.Tensor | None,
    record_states: bool,
    record_energies: bool,
    energy: EnergyFn | None,
    on_step: Callable[[int, int], None] | None,
) -> Trajectory:
    """:func:`descend` with every query taking every step, inside the autograd graph."""
    names: tuple[str, ...] | None = None
    rows, path = [], [x]
    values: list[torch.Tensor] = []
    moved = x.new_full((x.shape[0],), math.inf)
    diverged_at = torch.full((), steps, dtype=torch.long, device=x.device)
    for t in range(steps):
        values, target, names = _evaluate(oracle, x, t, names)
        if record_energies:
            rows.append(values)
        elif values[0] is None:
            values = []
        x, moved = move(x, target, t, free)
        diverged_at = _first_divergence(diverged_at, ~_finite_rows(x), t)
        path.append(x)
        if on_step is not None:
            on_step(t + 1, x.shape[0])
    _raise_if_diverged(int(diverged_at), steps, x.dtype)
    energies = parts = None
    if record_energies:
        final, names = _evaluate_energy(oracle, energy, x, steps, names)
        energies, parts = _columns([*rows, final], names)
        values = final
    converged = moved <= move.tol
    if values:  # the energy where known: the final states', or the last step's start's
        converged &= torch.isfinite(values[0].detach())
    return Trajectory(
        states=x,
        energies=energies,
        converged=converged,
        steps=torch.full((x.shape[0],), steps, dtype=torch.long, device=x.device),
        path=torch.stack(path) if record_states else None,
        parts=parts,
    )


class _Mover:
    """One step from states x (b, D) given the oracle's output: the new states and how far
    each query moved (its largest entry change, detached)."""

    def __init__(self, schedule: Callable[[int], float], tol: float, toward: bool) -> None:
        self.schedule, self.tol, self.toward = schedule, tol, toward

    def __call__(
        self, x: torch.Tensor, out: torch.Tensor, t: int, free: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.schedule(t)
        if not self.toward:
            new = x + out.mul(-h)
        elif h <= 1:  # lerp: exactly ``out`` at h = 1
            new = torch.lerp(x, out, h)
        else:
            new = x + (out - x).mul(h)
        if free is not None:
            new = torch.where(free, new, x)
        if not x.shape[1]:
            return new, x.new_zeros(x.shape[0])
        return new, (new.detach() - x.detach()).abs().amax(1)


class _Batch:
    """The queries still in the batch: rows ``ids`` (None: all) of the full batch, with
    their states, step counts, whether each still moves, and the first step (on the device)
    at which a state left the dtype's range (``steps``: none did). A query stops moving only
    by converging, so the converged flags are ``~running``."""

    def __init__(self, x, ids, free, n_steps, running, diverged_at) -> None:
        self.x, self.ids, self.free = x, ids, free
        self.n_steps, self.running = n_steps, running
        self.diverged_at = diverged_at

    @classmethod
    def start(cls, x: torch.Tensor, free: torch.Tensor | None, steps: int) -> _Batch:
        batch, device = x.shape[0], x.device
        return cls(
            x.clone(),
            None,
            free,
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.ones(batch, dtype=torch.bool, device=device),
            torch.full((), steps, dtype=torch.long, device=device),
        )

    @property
    def size(self) -> int:
        return self.x.shape[0]

    @property
    def converged(self) -> torch.Tensor:
        return ~self.running

    def step(self, move: _Mover, out: torch.Tensor, t: int) -> None:
        """One step of the queries that still move; the others keep their states."""
        new, moved = move(self.x, out, t, self.free)
        new = torch.where(self.running[:, None], new, self.x)
        self.diverged_at = _first_divergence(self.diverged_at, self.running & ~_finite_rows(new), t)
        self.n_steps = self.n_steps + self.running
        self.running = self.running & ~(moved <= move.tol)  # NaN: not converged
        self.x = new

    def scatter(self, value: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
        """``into`` (B,) with this batch's rows replaced by ``value`` (b,) (a new tensor)."""
        return value if self.ids is None else into.index_copy(0, self.ids, value)

    def write_into(self, *full: torch.Tensor) -> None:
        """Write states, step counts and converged flags into the full ones (in place)."""
        for target, value in zip(full, (self.x, self.n_steps, self.converged), strict=False):
            if self.ids is None:
                target.copy_(value)
            else:
                target.index_copy_(0, self.ids, value)

    def keep(self, mask: torch.Tensor, count: int) -> _Batch:
        """The batch of the ``count`` rows where ``mask`` (b,) is True, found with no wait
        (a stable sort puts them first)."""
        rows = torch.argsort((~mask).to(torch.uint8), stable=True)[:count]
        return _Batch(
            self.x[rows],
            rows if self.ids is None else self.ids[rows],
            None if self.free is None else self.free[rows],
            self.n_steps[rows],
            self.running[rows],
            self.diverged_at,
        )


class _HostCopy:
    """Small integer values on their way to the host, read without waiting for the device:
    on CUDA a non-blocking copy into pinned memory, read once its event has completed; on a
    CPU the tensor itself (it is host memory already). ``mask`` travels along: the rows of
    the batch that still moved when the values were taken."""

    def __init__(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        self.mask, self.event = mask, None
        if values.device.type == "cuda":
            self.host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self.host.copy_(values, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:  # on another accelerator, values() waits for it
            self.host = values

    def arrived(self) -> bool:
        return self.event is None or self.event.query()

    def values(self) -> list[int]:
        if self.event is not None:
            self.event.synchronize()  # no wait once arrived
        return self.host.tolist()


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """(b,) True where a state's squared norm is finite (detached)."""
    x = x.detach()
    return torch.isfinite((x * x).sum(1))


def _first_divergence(diverged_at: torch.Tensor, bad: torch.Tensor, t: int) -> torch.Tensor:
    """The first step (0-d, on the device) at which a row of ``bad`` was True."""
    return torch.where(bad.any(), diverged_at.clamp_max(t), diverged_at)


def _raise_if_diverged(diverged_at: int, steps: int, dtype: torch.dtype) -> None:
    if diverged_at < steps:
        raise AmlabError(
            f"descent diverged at step {diverged_at + 1}: the states grew beyond the range of "
            f"{dtype}. Use a smaller step_size (for the LSE energies a step of at most "
            "1 is stable)."
        )


def _evaluate(
    oracle: Oracle, x: torch.Tensor, t: int, names: tuple[str, ...] | None
) -> tuple[list[torch.Tensor], torch.Tensor, tuple[str, ...]]:
    """The oracle at states x: [energy, *energy parts] (each (b,)), its second output (the
    direction, or the target with ``toward``) and the parts' names, which must be ``names``
    (those of the first call) when given."""
    energy, direction, *rest = oracle(x, t)
    parts = _parts(rest[0] if rest else {}, t, names)
    return [energy, *parts.values()], direction, tuple(parts)


def _evaluate_energy(
    oracle: Oracle, energy: EnergyFn | None, x: torch.Tensor, t: int, names: tuple[str, ...] | None
) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    """[energy, *energy parts] at states x by ``energy`` (by the oracle when None)."""
    if energy is None:
        values, _, names = _evaluate(oracle, x, t, names)
        return values, names
    out = energy(x)
    value, parts = out if isinstance(out, tuple) else (out, {})
    return [value, *_parts(parts, t, names).values()], tuple(parts)


def _parts(
    parts: dict[str, torch.Tensor], t: int, names: tuple[str, ...] | None
) -> dict[str, torch.Tensor]:
    if names is not None and tuple(parts) != names:
        raise AmlabError(
            f"the oracle reported energy parts {list(parts)} at step {t} but {list(names)} "
            "at the start; report the same parts at every call."
        )
    return parts


def _columns(
    rows: list[list[torch.Tensor]], names: tuple[str, ...], after: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The recorded rows [energy, *parts] of each step as energies (n + 1, B) and the parts
    by name, each (n + 1, B) (None when there are none). Where ``after`` (n + 1, B) is True
    an entry is the last row's instead."""
    columns = [torch.stack(column) for column in zip(*rows, strict=True)]
    if after is not None:
        columns = [torch.where(after, column[-1], column) for column in columns]
    energies, *parts = columns
    return energies, dict(zip(names, parts, strict=True)) or None


def _constant(value: float) -> Callable[[int], float]:
    return lambda t: value
