"""``amlab repro drdam``: the run writes its report, figures and metrics, on a tiny grid.

The quick grid takes about a minute on 2 cores, so the test passes a smaller ``grid``.
"""

import math

import pytest
import torch
from conftest import check_written_report, run_tiny_repro

from amlab.data import load
from amlab.experiments.drdam import Grid, features, images, kernels, memories, retrieval, run
from amlab.experiments.drdam.common import KINDS, QUANTITIES, flip_bits
from amlab.experiments.drdam.errors import KERNELS
from amlab.experiments.drdam.features import fit_inverse_sqrt
from amlab.experiments.drdam.retrieval import binarize, hamming
from amlab.experiments.report import Context, Report

TINY = Grid(
    dims=(16, 32),
    betas=(5.0, 20.0),
    features=(256, 1024, 4096),
    num_memories=60,
    num_queries=30,
    kernel_dim=32,
    k_values=(20, 60),
    k_dim=16,
    k_features=2048,
    retrieval_dim=32,
    retrieval_betas=(5.0, 20.0),
    retrieval_features=(256, 2048),
    retrieval_queries=10,
    retrieval_steps=100,
    image_memories=8,
    image_queries=4,
    image_features=(512, 4096),
    image_steps=60,
)
FIGURES = (
    "drdam_energy_error.png",
    "drdam_grad_error.png",
    "drdam_error_vs_K.png",
    "drdam_retrieval.png",
    "drdam_completion.png",
    "drdam_completion_energy.png",
    "drdam_kernels.png",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_tiny_repro(run, tmp_path_factory.mktemp("drdam"), TINY)


def test_writes_report_figures_and_metrics(tiny_run):
    out, metrics, calls = tiny_run
    _, on_disk = check_written_report(out, ("(a)", "(b)", "(c)", "(d)", "(e)"), FIGURES, calls)
    assert on_disk["fitted_b"] == pytest.approx(metrics["fitted_b"])


def test_errors_fall_as_features_grow(tiny_run):
    _, metrics, _ = tiny_run
    for key in ("energy_error_by_Y", "grad_error_by_Y"):
        pairs = metrics[key]
        assert [y for y, _ in pairs] == list(TINY.features)
        errors = [e for _, e in pairs]
        assert all(math.isfinite(e) and e > 0 for e in errors)
        assert errors[-1] < errors[0] / 2, (key, errors)  # 16x the features: about /4
    assert 0 < metrics["fitted_b"] < 10 and math.isfinite(metrics["fitted_slope"])
    at_memories = [
        r for r in metrics["error_grid"] if r["kernel"] == "sincos" and r["kind"] == "at"
    ]
    for dim in TINY.dims:
        for beta in TINY.betas:
            rows = sorted(
                (r for r in at_memories if r["D"] == dim and r["beta"] == beta),
                key=lambda r: r["Y"],
            )
            assert rows[-1]["energy_error"] < rows[0]["energy_error"]
            assert rows[-1]["grad_error"] < rows[0]["grad_error"]


def test_other_sections_report_plausible_numbers(tiny_run):
    _, metrics, _ = tiny_run
    sizes = metrics["error_vs_K"]["bytes"]
    assert len({s[1] for s in sizes}) == 1  # DrDAM's size does not depend on K
    assert sizes[-1][2] > sizes[0][2]  # MrDAM's does
    for r in metrics["retrieval"]["records"]:
        assert 0.0 <= r["hamming"] <= 1.0
    by_y = metrics["images"]["by_Y"]
    assert [r["Y"] for r in by_y] == list(TINY.image_features)
    assert by_y[-1]["hidden_mae_vs_exact"] < by_y[0]["hidden_mae_vs_exact"]
    wins, total = metrics["kernels"]["sincos_wins"]
    assert total == len(TINY.betas) * len(TINY.features) * 3 * 2 and 0 <= wins <= total


def test_fit_recovers_an_inverse_square_root():
    ys = [1_000, 4_000, 16_000]
    fit = fit_inverse_sqrt(ys, [0.3 / math.sqrt(y) for y in ys])
    assert fit["b"] == pytest.approx(0.3) and fit["b_max"] == pytest.approx(0.3)
    assert fit["slope"] == pytest.approx(-0.5)


def test_flip_and_hamming():
    g = torch.Generator().manual_seed(0)
    patterns = (torch.rand(5, 40, generator=g) < 0.5).float() / math.sqrt(40)
    flipped = flip_bits(patterns, 0.1, g)
    assert torch.equal(binarize(flipped), flipped)
    assert torch.allclose(hamming(patterns, flipped), torch.full((5,), 0.1))
    assert (hamming(patterns, patterns) == 0).all()


#: smaller still, for calling the sections one by one (no figures drawn)
MINI = Grid(
    dims=(8, 16),
    betas=(5.0, 20.0),
    features=(64, 256),
    num_memories=20,
    num_queries=10,
    kernel_dim=16,
    k_values=(10, 20),
    k_dim=8,
    k_features=256,
    retrieval_dim=16,
    retrieval_betas=(5.0, 20.0),
    retrieval_features=(64, 256),
    retrieval_queries=5,
    retrieval_steps=20,
    image_memories=4,
    image_queries=2,
    image_features=(64, 256),
    image_steps=10,
)


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    """Each section's compute result and what its write returned, run in the paper's order."""
    out = tmp_path_factory.mktemp("drdam-sections")
    ctx = Context(grid=MINI, seed=0, quick=False, out=out, images=load("digits"))
    report = Report(out, "sections")
    written = {}
    for section in (features, memories, retrieval, images, kernels):
        s = section.SECTION
        ctx.results[s.name] = s.compute(ctx, lambda stage, fraction: None)
        written[s.name] = s.write(ctx.results[s.name], ctx, report)
    return ctx.results, written, report


def _claim(report, start: str) -> tuple[str, str]:
    """(measured, verdict) of the claim whose text starts with ``start``."""
    return next((m, v) for p, m, v in report.claims if p.startswith(start))


def test_features_writes_what_it_computed(sections):
    results, written, report = sections
    result, entries = results["errors vs Y"], written["errors vs Y"]
    assert entries["error_grid"] is result.records and entries["fits"] is result.fits
    jobs = len(MINI.dims) + len(KERNELS) - 1  # kernel_dim is one of the dims
    assert len(result.records) == jobs * len(MINI.betas) * len(MINI.features) * len(KINDS)
    head = [r for r in result.sincos if r["D"] == 16 and r["beta"] == 5.0 and r["kind"] == "near"]
    assert entries["energy_error_by_Y"] == [[r["Y"], r["energy_error"]] for r in head]
    assert entries["headline"] == {"D": 16, "beta": 5.0, "queries": "near", "kernel": "sincos"}
    for q, suffix in (("energy", ""), ("grad", "_grad")):
        fit = fit_inverse_sqrt([r["Y"] for r in head], [r[f"{q}_error"] for r in head])
        assert entries[f"fitted_b{suffix}"] == fit["b"]
        assert entries[f"fitted_slope{suffix}"] == fit["slope"]
    beta_up = [  # error_grows's order: D, then query kind, then quantity
        _error(result.sincos, d, 20.0, k, 256, q) > _error(result.sincos, d, 5.0, k, 256, q)
        for d in MINI.dims
        for k in KINDS
        for q in QUANTITIES
    ]
    assert result.beta_up == beta_up
    measured, _ = _claim(report, "The error grows with β")
    assert f"in {sum(beta_up)}/{len(beta_up)} (D, query" in measured
    assert len(result.near_lt) == len(MINI.dims) * len(MINI.betas) * len(MINI.features) * 2


def _error(records, dim, beta, kind, y, quantity) -> float:
    (r,) = [r for r in records if (r["D"], r["beta"], r["kind"], r["Y"]) == (dim, beta, kind, y)]
    return r[f"{quantity}_error"]


def test_kernels_read_the_error_grid_of_features(sections):
    results, written, report = sections
    result, entries = results["kernels"], written["kernels"]
    grid_records = results["errors vs Y"].records
    assert result.records == [r for r in grid_records if r["D"] == MINI.kernel_dim]
    wins = []
    for beta in MINI.betas:
        for y in MINI.features:
            for kind in KINDS:
                for q in QUANTITIES:
                    errs = {k: _kernel_error(result.records, k, beta, kind, y, q) for k in KERNELS}
                    wins.append(min(errs.values()) == errs["sincos"])
    assert result.sincos_wins == wins
    assert entries == {
        "kernels": {"best_at_largest_Y": result.best, "sincos_wins": [sum(wins), len(wins)]}
    }
    assert len(result.best) == len(MINI.betas) * len(KINDS) * len(QUANTITIES)
    measured, _ = _claim(report, "SinCos")
    assert f"in {sum(wins)}/{len(wins)} (β, Y" in measured


def _kernel_error(records, kernel, beta, kind, y, quantity) -> float:
    (r,) = [
        r for r in records if (r["kernel"], r["beta"], r["kind"], r["Y"]) == (kernel, beta, kind, y)
    ]
    return r[f"{quantity}_error"]


def test_memories_writes_what_it_computed(sections):
    results, written, report = sections
    result, entries = results["errors vs K"], written["errors vs K"]["error_vs_K"]
    assert entries["records"] is result.records and entries["bytes"] is result.sizes
    assert [s[0] for s in result.sizes] == sorted(MINI.k_values)
    assert [s[2] for s in result.sizes] == [k * MINI.k_dim * 4 for k in sorted(MINI.k_values)]
    for (q, kind), median in result.median_slopes.items():
        assert entries["median_slopes"][f"{q}_{kind}"] == median
        slopes = []
        for beta in MINI.betas:
            rows = [r for r in result.records if r["beta"] == beta and r["kind"] == kind]
            ks = [math.log(r["K"]) for r in rows]
            es = [math.log(r[f"{q}_error"]) for r in rows]
            slopes.append((es[1] - es[0]) / (ks[1] - ks[0]))  # two K: the line through both
        assert median == pytest.approx(sum(slopes) / 2, rel=1e-6, abs=1e-9)
    measured, verdict = _claim(report, "The memory footprint")
    assert f"DrDAM holds {result.sizes[0][1]} bytes" in measured and verdict == "reproduced"


def test_retrieval_writes_what_it_computed(sections):
    results, written, report = sections
    result, entries = results["retrieval"], written["retrieval"]["retrieval"]
    assert entries["records"] is result.records
    assert entries["exact_threshold_margin"] is result.exact_margin
    assert entries["first_Y_half_identical"] is result.first_same
    assert len(result.records) == len(MINI.retrieval_betas) * len(MINI.retrieval_features) * 2
    assert result.retrieving == [b for b, m in result.exact_margin.items() if m > 0.1]
    for beta, y in result.first_same.items():
        near = [r for r in result.records if r["beta"] == beta and r["kind"] == "near"]
        half = [r["Y"] for r in near if r["identical"] >= 0.5]
        assert y == (min(half) if half else None)
    measured, _ = _claim(report, "Retrieval: DrDAM")
    assert f"in {sum(result.falls)}/{len(result.falls)} (β, query)" in measured


def test_images_writes_what_it_computed(sections):
    results, written, report = sections
    result, entries = results["images"], written["images"]["images"]
    assert entries["by_Y"] is result.by_Y and entries["data"] == "digits"
    assert entries["exact_mae_vs_original"] == result.exact_mae
    assert [r["Y"] for r in result.by_Y] == list(MINI.image_features)
    assert [label for label, _ in result.rows] == ["original", "query", "MrDAM", "Y=64", "Y=256"]
    assert entries["exact_energy_curve"] == result.exact_energy.tolist()
    assert len(entries["exact_energy_curve"]) == MINI.image_steps + 1
    assert set(entries["energy_curves"]) == {"64", "256"}
    # the MrDAM row is the exact completion: its hidden pixels are exact_mae from the originals
    original, exact = result.rows[0][1], result.rows[2][1]
    hidden = exact.shape[1] // 2  # the lower half of each image, row-major
    lower = (exact - original)[:, exact.shape[1] - hidden :].abs().mean().item()
    assert lower == pytest.approx(result.exact_mae, rel=1e-5)
    measured, _ = _claim(report, "Image completion")
    assert f"at Y={MINI.image_features[0]}" in measured
