"""The sections of `amlab repro listops` after the sweep, on a hand-made sweep whose
thresholds, SUM-in-mix rows, curriculum and verdicts are worked out by hand below."""

from __future__ import annotations

import pytest

from amlab.experiments.listops import curriculum, sum_in_mix, thresholds
from amlab.experiments.listops.sweep import RUNS_THE_SWEEP, Grid, Sweep
from amlab.experiments.report import Context, Report, no_progress
from amlab.tasks.listops_sweep import curriculum_rows
from amlab.tasks.listops_sweep import thresholds as threshold_table

SIZES = (100, 200, 400)


def record(ops, params, acc, per_op=None, pretrain=None):
    spec = {"ops": list(ops), "pretrain_ops": list(pretrain) if pretrain else None}
    return {
        "key": f"{'+'.join(pretrain or ())}-{'+'.join(ops)}-{params}",
        "spec": spec,
        "parameters": params,
        "test_accuracy": acc,
        "test_per_op": per_op or {ops[0]: acc},
        "steps_done": 10,
    }


def study() -> list[dict]:
    """One seed per size. Learned (>= 0.9) from: MAX, MIN 100; MED 200; SUM 400; the
    mixes never; SUM after MAX+MED from 200 (below SUM's threshold)."""
    accs = {
        ("sum",): (0.1, 0.5, 0.95),
        ("max",): (0.95, 0.96, 0.97),
        ("min",): (0.92, 0.93, 0.96),
        ("med",): (0.5, 0.93, 0.97),
        ("max", "med"): (0.6, 0.7, 0.8),
    }
    records = [
        record(ops, p, a) for ops, row in accs.items() for p, a in zip(SIZES, row, strict=True)
    ]
    for p, acc, on_sum in zip(SIZES, (0.6, 0.8, 0.85), (0.3, 0.7, 0.96), strict=True):
        records.append(record(("max", "med", "sum"), p, acc, {"sum": on_sum, "max": 1.0}))
    for p, acc in zip(SIZES, (0.2, 0.92, 0.97), strict=True):
        records.append(record(("sum",), p, acc, pretrain=("max", "med")))
    return records


@pytest.fixture
def ctx(tmp_path):
    records = study()
    grid = Grid(dims=(8,), seeds=(0,), steps=10, curriculum_steps=5)
    sweep = Sweep([], records, threshold_table(records, 0.9), curriculum_rows(records))
    return Context(grid=grid, seed=0, quick=True, out=tmp_path, results={RUNS_THE_SWEEP: sweep})


def test_thresholds_section_reports_the_sweep(ctx, tmp_path):
    report = Report(tmp_path, "t")
    metrics = thresholds.write(ctx.results[RUNS_THE_SWEEP], ctx, report)
    found = {mix: row["threshold"] for mix, row in metrics["thresholds"].items()}
    assert found == {
        "SUM": 400,
        "MAX": 100,
        "MIN": 100,
        "MED": 200,
        "MAX+MED": None,
        "MAX+MED+SUM": None,
    }
    assert "| SUM | 400 | 100: 0/1 (acc 0.100); 200: 0/1 (acc 0.500); 400: 1/1 (acc 0.950) |" in (
        report.lines
    )
    assert [r["key"] for r in metrics["runs"]] == [r["key"] for r in study()]
    # SUM needs the most parameters and is never more accurate than MAX, MIN or MED
    (claim,) = report.claims
    assert claim[1].startswith("thresholds: SUM 400, MAX 100, MIN 100, MED 200;")
    assert claim[2] == "reproduced"


def test_sum_in_mix_section_reports_its_rows(ctx, tmp_path):
    report = Report(tmp_path, "t")
    rows = sum_in_mix.compute(ctx, no_progress)
    assert rows == [
        {"parameters": 100, "sum_alone": [0.1], "sum_in_mix": [0.3]},
        {"parameters": 200, "sum_alone": [0.5], "sum_in_mix": [0.7]},
        {"parameters": 400, "sum_alone": [0.95], "sum_in_mix": [0.96]},
    ]
    assert sum_in_mix.write(rows, ctx, report) == {"sum_in_mix": {"rows": rows}}
    assert "| 200 | 0.5 | 0.7 |" in report.lines
    # better in the mix by more than 0.02 at 100 and 200, not at 400
    (claim,) = report.claims
    assert claim[1] == (
        "100 params: alone 0.100, in mix 0.300; 200 params: alone 0.500, in mix 0.700; "
        "400 params: alone 0.950, in mix 0.960"
    )
    assert claim[2] == "partly"


def test_curriculum_section_reports_its_rows(ctx, tmp_path):
    report = Report(tmp_path, "t")
    result = curriculum.compute(ctx, no_progress)
    assert result.sum_threshold == 400
    assert result.rows == [
        {"parameters": p, "alone": [a], "curriculum": [c]}
        for p, a, c in zip(SIZES, (0.1, 0.5, 0.95), (0.2, 0.92, 0.97), strict=True)
    ]
    assert curriculum.write(result, ctx, report) == {"curriculum": result.rows}
    assert "| 200 | 0.500 | 0.920 |" in report.lines
    # below SUM's threshold (400): learned only with the curriculum at 200, better at both
    (claim,) = report.claims
    assert claim[1] == (
        "SUM threshold 400; below it, learned only with the curriculum at [200]; "
        "curriculum more accurate at [100, 200]"
    )
    assert claim[2] == "reproduced"
