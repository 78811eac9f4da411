"""The LSR paper's 1-D picture and its kernel comparison (papers.md section 1).

Two memories at -1 and +1. A kernel K and bandwidth h give the density
``f(x) = sum_mu K((x - xi_mu) / h)`` and the energy ``-log f(x)`` (+inf where f = 0).
The Gaussian kernel with h = 1/sqrt(beta) is the LSE energy (times beta), Epanechnikov
with h = sqrt(2/beta) the LSR energy. The question: which kernels create a minimum
between the memories while keeping the memories themselves as minima?

Minima are read off a fine grid (:func:`grid_minima`): consecutive grid values that
differ by at most ``flat_tol`` are merged into runs; a run lower than the grid values on
both sides is a local minimum. A run wider than ``flat_width`` is a *flat* region (the
uniform and triangle kernels give exact plateaus): reported as such and never counted
as a strict minimum.

The section (:data:`SECTION`): :func:`compute` (the picture and the kernel scan at the
grid's bandwidth step and spacing) -> :func:`figure` -> :func:`write`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from amlab.experiments.report import Context, Progress, Report, Section
from amlab.models import DenseAM
from amlab.tasks.figures import plt, save_figure

#: kernel profiles K(u), u = (x - xi) / h, each 1 at u = 0
KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gaussian": lambda u: torch.exp(-0.5 * u * u),
    "triangle": lambda u: (1.0 - u.abs()).clamp_min(0.0),
    "uniform": lambda u: (u.abs() <= 1.0).to(u.dtype),
    "cosine": lambda u: torch.where(u.abs() < 1.0, torch.cos(0.5 * math.pi * u), 0.0),
    "quartic": lambda u: (1.0 - u * u).clamp_min(0.0) ** 2,
    "triweight": lambda u: (1.0 - u * u).clamp_min(0.0) ** 3,
    "tricube": lambda u: (1.0 - u.abs() ** 3).clamp_min(0.0) ** 3,
    "epanechnikov": lambda u: (1.0 - u * u).clamp_min(0.0),
}
FORMULAS = {
    "gaussian": "exp(-u²/2)",
    "triangle": "(1-|u|)+",
    "uniform": "1[|u|≤1]",
    "cosine": "cos(πu/2) 1[|u|≤1]",
    "quartic": "(1-u²)+²",
    "triweight": "(1-u²)+³",
    "tricube": "(1-|u|³)+³",
    "epanechnikov": "(1-u²)+",
}
#: analytic bandwidths with three minima (-1, 0, +1) for memories at +-1: 0 is a minimum
#: iff both supports contain it (h > 1) and f''(0) < 0; +-1 stay minima iff h < 2 (the other
#: kernel does not reach them, or reaches them with zero slope only at h = 2). f''(0) < 0
#: gives h > sqrt(3) (quartic), h > 4^(1/3) (tricube), h > sqrt(5) > 2 (triweight: never);
#: Gaussian: one minimum for h >= 1, two off the memories below; triangle and uniform: the
#: overlap is a plateau, never a strict minimum.
THEORY_THREE: dict[str, tuple[float, float] | None] = {
    "gaussian": None,
    "triangle": None,
    "uniform": None,
    "cosine": (1.0, 2.0),
    "quartic": (math.sqrt(3.0), 2.0),
    "triweight": None,
    "tricube": (4.0 ** (1.0 / 3.0), 2.0),
    "epanechnikov": (1.0, 2.0),
}
MEMORIES = (-1.0, 1.0)
#: a minimum within this distance of a memory is that memory (stored); one within it of
#: the memories' midpoint is emergent; any other is "shifted" (a memory moved off itself)
NEAR = 0.05
FLAT_TOL = 1e-12
FLAT_WIDTH = 0.01
BETA_1D = 0.9


@dataclass
class GridMinima:
    """Local minima of an energy sampled on a 1-D grid.

    strict: positions of the strict local minima (regions narrower than the flat width).
    flat_minima: [(lo, hi)] flat regions lower than both neighbours.
    flats: [(lo, hi)] every flat region of finite energy, minimum or not.
    """

    strict: list[float]
    flat_minima: list[tuple[float, float]]
    flats: list[tuple[float, float]]

    def classify(self, memories: tuple[float, ...] = MEMORIES, near: float = NEAR) -> dict:
        """Strict minima split into stored (within ``near`` of a memory), emergent (within
        ``near`` of the memories' centroid) and shifted (anywhere else)."""
        centroid = sum(memories) / len(memories)
        dist = [min(abs(p - m) for m in memories) for p in self.strict]
        stored = [dm <= near for dm in dist]
        emergent = [
            not s and abs(p - centroid) <= near for p, s in zip(self.strict, stored, strict=True)
        ]
        return {
            "minima": list(self.strict),
            "stored": sum(stored),
            "emergent": sum(emergent),
            "shifted": len(self.strict) - sum(stored) - sum(emergent),
            "flat_minima": [list(f) for f in self.flat_minima],
            "flats": [list(f) for f in self.flats],
            "max_stored_shift": max(
                (dm for dm, s in zip(dist, stored, strict=True) if s), default=math.nan
            ),
        }


def grid_minima(
    x: torch.Tensor,
    energy: torch.Tensor,
    *,
    flat_tol: float = FLAT_TOL,
    flat_width: float = FLAT_WIDTH,
) -> list[GridMinima]:
    """Local minima of each row of ``energy`` (H, N) sampled at increasing grid points
    ``x`` (N,); one :class:`GridMinima` per row.

    Runs of consecutive values equal within ``flat_tol`` (+inf equals +inf) are one
    region; a region lower than the values on both sides is a minimum, flat when wider
    than ``flat_width``. Regions touching either end of the grid are never minima. All
    rows are handled by one set of tensor operations (rows joined end to end, each row's
    first point starting a new region).
    """
    rows, n = energy.shape
    same = (energy[:, 1:] == energy[:, :-1]) | ((energy[:, 1:] - energy[:, :-1]).abs() <= flat_tol)
    new_region = torch.cat([torch.ones(rows, 1, dtype=torch.bool), ~same], dim=1).reshape(-1)
    flat_e = energy.reshape(-1)
    starts = new_region.nonzero().squeeze(1)
    ends = torch.cat([starts[1:] - 1, torch.tensor([rows * n - 1])])
    col_s, col_e = starts % n, ends % n
    first, last = flat_e[starts], flat_e[ends]
    left = flat_e[(starts - 1).clamp_min(0)]
    right = flat_e[(ends + 1).clamp_max(rows * n - 1)]
    finite = torch.isfinite(first)
    inner = (col_s > 0) & (col_e < n - 1)
    is_min = finite & inner & (left > first) & (right > last)
    flat = finite & (x[col_e] - x[col_s] >= flat_width)
    out = [GridMinima([], [], []) for _ in range(rows)]
    keep = is_min | flat
    for row, lo, hi, m, f in zip(
        (starts[keep] // n).tolist(),
        x[col_s[keep]].tolist(),
        x[col_e[keep]].tolist(),
        is_min[keep].tolist(),
        flat[keep].tolist(),
        strict=True,
    ):
        if f:
            out[row].flats.append((lo, hi))
            if m:
                out[row].flat_minima.append((lo, hi))
        else:
            out[row].strict.append(round(0.5 * (lo + hi), 12) + 0.0)  # no -0.0
    return out


def kernel_energy(
    kernel: str, x: torch.Tensor, h: float | torch.Tensor, memories: tuple[float, ...] = MEMORIES
) -> torch.Tensor:
    """-log sum_mu K((x - xi_mu) / h) at points x (N,): shape (N,) for one bandwidth,
    (H, N) for bandwidths h (H,); +inf where the sum is 0."""
    mem = torch.tensor(memories, dtype=x.dtype)
    h_t = torch.as_tensor(h, dtype=x.dtype)
    u = (x[:, None] - mem[None, :]) / h_t.reshape(-1, 1, 1)
    e = -torch.log(KERNELS[kernel](u).sum(-1))
    return e if h_t.ndim else e[0]


def kernel_grid(h_max: float, spacing: float) -> torch.Tensor:
    """Symmetric float64 grid through 0 covering every support for bandwidths <= h_max."""
    half = math.ceil((max(abs(m) for m in MEMORIES) + h_max + 0.5) / spacing)
    return torch.arange(-half, half + 1, dtype=torch.float64) * spacing


def kernel_scan(
    bandwidths: list[float], spacing: float = 5e-4, kernels: list[str] | None = None
) -> dict[str, list[dict]]:
    """Classified grid minima for every kernel and bandwidth: {kernel: [per-h dict]}."""
    x = kernel_grid(max(bandwidths), spacing)
    chunk = max(1, (1 << 20) // x.shape[0])  # bandwidths per batch: ~1M grid values
    out: dict[str, list[dict]] = {}
    for name in kernels or list(KERNELS):
        out[name] = []
        for lo in range(0, len(bandwidths), chunk):
            hs = bandwidths[lo : lo + chunk]
            energy = kernel_energy(name, x, torch.tensor(hs, dtype=torch.float64))
            found = grid_minima(x, energy)
            out[name] += [{"h": h, **f.classify()} for h, f in zip(hs, found, strict=True)]
    return out


def h_ranges(scan: list[dict], keep: Callable[[dict], bool]) -> list[list[float]]:
    """Maximal runs [h_first, h_last] of consecutive grid bandwidths where keep(row)."""
    out: list[list[float]] = []
    previous = False
    for row in scan:
        if keep(row):
            if previous:
                out[-1][1] = row["h"]
            else:
                out.append([row["h"], row["h"]])
        previous = keep(row)
    return out


def _three(row: dict) -> bool:
    return len(row["minima"]) == 3 and not row["flat_minima"]


def agrees_with_theory(name: str, scan: list[dict]) -> bool:
    """Whether the grid bandwidths with three strict minima are exactly those inside the
    analytic interval :data:`THEORY_THREE` (none if None)."""
    bounds = THEORY_THREE[name]
    return all(_three(r) == (bounds is not None and bounds[0] < r["h"] < bounds[1]) for r in scan)


def _emergent_and_stored(row: dict) -> bool:
    return row["stored"] == len(MEMORIES) and row["emergent"] >= 1


def _fmt_ranges(ranges: list[list[float]]) -> str:
    return ", ".join(f"{a:g}–{b:g}" if a != b else f"{a:g}" for a, b in ranges) or "none"


# -- the section: compute -----------------------------------------------------------------------
#: the bandwidth whose energy curves the kernel figure draws (and the metrics keep)
REPRESENTATIVE_H = 1.5


@dataclass
class Picture:
    """The 1-D picture: LSE and LSR energies (N,) of memories at ±1 (beta = ``BETA_1D``) at
    grid points x (N,) over [-3, 3], their classified minima and the energy at each."""

    x: torch.Tensor
    energies: dict[str, torch.Tensor]
    minima: dict[str, dict]
    minima_energies: dict[str, torch.Tensor]
    support_radius: float


@dataclass
class KernelScan:
    """The kernel comparison: the classified minima of every kernel at every bandwidth
    (``scan``, {kernel: [per-h dict]}), what each kernel does over the bandwidths
    (``summary``), and each kernel's energy at ``REPRESENTATIVE_H`` on grid points x (N,)
    with the energy at its strict minima."""

    bandwidths: list[float]
    step_h: float
    spacing: float
    scan: dict[str, list[dict]]
    summary: dict[str, dict]
    x: torch.Tensor
    curves: dict[str, torch.Tensor]
    minima_energies: dict[str, torch.Tensor]


@dataclass
class KernelsResult:
    picture: Picture
    kernels: KernelScan


def compute(ctx: Context, progress: Progress) -> KernelsResult:
    """The 1-D LSE/LSR picture and the eight-kernel scan at the grid's bandwidth step and
    spacing. Deterministic (no sampling): the seed is unused."""
    progress("1-D picture", 0.0)
    picture = picture_1d()
    progress("kernel scan", 0.3)
    scan = scan_kernels(ctx.grid.kernel_h_step, ctx.grid.kernel_spacing)
    progress("done", 1.0)
    return KernelsResult(picture, scan)


def picture_1d() -> Picture:
    """LSE and LSR energies of memories at ±1, beta = 0.9, on [-3, 3], with their minima."""
    mem = torch.tensor(MEMORIES, dtype=torch.float64)[:, None]
    x = torch.arange(-6000, 6001, dtype=torch.float64) * 5e-4  # [-3, 3] through 0
    energies, found, at_minima = {}, {}, {}
    for name in ("lse", "lsr"):
        am = DenseAM(mem, energy=name, beta=BETA_1D)
        energies[name] = am.energy(x[:, None]).detach()
        (found_1d,) = grid_minima(x, energies[name][None])
        found[name] = found_1d.classify()
        mins = torch.tensor(found[name]["minima"], dtype=torch.float64)
        at_minima[name] = am.energy(mins[:, None]).detach() if len(mins) else mins
    r = DenseAM(mem, energy="lsr", beta=BETA_1D).support_radius
    return Picture(x, energies, found, at_minima, r)


def scan_kernels(step_h: float, spacing: float) -> KernelScan:
    """Every kernel at bandwidths 0.5, 0.5 + step_h, ..., 3 on a grid of this spacing."""
    bandwidths = [round(0.5 + step_h * i, 6) for i in range(round(2.5 / step_h) + 1)]
    scan = kernel_scan(bandwidths, spacing)
    x = kernel_grid(REPRESENTATIVE_H, spacing)
    curves, at_minima = {}, {}
    for name, per_h in scan.items():
        curves[name] = kernel_energy(name, x, REPRESENTATIVE_H)
        mins = torch.tensor(_at_representative(per_h)["minima"], dtype=torch.float64)
        at_minima[name] = kernel_energy(name, mins, REPRESENTATIVE_H)
    summary = {name: kernel_summary(name, per_h) for name, per_h in scan.items()}
    return KernelScan(bandwidths, step_h, spacing, scan, summary, x, curves, at_minima)


def kernel_summary(name: str, per_h: list[dict]) -> dict:
    """Where one kernel has three minima, stored + emergent ones, flat regions, and the
    most minima it has at any bandwidth."""
    bounds = THEORY_THREE[name]
    return {
        "three_minima_h": h_ranges(per_h, _three),
        "theory_three_minima_h": list(bounds) if bounds else None,
        "agrees_with_theory": agrees_with_theory(name, per_h),
        "stored_and_emergent_h": h_ranges(per_h, _emergent_and_stored),
        "flat_minimum_h": h_ranges(per_h, lambda r: bool(r["flat_minima"])),
        "flat_region_h": h_ranges(per_h, lambda r: bool(r["flats"])),
        "max_count": max(len(r["minima"]) for r in per_h),
    }


def _at_representative(per_h: list[dict]) -> dict:
    return next(r for r in per_h if abs(r["h"] - REPRESENTATIVE_H) < 1e-9)


# -- the section: figures -----------------------------------------------------------------------
def figure(result: KernelsResult, ctx: Context, report: Report) -> None:
    _picture_figure(result.picture, report.path("lsr_1d.png"))
    _kernel_figure(result.kernels, report.path("lsr_kernels.png"))


def _picture_figure(picture: Picture, path: Path) -> None:
    r = picture.support_radius
    x = picture.x
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for xi in MEMORIES:
        ax.axvspan(xi - r, xi + r, color="#1f77b4", alpha=0.08)
        ax.axvline(xi, color="k", ls="--", lw=0.8)
    for name, colour in (("lse", "#d62728"), ("lsr", "#1f77b4")):
        e = picture.energies[name]
        ok = torch.isfinite(e)
        ax.plot(x[ok].numpy(), e[ok].numpy(), color=colour, label=f"{name.upper()} (β={BETA_1D:g})")
        mins = picture.minima[name]["minima"]
        if mins:
            ax.plot(mins, picture.minima_energies[name].numpy(), "o", color=colour, ms=7)
    ax.set_xlabel("x")
    ax.set_ylabel("energy")
    ax.set_title(f"memories at ±1; shaded: LSR supports (r = {r:.3f})", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _kernel_figure(kernels: KernelScan, path: Path) -> None:
    scan, h, x = kernels.scan, REPRESENTATIVE_H, kernels.x
    names = list(scan)
    fig = plt.figure(figsize=(14, 9))
    grid = fig.add_gridspec(3, 4, height_ratios=[1, 1, 1.1])
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[i // 4, i % 4])
        e = kernels.curves[name]
        ok = torch.isfinite(e)
        ax.plot(x[ok].numpy(), e[ok].numpy(), color="#1f77b4", lw=1.2)
        row = _at_representative(scan[name])
        for lo, hi in row["flats"]:
            ax.axvspan(lo, hi, color="#ff7f0e", alpha=0.25)
        if row["minima"]:
            energies = kernels.minima_energies[name].numpy()
            ax.plot(row["minima"], energies, "o", color="#d62728", ms=6)
        for xi in MEMORIES:
            ax.axvline(xi, color="k", ls="--", lw=0.7)
        ax.set_xlim(-1 - h, 1 + h)
        ax.set_title(f"{name}  {FORMULAS[name]}, h={h:g}", fontsize=9)
    _counts_image(fig.add_subplot(grid[2, :]), fig, scan)
    save_figure(fig, path, dpi=100)


def _counts_image(ax, fig, scan: dict[str, list[dict]]) -> None:
    """The number of strict minima of every kernel against h (x: a flat minimum)."""
    names = list(scan)
    hs = [r["h"] for r in scan[names[0]]]
    counts = torch.tensor([[len(r["minima"]) for r in scan[n]] for n in names])
    step = hs[1] - hs[0] if len(hs) > 1 else 1.0
    image = ax.imshow(
        counts.numpy(),
        aspect="auto",
        cmap=plt.get_cmap("viridis", 4),
        vmin=-0.5,
        vmax=3.5,
        extent=(hs[0] - step / 2, hs[-1] + step / 2, len(names) - 0.5, -0.5),
        interpolation="nearest",
    )
    flat = [(r["h"], i) for i, n in enumerate(names) for r in scan[n] if r["flat_minima"]]
    if flat:
        ax.plot(*zip(*flat, strict=True), "x", color="w", ms=3, mew=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("bandwidth h")
    for v in (1.0, 2.0):
        ax.axvline(v, color="w", lw=0.8, ls=":")
    fig.colorbar(image, ax=ax, ticks=[0, 1, 2, 3], label="strict minima")


# -- the section: report ------------------------------------------------------------------------
def write(result: KernelsResult, ctx: Context, report: Report) -> dict:
    """The 1-D picture and the kernel comparison: prose, table, figures, two claims.
    Returns {"picture_1d", "kernels"}."""
    picture = _write_picture(result.picture, report)
    k = result.kernels
    _write_kernel_table(k, report)
    _write_kernel_findings(k, report)
    return {
        "picture_1d": picture,
        "kernels": {
            "bandwidths": k.bandwidths,
            "grid_spacing": k.spacing,
            "flat_tol": FLAT_TOL,
            "flat_width": FLAT_WIDTH,
            "near": NEAR,
            "summary": k.summary,
            "counts": {name: [len(r["minima"]) for r in v] for name, v in k.scan.items()},
            "at_representative_h": {name: _at_representative(v) for name, v in k.scan.items()},
        },
    }


def _write_picture(picture: Picture, report: Report) -> dict:
    def where(v: list[float]) -> str:
        return ", ".join(f"{p:+.3f}" for p in v) or "none"

    lsr, lse = picture.minima["lsr"], picture.minima["lse"]
    r, x = picture.support_radius, picture.x
    report.section(
        "The 1-D picture",
        f"Memories at ±1, β = {BETA_1D:g}: LSR support radius r = √(2/β) = {r:.4f}, so each "
        "memory lies outside the other's support (r < 2) while both supports contain 0 "
        f"(r > 1). Strict local minima on a grid of spacing {float(x[1] - x[0]):g} over "
        f"[-3, 3]: LSR at {where(lsr['minima'])} ({lsr['stored']} stored, {lsr['emergent']} "
        f"emergent); LSE at {where(lse['minima'])}, where {lse['stored']} of the 2 memories "
        "are minima (a single minimum at 0 is the two memories merged). The Gaussian "
        "kernel comparison below shows that LSE keeps two minima only for β > 1 "
        "(h = 1/√β < 1), and then moved off the memories towards 0.",
    )
    report.figure("lsr_1d.png", "LSE and LSR energies of two memories at ±1 (dots: minima).")
    report.claim(
        f"1-D, memories at ±1, β = {BETA_1D:g}: LSR has minima at both memories and an "
        "emergent one at 0",
        f"LSR minima at {where(lsr['minima'])}; LSE minima at {where(lse['minima'])}",
        "reproduced" if lsr["stored"] == 2 and lsr["emergent"] == 1 else "not reproduced",
    )
    return {"beta": BETA_1D, "support_radius": r, "lsr": lsr, "lse": lse}


def _write_kernel_table(k: KernelScan, report: Report) -> None:
    rows = []
    for name, per_h in k.scan.items():
        summary, bounds = k.summary[name], THEORY_THREE[name]
        shifts = [r["max_stored_shift"] for r in per_h if _emergent_and_stored(r)]
        rows.append(
            [
                name,
                FORMULAS[name],
                _fmt_ranges(summary["three_minima_h"]),
                f"({bounds[0]:.4g}, {bounds[1]:g})" if bounds else "none",
                "yes" if summary["agrees_with_theory"] else "**no**",
                _fmt_ranges(summary["stored_and_emergent_h"]),
                f"{max(shifts):.1e}" if shifts else "–",
                _fmt_ranges(summary["flat_minimum_h"]),
                _fmt_ranges(summary["flat_region_h"]),
            ]
        )
    report.section(
        "Kernels: which ones create minima between two memories?",
        f"Memories at ±1; density f(x) = Σ_μ K((x-ξ_μ)/h), energy -log f, bandwidths h from "
        f"{k.bandwidths[0]:g} to {k.bandwidths[-1]:g} in steps of {k.step_h:g}; the energy is "
        f"evaluated in float64 on a grid of spacing {k.spacing:g} through 0 covering every "
        f"support. Minima: consecutive grid values equal within {FLAT_TOL:g} form one region; "
        "a region lower than its two neighbours is a minimum. A region wider than "
        f"{FLAT_WIDTH:g} is **flat** (exact plateaus of the uniform and triangle kernels) and "
        "is reported as a flat region, never counted as a minimum. A strict minimum within "
        f"{NEAR:g} of a memory is *stored*, within {NEAR:g} of 0 *emergent*. Ranges are the "
        "grid bandwidths where the condition holds.",
    )
    report.table(
        [
            "kernel",
            "K(u)",
            "h with 3 strict minima",
            "analytic",
            "agree",
            "h with both memories + emergent",
            "max shift of stored minima there",
            "h with a flat minimum",
            "h with any flat region",
        ],
        rows,
    )
    report.figure(
        "lsr_kernels.png",
        f"Energy -log f for each kernel at h = {REPRESENTATIVE_H:g} (dots: strict minima; "
        "shaded: flat regions; dashed: memories), and the number of strict minima against h "
        "(x: a flat minimum exists).",
    )


def _write_kernel_findings(k: KernelScan, report: Report) -> None:
    epa, gauss = k.summary["epanechnikov"], k.summary["gaussian"]
    creators = [name for name, s in k.summary.items() if s["stored_and_emergent_h"]]
    two = [r for r in k.scan["gaussian"] if len(r["minima"]) == 2]
    one = [r["h"] for r in k.scan["gaussian"] if len(r["minima"]) == 1]
    isolated_uniform = [r["h"] for r in k.scan["uniform"] if r["minima"]]
    report.text(
        "Kernels with both memories and an emergent minimum at some h: "
        f"{', '.join(creators) or 'none'}; the analytic column is where f''(0) < 0 with both "
        "supports covering 0 and neither reaching the other memory (see `THEORY_THREE`). "
        f"Gaussian: at most {gauss['max_count']} minima at any h"
        + (
            f"; two at ±{max(two[0]['minima']):.3f} (h = {two[0]['h']:g}) to "
            f"±{max(two[-1]['minima']):.3f} (h = {two[-1]['h']:g}), i.e. off the memories"
            if two
            else ""
        )
        + (f"; one, at 0, from h = {min(one):g}" if one else "")
        + "."
        + (
            f" Uniform at h = {', '.join(f'{h:g}' for h in isolated_uniform)}: the closed "
            "supports meet in the single point 0, which the grid shows as one isolated minimum "
            "of zero width."
            if isolated_uniform
            else ""
        )
    )
    hs = k.bandwidths
    epa_ok = epa["three_minima_h"] == [[min(h for h in hs if h > 1), max(h for h in hs if h < 2)]]
    report.claim(
        "The Epanechnikov (LSR) energy creates emergent minima between memories while "
        "keeping the stored ones; the Gaussian (LSE) does not",
        f"Epanechnikov: minima at ±1 and 0 for h in {_fmt_ranges(epa['three_minima_h'])} "
        f"(theory: 1 < h < 2); Gaussian: at most {gauss['max_count']} minima for every h in "
        f"[{hs[0]:g}, {hs[-1]:g}]; other kernels with stored + emergent "
        f"minima: {', '.join(c for c in creators if c != 'epanechnikov') or 'none'}; grid "
        "counts agree with the analytic ranges for "
        f"{sum(s['agrees_with_theory'] for s in k.summary.values())}/{len(k.summary)} kernels",
        "reproduced" if epa_ok and gauss["max_count"] < 3 else "not reproduced",
    )


SECTION = Section("kernels", 0.05, compute, write, figure)
