"""The LSR paper's log-likelihood experiment (papers.md section 1).

A true distribution, a Gaussian mixture (k equal-weight components, means uniform on
[0,1]^d, isotropic sigma = 0.1), gives M samples that are stored as memories. For betas
geometrically spaced from 2/d to 2/R^2 (R half the smallest distance between memories),
starts on the sphere of radius r = sqrt(2/beta) around each memory descend the LSR energy
(exact fixed-point solver) and the LSE energy (gradient descent). The retrieved points are
scored by their log-likelihood under the true mixture, their novelty (distance to the
nearest memory above 0.1) and how many distinct points were retrieved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from amlab.analysis import unique_rows
from amlab.analysis.minima import first_unique
from amlab.dynamics import cosine_schedule
from amlab.energy.distances import nearest_memory, sq_distances, sq_norms
from amlab.experiments.report import Context, Progress, Report, Section
from amlab.models import DenseAM
from amlab.tasks.figures import plt, save_figure

SIGMA = 0.1
#: a unique retrieval farther than this from every memory is novel
NOVELTY_RADIUS = 0.1
#: LSE end points closer than this are one retrieval (data live in [0,1]^d)
LSE_UNIQUE_TOL = 1e-3
#: starts lie at this fraction of r: just inside their memory's open support
START_SHRINK = 1.0 - 1e-6
#: LSE gradient descent: cosine step size 1.0 -> 0.1 (a step of 1 is the attention update)
LSE_STEP = (1.0, 0.1)
LSE_TOL = 1e-8
LSR_STEPS = 500
ENERGIES = ("lsr", "lse")


# -- the true distribution -------------------------------------------------------------------
def gmm_means(k: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """k component means (k, d), uniform on [0,1]^d, float64."""
    return torch.rand(k, d, generator=generator, dtype=torch.float64)


def gmm_sample(
    means: torch.Tensor, n: int, generator: torch.Generator, sigma: float = SIGMA
) -> torch.Tensor:
    """n samples (n, d) of the equal-weight isotropic mixture with these means (k, d)."""
    component = torch.randint(means.shape[0], (n,), generator=generator)
    noise = torch.randn(n, means.shape[1], generator=generator, dtype=means.dtype)
    return means[component] + sigma * noise


def gmm_log_density(x: torch.Tensor, means: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """log p(x) (N,) of points x (N, d) under the equal-weight mixture, in float64:
    logsumexp_j(-||x - m_j||^2 / (2 sigma^2)) - log k - (d/2) log(2 pi sigma^2)."""
    x, means = x.double(), means.double()
    k, d = means.shape
    d2 = sq_distances(x, means, (x * x).sum(1), sq_norms(means))
    return (
        torch.logsumexp(-d2 / (2 * sigma**2), dim=1)
        - math.log(k)
        - 0.5 * d * math.log(2 * math.pi * sigma**2)
    )


# -- starts, betas and scores ------------------------------------------------------------------
def sphere_starts(
    centres: torch.Tensor, radius: float, per_centre: int, generator: torch.Generator
) -> torch.Tensor:
    """``per_centre`` points (M * per_centre, D) uniform on the sphere of ``radius`` around
    each centre (M, D); rows grouped by centre."""
    m, d = centres.shape
    direction = torch.randn(m * per_centre, d, generator=generator, dtype=centres.dtype)
    direction /= direction.norm(dim=1, keepdim=True)
    return centres.repeat_interleave(per_centre, 0) + radius * direction


def beta_grid(memories: torch.Tensor, n: int) -> torch.Tensor:
    """n betas (n,) geometrically spaced from 2/d to 2/R^2, R half the smallest distance
    between the memories (M, d)."""
    r_min = 0.5 * float(torch.pdist(memories).min())
    lo, hi = 2.0 / memories.shape[1], 2.0 / r_min**2
    return torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)


def novelty(points: torch.Tensor, memories: torch.Tensor, radius: float = NOVELTY_RADIUS) -> dict:
    """Novel points among ``points`` (N, D): farther than ``radius`` from every memory (M, D).

    Returns {"novel": (N,) bool, "fraction": share of novel points (nan if N = 0)}.
    """
    if points.shape[0] == 0:
        return {"novel": torch.zeros(0, dtype=torch.bool), "fraction": math.nan}
    _, dist = nearest_memory(points, memories)
    novel = dist > radius
    return {"novel": novel, "fraction": novel.double().mean().item()}


def unique_retrievals(
    energy: str, states: torch.Tensor, memories: torch.Tensor, beta: float
) -> torch.Tensor:
    """Indices of the distinct retrieved points among ``states`` (N, D).

    LSR: one per distinct active set (the exact solver ends on the centroid of its active
    set, so equal sets are equal points). LSE: :func:`amlab.analysis.unique_rows` with
    tolerance ``LSE_UNIQUE_TOL``.
    """
    if energy == "lse" or states.shape[0] == 0:
        return unique_rows(states, LSE_UNIQUE_TOL)
    d2 = sq_distances(states, memories, (states * states).sum(1), sq_norms(memories))
    return first_unique((1.0 - 0.5 * beta * d2) > 0)[1]  # active sets, as the solver's


def retrieve(
    energy: str, memories: torch.Tensor, beta: float, starts: torch.Tensor, lse_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final states (N, D) and converged flags (N,): LSR by the exact fixed-point solver,
    LSE by gradient descent with a cosine step size ``LSE_STEP`` over ``lse_steps``."""
    am = DenseAM(memories, energy=energy, beta=beta)
    if energy == "lsr":
        out = am.retrieve(starts, method="fixed_point", steps=LSR_STEPS)
    else:
        out = am.retrieve(
            starts,
            method="gd",
            steps=lse_steps,
            step_size=cosine_schedule(*LSE_STEP, lse_steps),
            tol=LSE_TOL,
        )
    return out.states, out.converged


def score(
    energy: str,
    states: torch.Tensor,
    converged: torch.Tensor,
    memories: torch.Tensor,
    means: torch.Tensor,
    beta: float,
) -> dict:
    """Metrics of one retrieval run: mean log-likelihood of the converged end points and
    of the distinct ones (and of the novel distinct ones), novelty, counts."""
    kept = states[converged]
    loglik = gmm_log_density(kept, means)
    unique = unique_retrievals(energy, kept, memories, beta)
    new = novelty(kept[unique], memories)
    u_loglik = loglik[unique]
    return {
        "converged": converged.double().mean().item(),
        "loglik": loglik.mean().item() if len(loglik) else math.nan,
        "loglik_unique": u_loglik.mean().item() if len(unique) else math.nan,
        "loglik_novel": u_loglik[new["novel"]].mean().item()
        if bool(new["novel"].any())
        else math.nan,
        "unique": int(len(unique)),
        "novel": int(new["novel"].sum()),
        "novelty": new["fraction"],
    }


def run_config(
    k: int,
    d: int,
    m: int,
    *,
    n_betas: int,
    per_memory: int,
    lse_steps: int,
    seed: int,
    on_beta: Callable[[int], None] | None = None,
) -> dict:
    """One (k, d, M) configuration over the whole beta grid: per-beta metrics per energy.
    ``on_beta(j)`` is called before the j-th beta (progress)."""
    g = torch.Generator().manual_seed(seed)
    means = gmm_means(k, d, g)
    memories = gmm_sample(means, m, g)
    fresh = gmm_log_density(gmm_sample(means, 10_000, g), means)
    betas = beta_grid(memories, n_betas)
    result: dict = {
        "k": k,
        "d": d,
        "M": m,
        "seed": seed,
        "R": 0.5 * float(torch.pdist(memories).min()),
        "betas": betas.tolist(),
        "baseline": {
            "memories": gmm_log_density(memories, means).mean().item(),
            "fresh_samples": fresh.mean().item(),
            "fresh_samples_std": fresh.std().item(),
        },
        **{e: [] for e in ENERGIES},
        "seconds": {e: 0.0 for e in ENERGIES},
    }
    for j, beta in enumerate(betas.tolist()):
        if on_beta is not None:
            on_beta(j)
        starts = sphere_starts(memories, START_SHRINK * math.sqrt(2.0 / beta), per_memory, g)
        for energy in ENERGIES:
            t0 = time.perf_counter()
            states, converged = retrieve(energy, memories, beta, starts, lse_steps)
            result[energy].append(score(energy, states, converged, memories, means, beta))
            result["seconds"][energy] += time.perf_counter() - t0
    return result


# -- the section: compute ---------------------------------------------------------------------
@dataclass
class LoglikResult:
    """Every configuration's per-beta scores (``runs``, from :func:`run_config`), their
    means (``summary``: {metric: {energy: {"all" betas, LSR's "peak" beta}}}, plus
    "loglik_best"), the reference log-likelihoods and the compute time."""

    runs: list[dict]
    summary: dict
    baseline: dict[str, float]
    seconds: float


def compute(ctx: Context, progress: Progress) -> LoglikResult:
    """Run every (k, d, M) configuration of the grid (seed ``1000 * seed + index``)."""
    grid = ctx.grid
    configs, n_betas = grid.loglik_configs, grid.loglik_n_betas
    started = time.perf_counter()
    runs = []
    for i, (k, d, m) in enumerate(configs):

        def on_beta(j: int, i: int = i, name: str = f"k={k} d={d} M={m}") -> None:
            progress(f"{name}, beta {j + 1}/{n_betas}", (i + j / n_betas) / len(configs))

        runs.append(
            run_config(
                k,
                d,
                m,
                n_betas=n_betas,
                per_memory=grid.loglik_starts_per_memory,
                lse_steps=grid.loglik_lse_steps,
                seed=ctx.seed * 1000 + i,
                on_beta=on_beta,
            )
        )
    progress("done", 1.0)
    baseline = {
        "memories": _mean(run["baseline"]["memories"] for run in runs),
        "fresh_samples": _mean(run["baseline"]["fresh_samples"] for run in runs),
        "fresh_std": _mean(run["baseline"]["fresh_samples_std"] for run in runs),
    }
    return LoglikResult(runs, summarise(runs), baseline, time.perf_counter() - started)


def summarise(runs: list[dict]) -> dict:
    """Each score averaged over all configs and betas ("all") and over the configs at
    LSR's peak beta ("peak"), NaNs left out; and each energy's best-beta log-likelihood."""

    def mean_over(energy: str, key: str, only: str) -> float:
        values = [
            row[key]
            for run in runs
            for j, row in enumerate(run[energy])
            if only == "all" or j == _peak(run)
        ]
        finite = [v for v in values if not math.isnan(v)]
        return sum(finite) / len(finite) if finite else math.nan

    keys = ("loglik", "loglik_unique", "loglik_novel", "novelty", "unique", "novel", "converged")
    summary = {
        key: {e: {w: mean_over(e, key, w) for w in ("all", "peak")} for e in ENERGIES}
        for key in keys
    }
    summary["loglik_best"] = {  # each energy at its own best beta, mean over configs
        e: _mean(max(r["loglik"] for r in run[e]) for run in runs) for e in ENERGIES
    }
    return summary


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _peak(run: dict) -> int:
    """Index of the beta where LSR has the most unique retrievals (first on ties)."""
    counts = [row["unique"] for row in run["lsr"]]
    return counts.index(max(counts))


# -- the section: figure ----------------------------------------------------------------------
def figure(result: LoglikResult, ctx: Context, report: Report) -> None:
    """Per configuration: mean log-likelihood (top) and unique retrievals (bottom) against
    beta, LSR and LSE."""
    runs = result.runs
    cols = min(len(runs), 4)
    blocks = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(3.6 * cols, 5.4 * blocks), squeeze=False)
    colours = {"lsr": "#1f77b4", "lse": "#d62728"}
    for i, run in enumerate(runs):
        top, bottom = axes[2 * (i // cols)][i % cols], axes[2 * (i // cols) + 1][i % cols]
        for energy in ENERGIES:
            c = colours[energy]
            for ax, key in ((top, "loglik"), (bottom, "unique")):
                values = [r[key] for r in run[energy]]
                ax.plot(run["betas"], values, "o-", ms=3, color=c, label=energy.upper())
        top.axhline(run["baseline"]["memories"], color="k", ls=":", lw=1)
        top.axhline(run["baseline"]["fresh_samples"], color="k", ls="--", lw=1)
        top.set_title(f"k={run['k']}, d={run['d']}, M={run['M']}", fontsize=9)
        top.set_xscale("log")
        bottom.set_xscale("log")
        bottom.set_yscale("log")
        bottom.axhline(run["M"], color="gray", ls=":", lw=1)
        bottom.set_xlabel("β")
        if i % cols == 0:
            top.set_ylabel("mean log-likelihood")
            bottom.set_ylabel("unique retrievals")
        if i == 0:
            top.legend(fontsize=7)
    for j in range(len(runs), blocks * cols):
        axes[2 * (j // cols)][j % cols].axis("off")
        axes[2 * (j // cols) + 1][j % cols].axis("off")
    save_figure(fig, report.path("lsr_loglik.png"), dpi=100)


# -- the section: report ----------------------------------------------------------------------
def write(result: LoglikResult, ctx: Context, report: Report) -> dict:
    """Prose, two tables, the figure and two claims. Returns {"loglik": {"lsr", "lse"},
    "loglik_experiment"}."""
    grid, summary = ctx.grid, result.summary
    report.section(
        "Log-likelihood of retrieved points",
        f"True distribution: equal-weight Gaussian mixtures (means uniform on [0,1]^d, σ = "
        f"{SIGMA:g}); (k, d, M) in {list(grid.loglik_configs)}; M samples stored as memories; "
        f"{grid.loglik_n_betas} betas geometrically spaced from 2/d to 2/R² (R half the "
        f"smallest distance between memories). Starts: {grid.loglik_starts_per_memory} per "
        "memory, uniform on the sphere of radius "
        f"(1 − 10⁻⁶)·r around it (paper: 500; the factor puts each start just inside its own "
        "memory's open support — exactly on the sphere, a start covered by no other support "
        "has energy +∞ and no descent direction). LSR: exact fixed-point solver (at most "
        f"{LSR_STEPS} steps, stops when the state repeats). LSE: gradient descent with a cosine "
        f"step size {LSE_STEP[0]:g} → {LSE_STEP[1]:g} over at most {grid.loglik_lse_steps} "
        f"steps, stopping when no coordinate moves more than {LSE_TOL:g} (paper: 13,000 steps, "
        "0.01 → 0.001; a step of 1 is the attention update, stable for this energy). Only "
        "converged end points are scored; converged share: LSR "
        f"{summary['converged']['lsr']['all']:.2%}, LSE "
        f"{summary['converged']['lse']['all']:.2%}. Unique retrievals: LSR distinct active "
        f"sets (exact), LSE end points merged within {LSE_UNIQUE_TOL:g} (`unique_rows`). Novel: "
        f"a unique retrieval farther than {NOVELTY_RADIUS:g} from every memory. Log-likelihood: "
        "log-density under the true mixture (float64), averaged over all converged end points "
        "('all') or over the unique ones. β*: the β where LSR has the most unique retrievals. "
        f"Run time {result.seconds:.1f} s.",
    )
    _write_tables(result.runs, report)
    report.figure(
        "lsr_loglik.png",
        "Mean log-likelihood of the retrieved points (all converged end points; dotted: the "
        "memories, dashed: fresh samples) and number of unique retrievals against β, LSR and LSE.",
    )
    _write_claims(result, report)
    return {
        "loglik": {e: summary["loglik"][e]["all"] for e in ENERGIES},
        "loglik_experiment": {
            "settings": {
                "configs": [list(c) for c in grid.loglik_configs],
                "n_betas": grid.loglik_n_betas,
                "starts_per_memory": grid.loglik_starts_per_memory,
                "start_radius": f"{START_SHRINK} * sqrt(2/beta)",
                "lse_steps": grid.loglik_lse_steps,
                "lse_step_size": list(LSE_STEP),
                "lse_tol": LSE_TOL,
                "lse_unique_tol": LSE_UNIQUE_TOL,
                "novelty_radius": NOVELTY_RADIUS,
                "sigma": SIGMA,
            },
            "summary": summary,
            "baseline": result.baseline,
            "runs": result.runs,
            "seconds": result.seconds,
        },
    }


def _write_tables(runs: list[dict], report: Report) -> None:
    rows = []
    for run in runs:
        peak = _peak(run)
        for energy in ENERGIES:
            per_beta = run[energy]

            def avg(key: str, per_beta: list = per_beta) -> float:
                finite = [r[key] for r in per_beta if not math.isnan(r[key])]
                return sum(finite) / len(finite) if finite else math.nan

            at = per_beta[peak]
            rows.append(
                [run["k"], run["d"], run["M"], energy.upper()]
                + [avg(key) for key in ("loglik", "loglik_unique", "novelty", "unique")]
                + [f"{run['betas'][peak]:.3g}"]
                + [at[key] for key in ("loglik", "loglik_unique", "loglik_novel")]
                + [at["novelty"], at["unique"]]
            )
    report.table(
        [
            "k",
            "d",
            "M",
            "energy",
            "loglik (all, mean over β)",
            "loglik (unique)",
            "novelty",
            "unique",
            "β*",
            "loglik at β* (all)",
            "(unique)",
            "(novel unique)",
            "novelty at β*",
            "unique at β*",
        ],
        rows,
    )
    report.table(
        ["k", "d", "M", "R", "β range", "loglik of the memories", "fresh samples: mean", "std"],
        [
            [
                run["k"],
                run["d"],
                run["M"],
                run["R"],
                f"{run['betas'][0]:.3g} – {run['betas'][-1]:.3g}",
                run["baseline"]["memories"],
                run["baseline"]["fresh_samples"],
                run["baseline"]["fresh_samples_std"],
            ]
            for run in runs
        ],
    )


def _write_claims(result: LoglikResult, report: Report) -> None:
    summary, runs, baseline = result.summary, result.runs, result.baseline
    ll = {e: summary["loglik"][e]["all"] for e in ENERGIES}
    ll_peak = {e: summary["loglik"][e]["peak"] for e in ENERGIES}
    novel = {w: summary["loglik_novel"]["lsr"][w] for w in ("all", "peak")}
    best = summary["loglik_best"]
    gaps = {
        "all β": [ll["lsr"] - ll["lse"], novel["all"] - ll["lse"]],
        "β*": [ll_peak["lsr"] - ll_peak["lse"], novel["peak"] - ll_peak["lse"]],
        "each one's best β": [best["lsr"] - best["lse"]],
    }
    within = {w: all(abs(g) <= baseline["fresh_std"] for g in v) for w, v in gaps.items()}
    report.claim(
        "LSR's emergent minima have log-likelihood comparable to LSE's",
        f"mean log-likelihood over all configs and β: LSR {ll['lsr']:.2f}, LSE {ll['lse']:.2f}, "
        f"LSR's novel unique retrievals {novel['all']:.2f}; at β* (LSR's most unique "
        f"retrievals): LSR {ll_peak['lsr']:.2f}, LSE {ll_peak['lse']:.2f}, LSR novel "
        f"{novel['peak']:.2f}; each at its best β: LSR {best['lsr']:.2f}, LSE "
        f"{best['lse']:.2f}. Scale: memories {baseline['memories']:.2f}, fresh samples "
        f"{baseline['fresh_samples']:.2f} ± {baseline['fresh_std']:.2f} (std); 'comparable' = "
        "within one std",
        "reproduced"
        if all(within.values())
        else (
            f"partly (comparable over {', '.join(w for w, ok in within.items() if ok)}; "
            f"not at {', '.join(w for w, ok in within.items() if not ok)})"
            if any(within.values())
            else "not reproduced (gaps larger than one std of the samples' log-likelihood)"
        ),
    )
    u = {e: summary["unique"][e]["peak"] for e in ENERGIES}
    u_all = {e: summary["unique"][e]["all"] for e in ENERGIES}
    nv_all = {e: summary["novel"][e]["all"] for e in ENERGIES}
    wins = sum(run["lsr"][_peak(run)]["unique"] > run["lse"][_peak(run)]["unique"] for run in runs)
    checks = [wins == len(runs), u_all["lsr"] > u_all["lse"], nv_all["lsr"] > nv_all["lse"]]
    report.claim(
        "LSR produces many more unique (and novel) retrievals than LSE",
        f"mean over configs and β: unique LSR {u_all['lsr']:.1f} vs LSE {u_all['lse']:.1f}, "
        f"novel LSR {nv_all['lsr']:.1f} vs LSE {nv_all['lse']:.1f}; at β*: unique LSR "
        f"{u['lsr']:.1f} vs LSE {u['lse']:.1f} (LSR ahead in {wins}/{len(runs)} configs)",
        "reproduced" if all(checks) else ("partly" if any(checks) else "not reproduced"),
    )


SECTION = Section("log-likelihood", 0.40, compute, write, figure)
