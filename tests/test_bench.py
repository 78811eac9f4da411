"""`amlab bench --quick` runs every workload and reports every field (no timing checks); the
device check that a session with a GPU runs works here."""

import io
import json

import torch
from conftest import refused_by_parser
from rich.console import Console
from typer.testing import CliRunner

from amlab.cli import app
from amlab.cli.bench import bench_table

FIELDS = {
    "name",
    "shape",
    "seconds",
    "gflops",
    "matmul_gflops",
    "fraction_of_matmul",
    "plain_seconds",
    "plain_gflops",
    "speedup_vs_plain",
    "peak_bytes",
    "plain_peak_bytes",
    "max_abs_difference",
    "largest_tensor_bytes",
    "plain_largest_tensor_bytes",
}


def test_quick_bench_json_has_every_workload_and_field(tmp_path):
    result = CliRunner().invoke(
        app, ["bench", "--quick", "--json", "--repeats", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "bench.json").read_text())
    assert report["matmul_gflops"] > 0 and report["device"]
    names = [row["name"] for row in report["workloads"]]
    assert names == [
        "lse_784",
        "lse_64",
        "update_784",
        "update_64",
        "lsr_index",
        "drdam",
        "energy_transformer",
    ]
    for row in report["workloads"]:
        assert FIELDS <= set(row), row["name"]
        assert row["seconds"] > 0 and row["plain_seconds"] > 0 and row["gflops"] > 0
        # each row's share is against the matmul rate measured just before it
        assert 0 < row["matmul_gflops"] <= report["matmul_gflops"]
        if row["fraction_of_matmul"] is not None:
            assert row["fraction_of_matmul"] == row["gflops"] / row["matmul_gflops"]
    rows = {row["name"]: row for row in report["workloads"]}
    # amlab and the plain implementations compute the same thing (DrDAM approximates)
    for name in ("lse_784", "lse_64", "update_784", "update_64", "energy_transformer"):
        assert rows[name]["max_abs_difference"] < 1e-3, name
    for name in ("update_784", "update_64"):  # both at float32's rounding against float64
        assert 0 < rows[name]["error_vs_float64"] < 1e-5, rows[name]
        assert 0 < rows[name]["plain_error_vs_float64"] < 1e-5, rows[name]
        # the ceiling: plain's time over that of the update's two matmuls alone
        ceiling = rows[name]["plain_seconds"] / rows[name]["matmuls_seconds"]
        assert rows[name]["speedup_ceiling"] == ceiling, rows[name]
    assert rows["lsr_index"]["max_abs_difference"] < 1e-3
    # the streaming pass never makes the (B, M) score matrix; the plain one does
    lse = rows["lse_64"]["shape"]
    assert rows["lse_64"]["plain_largest_tensor_bytes"] >= 4 * lse["B"] * lse["M"]
    assert rows["lse_64"]["largest_tensor_bytes"] < 4 * lse["B"] * lse["M"] // 4
    assert rows["lsr_index"]["index_balls"] > 1 and rows["lsr_index"]["mean_support"] > 1
    # the table `amlab bench` prints without --json shows the same numbers
    screen = io.StringIO()
    Console(file=screen, width=250).print(bench_table(report))
    lines = {
        line.split("│")[1].strip(): line
        for line in screen.getvalue().splitlines()[1:]
        if line.count("│") > 2
    }
    for row in report["workloads"]:
        cells = [c.strip() for c in lines[row["name"]].split("│")[1:-1]]
        assert (
            cells[1] == f"{row['seconds'] * 1e3:.1f}" and cells[3] == f"{row['matmul_gflops']:.0f}"
        )
        assert cells[6] == f"{row['speedup_vs_plain']:.2f}"
        share = row["fraction_of_matmul"]
        assert cells[4] == ("-" if share is None else f"{share:.2f}")
        ceiling = row.get("speedup_ceiling")
        assert cells[7] == ("-" if ceiling is None else f"{ceiling:.2f}")


def test_bench_rejects_an_unknown_workload():
    result = CliRunner().invoke(app, ["bench", "--quick", "--workloads", "nope"])
    assert "'nope' is not one of lse_784" in refused_by_parser(result, "--workloads")


def load_device_check():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "check_device.py"
    spec = importlib.util.spec_from_file_location("check_device", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_device_check_passes_on_the_cpu_and_catches_a_wrong_pass(monkeypatch):
    """benchmarks/check_device.py is what a session with a GPU runs; it must run here, and a
    pass that computes the wrong thing must fail it."""
    check = load_device_check()
    rows = check.run_checks("cpu", "small")
    assert [row["name"] for row in rows] == [
        "lse_float32",
        "lse_float64",
        "lsr_index",
        "retrieval",
        "energy_transformer",
        "drdam",
    ]
    assert all(row["ok"] for row in rows), rows
    real = check.lse_softmax_mean
    monkeypatch.setattr(
        check, "lse_softmax_mean", lambda *a, **k: tuple(t * 1.001 for t in real(*a, **k))
    )
    assert (
        not check.check_lse(torch.device("cpu"), torch.float64, 500)["max_rel_difference"] <= 1e-10
    )
