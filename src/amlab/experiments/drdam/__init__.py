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

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from amlab.data import ImageSet, block_mask
from amlab.experiments.report import (
    Progress,
    Report,
    no_progress,
    paper_images,
    run_sections,
)
from amlab.models import DenseAM, RandomFeatureAM
from amlab.models.random_feature_am import compare_with_dense
from amlab.tasks.figures import image_grid, plt, save_figure

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


def run(
    out: str | Path,
    quick: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
    progress: Progress = no_progress,
    grid: Grid | None = None,
) -> dict[str, Any]:
    """Run every experiment, write ``report.md``, the PNG figures and ``metrics.json`` into out.

    ``grid`` overrides the sizes of ``quick`` (used by the tests to run in seconds).
    """
    grid = grid if grid is not None else (QUICK if quick else FULL)
    start = time.perf_counter()
    # loaded first so that a wrong data directory fails at once, not after the other sections
    images = paper_images(data_dir)
    report = Report(out, "DrDAM: Dense Associative Memory through random features", _INTRO)
    kernels = ("sincos", "cos", "exp", "expexp")
    records: list[dict[str, Any]] = []  # the error grid, shared by (a) and (e)

    def errors_vs_y(p: Progress) -> dict[str, Any]:
        records.extend(_error_grid(grid, seed, p))
        return _section_features(report, grid, records)

    # shares of the run ~ expected cost
    results, seconds = run_sections(
        [
            ("errors_vs_Y", errors_vs_y, 0.4),
            ("errors_vs_K", lambda p: _section_memories(report, grid, seed, p), 0.1),
            ("retrieval", lambda p: _section_retrieval(report, grid, seed, p), 0.35),
            ("images", lambda p: _section_images(report, grid, seed, images, p), 0.15),
        ],
        progress,
    )
    metrics: dict[str, Any] = {"grid": asdict(grid), "seed": seed, "quick": quick}
    metrics.update(results["errors_vs_Y"])
    metrics["error_vs_K"] = results["errors_vs_K"]
    metrics["retrieval"] = results["retrieval"]
    metrics["images"] = results["images"]
    metrics["kernels"] = _section_kernels(report, grid, records, kernels)
    metrics["error_grid"] = records
    metrics["seconds"] = time.perf_counter() - start
    metrics["section_seconds"] = seconds
    report.section(
        "Run",
        f"Seed {seed}, {'quick' if quick else 'full'} grid, {metrics['seconds']:.0f} s on "
        f"{torch.get_num_threads()} CPU thread(s), float32. The grid:\n\n"
        + "\n".join(f"- `{k}` = {v}" for k, v in asdict(grid).items()),
    )
    progress("done", 1.0)
    return report.write(metrics)


_INTRO = """
The exact model (MrDAM) is `DenseAM(memories, energy="lse", beta)`,
E(x) = -(1/β) log Σ_μ exp(-(β/2)‖x - ξ_μ‖²). DrDAM is `RandomFeatureAM.from_dense(...)`,
Ẽ(x) = -(1/β) log(max(φ(x)ᵀT, 10⁻⁵)) with T = Σ_μ φ(ξ_μ), whose feature maps all estimate the
kernel exp(-(β/2)‖x - y‖²) of that distance form. For the exponential maps this needs the
offset c = β‖x‖² (as papers.md writes; (β/2)‖x‖² would give the dot-product kernel
exp(β x·y) instead). Memories and queries are binary, in {0, 1/√D}^D; "near" queries are
memories with 10% of their bits flipped. Y counts random projections (rows of S); sincos
and expexp store 2Y numbers in T, cos and exp Y. Errors are mean absolute errors.
"""


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


def _problem(num_memories: int, num_queries: int, dim: int, flip: float, seed: int):
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


def _rf_seed(seed: int, index: int) -> int:
    return seed * 1000 + 17 + index


# -- (a) and (e): errors on the grid ---------------------------------------------------------
def _error_grid(grid: Grid, seed: int, progress: Progress) -> list[dict[str, Any]]:
    """One record per (kernel, D, beta, Y, kind): mean absolute errors and their standard errors.

    sincos runs at every D; the other maps at D = grid.kernel_dim (same memories, queries and S).
    """
    records = []
    dims = grid.dims if grid.kernel_dim in grid.dims else (*grid.dims, grid.kernel_dim)
    jobs = [("sincos", d) for d in dims] + [(k, grid.kernel_dim) for k in ("cos", "exp", "expexp")]
    problems: dict[int, tuple] = {}
    done, total = 0, len(jobs) * len(grid.betas) * len(grid.features)
    for kernel, dim in jobs:
        if dim not in problems:
            problems[dim] = _problem(grid.num_memories, grid.num_queries, dim, grid.flip, seed)
        memories, queries = problems[dim]
        for beta in grid.betas:
            dense = DenseAM(memories, energy="lse", beta=beta)
            guess = _guess_level(dense, queries)
            for j, num_features in enumerate(grid.features):
                rf = RandomFeatureAM.from_dense(
                    dense, num_features, kernel=kernel, seed=_rf_seed(seed, j)
                )
                for kind, q in queries.items():
                    r = compare_with_dense(rf, dense, q)
                    records.append(
                        {
                            "kernel": kernel,
                            "D": dim,
                            "beta": beta,
                            "Y": num_features,
                            "kind": kind,
                            "energy_error": r["energy_error"],
                            "energy_sem": _sem(r["energy_errors"]),
                            "grad_error": r["grad_error"],
                            "grad_sem": _sem(r["grad_errors"]),
                            "energy_guess": guess[0],
                            "grad_guess": guess[1],
                        }
                    )
                del rf  # before the next S is drawn (Y x D: 1 GB at Y = 500k, D = 500)
                done += 1
                progress(f"{kernel} D={dim} beta={beta:g} Y={num_features}", done / total)
    return records


def _guess_level(dense: DenseAM, queries: dict[str, torch.Tensor]) -> tuple[float, float]:
    """A random-guess reference, after the paper's: mean |E(xi) - E(random pattern)| (and the
    same for the gradient), with the exact energy."""
    e_mem, g_mem = dense.energy_and_grad(queries["at"])
    e_rnd, g_rnd = dense.energy_and_grad(queries["random"])
    return (e_mem - e_rnd).abs().mean().item(), (g_mem - g_rnd).abs().mean().item()


def _sem(values: torch.Tensor) -> float:
    return (values.std() / math.sqrt(values.numel())).item() if values.numel() > 1 else 0.0


def _log_axes(ax) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.2)


def _error_grows(records, vary: str, values, fixed: str, fixed_values, y: int) -> list[bool]:
    """For every value of ``fixed``, query kind and quantity (energy, grad): whether the error
    at Y = y is larger at the largest value of ``vary`` than at the smallest."""
    flags = []
    for other in fixed_values:
        for kind in KINDS:
            for q in QUANTITIES:
                errs = [
                    _select(records, **{vary: v, fixed: other}, kind=kind, Y=y)[0][f"{q}_error"]
                    for v in sorted(values)
                ]
                flags.append(errs[-1] > errs[0])
    return flags


def _save_panels(fig, axes, path: Path, title: str) -> None:
    """Legend on the first panel, a title, and the figure written to path."""
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def _error_panels(
    path: Path, title: str, xlabel: str, rows: dict[str, Any], draw, height: float = 6.0
) -> None:
    """A figure of log-log panels, one row per entry of ``rows`` (y label: what ``draw`` gets)
    and one column per query kind; ``draw(ax, row, kind)`` plots one panel's curves."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, height), squeeze=False, sharex=True)
    for i, (ylabel, row) in enumerate(rows.items()):
        for j, kind in enumerate(KINDS):
            ax = axes[i][j]
            draw(ax, row, kind)
            _log_axes(ax)
            if i == 0:
                ax.set_title(KIND_LABEL[kind], fontsize=10)
            if i == len(rows) - 1:
                ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel(ylabel)
    _save_panels(fig, axes, path, title)


def _select(records, **where) -> list[dict[str, Any]]:
    return [r for r in records if all(r[k] == v for k, v in where.items())]


def fit_inverse_sqrt(ys: list[int], errors: list[float]) -> dict[str, float]:
    """Fit error = b / sqrt(Y): least squares in log space (b), the paper's envelope
    max sqrt(Y) error (b_max), and the free log-log slope (-0.5 for 1/sqrt(Y))."""
    y, e = np.asarray(ys, float), np.maximum(np.asarray(errors, float), 1e-30)
    b = float(np.exp(np.mean(np.log(e) + 0.5 * np.log(y))))
    slope = float(np.polyfit(np.log(y), np.log(e), 1)[0]) if len(y) > 1 else float("nan")
    return {"b": b, "b_max": float(np.max(np.sqrt(y) * e)), "slope": slope}


def _fits(records, kernel: str) -> list[dict[str, Any]]:
    out = []
    sub = _select(records, kernel=kernel)
    for dim in sorted({r["D"] for r in sub}):
        for beta in sorted({r["beta"] for r in sub}):
            for kind in KINDS:
                rows = sorted(_select(sub, D=dim, beta=beta, kind=kind), key=lambda r: r["Y"])
                if not rows:
                    continue
                ys = [r["Y"] for r in rows]
                for q in QUANTITIES:
                    fit = fit_inverse_sqrt(ys, [r[f"{q}_error"] for r in rows])
                    out.append({"D": dim, "beta": beta, "kind": kind, "quantity": q, **fit})
    return out


def _fit(fits: list[dict[str, Any]], dim: int, beta: float, kind: str, quantity: str) -> dict:
    """The fit of :func:`_fits` for one (D, beta, query kind, quantity)."""
    return _select(fits, D=dim, beta=beta, kind=kind, quantity=quantity)[0]


def _where(fits: list[dict[str, Any]]) -> str:
    """Which (beta, query) the fits come from, e.g. "β=50 near, β=50 random"."""
    keys = sorted({(f["beta"], f["kind"]) for f in fits})
    return ", ".join(f"β={b:g} {k}" for b, k in keys) or "none"


def _share(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)}"


def _verdict(flags: list[bool], hi: float = 0.75, lo: float = 0.4) -> str:
    frac = sum(flags) / max(len(flags), 1)
    return "reproduced" if frac >= hi else "partly" if frac >= lo else "not reproduced"


def _section_features(report: Report, grid: Grid, records) -> dict[str, Any]:
    sincos = [r for r in _select(records, kernel="sincos") if r["D"] in grid.dims]
    fits = _fits(sincos, "sincos")
    head_dim = min(grid.dims, key=lambda d: abs(d - 100))
    head_beta = min(grid.betas)
    head = sorted(_select(sincos, D=head_dim, beta=head_beta, kind="near"), key=lambda r: r["Y"])
    head_fit = {q: _fit(fits, head_dim, head_beta, "near", q) for q in QUANTITIES}
    for q in QUANTITIES:
        _error_figure(report, sincos, fits, q, grid)
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
    largest = max(grid.features)
    rows = []
    for r in _select(sincos, Y=largest):
        f = {q: _fit(fits, r["D"], r["beta"], r["kind"], q) for q in QUANTITIES}
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
    # claims
    slopes_ok = [-0.65 <= f["slope"] <= -0.35 for f in fits]
    by_kind = {k: float(np.median([f["slope"] for f in fits if f["kind"] == k])) for k in KINDS}
    steeper = [f for f in fits if f["slope"] < -0.65]
    flatter = [f for f in fits if f["slope"] > -0.35]
    report.claim(
        "Energy and gradient errors fall like 1/√Y",
        f"log-log slope in [-0.65, -0.35] for {_share(slopes_ok)} (D, β, query, quantity) "
        f"curves; median slope at / near / random: {by_kind['at']:.2f} / {by_kind['near']:.2f} / "
        f"{by_kind['random']:.2f}. Steeper than -0.65: {len(steeper)} "
        f"({_where(steeper)}); flatter than -0.35: {len(flatter)} ({_where(flatter)}). "
        f"Headline (D={head_dim}, β={head_beta:g}, near): energy "
        f"{head_fit['energy']['b']:.3g}/√Y (slope {head_fit['energy']['slope']:.2f}), gradient "
        f"{head_fit['grad']['b']:.3g}/√Y (slope {head_fit['grad']['slope']:.2f})",
        _verdict(slopes_ok),
    )
    report.text(
        "Reading the slopes: φ(x)ᵀT is an unbiased estimate whose error falls like 1/√Y, and the "
        "energy error is that error divided by β φ(x)ᵀT while the estimate is much larger than "
        "its noise. Where it is not (large β, away from the memories, small Y) the log and the "
        "floor ε make the error larger than linear theory, so the curve falls faster than 1/√Y "
        "once Y is large enough, or stays flat near the random-guess level while Y is too small."
    )
    beta_up = _error_grows(sincos, "beta", grid.betas, "D", grid.dims, largest)
    report.claim(
        "The error grows with β",
        f"at Y={largest}, error at the largest β above that at the smallest β in "
        f"{_share(beta_up)} (D, query, quantity) cases",
        _verdict(beta_up),
    )
    near_lt = []
    for dim in grid.dims:
        for beta in grid.betas:
            for y in grid.features:
                rec = {r["kind"]: r for r in _select(sincos, D=dim, beta=beta, Y=y)}
                for q in QUANTITIES:
                    near_lt.append(
                        rec["near"][f"{q}_error"] < rec["random"][f"{q}_error"]
                        and rec["at"][f"{q}_error"] < rec["random"][f"{q}_error"]
                    )
    report.claim(
        "The error is smaller at and near the memories than at random queries",
        f"at < random and near < random in {_share(near_lt)} (D, β, Y, quantity) cases",
        _verdict(near_lt),
    )
    if len(grid.dims) > 1:
        dim_up = _error_grows(sincos, "D", grid.dims, "beta", grid.betas, largest)
        report.claim(
            "The error grows with the dimension D (paper's error figure)",
            f"at Y={largest}, error at D={max(grid.dims)} above that at D={min(grid.dims)} in "
            f"{_share(dim_up)} (β, query, quantity) cases",
            _verdict(dim_up),
        )
    return {
        "energy_error_by_Y": [[r["Y"], r["energy_error"]] for r in head],
        "grad_error_by_Y": [[r["Y"], r["grad_error"]] for r in head],
        "headline": {"D": head_dim, "beta": head_beta, "queries": "near", "kernel": "sincos"},
        "fitted_b": head_fit["energy"]["b"],
        "fitted_b_grad": head_fit["grad"]["b"],
        "fitted_slope": head_fit["energy"]["slope"],
        "fitted_slope_grad": head_fit["grad"]["slope"],
        "fits": fits,
    }


def _error_figure(report: Report, sincos, fits, quantity: str, grid: Grid) -> None:
    dims = sorted({r["D"] for r in sincos})
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(grid.betas)))

    def draw(ax, dim: int, kind: str) -> None:
        for c, beta in zip(colors, grid.betas, strict=True):
            rows = sorted(_select(sincos, D=dim, beta=beta, kind=kind), key=lambda r: r["Y"])
            ys = np.array([r["Y"] for r in rows], float)
            es = np.array([r[f"{quantity}_error"] for r in rows])
            sem = np.array([r[f"{quantity}_sem"] for r in rows])
            ax.errorbar(ys, es, yerr=sem, fmt="o-", color=c, ms=4, label=f"β={beta:g}")
            fit = _fit(fits, dim, beta, kind, quantity)
            ax.plot(ys, fit["b"] / np.sqrt(ys), "--", color=c, lw=1)
        guess = max(r[f"{quantity}_guess"] for r in _select(sincos, D=dim))
        ax.axhline(guess, color="red", ls=":", lw=1, label="random guess")

    _error_panels(
        report.path(f"drdam_{quantity}_error.png"),
        f"DrDAM {quantity} error vs Y (sincos; dashed: fitted b/√Y)",
        "Y (random projections)",
        {f"D={dim}\n" + ERROR_LABEL[quantity]: dim for dim in dims},
        draw,
        height=3.0 * len(dims) + 0.6,
    )


# -- (b) error vs the number of stored patterns ----------------------------------------------
def _section_memories(report: Report, grid: Grid, seed: int, progress: Progress) -> dict[str, Any]:
    k_max = max(grid.k_values)
    memories_all, _ = _problem(k_max, 0, grid.k_dim, grid.flip, seed + 1)
    g = torch.Generator().manual_seed(seed * 31 + 5)
    n = min(grid.num_queries, min(grid.k_values))
    random_q = binary_patterns(n, grid.k_dim, g)
    records, sizes = [], []
    done, total = 0, len(grid.betas) * len(grid.k_values)
    for beta in grid.betas:
        for k in sorted(grid.k_values):
            memories = memories_all[:k]
            queries = {
                "at": memories[:n],
                "near": flip_bits(memories[:n], grid.flip, g),
                "random": random_q,
            }
            dense = DenseAM(memories, energy="lse", beta=beta)
            rf = RandomFeatureAM.from_dense(dense, grid.k_features, seed=_rf_seed(seed, 0))
            if beta == grid.betas[0]:
                sizes.append([k, rf.nbytes, dense.memories.numel() * dense.memories.element_size()])
            for kind, q in queries.items():
                r = compare_with_dense(rf, dense, q)
                records.append(
                    {
                        "beta": beta,
                        "K": k,
                        "kind": kind,
                        "energy_error": r["energy_error"],
                        "grad_error": r["grad_error"],
                    }
                )
            done += 1
            progress(f"beta={beta:g} K={k}", done / total)
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(grid.betas)))
    slopes = {}

    def draw(ax, q: str, kind: str) -> None:
        for c, beta in zip(colors, grid.betas, strict=True):
            rows = sorted(_select(records, beta=beta, kind=kind), key=lambda r: r["K"])
            ks = [r["K"] for r in rows]
            es = [r[f"{q}_error"] for r in rows]
            ax.plot(ks, es, "o-", color=c, ms=4, label=f"β={beta:g}")
            slopes[(q, kind, beta)] = float(
                np.polyfit(np.log(ks), np.log(np.maximum(es, 1e-30)), 1)[0]
            )

    _error_panels(
        report.path("drdam_error_vs_K.png"),
        f"DrDAM error vs K at Y={grid.k_features}, D={grid.k_dim} (sincos)",
        "K (stored patterns)",
        BOTH_ERRORS,
        draw,
    )
    report.section(
        "(b) Error against the number of stored patterns K",
        f"Y = {grid.k_features} fixed, D = {grid.k_dim}, K in {sorted(grid.k_values)} (the first K "
        f"of one list of patterns), {n} queries of each kind.",
    )
    report.figure("drdam_error_vs_K.png", "Mean absolute errors against K at fixed Y")
    report.table(
        ("K", "DrDAM bytes (S, b, T)", "MrDAM bytes (memories)"),
        sizes,
    )
    med = {
        (q, kind): float(
            np.median([v for (qq, kk, _), v in slopes.items() if (qq, kk) == (q, kind)])
        )
        for q in QUANTITIES
        for kind in KINDS
    }
    report.table(
        ("quantity", *[f"median slope vs K, {k}" for k in KINDS]),
        [(q, *[med[(q, k)] for k in KINDS]) for q in QUANTITIES],
    )
    flat = len({s[1] for s in sizes}) == 1
    report.claim(
        "The memory footprint does not grow with the number of stored patterns",
        f"DrDAM holds {sizes[0][1]} bytes at every K in {[s[0] for s in sizes]}; MrDAM grows "
        f"from {sizes[0][2]} to {sizes[-1][2]} bytes",
        "reproduced" if flat else "not reproduced",
    )
    report.claim(
        "(no number in papers.md) How the error changes with K at fixed Y",
        "median log-log slope of the error against K, at / near / random: energy "
        + " / ".join(f"{med[('energy', k)]:.2f}" for k in KINDS)
        + "; gradient "
        + " / ".join(f"{med[('grad', k)]:.2f}" for k in KINDS),
        "measured",
    )
    return {
        "records": records,
        "bytes": sizes,
        "median_slopes": {f"{q}_{k}": v for (q, k), v in med.items()},
    }


# -- (c) retrieval ---------------------------------------------------------------------------
def binarize(x: torch.Tensor) -> torch.Tensor:
    """Nearest binary pattern in {0, 1/sqrt(D)}^D (threshold at half of 1/sqrt(D))."""
    on = 1.0 / math.sqrt(x.shape[1])
    return (x > 0.5 * on).to(x.dtype) * on


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised Hamming distance (B,) between binarised states: fraction of bits that differ."""
    return (binarize(a) != binarize(b)).float().mean(1)


def _section_retrieval(report: Report, grid: Grid, seed: int, progress: Progress) -> dict[str, Any]:
    dim = grid.retrieval_dim
    memories, queries = _problem(grid.num_memories, grid.retrieval_queries, dim, grid.flip, seed)
    starts = torch.cat([queries["near"], queries["random"]])
    n = queries["near"].shape[0]
    steps, step = grid.retrieval_steps, grid.retrieval_step_size
    records, exact_acc, exact_conv, exact_distinct, exact_margin = [], {}, {}, {}, {}
    done, total = 0, len(grid.retrieval_betas) * (1 + len(grid.retrieval_features))
    for beta in grid.retrieval_betas:
        dense = DenseAM(memories, energy="lse", beta=beta)
        exact_run = dense.retrieve(starts, steps=steps, step_size=step)
        exact = exact_run.states
        exact_acc[beta] = (binarize(exact[:n]) == memories[:n]).all(1).float().mean().item()
        exact_conv[beta] = exact_run.converged.float().mean().item()
        exact_distinct[beta] = torch.unique(binarize(exact), dim=0).shape[0]
        exact_margin[beta] = (exact * math.sqrt(dim) - 0.5).abs().mean().item()
        done += 1
        progress(f"exact beta={beta:g}", done / total)
        for j, num_features in enumerate(grid.retrieval_features):
            rf = RandomFeatureAM.from_dense(dense, num_features, seed=_rf_seed(seed, j))
            approx = rf.retrieve(starts, steps=steps, step_size=step)
            h = hamming(exact, approx.states)
            for kind, part in (("near", h[:n]), ("random", h[n:])):
                records.append(
                    {
                        "beta": beta,
                        "Y": num_features,
                        "kind": kind,
                        "hamming": part.mean().item(),
                        "hamming_sem": _sem(part),
                        "identical": (part == 0).float().mean().item(),
                        "mean_steps": approx.steps.float().mean().item(),
                        "converged": approx.converged.float().mean().item(),
                    }
                )
            done += 1
            progress(f"beta={beta:g} Y={num_features}", done / total)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(grid.retrieval_betas)))
    for j, kind in enumerate(("near", "random")):
        ax = axes[0][j]
        for c, beta in zip(colors, grid.retrieval_betas, strict=True):
            rows = sorted(_select(records, beta=beta, kind=kind), key=lambda r: r["Y"])
            ax.errorbar(
                [r["Y"] for r in rows],
                [r["hamming"] for r in rows],
                yerr=[r["hamming_sem"] for r in rows],
                fmt="o-",
                color=c,
                ms=4,
                label=f"β={beta:g}",
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(KIND_LABEL[kind], fontsize=10)
        ax.set_xlabel("Y (random projections)")
        ax.set_ylim(bottom=-0.01)
        ax.grid(True, alpha=0.2)
    axes[0][0].set_ylabel("Hamming distance, DrDAM vs MrDAM fixed point")
    _save_panels(
        fig,
        axes,
        report.path("drdam_retrieval.png"),
        f"Retrieval, D={dim}, K={grid.num_memories}, {steps} steps of {step}",
    )
    report.section(
        "(c) Retrieval: exact and approximate fixed points",
        f"Gradient descent from {n} near and {n} random queries, step {step}, at most {steps} "
        f"steps (a query stops when no entry moves more than 1e-6), D = {dim}, K = "
        f"{grid.num_memories}. Both final states are binarised at 1/(2√D); the distance is the "
        "fraction of bits that differ (0: same fixed point, 0.5: unrelated). Exact-model "
        "retrieval of the source memory from near queries: "
        + ", ".join(f"β={b:g}: {a:.0%}" for b, a in exact_acc.items())
        + "; exact queries converged within the steps: "
        + ", ".join(f"β={b:g}: {c:.0%}" for b, c in exact_conv.items())
        + f"; distinct binarised exact fixed points among the {2 * n} queries: "
        + ", ".join(f"β={b:g}: {c}" for b, c in exact_distinct.items())
        + "; mean distance of the exact fixed points' entries from the threshold, in units of "
        "1/√D (0.5 for a binary pattern, 0 on the threshold): "
        + ", ".join(f"β={b:g}: {m:.3f}" for b, m in exact_margin.items())
        + ". Where that distance is small the exact dynamics end near the centroid of the "
        "memories rather than at one of them, and binarising such a state is fragile: the "
        "Hamming distance then also measures how the threshold splits nearly equal states.",
    )
    report.figure("drdam_retrieval.png", "Hamming distance between fixed points against Y")
    report.table(
        ("β", "Y", "queries", "Hamming", "identical", "DrDAM mean steps", "DrDAM converged"),
        [
            (
                r["beta"],
                r["Y"],
                r["kind"],
                r["hamming"],
                f"{r['identical']:.0%}",
                r["mean_steps"],
                f"{r['converged']:.0%}",
            )
            for r in records
        ],
    )
    falls = []
    for beta in grid.retrieval_betas:
        for kind in ("near", "random"):
            rows = sorted(_select(records, beta=beta, kind=kind), key=lambda r: r["Y"])
            first, last = rows[0]["hamming"], rows[-1]["hamming"]
            falls.append(last < 0.8 * first or last == first == 0.0)
    y_max = max(grid.retrieval_features)
    at_max = {(r["beta"], r["kind"]): r["hamming"] for r in records if r["Y"] == y_max}
    report.claim(
        "Retrieval: DrDAM's fixed points approach MrDAM's as Y grows",
        f"Hamming at the largest Y below 0.8x that at the smallest in {_share(falls)} (β, query) "
        "cases; at "
        f"Y={y_max}: " + ", ".join(f"β={b:g} {k} {v:.3f}" for (b, k), v in at_max.items()),
        _verdict(falls),
    )
    # Hamming distances compare across beta only where the exact fixed points are binary
    # patterns (margin well above 0); elsewhere they measure the binarisation of a centroid.
    retrieving = [b for b in grid.retrieval_betas if exact_margin[b] > 0.1]
    first_same = {}
    for beta in retrieving:
        rows = sorted(_select(records, beta=beta, kind="near"), key=lambda r: r["Y"])
        first_same[beta] = next((r["Y"] for r in rows if r["identical"] >= 0.5), None)
    if len(retrieving) >= 2:
        b_lo, b_hi = min(retrieving), max(retrieving)
        h_lo, h_hi = at_max[(b_lo, "near")], at_max[(b_hi, "near")]
        report.claim(
            "Higher β needs more features for the same retrieval",
            f"among the β where the exact dynamics end at binary patterns "
            f"({', '.join(f'{b:g}' for b in retrieving)}), near queries at Y={y_max}: Hamming "
            f"{h_hi:.3f} at β={b_hi:g} vs {h_lo:.3f} at β={b_lo:g}; smallest Y with at least "
            "half of the fixed points identical: "
            + ", ".join(
                f"β={b:g}: {y if y else f'none <= {y_max}'}" for b, y in first_same.items()
            ),
            "reproduced" if h_hi >= h_lo else "not reproduced in this range",
        )
    else:
        report.claim(
            "Higher β needs more features for the same retrieval",
            "not testable on this grid: fewer than two β at which the exact dynamics end at "
            "binary patterns (errors at equal Y do grow with β, see (a))",
            "not tested",
        )
    return {
        "records": records,
        "exact_near_accuracy": exact_acc,
        "exact_converged": exact_conv,
        "exact_distinct_fixed_points": exact_distinct,
        "exact_threshold_margin": exact_margin,
        "first_Y_half_identical": first_same,
    }


# -- (d) image completion --------------------------------------------------------------------
def _section_images(
    report: Report, grid: Grid, seed: int, images: ImageSet, progress: Progress
) -> dict[str, Any]:
    name = images.name
    stored = images.subset(grid.image_memories, seed=seed)
    dim = stored.images.shape[1]
    scale = 1.0 / math.sqrt(dim)  # the paper stores images / sqrt(D)
    memories = stored.images * scale
    n = min(grid.image_queries, grid.image_memories)
    query, observed = block_mask(memories[:n], stored.shape, "lower_half")
    beta, steps, step = grid.image_beta, grid.image_steps, grid.image_step_size
    dense = DenseAM(memories, energy="lse", beta=beta)
    exact = dense.retrieve(query, steps=steps, step_size=step, clamp=observed, tol=0.0)
    total = 1 + len(grid.image_features)
    progress("exact", 1 / total)
    hidden = ~observed[0]
    rows = [
        ("original", stored.images[:n]),
        ("query", query / scale),
        ("MrDAM", exact.states / scale),
    ]
    curves, results = {}, []
    exact_idx = dense.nearest(exact.states)[0]
    for j, num_features in enumerate(grid.image_features):
        rf = RandomFeatureAM.from_dense(dense, num_features, seed=_rf_seed(seed, j))
        approx = rf.retrieve(
            query, steps=steps, step_size=step, clamp=observed, tol=0.0, record_states=True
        )
        path = approx.path
        exact_on_path = dense.energy(path.reshape(-1, dim)).reshape(path.shape[0], n)
        curves[num_features] = (approx.energies.mean(1), exact_on_path.mean(1))
        diff = (approx.states - exact.states)[:, hidden].abs() / scale
        results.append(
            {
                "Y": num_features,
                "hidden_mae_vs_exact": diff.mean().item(),
                "hidden_mae_vs_original": ((approx.states - memories[:n])[:, hidden].abs() / scale)
                .mean()
                .item(),
                "same_memory": (dense.nearest(approx.states)[0] == exact_idx).float().mean().item(),
                "T_numbers": rf.T.numel(),
            }
        )
        rows.append((f"Y={num_features}", approx.states / scale))
        progress(f"Y={num_features}", (j + 2) / total)
    exact_mae = ((exact.states - memories[:n])[:, hidden].abs() / scale).mean().item()
    image_grid(
        rows,
        stored.shape,
        report.path("drdam_completion.png"),
        title=f"{name}: lower half completed, β={beta:g}, {steps} steps of {step}",
    )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    t = np.arange(exact.energies.shape[0])
    ax.plot(t, exact.energies.mean(1).numpy(), color="black", lw=2, label="MrDAM: E on its path")
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(curves)))
    for c, (num_features, (approx_e, exact_e)) in zip(colors, curves.items(), strict=True):
        ax.plot(t, approx_e.numpy(), color=c, label=f"DrDAM Y={num_features}: E~ on its path")
        ax.plot(t, exact_e.numpy(), color=c, ls="--", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("energy (mean over queries)")
    ax.set_title("Energy along the trajectories (dashed: exact E on DrDAM's path)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.2)
    save_figure(fig, report.path("drdam_completion_energy.png"))
    report.section(
        "(d) Image completion",
        f"{grid.image_memories} {name} images stored (pixels / √D, as in the paper); the lower "
        f"half of {n} of them hidden (set to 0) and the upper half clamped; gradient descent, "
        f"β = {beta:g}, {steps} steps of {step}. Errors are in pixel units ([0, 1]) over the "
        f"hidden pixels. The exact model's completion is {exact_mae:.3f} from the originals.",
    )
    report.figure("drdam_completion.png", "Completions: exact (MrDAM) and DrDAM at several Y")
    report.figure("drdam_completion_energy.png", "Energy along both trajectories")
    report.table(
        ("Y", "numbers in T", "MAE vs MrDAM", "MAE vs original", "same nearest memory as MrDAM"),
        [
            (
                r["Y"],
                r["T_numbers"],
                r["hidden_mae_vs_exact"],
                r["hidden_mae_vs_original"],
                f"{r['same_memory']:.0%}",
            )
            for r in results
        ],
    )
    first, last = results[0], results[-1]
    report.claim(
        "Image completion: DrDAM's completions approach the exact model's as Y grows",
        f"hidden-pixel MAE vs MrDAM {first['hidden_mae_vs_exact']:.3f} at Y={first['Y']} -> "
        f"{last['hidden_mae_vs_exact']:.3f} at Y={last['Y']}; same nearest memory "
        f"{first['same_memory']:.0%} -> {last['same_memory']:.0%}",
        "reproduced"
        if last["hidden_mae_vs_exact"] < first["hidden_mae_vs_exact"] and last["same_memory"] == 1
        else "partly"
        if last["hidden_mae_vs_exact"] < first["hidden_mae_vs_exact"]
        else "not reproduced",
    )
    return {
        "data": name,
        "exact_mae_vs_original": exact_mae,
        "by_Y": results,
        "energy_curves": {
            str(k): {"approx": a.tolist(), "exact_on_path": e.tolist()}
            for k, (a, e) in curves.items()
        },
        "exact_energy_curve": exact.energies.mean(1).tolist(),
    }


# -- (e) kernels -----------------------------------------------------------------------------
def _section_kernels(report: Report, grid: Grid, records, kernels) -> dict[str, Any]:
    dim = grid.kernel_dim
    sub = [r for r in records if r["D"] == dim]
    beta = min(grid.betas)

    def draw(ax, q: str, kind: str) -> None:
        for kernel in kernels:
            rows = sorted(_select(sub, kernel=kernel, beta=beta, kind=kind), key=lambda r: r["Y"])
            ax.plot(
                [r["Y"] for r in rows], [r[f"{q}_error"] for r in rows], "o-", ms=4, label=kernel
            )

    _error_panels(
        report.path("drdam_kernels.png"),
        f"Feature maps compared, D={dim}, β={beta:g}",
        "Y (random projections)",
        BOTH_ERRORS,
        draw,
    )
    largest = max(grid.features)
    table, wins, best = [], [], {}
    for b in grid.betas:
        for y in grid.features:
            for kind in KINDS:
                row: list[Any] = [b, kind]
                for q in QUANTITIES:
                    errs = {
                        k: _select(sub, kernel=k, beta=b, kind=kind, Y=y)[0][f"{q}_error"]
                        for k in kernels
                    }
                    winner = min(errs, key=errs.get)
                    wins.append(winner == "sincos")
                    row += [errs[k] for k in kernels]
                    if y == largest:
                        best[f"{q}_beta{b:g}_{kind}"] = winner
                if y == largest:
                    table.append(row)
    report.section(
        "(e) Feature maps compared",
        f"The four maps on the grid of (a) at D = {dim}: same memories, queries, β, Y and random "
        "projections S (seeded alike). At equal Y, sincos and expexp hold 2Y numbers in T, cos "
        "and exp Y. The exponential maps' variance grows like exp(β‖x‖²) (here ‖x‖² ≈ 1/2).",
    )
    report.figure("drdam_kernels.png", f"Errors of the four feature maps against Y at β={beta:g}")
    report.text(f"Errors at Y = {largest} (energy, then gradient):")
    report.table(
        ("β", "queries", *[f"E {k}" for k in kernels], *[f"∇E {k}" for k in kernels]),
        table,
    )
    report.claim(
        "SinCos (the paper's default) approximates best of the four maps",
        f"sincos has the smallest error in {_share(wins)} (β, Y, query, quantity) cases at D={dim}",
        _verdict(wins),
    )
    return {"best_at_largest_Y": best, "sincos_wins": [sum(wins), len(wins)]}
