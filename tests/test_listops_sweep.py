"""The ListOps sweep: a killed sweep resumes without redoing finished runs; the process
pool gives the same results as one process; thresholds and the curriculum table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
from conftest import error_line
from typer.testing import CliRunner

from amlab.cli import app
from amlab.errors import AmlabError
from amlab.tasks.listops import RunSpec
from amlab.tasks.listops_sweep import (
    curriculum_rows,
    finished,
    record_path,
    run_sweep,
    summarize,
    sweep_grid,
    thresholds,
)

BASE = RunSpec(
    dim=8,
    steps=20,
    eval_every=10,
    lr=1e-2,
    warmup=2,
    batch_size=32,
    data={"max_depth": 1, "max_args": 3},
    train_size=300,
    val_size=50,
    test_size=50,
)


def specs():
    return sweep_grid(BASE, ["max"], [8], [0, 1, 2])


KILL_AFTER_FIRST = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_listops_sweep import specs
    from amlab.tasks.listops_sweep import run_sweep

    def on_done(record, n, total):
        os.kill(os.getpid(), signal.SIGKILL)  # killed right after the first record

    run_sweep(specs(), {out!r}, on_done=on_done)
    """
)


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    out = str(tmp_path / "sweep")
    script = KILL_AFTER_FIRST.format(tests=os.path.dirname(__file__), out=out)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    done = [s for s in specs() if finished(out, s) is not None]
    assert len(done) == 1
    first = record_path(out, done[0].key())
    stamp, text = first.stat().st_mtime_ns, first.read_text()

    seen = []
    records = run_sweep(specs(), out, on_done=lambda r, n, t: seen.append(r))
    assert sum(r.get("skipped", False) for r in seen) == 1
    assert [r["key"] for r in seen if not r.get("skipped")] == [
        s.key() for s in specs() if s.key() != done[0].key()
    ]
    assert first.stat().st_mtime_ns == stamp and first.read_text() == text
    assert [r["key"] for r in records] == [s.key() for s in specs()]

    again = []
    run_sweep(specs(), out, on_done=lambda r, n, t: again.append(r))
    assert all(r["skipped"] for r in again) and len(again) == 3


def test_changed_settings_are_not_taken_for_finished(tmp_path):
    run_sweep(specs()[:1], tmp_path)
    assert finished(tmp_path, specs()[0]) is not None
    assert finished(tmp_path, replace(specs()[0], lr=5e-3)) is None


def test_process_pool_gives_the_same_records_as_one_process(tmp_path):
    grid = specs()[:2]
    serial = run_sweep(grid, tmp_path / "serial")
    pooled = run_sweep(grid, tmp_path / "pool", workers=2)
    for a, b in zip(serial, pooled, strict=True):
        assert a["key"] == b["key"]
        assert a["val_history"] == b["val_history"]
        assert a["test_accuracy"] == b["test_accuracy"]


def test_ray_local_cluster_runs_the_same_jobs(tmp_path):
    pytest.importorskip("ray")
    import ray

    grid = specs()[:1]
    serial = run_sweep(grid, tmp_path / "serial")
    try:
        on_ray = run_sweep(grid, tmp_path / "ray", ray_address="local")
    finally:
        ray.shutdown()
    assert on_ray[0]["val_history"] == serial[0]["val_history"]
    assert on_ray[0]["test_accuracy"] == serial[0]["test_accuracy"]


def fake(ops, params, acc, pretrain=None):
    return {
        "spec": {"ops": list(ops), "pretrain_ops": pretrain},
        "parameters": params,
        "test_accuracy": acc,
    }


def test_thresholds_take_the_smallest_size_most_seeds_learn():
    records = [
        fake(["sum"], 100, 0.2),
        fake(["sum"], 100, 0.95),  # 1 of 2 seeds: counts
        fake(["sum"], 50, 0.3),
        fake(["sum"], 50, 0.1),
        fake(["max"], 50, 0.99),
        fake(["max"], 50, 0.97),
        fake(["min"], 50, 0.5),
        fake(["sum"], 10, 0.99, pretrain=["max", "med"]),  # curriculum: not a SUM threshold
    ]
    table = thresholds(records, target=0.9)
    assert table["SUM"]["threshold"] == 100
    assert table["MAX"]["threshold"] == 50
    assert table["MIN"]["threshold"] is None
    assert [s["learned"] for s in table["SUM"]["sizes"]] == [0, 1]
    assert thresholds(records, target=0.9, min_fraction=1.0)["SUM"]["threshold"] is None
    rows = curriculum_rows(records + [fake(["sum"], 10, 0.1)])
    assert rows == [{"parameters": 10, "alone": [0.1], "curriculum": [0.99]}]


def test_grid_includes_the_curriculum_and_rejects_repeats():
    grid = sweep_grid(BASE, ["sum", "max,med"], [8, 16], [0], curriculum_steps=30)
    assert len(grid) == 2 * 2 + 2
    assert {s.pretrain_ops for s in grid} == {None, ("max", "med")}
    with pytest.raises(AmlabError, match="repeats"):
        sweep_grid(BASE, ["sum", "sum"], [8], [0])
    with pytest.raises(AmlabError, match="multiple of heads"):
        sweep_grid(BASE, ["sum"], [9], [0])


def test_summary_file_is_json(tmp_path):
    summary = summarize(specs()[:1], tmp_path, target=0.5)
    assert json.loads((tmp_path / "summary.json").read_text())["thresholds"] == json.loads(
        json.dumps(summary["thresholds"])
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dim", "10", "--heads", "4"], "multiple of heads"),
        (["sweep", "--dims", "8,10", "--heads", "4"], "multiple of heads"),
    ],
)
def test_listops_cli_bad_options_give_one_clear_error(tmp_path, args, message):
    """(The parser's refusals of --ops, --mixes, --dims and --max-args: tests/test_cli.py.)"""
    result = CliRunner().invoke(app, ["listops", *args, "--out", str(tmp_path / "o")])
    assert message in error_line(result)
    assert not (tmp_path / "o").exists()


TINY = ["--steps", "20", "--eval-every", "10", "--train-size", "300", "--test-size", "60"]


def test_listops_train_cli_prints_and_writes_the_same_run(tmp_path):
    """The table shows metrics.json's accuracy per root operation; a second run into the same
    directory needs --resume, and resuming a finished run gives back the same record."""
    runner = CliRunner()
    args = ["listops", "train", "--ops", "max,sum", "--dim", "8", *TINY, "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert set(record["test_per_op"]) == {"max", "sum"}
    assert f"{record['parameters']} parameters" in result.output
    for op, accuracy in record["test_per_op"].items():
        assert f"{op} " in result.output and f"{accuracy:.4f}" in result.output
    assert f"{record['test_accuracy']:.4f}" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["test_per_op"] == record["test_per_op"]


def test_listops_sweep_cli_prints_the_summary_and_skips_finished_runs(tmp_path):
    args = ["listops", "sweep", "--mixes", "sum", "--dims", "8,16", "--seeds", "0", *TINY]
    args += ["--workers", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["records"]) == 2
    row = summary["thresholds"]["SUM"]
    assert "SUM" in result.output and str(row["threshold"] or "not within the ladder") in (
        result.output
    )
    for size in row["sizes"]:
        assert f"{size['parameters']}: {size['learned']}/{size['seeds']}" in result.output
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    assert len(written) == 2
    again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["thresholds"] == summary["thresholds"]
    # the finished runs were read back, not trained again
    assert {p: p.stat().st_mtime_ns for p in written} == written
