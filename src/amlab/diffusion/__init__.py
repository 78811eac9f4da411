"""Diffusion models as associative memories (papers.md section 4).

- :mod:`~amlab.diffusion.schedules`: VE and VP noise schedules.
- :mod:`~amlab.diffusion.samplers`: probability-flow ODE (Euler, Heun) and reverse SDE
  (Euler-Maruyama) samplers for any score function.
- :mod:`~amlab.diffusion.rng`: the explainer's seeded generator (mulberry32, Box-Muller) in
  Python, for start noise that a seed draws the same in the browser.
- :class:`Denoiser`: D(x, t), its score and energy, classifier-free guidance; every denoiser
  follows the model protocol of :mod:`amlab.models` (config, save/load, seed, dtype).
- :class:`EmpiricalDenoiser`: the exact denoiser of a finite set, an LSE DenseAM with
  beta_t = 1 / s_t^2 (one denoising step is one attention update).
- :class:`MLPDenoiser`, :class:`ConvDenoiser`: learned denoisers, optionally energy-
  parameterised and class-conditional; :class:`TextConvDenoiser`, the conv net prompted by
  text (trained by :func:`amlab.tasks.diffusion.train_denoiser`).
"""

from amlab.diffusion.denoiser import NO_CLASS, Denoiser
from amlab.diffusion.empirical import EmpiricalDenoiser, EmpiricalDenoiserConfig
from amlab.diffusion.loss import denoising_loss
from amlab.diffusion.networks import (
    ConvDenoiser,
    ConvDenoiserConfig,
    LearnedDenoiser,
    LearnedDenoiserConfig,
    MLPDenoiser,
    MLPDenoiserConfig,
    TextConvDenoiser,
    TextConvDenoiserConfig,
)
from amlab.diffusion.samplers import SAMPLERS, Samples, ScoreFn, sample
from amlab.diffusion.schedules import (
    SCHEDULES,
    Schedule,
    VESchedule,
    VPSchedule,
    schedule_from_config,
)

__all__ = [
    "ConvDenoiser",
    "ConvDenoiserConfig",
    "EmpiricalDenoiserConfig",
    "LearnedDenoiser",
    "LearnedDenoiserConfig",
    "MLPDenoiser",
    "MLPDenoiserConfig",
    "TextConvDenoiser",
    "TextConvDenoiserConfig",
    "denoising_loss",
    "NO_CLASS",
    "Denoiser",
    "EmpiricalDenoiser",
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
