"""`amlab repro lsr --quick` end to end: files, metrics and claims."""

import json

from typer.testing import CliRunner

from amlab.cli import app


def test_repro_lsr_quick_writes_report_figures_and_metrics(tmp_path):
    out = tmp_path / "lsr"
    result = CliRunner().invoke(app, ["repro", "lsr", "--quick", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics == json.loads((out / "metrics.json").read_text())
    for key in (
        "exact_retrieval_fraction",
        "max_emergent_over_stored",
        "max_emergent_over_stored_lse",
        "loglik",
    ):
        assert key in metrics
    assert metrics["exact_retrieval_fraction"] == 1.0  # r below the smallest image distance
    assert metrics["max_emergent_over_stored"] > 10 > metrics["max_emergent_over_stored_lse"]
    assert set(metrics["loglik"]) == {"lsr", "lse"}
    for run in metrics["minima_vs_beta"]:  # every stored pattern is a minimum at the top beta
        assert run["lsr_stored"][-1] == run["M"]
    report = (out / "report.md").read_text()
    assert "## Claims, one by one" in report and "| reproduced |" in report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {
        "minima_vs_beta.png",
        "lsr_1d.png",
        "lsr_kernels.png",
        "lsr_loglik.png",
        "emergent_exact_beta.png",
    } <= set(pngs)
    for name in pngs:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
