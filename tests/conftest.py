import json
import os

import pytest
import torch
from hypothesis import settings

# `make test` is deterministic (the same examples every run); `make fuzz` explores afresh.
settings.register_profile("ci", derandomize=True, max_examples=300, database=None)
settings.register_profile("explore", derandomize=False, max_examples=5000)
settings.load_profile(os.environ.get("AMLAB_FUZZ_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def run_tiny_repro(run, out, grid):
    """Run a paper's reproduction on a tiny grid; returns (out, metrics, progress calls)."""
    calls = []
    metrics = run(out=out, seed=0, grid=grid, progress=lambda s, f: calls.append((s, f)))
    return out, metrics, calls


def check_written_report(out, sections, figures, calls):
    """The report has the claims table, every section and figure; metrics.json is strict
    JSON; progress only moves forward and ends at 1. Returns (report text, metrics)."""
    report = (out / "report.md").read_text()
    assert "## Claims, one by one" in report
    for section in sections:
        assert f"## {section}" in report
    for name in figures:
        assert (out / name).stat().st_size > 5000, name
        assert f"]({name})" in report
    on_disk = json.loads(
        (out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON")
    )
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0
    # metrics.json holds the claims table of report.md, row for row
    table = report.split("## Claims, one by one", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    rows = [f"| {c['paper']} | {c['measured']} | {c['verdict']} |" for c in on_disk["claims"]]
    assert rows == table and rows
    return report, on_disk


def unboxed(output):
    """A command's output as one line: the boxes rich draws around help and errors and
    the line breaks undone."""
    lines = (line.strip(" │╭╮╰╯─") for line in output.splitlines())
    return " ".join(" ".join(lines).split())


def refused_by_parser(result, option):
    """The one ``error:`` line with which the command line's parser refused a value of
    ``option`` (exit status 2, no traceback, no box)."""
    line = error_line(result)
    assert f"Invalid value for '{option}'" in line, line
    assert "--help)" in line, line  # names the command whose --help lists the choices
    return line


def error_line(result):
    """The one ``error: ...`` line of a command that failed on bad input (exit status 2)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]
