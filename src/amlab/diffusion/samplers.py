"""Samplers: integrate the reverse of a forward noising process from t = 1 to t_end.

Each takes any score function ``score(x (B, D), t: float) -> (B, D)``, an estimate of
grad_x log p_t(x) (a denoiser's :meth:`~amlab.diffusion.Denoiser.score`, a closed form, ...):

- probability-flow ODE ``dx/dt = f(t) x - 1/2 g(t)^2 score(x, t)``, deterministic, by Euler
  or Heun (second order; two score calls a step);
- reverse SDE ``dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW`` (time running backwards),
  by Euler-Maruyama.

For a VE schedule the ODE step in log sigma is ``x <- x - h (x - D(x))`` with D the denoiser:
a damped step towards the denoised state, which for K stored points is one attention
(Hopfield) update of an LSE DenseAM (papers.md section 4).

The samplers run without autograd (``torch.no_grad``); a score that needs gradients, such as
an energy-parameterised network's, turns them on for itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from amlab.diffusion.schedules import Schedule
from amlab.errors import AmlabError, as_float_tensor, check_choice, check_positive_int

#: score(x (B, D), t) -> (B, D), an estimate of grad_x log p_t(x)
ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]

SAMPLERS = ("euler", "heun", "euler_maruyama")


@dataclass
class Samples:
    """What a sampler returns.

    states: final states (B, D) at ``times[-1]`` (the schedule's t_end).
    times: (T + 1,) the times visited, from 1 down to t_end.
    path: (T + 1, B, D) the states at those times, when ``record`` was set.
    """

    states: torch.Tensor
    times: torch.Tensor
    path: torch.Tensor | None = None


def sample(
    score: ScoreFn,
    schedule: Schedule,
    x: torch.Tensor,
    *,
    steps: int = 100,
    method: str = "heun",
    generator: torch.Generator | None = None,
    record: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Samples:
    """Integrate from the states x (B, D) at t = 1 down to ``schedule.t_end``.

    steps: number of steps on an even time grid (evenly spaced in log sigma for VE).
    method: "euler" or "heun" (probability-flow ODE), "euler_maruyama" (reverse SDE).
    generator: source of the SDE's noise (ignored by the ODE samplers).
    record: keep every intermediate state in ``Samples.path``.
    on_step: called as on_step(step done, steps) after every step.
    """
    method = check_choice(method, "method", SAMPLERS)
    steps = check_positive_int(steps, "steps")
    x = as_float_tensor(x, "x")
    if x.ndim != 2:
        raise AmlabError(f"x must have shape (B, D); got {tuple(x.shape)}.")
    x = x.detach().clone()
    times = schedule.times(steps)
    path = [x.clone()] if record else None

    def velocity(state: torch.Tensor, t: float, weight: float) -> torch.Tensor:
        s = score(state, t)
        if s.shape != state.shape:
            raise AmlabError(
                f"the score function returned shape {tuple(s.shape)} for states of shape "
                f"{tuple(state.shape)}; it must return one gradient per state."
            )
        return schedule.drift(t) * state - weight * schedule.diffusion_sq(t) * s

    with torch.no_grad():  # energy-parameterised models turn gradients on for themselves
        x, path = _integrate(velocity, schedule, x, times, method, generator, path, on_step)
    return Samples(states=x, times=times, path=None if path is None else torch.stack(path))


def _integrate(velocity, schedule, x, times, method, generator, path, on_step):
    steps = len(times) - 1
    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        dt = t_next - t  # negative: time runs backwards
        if method == "euler_maruyama":
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = x + velocity(x, t, 1.0) * dt + math.sqrt(schedule.diffusion_sq(t) * -dt) * noise
        else:
            d = velocity(x, t, 0.5)
            moved = x + d * dt
            if method == "heun":
                moved = x + 0.5 * (d + velocity(moved, t_next, 0.5)) * dt
            x = moved
        if not bool(torch.isfinite(x).all()):
            raise AmlabError(
                f"sampling diverged at step {i + 1} (t = {t_next:.4g}); use more steps or check "
                "the score function."
            )
        if path is not None:
            path.append(x.clone())
        if on_step is not None:
            on_step(i + 1, steps)
    return x, path
