"""``amlab repro memorisation`` on a tiny grid: it writes the report, figures and metrics,
the fractions are shares of the samples, the empirical denoiser memorises, and a rerun
reuses the checkpointed networks."""

import pytest
from conftest import check_written_report, run_tiny_repro

from amlab.analysis.memorisation import AUDIT_CLASSES
from amlab.experiments.memorisation import Grid, run
from amlab.experiments.memorisation.phase import by_size

TINY = Grid(
    digit_sizes=(10, 40),
    seeds=(0, 1),
    digit_channels=8,
    digit_blocks=1,
    digit_steps=20,
    digit_batch=16,
    digit_samples=10,
    sampler_steps=8,
    audit_steps=50,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_tiny_repro(run, tmp_path_factory.mktemp("memorisation"), TINY)


def test_writes_report_figures_and_metrics(tiny_run):
    out, metrics, calls = tiny_run
    report, _ = check_written_report(
        out,
        ("The phase curve: memorised, spurious, generalised",),
        ("memorisation_phase.png",),
        calls,
    )
    runs = metrics["memorisation"]["runs"]
    assert sorted((r["N"], r["seed"]) for r in runs) == [(10, 0), (10, 1), (40, 0), (40, 1)]
    for r in runs:
        for who in ("learned", "empirical"):
            shares = [r[who][c] for c in AUDIT_CLASSES]
            assert sum(shares) == pytest.approx(1.0)
            assert all(share * TINY.digit_samples == round(share * 10) for share in shares)
        assert r["empirical"]["memorised"] > 0.9  # the exact denoiser copies its images
        assert 0 < r["scale"]["threshold"] < r["scale"]["noise_level"]
    # the table's rows are the means over the seeds
    rows = by_size(runs, "learned")
    assert [r["N"] for r in rows] == [10, 40] and all(r["seeds"] == 2 for r in rows)
    mine = [r["learned"]["generalised"] for r in runs if r["N"] == 10]
    assert rows[0]["generalised"] == pytest.approx(sum(mine) / 2)
    assert "| 10 | 2 |" in report


def test_rerun_reuses_the_checkpointed_networks(tiny_run):
    out, metrics, _ = tiny_run
    again = run(out=out, seed=0, grid=TINY)
    for before, after in zip(
        metrics["memorisation"]["runs"], again["memorisation"]["runs"], strict=True
    ):
        assert after["training"]["resumed_from"] == TINY.digit_steps
        assert after["learned"] == before["learned"]
