"""Reproduction of the ListOps joint-training study (arXiv 2505.18369, "Small Models,
Smarter Learning"): the fewest parameters at which a small transformer learns each task
mix, the MAX+MED -> SUM curriculum, the number-token embeddings and an attention/MLP
ablation. ``run`` writes report.md, PNG figures and metrics.json.

The sweep (every training run, resumable from ``out/sweep``) is the first section's
compute; the sections after it read its records.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from amlab.experiments.listops import curriculum, learned, sum_in_mix, thresholds
from amlab.experiments.listops.sweep import FULL, QUICK, Grid
from amlab.experiments.report import Context, Paper
from amlab.tasks.listops import STUDY_DATA

__all__ = ["FULL", "PAPER", "QUICK", "Grid", "run"]


def _intro(ctx: Context) -> str:
    grid: Grid = ctx.grid
    base = grid.base()
    return f"""
Each run trains a transformer ({base.layers} pre-norm blocks, {base.heads} heads, MLP ratio
{base.mlp_ratio:g}, learned positions, class-token read-out) to predict the value of a
ListOps expression over 0..9. Data: the generator of the original ListOps with at most
{STUDY_DATA["max_depth"]} nested operators of 2..{STUDY_DATA["max_args"]} arguments (leaf
probability {STUDY_DATA["leaf_prob"]}), so that models of a few thousand parameters can be
trained on a CPU; {grid.train_size} distinct training expressions per mix, {grid.val_size}
validation and {grid.test_size} test expressions disjoint from them.
Size ladder: embedding sizes {", ".join(map(str, grid.dims))}; model seeds
{", ".join(map(str, grid.model_seeds(ctx.seed)))}; at most {grid.steps} AdamW steps of
{base.batch_size} expressions (peak learning rate {base.lr:g}, cosine decay), stopping early
once validation accuracy reaches {base.stop_at:g} or has not improved for {base.patience}
checks (every {base.eval_every} steps). A mix counts as learned at a size when at least
half of the seeds reach {grid.target:g} test accuracy.
The paper's own grid, budgets and data sizes are not public (no code was released), so
the numbers below are this implementation's, on {grid.local_workers()} CPU worker(s).
"""


def _metrics(ctx: Context) -> dict[str, Any]:
    return {
        "grid": {**asdict(ctx.grid), "seeds": ctx.grid.model_seeds(ctx.seed)},
        "data": STUDY_DATA,
    }


PAPER = Paper(
    title="ListOps: how few parameters a small transformer needs",
    source="*Small Models, Smarter Learning*, the ListOps joint-training study, arXiv 2505.18369",
    full=FULL,
    quick=QUICK,
    sections=(
        thresholds.SECTION,
        sum_in_mix.SECTION,
        curriculum.SECTION,
        learned.SECTION,
    ),
    metrics=_metrics,
    intro=_intro,
)

#: ``amlab repro listops``: run(out, quick=False, seed=0, data_dir=None, progress=..., grid=None)
run = PAPER.run
