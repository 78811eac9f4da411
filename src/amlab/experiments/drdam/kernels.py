"""(e) The four feature maps (sincos, cos, exp, expexp) compared on the error grid that
section (a) computed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amlab.experiments.drdam import features
from amlab.experiments.drdam.common import (
    BOTH_ERRORS,
    KINDS,
    QUANTITIES,
    by_y,
    error_panels,
    select,
    share,
    verdict,
)
from amlab.experiments.drdam.errors import KERNELS
from amlab.experiments.report import Context, Progress, Report, Section


@dataclass(frozen=True)
class KernelErrors:
    """records: the error grid's records at D = grid.kernel_dim (every feature map).
    at_largest_Y: per (beta, query kind), [beta, kind, energy error of every map, gradient
        error of every map] at the largest Y.
    best: "{quantity}_beta{beta}_{kind}" -> the map with the smallest error at the largest Y.
    sincos_wins: per (beta, Y, kind, quantity), whether sincos has the smallest error.
    """

    records: list[dict[str, Any]]
    at_largest_Y: list[list[Any]]
    best: dict[str, str]
    sincos_wins: list[bool]


def compute(ctx: Context, progress: Progress) -> KernelErrors:
    grid = ctx.grid
    grid_records = ctx.results[features.SECTION.name].records
    sub = [r for r in grid_records if r["D"] == grid.kernel_dim]
    largest = max(grid.features)
    table, wins, best = [], [], {}
    for b in grid.betas:
        for y in grid.features:
            for kind in KINDS:
                row: list[Any] = [b, kind]
                for q in QUANTITIES:
                    errs = {
                        k: select(sub, kernel=k, beta=b, kind=kind, Y=y)[0][f"{q}_error"]
                        for k in KERNELS
                    }
                    winner = min(errs, key=errs.get)
                    wins.append(winner == "sincos")
                    row += [errs[k] for k in KERNELS]
                    if y == largest:
                        best[f"{q}_beta{b:g}_{kind}"] = winner
                if y == largest:
                    table.append(row)
    return KernelErrors(sub, table, best, wins)


def figure(result: KernelErrors, ctx: Context, report: Report) -> None:
    beta = min(ctx.grid.betas)

    def draw(ax, q: str, kind: str) -> None:
        for kernel in KERNELS:
            rows = by_y(result.records, kernel=kernel, beta=beta, kind=kind)
            ax.plot(
                [r["Y"] for r in rows], [r[f"{q}_error"] for r in rows], "o-", ms=4, label=kernel
            )

    error_panels(
        report.path("drdam_kernels.png"),
        f"Feature maps compared, D={ctx.grid.kernel_dim}, β={beta:g}",
        "Y (random projections)",
        BOTH_ERRORS,
        draw,
    )


def write(result: KernelErrors, ctx: Context, report: Report) -> dict[str, Any]:
    grid = ctx.grid
    report.section(
        "(e) Feature maps compared",
        f"The four maps on the grid of (a) at D = {grid.kernel_dim}: same memories, queries, β, "
        "Y and random projections S (seeded alike). At equal Y, sincos and expexp hold 2Y "
        "numbers in T, cos and exp Y. The exponential maps' variance grows like exp(β‖x‖²) "
        "(here ‖x‖² ≈ 1/2).",
    )
    report.figure(
        "drdam_kernels.png", f"Errors of the four feature maps against Y at β={min(grid.betas):g}"
    )
    report.text(f"Errors at Y = {max(grid.features)} (energy, then gradient):")
    report.table(
        ("β", "queries", *[f"E {k}" for k in KERNELS], *[f"∇E {k}" for k in KERNELS]),
        result.at_largest_Y,
    )
    wins = result.sincos_wins
    report.claim(
        "SinCos (the paper's default) approximates best of the four maps",
        f"sincos has the smallest error in {share(wins)} (β, Y, query, quantity) cases at "
        f"D={grid.kernel_dim}",
        verdict(wins),
    )
    return {"kernels": {"best_at_largest_Y": result.best, "sincos_wins": [sum(wins), len(wins)]}}


SECTION = Section("kernels", 0.0, compute, write, figure)
