"""`amlab bench --quick` runs every workload and reports every field (no timing checks)."""

import json

from typer.testing import CliRunner

from amlab.cli import app

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
    assert names == ["lse_784", "lse_64", "lsr_index", "drdam", "energy_transformer"]
    for row in report["workloads"]:
        assert FIELDS <= set(row), row["name"]
        assert row["seconds"] > 0 and row["plain_seconds"] > 0 and row["gflops"] > 0
        # each row's share is against the matmul rate measured just before it
        assert 0 < row["matmul_gflops"] <= report["matmul_gflops"]
        if row["fraction_of_matmul"] is not None:
            assert row["fraction_of_matmul"] == row["gflops"] / row["matmul_gflops"]
    rows = {row["name"]: row for row in report["workloads"]}
    # amlab and the plain implementations compute the same thing (DrDAM approximates)
    for name in ("lse_784", "lse_64", "energy_transformer"):
        assert rows[name]["max_abs_difference"] < 1e-3, name
    assert rows["lsr_index"]["max_abs_difference"] < 1e-3
    # the streaming pass never makes the (B, M) score matrix; the plain one does
    lse = rows["lse_64"]["shape"]
    assert rows["lse_64"]["plain_largest_tensor_bytes"] >= 4 * lse["B"] * lse["M"]
    assert rows["lse_64"]["largest_tensor_bytes"] < 4 * lse["B"] * lse["M"] // 4
    assert rows["lsr_index"]["index_balls"] > 1 and rows["lsr_index"]["mean_support"] > 1


def test_bench_rejects_an_unknown_workload():
    result = CliRunner().invoke(app, ["bench", "--quick", "--workload", "nope"])
    assert result.exit_code == 2
    assert "workload" in result.output
