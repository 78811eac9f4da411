"""``amlab repro lsr``: Dense Associative Memory with Epanechnikov energy (arXiv 2506.10801).

One module per section, each compute -> figure -> write: :mod:`.kernels` (the 1-D picture
and the kernel comparison), :mod:`.minima` (the number of stored and emergent minima
against beta, exact by a pruned search), :mod:`.loglik` (the log-likelihood of
retrieved points) and :mod:`.images` (images stored at a beta where every one is an exact
fixed point, with a gallery of emergent memories). :class:`Grid` holds every size.
"""

from __future__ import annotations

from dataclasses import dataclass

from amlab.experiments.lsr import images, kernels, loglik, minima
from amlab.experiments.report import Paper


@dataclass(frozen=True)
class Grid:
    """Every size of the LSR reproduction; the defaults are the full run.

    kernel_h_step, kernel_spacing: the kernel scan's bandwidth step (h from 0.5 to 3) and
        the spacing of the grid of x its minima are read off.
    minima_*: memories uniform on [0,1]^d for every M in ``minima_sizes``, d in
        ``minima_dims`` and seed (the run's seed plus each of ``minima_seed_offsets``);
        ``minima_n_betas`` betas; LSE descent from the memories and
        ``minima_starts_per_memory`` uniform starts per memory for ``minima_lse_steps``
        steps; support coverage from ``minima_volume_samples`` uniform points.
    loglik_*: the (k, d, M) mixture configurations, betas per configuration, starts per
        memory and the most LSE descent steps.
    images_per_search: fixed-point images searched for emergent minima, per beta.
    """

    kernel_h_step: float = 0.01
    kernel_spacing: float = 2.5e-4
    minima_sizes: tuple[int, ...] = (5, 15, 25)
    minima_dims: tuple[int, ...] = (8, 32)
    minima_seed_offsets: tuple[int, ...] = (0, 42, 88)
    minima_n_betas: int = 50
    minima_volume_samples: int = 1_000_000
    minima_starts_per_memory: int = 40
    minima_lse_steps: int = 3000
    loglik_configs: tuple[tuple[int, int, int], ...] = tuple(
        (k, d, m) for k in (5, 10) for d in (8, 16) for m in (25, 100)
    )
    loglik_n_betas: int = 20
    loglik_starts_per_memory: int = 50
    loglik_lse_steps: int = 3000
    images_per_search: int = 300


FULL = Grid()
QUICK = Grid(
    kernel_h_step=0.05,
    kernel_spacing=5e-4,
    minima_sizes=(5, 15),
    minima_seed_offsets=(0,),
    minima_n_betas=20,
    minima_volume_samples=100_000,
    minima_starts_per_memory=10,
    loglik_configs=((5, 8, 25), (10, 16, 100)),
    loglik_n_betas=6,
    loglik_starts_per_memory=20,
    images_per_search=40,
)

PAPER = Paper(
    title="Dense Associative Memory with Epanechnikov (LSR) energy",
    source="Hoover et al., *Dense Associative Memory with Epanechnikov Energy*, arXiv 2506.10801",
    full=FULL,
    quick=QUICK,
    sections=(kernels.SECTION, minima.SECTION, loglik.SECTION, images.SECTION),
    metrics=lambda ctx: {"quick": ctx.quick, "seed": ctx.seed},
    uses_images=True,
)

#: ``amlab repro lsr``: run(out, quick=False, seed=0, data_dir=None, progress=..., grid=None)
run = PAPER.run
