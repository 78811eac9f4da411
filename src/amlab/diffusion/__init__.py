"""Diffusion models as associative memories (papers.md section 4).

- :mod:`~amlab.diffusion.schedules`: VE and VP noise schedules.
- :mod:`~amlab.diffusion.samplers`: probability-flow ODE (Euler, Heun) and reverse SDE
  (Euler-Maruyama) samplers for any score function.
"""

from amlab.diffusion.samplers import SAMPLERS, Samples, ScoreFn, sample
from amlab.diffusion.schedules import (
    SCHEDULES,
    Schedule,
    VESchedule,
    VPSchedule,
    schedule_from_config,
)

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "Samples",
    "Schedule",
    "ScoreFn",
    "VESchedule",
    "VPSchedule",
    "sample",
    "schedule_from_config",
]
