"""The amlab command, driven as a user would drive it."""

import json

import pytest
from typer.testing import CliRunner

from amlab.cli import app

runner = CliRunner()


def test_help_lists_every_command_with_a_description():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "retrieve" in result.output
    assert "Store images, corrupt them" in result.output


def test_retrieve_json_reports_metrics_that_match_the_run():
    result = runner.invoke(app, ["retrieve", "--memories", "40", "--json", "--seed", "3"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["accuracy"] >= 0.6  # lower half hidden and clamped: most digits come back
    assert metrics["mean_squared_error"] < metrics["corrupted_mean_squared_error"]
    assert metrics["config"]["memories"] == 40 and metrics["config"]["method"] == "attention"
    # the same seed gives the same numbers
    again = json.loads(
        runner.invoke(app, ["retrieve", "--memories", "40", "--json", "--seed", "3"]).stdout
    )
    assert again == metrics


def test_retrieve_writes_figure_and_metrics(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "retrieve",
            "--memories",
            "20",
            "--energy",
            "lsr",
            "--corruption",
            "mask",
            "--level",
            "0.3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    png = (out / "retrieval.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["energy"] == "lsr" and metrics["config"]["method"] == "fixed_point"
    assert "accuracy" in result.output


def test_uncorrupted_queries_are_all_retrieved_by_lsr_exactly():
    # level 0: nothing hidden; every stored digit is a fixed point when no other lies within r
    result = runner.invoke(
        app,
        [
            "retrieve",
            "--memories",
            "50",
            "--energy",
            "lsr",
            "--beta",
            "4",
            "--corruption",
            "mask",
            "--level",
            "0",
            "--json",
        ],
    )
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] == 1.0 and metrics["mean_squared_error"] == 0.0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--energy", "foo"], "unknown energy"),
        (["--beta", "-1"], "beta"),
        (["--corruption", "blur"], "blur"),
        (["--memories", "0"], "memories"),
        (["--memories", "5000"], "1797"),
        (["--data", "mnist"], "--data-dir"),
        (["--data", "mnist", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir"),
        (["--method", "fixed_point"], "fixed_point"),
        (["--level", "1.5", "--corruption", "mask"], "fraction"),
    ],
)
def test_bad_options_give_one_clear_error(args, message):
    result = runner.invoke(app, ["retrieve", *args])
    assert result.exit_code == 2, result.output
    assert "error" in result.output and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "command", [["retrieve", "--steps", "2"], ["bench", "--quick", "--workload", "drdam"]]
)
def test_an_out_the_system_refuses_is_one_clear_error(tmp_path, monkeypatch, command):
    """--out under a regular file cannot be made: one line naming it, exit status 1, and the
    bench fails before it measures anything."""
    import amlab.tasks.bench

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    ran = []
    monkeypatch.setattr(amlab.tasks.bench, "run_bench", lambda **kw: ran.append(kw))
    result = runner.invoke(app, [*command, "--out", str(blocker / "out")])
    assert result.exit_code == 1, result.output
    assert "error" in result.output and str(blocker) in result.output
    assert "Traceback" not in result.output and not ran


@pytest.mark.parametrize("paper", ["lsr", "drdam", "diffusion"])
def test_repro_with_a_missing_data_dir_fails_before_any_work(tmp_path, paper):
    out = tmp_path / paper
    result = runner.invoke(
        app, ["repro", paper, "--quick", "--out", str(out), "--data-dir", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 2 and "nowhere" in result.output
    assert not out.exists()  # nothing was run, nothing written


def test_diffusion_train_writes_model_samples_and_resumes(tmp_path):
    out = tmp_path / "diffusion"
    args = ["train", "diffusion", "--images", "20", "--steps", "4", "--channels", "8"]
    args += ["--blocks", "1", "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["resumed_from"] is None and metrics["steps"] == 4
    # its quality figure: 20 guided samples per class, the share nearest to their class
    assert metrics["prompted_samples"] % 20 == 0 and 0 <= metrics["prompted_accuracy"] <= 1
    assert (out / "samples.png").stat().st_size > 1000
    assert (out / "model" / "config.json").is_file()
    again = runner.invoke(app, args)  # the checkpoint exists: refuse to overwrite it
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["resumed_from"] == 4
