"""The ListOps study's sweep, shared by the sections: its :class:`Grid`, running it
(resumably, into ``out/sweep``), and what the sweep-based sections read from its records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from amlab.experiments.report import Context, Progress, Report
from amlab.tasks.figures import save_figure
from amlab.tasks.listops import STUDY_DATA, RunSpec
from amlab.tasks.listops_sweep import MIXES, summarize, sweep_grid


@dataclass(frozen=True)
class Grid:
    """The sweep: model sizes (embedding dims, 2 layers, 2 heads), seeds, step budget."""

    dims: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    curriculum_steps: int
    target: float = 0.9
    train_size: int = 20000
    val_size: int = 1000
    test_size: int = 2000
    workers: int = 2

    def base(self) -> RunSpec:
        return RunSpec(
            steps=self.steps,
            lr=3e-3,
            warmup=100,
            batch_size=128,
            eval_every=100,
            stop_at=0.97,
            patience=20,
            data=dict(STUDY_DATA),
            train_size=self.train_size,
            val_size=self.val_size,
            test_size=self.test_size,
        )

    def model_seeds(self, seed: int) -> list[int]:
        """The model seeds of a run started with ``seed``: ``seeds`` offset by it."""
        return [seed + s for s in self.seeds]

    def specs(self, seed: int) -> list[RunSpec]:
        """The sweep of a run started with ``seed`` (also its data seed)."""
        return sweep_grid(
            replace(self.base(), data_seed=seed),
            MIXES,
            self.dims,
            self.model_seeds(seed),
            self.curriculum_steps,
        )

    def local_workers(self) -> int:
        """The worker processes this machine runs the sweep on: ``workers``, at most one
        per CPU."""
        return max(1, min(self.workers, os.cpu_count() or 1))


FULL = Grid(dims=(8, 16, 32, 48), seeds=(0, 1, 2), steps=2500, curriculum_steps=1000)
QUICK = Grid(dims=(8, 16, 32), seeds=(0,), steps=800, curriculum_steps=400)


@dataclass(frozen=True)
class Sweep:
    """The finished sweep: its runs' specs and records (one per spec), the thresholds per
    mix and the curriculum rows (:func:`amlab.tasks.listops_sweep.summarize`)."""

    specs: list[RunSpec]
    records: list[dict[str, Any]]
    thresholds: dict[str, dict[str, Any]]
    curriculum: list[dict[str, Any]]


def run_sweep(ctx: Context, progress: Progress) -> Sweep:
    """Train every run of the grid not yet finished in ``ctx.out/sweep`` (keeping the
    models, which the analysis reads), then summarise all of them."""
    grid: Grid = ctx.grid
    specs = grid.specs(ctx.seed)
    summary = summarize(
        specs,
        ctx.out / "sweep",
        grid.target,
        workers=grid.local_workers(),
        save_models=True,
        on_done=lambda record, n, total: progress(f"sweep run {n}/{total}", n / total),
    )
    return Sweep(specs, summary["records"], summary["thresholds"], summary["curriculum"])


#: the section whose compute runs the sweep (the first); the sections after it read it
RUNS_THE_SWEEP = "thresholds"


def sweep_of(ctx: Context) -> Sweep:
    """The sweep that the first section ran, for the sections after it."""
    return ctx.results[RUNS_THE_SWEEP]


def runs_on(records: list[dict[str, Any]], ops: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records of the runs on the mix ``ops`` without pretraining."""
    return [
        r
        for r in records
        if tuple(r["spec"]["ops"]) == tuple(ops) and r["spec"].get("pretrain_ops") is None
    ]


def mean_by_size(row: dict[str, Any]) -> tuple[list[int], list[float]]:
    """(parameter counts, mean test accuracy over seeds) of a mix's thresholds row."""
    sizes = row["sizes"]
    return [s["parameters"] for s in sizes], [float(np.mean(s["accuracies"])) for s in sizes]


def save_accuracy_plot(fig, ax, report: Report, name: str, grid: Grid, ylabel: str) -> None:
    """Accuracy (mean over seeds) against parameters, log x, the target as a dashed line."""
    ax.axhline(grid.target, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # labels overlapped
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{ylabel}, mean over seeds")
    ax.legend(fontsize=8)
    save_figure(fig, report.path(name))
