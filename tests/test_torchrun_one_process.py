"""The commands whose work is not spread over ranks refuse to run under torchrun with
several ranks, before they touch --out: ``amlab repro`` (its experiments run in one
process; it clears the previous run's files first), ``amlab listops sweep`` (it spreads
its runs over its own workers or Ray) and every other command that does not train or
retrieve over ranks (the list ONE_PROCESS, checked against the commands the CLI
registers). Each rank prints the one refusal line and exits with status 2; launched on 2
ranks, nothing is written or deleted."""

from __future__ import annotations

import json

import pytest
from conftest import error_line
from ranks import launch_apart
from typer.testing import CliRunner

from amlab.cli import app
from amlab.cli.repro import PAPERS
from amlab.errors import AmlabError
from amlab.tasks.et_images import eval_et
from amlab.tasks.gallery import QUICK_SPEC, generate
from amlab.tasks.store import write_image_store

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


#: the commands registered in the CLI that spread their work over torchrun's ranks (each
#: rank trains or holds its shard of the memories; rank 0 writes and shows: the tests in
#: test_torchrun_commands.py); every other command runs in one process and refuses
DISTRIBUTED = {
    "retrieve",
    "train et",
    "train diffusion",
    "train et-graph",
    "listops train",
    "fairness train",  # the transformer (--model bow is refused: ONE_PROCESS)
    "nn mil",
    "nn prototypes",
}

#: (the command as the refusal names it, arguments), each with every --out or input under
#: the test's directory OUT, which the refusal leaves empty
ONE_PROCESS = [
    ("amlab eval et", ["eval", "et", "--model", "OUT/run", "--out", "OUT/eval"]),
    ("amlab bench", ["bench", "--quick", "--out", "OUT/bench"]),
    ("amlab store write", ["store", "write", "--memories", "4", "--out", "OUT/store"]),
    ("amlab gallery generate", ["gallery", "generate", "--quick", "--out", "OUT/gallery"]),
    ("amlab gallery query", ["gallery", "query", "SELECT 1", "--metadata", "OUT/gallery"]),
    ("amlab gallery stats", ["gallery", "stats", "--metadata", "OUT/gallery"]),
    ("amlab gallery audit", ["gallery", "audit", "--gallery", "OUT/gallery", "--out", "OUT/a"]),
    (
        "amlab gallery explorer",
        ["gallery", "explorer", "--gallery", "OUT/gallery", "--out", "OUT/view"],
    ),
    ("amlab fairness data", ["fairness", "data", "--size", "50", "--out", "OUT/data"]),
    (
        "amlab fairness train --model bow",
        ["fairness", "train", "--model", "bow", "--size", "50", "--out", "OUT/model"],
    ),
    ("amlab fairness audit", ["fairness", "audit", "--scores", "OUT/s.csv", "--out", "OUT/a"]),
    ("amlab export", ["export", "--out", "OUT/data", "--vectors", "OUT/vectors.json"]),
    ("amlab explain", ["explain", "--no-browser", "--port", "0"]),
]


def command_names(group, prefix: str = "") -> set[str]:
    """Every command under the click ``group``, as typed after ``amlab``."""
    names = set()
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            names |= command_names(command, f"{prefix}{name} ")
        else:
            names.add(prefix + name)
    return names


def test_every_command_is_spread_over_ranks_or_refused():
    """A command added later lands in one of the two lists (and so in a test), not in
    neither: the repro commands and listops sweep are the tests above."""
    import typer

    refused = {work.removeprefix("amlab ").split(" --")[0] for work, _ in ONE_PROCESS}
    refused |= {f"repro {paper}" for paper in PAPERS} | {"listops sweep"}
    assert command_names(typer.main.get_command(app)) == DISTRIBUTED | refused


@pytest.mark.parametrize(("work", "args"), ONE_PROCESS, ids=[w for w, _ in ONE_PROCESS])
def test_a_one_process_command_refuses_rank_0_of_several_and_writes_nothing(
    tmp_path, monkeypatch, work, args
):
    """Rank 0, the rank that writes in a distributed command, refuses too, before it makes
    any --out (none of the inputs exist: a command that read them would fail otherwise);
    amlab explain refuses before it serves, gallery generate before it reads its text model
    (either would fail the test)."""
    import amlab.explain
    import amlab.tasks.prompts

    def serve(*args, **kwargs):
        raise AmlabError("served")

    def load_text_model(*args, **kwargs):  # the refusal comes before seconds of loading
        raise AmlabError("loaded")

    monkeypatch.setattr(amlab.explain, "serve", serve)
    monkeypatch.setattr(amlab.tasks.prompts, "load_text_model", load_text_model)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    out.mkdir()
    args = [arg.replace("OUT", str(out)) for arg in args]
    line = error_line(CliRunner().invoke(app, args))
    assert f"error: {work} runs in one process (" in line
    assert line.endswith("torchrun started this one as rank 0 of 2: launch it without torchrun.")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "job",
    [
        lambda out: eval_et(out / "run", out / "eval"),
        lambda out: write_image_store(out / "store", memories=4),
        lambda out: generate(QUICK_SPEC, out / "gallery", None),  # refused before the model
    ],
    ids=["eval_et", "write_image_store", "gallery.generate"],
)
def test_a_library_caller_of_a_one_process_job_is_refused_too(tmp_path, monkeypatch, job):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AmlabError, match="runs in one process .* as rank 1 of 2: launch it"):
        job(tmp_path)
    assert list(tmp_path.iterdir()) == []
