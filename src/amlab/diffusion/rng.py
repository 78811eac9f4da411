"""The explainer's seeded generator in Python: ``web/src/lib/rng.ts``, number for number.

The browser draws a diffusion run's start noise from a seed with its own generator
(mulberry32, then Box-Muller), not with torch's. This is that generator again, so a start
drawn here for a seed is the start the page draws for it:

- :func:`mulberry32`: the 32-bit outputs, in exact uint32 arithmetic (``Math.imul`` is the
  low 32 bits of the product, ``>>> 0`` the value modulo 2^32);
- :func:`normals`: standard normals by Box-Muller in float64, as ``normals(n, seed)`` draws
  them (a pair per two uniforms; for odd n the last pair's sine is dropped);
- :func:`seeded_prior`: the sampler's start, ``normals(dim, seed)`` times the prior's
  standard deviation, as the diffusion view draws it.

The seed is any integer, taken modulo 2^32 as ``seed >>> 0`` takes it. Both sides are checked
against the same known-answer numbers (``web/src/lib/rng.vectors.json``, made by rng.ts):
the uint32 outputs exactly, the normals to the last bits of the platforms' log, cos and sin.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from amlab.diffusion.schedules import Schedule
from amlab.errors import check_int, check_positive_int

UINT32 = 0xFFFFFFFF


def uint32_seed(seed: Any) -> int:
    """An integer seed as rng.ts reads it (``seed >>> 0``: modulo 2^32)."""
    return check_int(seed, "the seed") & UINT32


def mulberry32(n: int, seed: Any) -> list[int]:
    """The first n outputs (uint32) of mulberry32 seeded with ``seed``; rng.ts's ``rng(seed)``
    returns each divided by 2^32."""
    n = check_positive_int(n, "n", allow_zero=True)
    a = uint32_seed(seed)
    out = []
    for _ in range(n):
        a = (a + 0x6D2B79F5) & UINT32
        t = ((a ^ (a >> 15)) * (a | 1)) & UINT32
        t ^= (t + ((t ^ (t >> 7)) * (t | 61))) & UINT32
        out.append((t ^ (t >> 14)) & UINT32)
    return out


def normals(n: int, seed: Any) -> torch.Tensor:
    """n standard normal draws (n,) float64, rng.ts's ``normals(n, seed)``."""
    n = check_positive_int(n, "n", allow_zero=True)
    u = [x / 2**32 for x in mulberry32(n + n % 2, seed)]
    out = []
    for i in range(0, n, 2):
        r = math.sqrt(-2 * math.log(1 - u[i]))
        theta = 2 * math.pi * u[i + 1]
        out += [r * math.cos(theta), r * math.sin(theta)]
    return torch.tensor(out[:n], dtype=torch.float64)


def seeded_prior(
    schedule: Schedule, dim: int, seed: Any, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The start (1, dim) of a sampler for ``seed``, as the diffusion view draws it:
    ``normals(dim, seed)`` times the prior's standard deviation (:meth:`Schedule.prior_scale`),
    in float64, then cast to ``dtype``."""
    dim = check_positive_int(dim, "dim")
    return (normals(dim, seed) * schedule.prior_scale()).to(dtype)[None]
