"""A reproduction directory is written as a unit: an interrupted rerun (another seed) never
leaves the figures of one run beside the report of another; and every command refuses an
empty --out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli import WRITERS
from typer.testing import CliRunner

from amlab.cli import app
from amlab.errors import AmlabError
from amlab.experiments.report import RUN_FILE, Paper, Section, reproduce


@dataclass(frozen=True)
class Grid:
    figures: tuple[str, ...] = ("a.png", "b.png")
    fail_at: str | None = None  # the figure whose drawing is interrupted


class Interrupted(Exception):
    pass


def draw(name: str):
    """A section that "draws" figure ``name``: its bytes say which seed drew it."""

    def figure(result, ctx, report):
        if ctx.grid.fail_at == name:
            raise Interrupted(name)
        report.path(name).write_bytes(f"seed {ctx.seed}".encode())
        report.figure(name, f"figure {name}")

    def write(result, ctx, report):
        report.claim(f"{name} is drawn", f"seed {ctx.seed}", "reproduced")
        return {name: ctx.seed}

    return Section(name, 0.5, lambda ctx, progress: None, write, figure)


def paper(figures: tuple[str, ...]) -> Paper:
    return Paper(
        "t",
        "s",
        full=Grid(figures),
        quick=Grid(figures),
        sections=tuple(draw(name) for name in figures),
        metrics=lambda ctx: {"seed": ctx.seed},
    )


def state(out: Path) -> dict:
    """What a reader of ``out`` sees: run.json, which seed each figure and the report are of."""
    figures = {p.name: p.read_text() for p in sorted(out.glob("*.png"))}
    metrics = out / "metrics.json"
    return {
        "run": json.loads((out / RUN_FILE).read_text()),
        "report": (out / "report.md").read_text(),
        "metrics": json.loads(metrics.read_text()) if metrics.exists() else None,
        "figures": figures,
    }


def test_a_finished_run_is_marked_complete_and_lists_its_figures(tmp_path):
    reproduce(paper(("a.png", "b.png")), tmp_path, seed=0)
    seen = state(tmp_path)
    assert seen["run"] == {"seed": 0, "quick": False, "complete": True, "files": ["a.png", "b.png"]}
    assert seen["figures"] == {"a.png": "seed 0", "b.png": "seed 0"}
    assert seen["metrics"]["seed"] == 0 and "Seed 0" in seen["report"]


@pytest.mark.parametrize("fail_at", ["a.png", "b.png", "c.png"])
def test_an_interrupted_rerun_leaves_no_figure_of_the_old_run_beside_a_report(tmp_path, fail_at):
    figures = ("a.png", "b.png", "c.png")
    reproduce(paper(figures), tmp_path, seed=0)
    rerun = Paper(**{**paper(figures).__dict__, "full": Grid(figures, fail_at=fail_at)})
    with pytest.raises(Interrupted):
        reproduce(rerun, tmp_path, seed=1)
    seen = state(tmp_path)
    assert seen["run"]["complete"] is False and seen["run"]["seed"] == 1
    assert seen["metrics"] is None  # no metrics of either run
    assert "Unfinished reproduction" in seen["report"] and "seed 1" in seen["report"]
    assert "Seed 0" not in seen["report"]
    # only figures of the interrupted run remain, and run.json lists every one of them
    assert set(seen["figures"].values()) <= {"seed 1"}
    assert set(seen["figures"]) <= set(seen["run"]["files"])
    # the next run finishes, and every figure, the report and the metrics are its own
    reproduce(paper(figures), tmp_path, seed=2)
    seen = state(tmp_path)
    assert seen["run"]["complete"] is True and seen["metrics"]["seed"] == 2
    assert seen["figures"] == dict.fromkeys(figures, "seed 2")


def test_a_rerun_with_fewer_figures_clears_the_old_ones(tmp_path):
    reproduce(paper(("a.png", "b.png", "old.png")), tmp_path, seed=0)
    reproduce(paper(("a.png",)), tmp_path, seed=1)
    seen = state(tmp_path)
    assert seen["figures"] == {"a.png": "seed 1"} and seen["run"]["files"] == ["a.png"]


def test_figures_of_a_run_interrupted_before_are_cleared_too(tmp_path):
    with pytest.raises(Interrupted):
        reproduce(
            Paper(
                **{**paper(("x.png", "y.png")).__dict__, "full": Grid(("x.png", "y.png"), "y.png")}
            ),
            tmp_path,
            seed=0,
        )
    assert (tmp_path / "x.png").exists()
    reproduce(paper(("a.png",)), tmp_path, seed=1)
    assert state(tmp_path)["figures"] == {"a.png": "seed 1"}


def test_a_tampered_run_file_cannot_delete_other_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "outside.png").write_text("keep")
    (out / "notes.txt").write_text("keep")
    (out / "mine.png").write_text("keep")
    names = ["../outside.png", "notes.txt", str(tmp_path / "outside.png"), 7, ".", ""]
    (out / RUN_FILE).write_text(json.dumps({"complete": True, "files": names}))
    reproduce(paper(("a.png",)), out, seed=0)
    assert (tmp_path / "outside.png").read_text() == "keep"
    assert (out / "notes.txt").read_text() == "keep" and (out / "mine.png").read_text() == "keep"
    (out / RUN_FILE).write_text("{not json")
    with pytest.raises(AmlabError, match="run.json"):
        reproduce(paper(("a.png",)), out, seed=0)


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
@pytest.mark.parametrize("empty", ["", " "])
def test_every_command_refuses_an_empty_out(command, empty, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "--out", empty])
    assert result.exit_code == 2, result.output
    assert "an empty path names no directory" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing was written into the current directory
