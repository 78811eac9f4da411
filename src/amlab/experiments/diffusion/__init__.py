"""``amlab repro diffusion``: diffusion models as associative memories (papers.md section 4,
Hoover et al., *Memory in Plain Sight*, arXiv 2309.16750).

Sections, one module each (compute -> figure -> write):

(a) :mod:`.correspondence`: the exact denoiser of a finite set next to one attention step of
    the LSE DenseAM with beta_t = 1/sigma_t^2 and a float64 brute-force posterior mean;
(b) :mod:`.circle`: K in {2, 9, 1000} points on the unit circle: the empirical LSE energy
    E_t next to the energy of a learned energy-parameterised MLP at several noise levels,
    their minima (stored or spurious) and samples;
(c) :mod:`.digits`: memorisation vs generalisation on the digits: the fraction of samples
    that copy a training image as the training set grows, learned conv net vs empirical
    denoiser, and classifier-free guidance of the class-conditional net;
(d) :mod:`.trajectory`: one sample's trajectory under the probability-flow sampler next to
    plain energy descent on the same DenseAM (the one at the last noise level), from the
    same start.

Trained networks are checkpointed under ``out/checkpoints`` (the shared training loop) and
reused by a later run with the same settings (:mod:`.common`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amlab.experiments.diffusion import circle, correspondence, digits, trajectory
from amlab.experiments.report import Paper


@dataclass(frozen=True)
class Grid:
    """Every size the run uses (the report lists them)."""

    # (b) circle toy
    circle_sizes: tuple[int, ...] = (2, 9, 1000)
    circle_sigmas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    circle_sigma_max: float = 3.0
    circle_hidden: int = 128
    circle_layers: int = 3
    circle_steps: int = 3000
    circle_batch: int = 256
    circle_samples: int = 500
    circle_grid: int = 121
    circle_starts: int = 21  # minima search from a starts x starts grid
    minima_steps: int = 1000
    # (c) digits
    digit_sizes: tuple[int, ...] = (10, 50, 200, 1000)
    holdout: int = 297
    digit_channels: int = 32
    digit_blocks: int = 2
    digit_steps: int = 4000
    digit_batch: int = 64
    digit_samples: int = 200
    digit_log_normal: tuple[float, float] = (-1.2, 1.2)  # EDM's noise-level distribution
    guidance_scales: tuple[float, ...] = (0.0, 1.0, 3.0)
    guidance_per_class: int = 10
    # shared
    sigma_min: float = 0.01
    digit_sigma_max: float = 10.0
    sampler_steps: int = 50
    # (d) trajectory
    trajectory_memories: int = 100
    trajectory_starts: int = 64
    descent_steps: int = 300
    descent_step_size: float = 0.1


FULL = Grid()
QUICK = Grid(
    circle_sigmas=(0.03, 0.1, 0.3, 1.0),
    circle_hidden=64,
    circle_layers=2,
    circle_steps=800,
    circle_batch=128,
    circle_samples=300,
    circle_grid=81,
    circle_starts=15,
    minima_steps=300,
    digit_sizes=(20, 100, 1000),
    digit_steps=1200,
    digit_samples=64,
    guidance_per_class=4,
    sampler_steps=30,
    trajectory_starts=32,
)

PAPER = Paper(
    title="diffusion models as associative memories",
    source="Hoover et al., *Memory in Plain Sight: Surveying the Uncanny Resemblances of "
    "Associative Memories and Diffusion Models*, arXiv 2309.16750",
    full=FULL,
    quick=QUICK,
    sections=(correspondence.SECTION, circle.SECTION, digits.SECTION, trajectory.SECTION),
    metrics=lambda ctx: {"quick": ctx.quick, "seed": ctx.seed, "grid": asdict(ctx.grid)},
    uses_images=True,
)

#: ``amlab repro diffusion``: run(out, quick=False, seed=0, data_dir=None, progress=..., grid=None)
run = PAPER.run
