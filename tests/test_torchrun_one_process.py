"""The commands whose work is not spread over ranks refuse to run under torchrun with
several ranks, before they touch --out: ``amlab repro`` (its experiments run in one
process; it clears the previous run's files first) and ``amlab listops sweep`` (it spreads
its runs over its own workers or Ray). Each rank prints the one refusal line and exits with
status 2; launched on 2 ranks, nothing is written or deleted."""

from __future__ import annotations

import json

import pytest
from conftest import error_line
from ranks import launch_apart
from typer.testing import CliRunner

from amlab.cli import app

REPRO_REFUSED = "amlab repro runs in one process (its experiments are not spread over ranks"
SWEEP_REFUSED = "amlab listops sweep runs in one process (it spreads its runs over its own"
SWEEP = ["listops", "sweep", "--mixes", "max", "--dims", "8", "--seeds", "0", "--steps", "2"]
SWEEP += ["--layers", "1", "--heads", "1", "--train-size", "50", "--test-size", "20"]


def previous_run(out) -> dict[str, str]:
    """``out`` holding a finished reproduction (the files ``reproduce`` clears before it
    writes anew); returns them, name -> text."""
    out.mkdir()
    previous = {
        "report.md": "# the previous run\n",
        "metrics.json": '{"seed": 3}\n',
        "figure.png": "not a real figure\n",
        "run.json": json.dumps({"complete": True, "seed": 3, "files": ["figure.png"]}),
    }
    for name, text in previous.items():
        (out / name).write_text(text)
    return previous


def texts(directory) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir()}


@pytest.mark.parametrize(("rank", "world"), [("0", "2"), ("1", "2"), ("2", "3")])
def test_repro_refuses_every_rank_of_several_and_leaves_the_previous_run(
    tmp_path, monkeypatch, rank, world
):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    previous = previous_run(tmp_path / "out")
    result = CliRunner().invoke(app, ["repro", "lsr", "--quick", "--out", str(tmp_path / "out")])
    line = error_line(result)
    assert REPRO_REFUSED in line
    assert f"torchrun started this one as rank {rank} of {world}: launch it without" in line
    assert texts(tmp_path / "out") == previous


def test_listops_sweep_refuses_every_rank_of_several_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for extra in ([], ["--workers", "1"], ["--ray", "local"]):
        result = CliRunner().invoke(app, [*SWEEP, *extra, "--out", str(tmp_path / "sweep")])
        assert SWEEP_REFUSED in error_line(result)
    assert not (tmp_path / "sweep").exists()


def test_one_rank_of_one_is_one_process(tmp_path, monkeypatch):
    """torchrun --nproc_per_node 1 (WORLD_SIZE=1) is one process: the sweep runs."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    result = CliRunner().invoke(app, [*SWEEP, "--workers", "1", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads((tmp_path / "summary.json").read_text())


def check_ranks_refuse(tmp_path, args, refused: str) -> None:
    """Launch ``amlab ARGS`` on 2 ranks (each in its own directory): the launch fails, no
    rank writes a file or prints on stdout, and each rank's stderr holds the one refusal
    line naming its rank, or nothing: once a rank has failed torchrun ends the others
    (SIGTERM), and a rank slower to start may be ended before it reaches the check. At
    least one rank refused (every rank's refusal: the tests above, one rank at a time)."""
    ranks = launch_apart(tmp_path, args, succeeds=False)
    refusals = 0
    for rank, (directory, out, err) in enumerate(ranks):
        assert not (directory.exists() and any(directory.iterdir())) and out == ""
        lines = [line for line in err.splitlines() if line]
        assert len(lines) <= 1, err
        if lines:
            assert lines[0].startswith("error: ") and refused in lines[0], err
            assert f"as rank {rank} of 2: launch it without torchrun." in lines[0]
            refusals += 1
    assert refusals >= 1


def test_repro_under_torchrun_refuses_on_every_rank_before_clearing_out(tmp_path):
    """Both ranks name one --out (as on a shared filesystem): the previous run there is
    left whole, where a run on every rank would clear it and race on its files."""
    previous = previous_run(tmp_path / "shared")
    args = ["repro", "lsr", "--quick", "--out", tmp_path / "shared"]
    check_ranks_refuse(tmp_path, args, REPRO_REFUSED)
    assert texts(tmp_path / "shared") == previous


def test_listops_sweep_under_torchrun_refuses_on_every_rank(tmp_path):
    check_ranks_refuse(tmp_path, [*SWEEP, "--out", "sweep"], SWEEP_REFUSED)
