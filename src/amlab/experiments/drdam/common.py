"""What several DrDAM sections share: the binary patterns and queries, the selection of
records, the claim counts and the log-log panels of errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.ticker import NullFormatter

from amlab.models.random_feature_am import compare_with_dense
from amlab.tasks.figures import plt, save_figure

KINDS = ("at", "near", "random")
QUANTITIES = ("energy", "grad")  # the two errors measured: energy and gradient
ERROR_LABEL = {"energy": "|E - E~|", "grad": "|∇E - ∇E~|"}
#: the rows of a figure of both errors: y label -> quantity
BOTH_ERRORS = {ERROR_LABEL[q]: q for q in QUANTITIES}
KIND_LABEL = {
    "at": "at the memories",
    "near": "near (10% bits flipped)",
    "random": "random queries",
}


# -- data ------------------------------------------------------------------------------------
def binary_patterns(num: int, dim: int, g: torch.Generator) -> torch.Tensor:
    """num random patterns (num, dim) with entries 0 or 1/sqrt(dim), each with probability 1/2."""
    return (torch.rand(num, dim, generator=g) < 0.5).float() / math.sqrt(dim)


def flip_bits(patterns: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    """Copies of binary patterns (n, D) with round(fraction * D) bits flipped per row."""
    n, dim = patterns.shape
    idx = torch.rand(n, dim, generator=g).argsort(1)[:, : round(fraction * dim)]
    on = 1.0 / math.sqrt(dim)
    return patterns.clone().scatter_(1, idx, on - patterns.gather(1, idx))


def problem(num_memories: int, num_queries: int, dim: int, flip: float, seed: int):
    """Memories (K, D) and queries {kind: (n, D)} for one dimension, the same for every beta."""
    g = torch.Generator().manual_seed(seed * 7919 + dim)
    memories = binary_patterns(num_memories, dim, g)
    n = min(num_queries, num_memories)
    queries = {
        "at": memories[:n],
        "near": flip_bits(memories[:n], flip, g),
        "random": binary_patterns(n, dim, g),
    }
    return memories, queries


def rf_seed(seed: int, index: int) -> int:
    """The seed of the random projections of the index-th Y of a run."""
    return seed * 1000 + 17 + index


# -- records and claims ----------------------------------------------------------------------
def select(records, **where) -> list[dict[str, Any]]:
    """The records whose entries equal every ``key=value`` of ``where``."""
    return [r for r in records if all(r[k] == v for k, v in where.items())]


def by_y(records, **where) -> list[dict[str, Any]]:
    """The records whose entries equal every ``key=value`` of ``where``, by Y."""
    return sorted(select(records, **where), key=lambda r: r["Y"])


def sem(values: torch.Tensor) -> float:
    """The standard error of the mean of ``values`` (0 for a single value)."""
    return (values.std() / math.sqrt(values.numel())).item() if values.numel() > 1 else 0.0


def errors_by_kind(rf, dense, queries: dict[str, torch.Tensor], **keys: Any) -> list[dict]:
    """One record per query kind: ``keys``, the kind, and DrDAM's mean absolute energy and
    gradient errors against the exact ``dense`` memory with their standard errors."""
    records = []
    for kind, q in queries.items():
        r = compare_with_dense(rf, dense, q)
        records.append(
            {
                **keys,
                "kind": kind,
                "energy_error": r["energy_error"],
                "energy_sem": sem(r["energy_errors"]),
                "grad_error": r["grad_error"],
                "grad_sem": sem(r["grad_errors"]),
            }
        )
    return records


def share(flags: list[bool]) -> str:
    """How many of the flags hold, as "held/all"."""
    return f"{sum(flags)}/{len(flags)}"


def verdict(flags: list[bool], hi: float = 0.75, lo: float = 0.4) -> str:
    """A claim's verdict from the fraction of the cases in which it holds."""
    frac = sum(flags) / max(len(flags), 1)
    return "reproduced" if frac >= hi else "partly" if frac >= lo else "not reproduced"


# -- figures ---------------------------------------------------------------------------------
def log_axes(ax) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.2)


def save_panels(fig, axes, path: Path, title: str) -> None:
    """Legend on the first panel, a title, and the figure written to path."""
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def error_panels(
    path: Path, title: str, xlabel: str, rows: dict[str, Any], draw, height: float = 6.0
) -> None:
    """A figure of log-log panels, one row per entry of ``rows`` (y label: what ``draw`` gets)
    and one column per query kind; ``draw(ax, row, kind)`` plots one panel's curves."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, height), squeeze=False, sharex=True)
    for i, (ylabel, row) in enumerate(rows.items()):
        for j, kind in enumerate(KINDS):
            ax = axes[i][j]
            draw(ax, row, kind)
            log_axes(ax)
            if i == 0:
                ax.set_title(KIND_LABEL[kind], fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel(ylabel)
    save_panels(fig, axes, path, title)
