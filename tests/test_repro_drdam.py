"""``amlab repro drdam``: the run writes its report, figures and metrics, on a tiny grid.

The quick grid takes about a minute on 2 cores, so the test passes a smaller ``grid``.
"""

import math

import pytest
import torch
from conftest import check_written_report, run_tiny_repro

from amlab.experiments.drdam import Grid, binarize, fit_inverse_sqrt, flip_bits, hamming, run

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
