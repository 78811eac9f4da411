"""``amlab repro memorisation``: the phase curve of memorisation in diffusion models seen as
associative memories (papers.md, Pham et al., arXiv 2505.21777).

One section, :mod:`.phase`: conv-net denoisers trained on N digits for several N and seeds
(the class-conditional nets of :mod:`amlab.experiments.diffusion.digits`, prompted with the
classes of training images at guidance 1), each sample classed memorised / spurious /
generalised by the audit of :mod:`amlab.analysis.memorisation` (nearest-neighbour retrieval
and descent of the training set's LSE energy, the exact empirical denoiser's DenseAM), with
the empirical denoiser's own samples beside them. Networks are checkpointed under
``out/checkpoints`` and reused by a later run with the same settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amlab.experiments.memorisation import phase
from amlab.experiments.report import Paper


@dataclass(frozen=True)
class Grid:
    """Every size the run uses (the report lists them). The ``digit_*`` fields, ``holdout``,
    ``sigma_min``, ``digit_sigma_max`` and ``sampler_steps`` are those of the diffusion
    reproduction's digits section, whose nets this run trains."""

    digit_sizes: tuple[int, ...] = (10, 30, 100, 300, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
    holdout: int = 297
    digit_channels: int = 32
    digit_blocks: int = 2
    digit_steps: int = 3000
    digit_batch: int = 64
    digit_log_normal: tuple[float, float] = (-1.2, 1.2)
    digit_samples: int = 200
    sigma_min: float = 0.01
    digit_sigma_max: float = 10.0
    sampler_steps: int = 40
    audit_steps: int = 500


FULL = Grid()
QUICK = Grid(
    digit_sizes=(10, 100, 1000),
    seeds=(0,),
    digit_steps=600,
    digit_samples=48,
    sampler_steps=16,
    audit_steps=200,
)

PAPER = Paper(
    title="memorisation, spurious states and generalisation in diffusion models",
    source="Pham et al., *Memorization to Generalization: Emergence of Diffusion Models from "
    "Associative Memory*, arXiv 2505.21777",
    full=FULL,
    quick=QUICK,
    sections=(phase.SECTION,),
    metrics=lambda ctx: {"quick": ctx.quick, "seed": ctx.seed, "grid": asdict(ctx.grid)},
    uses_images=True,
)

#: ``amlab repro memorisation``: run(out, quick, seed, data_dir, progress, grid)
run = PAPER.run
