"""(a) Error against the number of random projections Y: the sincos map's energy and
gradient errors at, near and away from the memories, for several D and beta, with a fitted
b / sqrt(Y) curve. Computes the error grid that section (e) reads too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from amlab.experiments.drdam.common import (
    ERROR_LABEL,
    KINDS,
    QUANTITIES,
    by_y,
    error_panels,
    select,
    share,
    verdict,
)
from amlab.experiments.drdam.errors import error_grid
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.tasks.figures import plt


@dataclass(frozen=True)
class FeatureErrors:
    """The error grid and what (a) measures on its sincos part.

    records: the whole error grid, every feature map (section (e) reads it).
    sincos: its sincos records at the dimensions of (a).
    fits: b / sqrt(Y) fitted per (D, beta, query kind, quantity) (:func:`fits`).
    head_dim, head_beta: the headline curve's D (nearest to 100) and beta (the smallest).
    beta_up, near_lt, dim_up: the comparisons behind the claims (dim_up None with one D).
    """

    records: list[dict[str, Any]]
    sincos: list[dict[str, Any]]
    fits: list[dict[str, Any]]
    head_dim: int
    head_beta: float
    beta_up: list[bool]
    near_lt: list[bool]
    dim_up: list[bool] | None

    @property
    def head(self) -> list[dict[str, Any]]:
        """The headline records: near queries at head_dim and head_beta, by Y."""
        return by_y(self.sincos, D=self.head_dim, beta=self.head_beta, kind="near")

    @property
    def head_fit(self) -> dict[str, dict[str, Any]]:
        """The headline curve's fits: quantity -> :func:`fit_inverse_sqrt`'s result."""
        return {q: self.fit(self.head_dim, self.head_beta, "near", q) for q in QUANTITIES}

    def fit(self, dim: int, beta: float, kind: str, quantity: str) -> dict[str, Any]:
        """The fit for one (D, beta, query kind, quantity)."""
        return select(self.fits, D=dim, beta=beta, kind=kind, quantity=quantity)[0]


def compute(ctx: Context, progress: Progress) -> FeatureErrors:
    grid = ctx.grid
    records = error_grid(grid, ctx.seed, progress)
    sincos = [r for r in select(records, kernel="sincos") if r["D"] in grid.dims]
    largest = max(grid.features)
    return FeatureErrors(
        records=records,
        sincos=sincos,
        fits=fits(sincos),
        head_dim=min(grid.dims, key=lambda d: abs(d - 100)),
        head_beta=min(grid.betas),
        beta_up=error_grows(sincos, "beta", grid.betas, "D", grid.dims, largest),
        near_lt=_below_random(sincos, grid),
        dim_up=error_grows(sincos, "D", grid.dims, "beta", grid.betas, largest)
        if len(grid.dims) > 1
        else None,
    )


def fit_inverse_sqrt(ys: list[int], errors: list[float]) -> dict[str, float]:
    """Fit error = b / sqrt(Y): least squares in log space (b), the paper's envelope
    max sqrt(Y) error (b_max), and the free log-log slope (-0.5 for 1/sqrt(Y))."""
    y, e = np.asarray(ys, float), np.maximum(np.asarray(errors, float), 1e-30)
    b = float(np.exp(np.mean(np.log(e) + 0.5 * np.log(y))))
    slope = float(np.polyfit(np.log(y), np.log(e), 1)[0]) if len(y) > 1 else float("nan")
    return {"b": b, "b_max": float(np.max(np.sqrt(y) * e)), "slope": slope}


def fits(records) -> list[dict[str, Any]]:
    """:func:`fit_inverse_sqrt` of the errors against Y for every (D, beta, query kind,
    quantity) of one feature map's records."""
    out = []
    for dim in sorted({r["D"] for r in records}):
        for beta in sorted({r["beta"] for r in records}):
            for kind in KINDS:
                rows = by_y(records, D=dim, beta=beta, kind=kind)
                if not rows:
                    continue
                ys = [r["Y"] for r in rows]
                for q in QUANTITIES:
                    fit = fit_inverse_sqrt(ys, [r[f"{q}_error"] for r in rows])
                    out.append({"D": dim, "beta": beta, "kind": kind, "quantity": q, **fit})
    return out


def _below_random(records, grid) -> list[bool]:
    """For every (D, beta, Y, quantity) of the grid: whether the errors at and near the
    memories are both smaller than at random queries."""
    flags = []
    for dim in grid.dims:
        for beta in grid.betas:
            for y in grid.features:
                rec = {r["kind"]: r for r in select(records, D=dim, beta=beta, Y=y)}
                for q in QUANTITIES:
                    flags.append(
                        rec["near"][f"{q}_error"] < rec["random"][f"{q}_error"]
                        and rec["at"][f"{q}_error"] < rec["random"][f"{q}_error"]
                    )
    return flags


def error_grows(records, vary: str, values, fixed: str, fixed_values, y: int) -> list[bool]:
    """For every value of ``fixed``, query kind and quantity (energy, grad): whether the error
    at Y = y is larger at the largest value of ``vary`` than at the smallest."""
    flags = []
    for other in fixed_values:
        for kind in KINDS:
            for q in QUANTITIES:
                errs = [
                    select(records, **{vary: v, fixed: other}, kind=kind, Y=y)[0][f"{q}_error"]
                    for v in sorted(values)
                ]
                flags.append(errs[-1] > errs[0])
    return flags


def figure(result: FeatureErrors, ctx: Context, report: Report) -> None:
    for quantity in QUANTITIES:
        _error_figure(result, quantity, ctx.grid.betas, report)


def _error_figure(result: FeatureErrors, quantity: str, betas, report: Report) -> None:
    sincos = result.sincos
    dims = sorted({r["D"] for r in sincos})
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(betas)))

    def draw(ax, dim: int, kind: str) -> None:
        for c, beta in zip(colors, betas, strict=True):
            rows = by_y(sincos, D=dim, beta=beta, kind=kind)
            ys = np.array([r["Y"] for r in rows], float)
            es = np.array([r[f"{quantity}_error"] for r in rows])
            sem = np.array([r[f"{quantity}_sem"] for r in rows])
            ax.errorbar(ys, es, yerr=sem, fmt="o-", color=c, ms=4, label=f"β={beta:g}")
            fit = result.fit(dim, beta, kind, quantity)
            ax.plot(ys, fit["b"] / np.sqrt(ys), "--", color=c, lw=1)
        guess = max(r[f"{quantity}_guess"] for r in select(sincos, D=dim))
        ax.axhline(guess, color="red", ls=":", lw=1, label="random guess")

    error_panels(
        report.path(f"drdam_{quantity}_error.png"),
        f"DrDAM {quantity} error vs Y (sincos; dashed: fitted b/√Y)",
        "Y (random projections)",
        {f"D={dim}\n" + ERROR_LABEL[quantity]: dim for dim in dims},
        draw,
        height=3.0 * len(dims) + 0.6,
    )


def write(result: FeatureErrors, ctx: Context, report: Report) -> dict[str, Any]:
    grid = ctx.grid
    report.section(
        "(a) Error against the number of random projections Y",
        f"K = {grid.num_memories} binary memories; {min(grid.num_queries, grid.num_memories)} "
        f"queries of each kind; D in {list(grid.dims)}, β in {list(grid.betas)}, Y in "
        f"{list(grid.features)}; kernel sincos. Dashed lines: the fitted b/√Y; red dotted line: "
        "a random-guess level as in the paper's figure, mean |E(ξ) - E(random pattern)| of the "
        "exact model (largest over β).",
    )
    report.figure("drdam_energy_error.png", "Mean |E - E~| against Y (log-log)")
    report.figure("drdam_grad_error.png", "Mean |∇E - ∇E~| per entry against Y (log-log)")
    _table(result, max(grid.features), report)
    _claims(result, ctx, report)
    head, head_fit = result.head, result.head_fit
    return {
        "energy_error_by_Y": [[r["Y"], r["energy_error"]] for r in head],
        "grad_error_by_Y": [[r["Y"], r["grad_error"]] for r in head],
        "headline": {
            "D": result.head_dim,
            "beta": result.head_beta,
            "queries": "near",
            "kernel": "sincos",
        },
        "fitted_b": head_fit["energy"]["b"],
        "fitted_b_grad": head_fit["grad"]["b"],
        "fitted_slope": head_fit["energy"]["slope"],
        "fitted_slope_grad": head_fit["grad"]["slope"],
        "fits": result.fits,
        "error_grid": result.records,
    }


def _table(result: FeatureErrors, largest: int, report: Report) -> None:
    """The errors at the largest Y with the fitted slope and b of every curve."""
    rows = []
    for r in select(result.sincos, Y=largest):
        f = {q: result.fit(r["D"], r["beta"], r["kind"], q) for q in QUANTITIES}
        rows.append(
            (
                r["D"],
                r["beta"],
                r["kind"],
                r["energy_error"],
                f["energy"]["slope"],
                f["energy"]["b"],
                r["grad_error"],
                f["grad"]["slope"],
                f["grad"]["b"],
                r["energy_guess"],
            )
        )
    report.text(f"Errors at Y = {largest}, the fitted log-log slope over all Y and b of b/√Y:")
    report.table(
        (
            "D",
            "β",
            "queries",
            "energy error",
            "slope",
            "b",
            "grad error",
            "slope",
            "b",
            "guess level (E)",
        ),
        rows,
    )


def _claims(result: FeatureErrors, ctx: Context, report: Report) -> None:
    grid, fits = ctx.grid, result.fits
    slopes_ok = [-0.65 <= f["slope"] <= -0.35 for f in fits]
    by_kind = {k: float(np.median([f["slope"] for f in fits if f["kind"] == k])) for k in KINDS}
    steeper = [f for f in fits if f["slope"] < -0.65]
    flatter = [f for f in fits if f["slope"] > -0.35]
    head_fit = result.head_fit
    report.claim(
        "Energy and gradient errors fall like 1/√Y",
        f"log-log slope in [-0.65, -0.35] for {share(slopes_ok)} (D, β, query, quantity) "
        f"curves; median slope at / near / random: {by_kind['at']:.2f} / {by_kind['near']:.2f} / "
        f"{by_kind['random']:.2f}. Steeper than -0.65: {len(steeper)} "
        f"({_where(steeper)}); flatter than -0.35: {len(flatter)} ({_where(flatter)}). "
        f"Headline (D={result.head_dim}, β={result.head_beta:g}, near): energy "
        f"{head_fit['energy']['b']:.3g}/√Y (slope {head_fit['energy']['slope']:.2f}), gradient "
        f"{head_fit['grad']['b']:.3g}/√Y (slope {head_fit['grad']['slope']:.2f})",
        verdict(slopes_ok),
    )
    report.text(
        "Reading the slopes: φ(x)ᵀT is an unbiased estimate whose error falls like 1/√Y, and the "
        "energy error is that error divided by β φ(x)ᵀT while the estimate is much larger than "
        "its noise. Where it is not (large β, away from the memories, small Y) the log and the "
        "floor ε make the error larger than linear theory, so the curve falls faster than 1/√Y "
        "once Y is large enough, or stays flat near the random-guess level while Y is too small."
    )
    largest = max(grid.features)
    report.claim(
        "The error grows with β",
        f"at Y={largest}, error at the largest β above that at the smallest β in "
        f"{share(result.beta_up)} (D, query, quantity) cases",
        verdict(result.beta_up),
    )
    report.claim(
        "The error is smaller at and near the memories than at random queries",
        f"at < random and near < random in {share(result.near_lt)} (D, β, Y, quantity) cases",
        verdict(result.near_lt),
    )
    if result.dim_up is not None:
        report.claim(
            "The error grows with the dimension D (paper's error figure)",
            f"at Y={largest}, error at D={max(grid.dims)} above that at D={min(grid.dims)} in "
            f"{share(result.dim_up)} (β, query, quantity) cases",
            verdict(result.dim_up),
        )


def _where(fits: list[dict[str, Any]]) -> str:
    """Which (beta, query) the fits come from, e.g. "β=50 near, β=50 random"."""
    keys = sorted({(f["beta"], f["kind"]) for f in fits})
    return ", ".join(f"β={b:g} {k}" for b, k in keys) or "none"


SECTION = Section("errors vs Y", 0.4, compute, write, figure)
