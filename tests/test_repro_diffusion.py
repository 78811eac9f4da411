"""``amlab repro diffusion`` on a tiny grid: it writes the report, figures and metrics, the
correspondence holds exactly, and a rerun reuses the checkpointed networks."""

import pytest
from conftest import check_written_report, run_tiny_repro

from amlab.data import load
from amlab.experiments.diffusion import PAPER, Grid, circle, correspondence, digits, run
from amlab.experiments.diffusion.circle import circle_points
from amlab.experiments.report import Context, Report, no_progress

TINY = Grid(
    circle_sizes=(2, 9, 200),
    circle_sigmas=(0.05, 0.3),
    circle_hidden=16,
    circle_layers=1,
    circle_steps=30,
    circle_batch=32,
    circle_samples=50,
    circle_grid=21,
    circle_starts=5,
    minima_steps=50,
    digit_sizes=(10, 40),
    digit_channels=8,
    digit_blocks=1,
    digit_steps=20,
    digit_batch=16,
    digit_samples=10,
    guidance_per_class=1,
    sampler_steps=10,
    trajectory_memories=20,
    trajectory_starts=4,
    descent_steps=60,
)
FIGURES = (
    "diffusion_circle_K2.png",
    "diffusion_circle_K9.png",
    "diffusion_circle_K200.png",
    "diffusion_memorisation.png",
    "diffusion_digit_samples.png",
    "diffusion_guidance.png",
    "diffusion_trajectory.png",
    "diffusion_trajectory_images.png",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_tiny_repro(run, tmp_path_factory.mktemp("diffusion"), TINY)


def test_writes_report_figures_and_metrics(tiny_run):
    out, _, calls = tiny_run
    report, on_disk = check_written_report(
        out, ("(a)", "(b)", "(c)", "(c')", "(d)"), FIGURES, calls
    )
    assert on_disk["correspondence"]["max_diff_attention"] == 0.0
    claims = report.split("## Claims, one by one")[1].split("\n## ")[0]
    assert claims.count("\n| ") >= 7  # header + one row per claim


def test_measured_numbers_are_plausible(tiny_run):
    _, metrics, _ = tiny_run
    assert metrics["correspondence"]["max_diff_brute"] < 1e-4
    circle = metrics["circle_toy"]
    # the empirical denoiser's samples land on the stored points (it can only memorise)
    for k in (2, 9):
        assert circle[f"K{k}"]["samples"]["empirical"]["near_stored"] > 0.9
    # K = 2 has exactly its two points as minima at low noise; no minimum is spurious there
    low = circle["K2"]["by_sigma"][0]
    assert low["empirical_minima"] == 2 and low["empirical_spurious"] == 0
    # the dense ring is close to 1/2 (R - 1)^2 at low noise, two points are far from it
    assert circle["K200"]["by_sigma"][0]["ring_deviation_empirical"] < 0.05
    assert circle["K2"]["by_sigma"][0]["ring_deviation_empirical"] > 1.0
    digits = metrics["digits"]
    assert 0 < digits["threshold"] < digits["typical_distance"]
    for record in digits["by_N"]:
        assert record["empirical"]["memorised"] > 0.9
        for name in ("learned", "empirical"):
            assert 0.0 <= record[name]["memorised"] <= 1.0
    trajectory = metrics["trajectory"]
    assert trajectory["energy_rises_descent"] == 0  # plain descent never raises the energy
    assert trajectory["final_distance_sampler"] < 0.5  # sigma_min sqrt(D) = 0.08 when exact
    assert trajectory["final_distance_sampler"] < trajectory["start_distance"] / 100


def test_rerun_reuses_the_checkpointed_networks(tiny_run):
    out, metrics, _ = tiny_run
    again = run(out=out, seed=0, grid=TINY)
    for k in TINY.circle_sizes:
        assert again["circle_toy"][f"K{k}"]["training"]["resumed_from"] == TINY.circle_steps
        assert again["circle_toy"][f"K{k}"]["samples"] == metrics["circle_toy"][f"K{k}"]["samples"]


def test_circle_points_lie_on_the_circle():
    points = circle_points(50, seed=3)
    assert points.shape == (50, 2)
    assert ((points.norm(dim=1) - 1).abs() < 1e-6).all()


def _this_run_only(value):
    """value without what differs between two runs of the same grid: the training's seconds
    and the step it resumed from."""
    if isinstance(value, dict):
        return {
            k: _this_run_only(v) for k, v in value.items() if k not in ("seconds", "resumed_from")
        }
    if isinstance(value, list):
        return [_this_run_only(v) for v in value]
    return value


@pytest.mark.parametrize("section", PAPER.sections, ids=lambda s: s.name)
def test_each_section_writes_what_it_computed(tiny_run, tmp_path, section):
    """A section's compute, run again (its networks loaded from the tiny run's checkpoints),
    gives what the tiny run wrote; write reports that result's numbers, and only its own
    entries of metrics.json."""
    out, metrics, _ = tiny_run
    ctx = Context(grid=TINY, seed=0, quick=False, out=out, images=load("digits"))
    result = section.compute(ctx, no_progress)
    report = Report(tmp_path, "one section")
    written = section.write(result, ctx, report)
    (key,) = written
    assert _this_run_only(written[key]) == _this_run_only(metrics[key])
    text = "\n".join(report.lines)
    if section is correspondence.SECTION:
        assert written[key]["rows"] == result.rows
        assert f"float64 posterior mean {result.max_diff_brute:.1e}" in report.claims[0][1]
    elif section is circle.SECTION:
        for run_k in result.runs:
            by_sigma = written[key][f"K{run_k.k}"]["by_sigma"]
            assert by_sigma == [scape.record for scape in run_k.landscapes]
            assert written[key][f"K{run_k.k}"]["samples"] == run_k.sample_stats
    elif section is digits.SECTION:
        assert written[key]["threshold"] == result.threshold
        assert written[key]["by_N"] == result.records
        assert f"closer than {result.threshold:.3f}" in text
    else:
        assert written[key] == result.metrics
        assert f"{result.metrics['final_distance_sampler']:.3f}" in report.claims[0][1]


def test_the_sections_share_the_whole_run():
    names = [s.name for s in PAPER.sections]
    assert len(set(names)) == len(names)
    assert abs(sum(s.share for s in PAPER.sections) - 1) < 1e-12
