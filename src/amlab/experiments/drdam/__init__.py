"""Reproduction of DrDAM (papers.md section 2): how well a fixed-size random-feature tensor
stands in for the exact LSE Dense Associative Memory (MrDAM).

Five experiments, each a section of ``report.md`` with its figure:

(a) absolute error of energy and gradient against the exact DenseAM as the number of
    random projections Y grows, at the memories, near them (10% of bits flipped) and at
    random binary queries, for several beta and D, with a fitted b / sqrt(Y) curve;
(b) the same errors as the number of stored patterns K grows at fixed Y;
(c) retrieval: normalised Hamming distance between the exact and the approximate fixed
    points of gradient descent, against Y;
(d) image completion: the lower half hidden, the upper half clamped, exact next to DrDAM at
    several Y, and the energy along both trajectories;
(e) the four feature maps (sincos, cos, exp, expexp) on the grid of (a).

Memories and queries are binary patterns in {0, 1/sqrt(D)}^D as in the paper. Errors are mean
absolute errors: |E - E~| per query, |dE/dx_i - dE~/dx_i| per entry, averaged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amlab.experiments.drdam import features, images, kernels, memories, retrieval
from amlab.experiments.report import Paper


@dataclass(frozen=True)
class Grid:
    """Every size the run uses (the report states them)."""

    # (a) error vs Y, and (e) kernels at D = kernel_dim on the same betas and Ys
    dims: tuple[int, ...] = (30, 100, 500)
    betas: tuple[float, ...] = (10.0, 30.0, 40.0, 50.0)
    features: tuple[int, ...] = (5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000)
    num_memories: int = 500
    num_queries: int = 500  # per kind
    flip: float = 0.1
    kernel_dim: int = 100
    # (b) error vs K at fixed Y
    k_values: tuple[int, ...] = (50, 100, 200, 400, 650, 1000)
    k_dim: int = 100
    k_features: int = 100_000
    # (c) retrieval
    retrieval_dim: int = 100
    retrieval_betas: tuple[float, ...] = (10.0, 30.0, 40.0, 50.0)
    retrieval_features: tuple[int, ...] = (2_000, 8_000, 32_000, 128_000)
    retrieval_queries: int = 64  # per kind (near, random)
    retrieval_steps: int = 1000
    retrieval_step_size: float = 0.03
    # (d) image completion
    image_memories: int = 20
    image_queries: int = 8
    image_beta: float = 60.0
    image_features: tuple[int, ...] = (1_000, 4_000, 16_000, 64_000, 256_000)
    image_steps: int = 300
    image_step_size: float = 0.1


FULL = Grid()
QUICK = Grid(
    dims=(30, 100),
    betas=(10.0, 30.0, 50.0),
    features=(2_000, 8_000, 32_000, 128_000),
    num_queries=200,
    k_values=(50, 200, 1000),
    k_features=16_000,
    retrieval_betas=(10.0, 40.0),
    retrieval_features=(2_000, 8_000, 32_000),
    retrieval_queries=40,
    retrieval_steps=300,
    image_memories=20,
    image_queries=6,
    image_features=(1_000, 8_000, 64_000),
)


_INTRO = """
The exact model (MrDAM) is `DenseAM(memories, energy="lse", beta)`,
E(x) = -(1/β) log Σ_μ exp(-(β/2)‖x - ξ_μ‖²). DrDAM is `RandomFeatureAM.from_dense(...)`,
Ẽ(x) = -(1/β) log(max(φ(x)ᵀT, 10⁻⁵)) with T = Σ_μ φ(ξ_μ), whose feature maps all estimate the
kernel exp(-(β/2)‖x - y‖²) of that distance form. For the exponential maps this needs the
offset c = β‖x‖² (as papers.md writes; (β/2)‖x‖² would give the dot-product kernel
exp(β x·y) instead). Memories and queries are binary, in {0, 1/√D}^D; "near" queries are
memories with 10% of their bits flipped. Y counts random projections (rows of S); sincos
and expexp store 2Y numbers in T, cos and exp Y. Errors are mean absolute errors. Everything
runs in float32.
"""


PAPER = Paper(
    title="Dense Associative Memory through random features (DrDAM)",
    source="Hoover et al., *Dense Associative Memory Through the Lens of Random Features*, "
    "arXiv 2410.24153 (papers.md section 2)",
    full=FULL,
    quick=QUICK,
    # in the order of the report; kernels (e) reads the error grid that features (a) computed
    sections=(
        features.SECTION,
        memories.SECTION,
        retrieval.SECTION,
        images.SECTION,
        kernels.SECTION,
    ),
    metrics=lambda ctx: {"grid": asdict(ctx.grid), "seed": ctx.seed, "quick": ctx.quick},
    intro=lambda ctx: _INTRO,
    uses_images=True,
)

#: ``amlab repro drdam``: run(out, quick=False, seed=0, data_dir=None, progress=..., grid=None)
run = PAPER.run
