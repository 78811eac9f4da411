"""The amlab command, driven as a user would drive it."""

import importlib.metadata
import json

import pytest
import torch
from conftest import error_line, refused_by_parser, unboxed
from typer.testing import CliRunner

from amlab.cli import app
from amlab.data.corrupt import CORRUPTIONS
from amlab.data.images import DATASETS
from amlab.models.dense_am import ENERGIES
from amlab.tasks.bench import CLOCKS, DEVICES, WORKLOADS
from amlab.tasks.retrieval import METHODS

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
        (["--beta", "-1"], "beta"),
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
    "command", [["retrieve", "--steps", "2"], ["bench", "--quick", "--workloads", "drdam"]]
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


@pytest.mark.parametrize("paper", ["lsr", "drdam", "diffusion", "memorisation"])
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


# -- the conventions every command follows (amlab.cli.common) --------------------------------
def help_text(*command):
    """``amlab COMMAND --help`` on a wide terminal, its box and line breaks undone."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return unboxed(result.output)


def test_version_is_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"amlab {importlib.metadata.version('amlab')}\n"


#: every command that writes files
WRITERS = [
    ["retrieve"],
    ["train", "et"],
    ["train", "et-graph"],
    ["train", "diffusion"],
    ["eval", "et"],
    ["repro", "lsr"],
    ["repro", "drdam"],
    ["repro", "listops"],
    ["repro", "diffusion"],
    ["repro", "fairness"],
    ["repro", "memorisation"],
    ["gallery", "generate"],
    ["listops", "train"],
    ["listops", "sweep"],
    ["fairness", "data"],
    ["fairness", "train"],
    ["fairness", "audit"],
    ["bench"],
    ["export"],
]


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_every_command_that_writes_files_takes_out_json_and_seed(command):
    text = help_text(*command)
    # --out is the directory the command writes into, and its help says what goes there
    assert "--out <path> Directory to write " in text or "--out PATH Directory to write " in text
    assert " --json " in text
    # the sweep's seeds are a list (one run per model seed), and so are the gallery's (one
    # image per seed and setting)
    lists = (["listops", "sweep"], ["gallery", "generate"])
    assert " --seed " in text or (command in lists and " --seeds " in text)


@pytest.mark.parametrize(
    "command,option,values",
    [
        (["retrieve"], "--data", DATASETS),
        (["retrieve"], "--corruption", CORRUPTIONS),
        (["retrieve"], "--energy", ENERGIES),
        (["retrieve"], "--method", METHODS),
        (["train", "et"], "--data", DATASETS),
        (["train", "diffusion"], "--data", DATASETS),
        (["bench"], "--device", DEVICES),
        (["bench"], "--clock", CLOCKS),
    ],
)
def test_choice_options_list_their_values_and_the_parser_refuses_others(
    tmp_path, command, option, values
):
    assert "|".join(values) in help_text(*command)
    out = tmp_path / "out"
    result = runner.invoke(app, [*command, option, "nope", "--out", str(out)])
    message = refused_by_parser(result, option)
    assert all(f"'{value}'" in message for value in values), message
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["nosuch"], "No such command 'nosuch'. (see amlab --help)"),
        (["--bogus"], "No such option: --bogus (see amlab --help)"),
        (["train", "et", "--bogus", "3"], "--bogus"),
        (["train", "nosuch"], "(see amlab train --help)"),
        (["repro", "lsr", "extra"], "unexpected extra argument"),
        (["bench", "--device", "tpu"], "'tpu' is not one of 'cpu', 'cuda'"),
    ],
)
def test_every_command_line_the_parser_refuses_is_one_error_line(args, message):
    assert message in error_line(runner.invoke(app, args, prog_name="amlab"))


def test_no_arguments_still_show_the_help():
    for command in ([], ["train"], ["listops"]):
        result = runner.invoke(app, command, prog_name="amlab")
        assert "Usage: amlab" in result.output and "error:" not in result.output


def test_bench_device_without_cuda_is_one_error_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = error_line(runner.invoke(app, ["bench", "--quick", "--device", "cuda"]))
    assert "--device cuda" in line and "--device cpu" in line


# lists: comma-separated, every element checked by the parser
@pytest.mark.parametrize(
    "args,option,message",
    [
        (["listops", "sweep", "--dims", "8,x"], "--dims", "'x' is not an integer"),
        (["listops", "sweep", "--dims", "8,8"], "--dims", "'8' is listed twice"),
        (["listops", "sweep", "--seeds", "0,,1"], "--seeds", "'0,,1' has an empty element"),
        (["listops", "sweep", "--mixes", "sum,max+pow"], "--mixes", "'pow' is not one of max"),
        (["listops", "sweep", "--mixes", "max+max"], "--mixes", "'max' is listed twice"),
        (["listops", "train", "--ops", "max,pow"], "--ops", "'pow' is not one of max, min"),
        (["bench", "--workloads", "lse_64,nope"], "--workloads", "'nope' is not one of lse_784"),
    ],
)
def test_a_bad_list_element_is_refused_by_the_parser_and_named(tmp_path, args, option, message):
    out = tmp_path / "out"
    text = refused_by_parser(runner.invoke(app, [*args, "--out", str(out)]), option)
    assert message in text and "comma-separated" in text
    assert not out.exists()


#: the report of an `amlab bench` that ran no workload
EMPTY_BENCH = {
    "device": "cpu",
    "threads": 1,
    "clock": "wall",
    "matmul_gflops": 10.0,
    "load_average_before": None,
    "workloads": [],
}


def test_every_list_option_is_comma_separated(tmp_path, monkeypatch):
    """The README's lists (--dims 8,16,32 --seeds 0,1, --ops max,med,sum) and the others
    reach the jobs as lists; the choice lists name their values in --help."""
    import amlab.tasks.bench
    import amlab.tasks.listops
    import amlab.tasks.listops_sweep

    seen = {}

    def sweep(specs, out, target, **kw):
        seen["sweep"] = {(s.ops, s.dim, s.seed) for s in specs}
        return {"thresholds": {}, "curriculum": [], "records": []}

    monkeypatch.setattr(amlab.tasks.listops_sweep, "summarize", sweep)
    args = ["listops", "sweep", "--mixes", "sum,max+med", "--dims", "8,16,32", "--seeds", "0,1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "sweep"), "--json"])
    assert result.exit_code == 0, result.output
    assert seen["sweep"] == {
        (mix, dim, seed)
        for mix in [("sum",), ("max", "med")]
        for dim in (8, 16, 32)
        for seed in (0, 1)
    }

    def train_run(spec, out, **kw):
        seen["train"] = spec
        out.mkdir()
        ops = {op: 1.0 for op in spec.ops}
        return {"parameters": 1, "test_per_op": ops, "test_count": ops, "test_accuracy": 1.0}

    monkeypatch.setattr(amlab.tasks.listops, "train_run", train_run)
    args = ["listops", "train", "--ops", "max,med,sum", "--pretrain-ops", "max,med"]
    result = runner.invoke(app, [*args, "--pretrain-steps", "5", "--out", str(tmp_path / "lo")])
    assert result.exit_code == 0, result.output
    assert seen["train"].ops == ("max", "med", "sum")
    assert seen["train"].pretrain_ops == ("max", "med") and seen["train"].pretrain_steps == 5

    def run_bench(**kw):
        seen["bench"] = kw["workloads"]
        return EMPTY_BENCH

    monkeypatch.setattr(amlab.tasks.bench, "run_bench", run_bench)
    result = runner.invoke(app, ["bench", "--workloads", "lse_64,drdam", "--json"])
    assert result.exit_code == 0, result.output
    assert seen["bench"] == ("lse_64", "drdam")
    for command, option, values in [
        (["bench"], "--workloads", WORKLOADS),
        (["listops", "train"], "--ops", ("max", "min", "med", "sum", "prod")),
        (["listops", "sweep"], "--mixes", ("max", "min", "med", "sum", "prod")),
    ]:
        text = help_text(*command)
        described = text[text.index(option) : text.index(option) + 250]
        assert all(value in described for value in values), described


def test_results_go_through_one_presentation(tmp_path, monkeypatch):
    """--json: the result and nothing else on stdout, the same as the file written; without
    it a table on stdout and one "wrote ..." line naming the file on stderr."""
    import amlab.tasks.bench

    report = EMPTY_BENCH
    monkeypatch.setattr(amlab.tasks.bench, "run_bench", lambda **kw: report)
    out = tmp_path / "a" / "b"  # made, parents too
    result = runner.invoke(app, ["bench", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == report == json.loads((out / "bench.json").read_text())
    result = runner.invoke(app, ["bench", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "amlab bench on cpu" in result.stdout and "wrote" not in result.stdout
    assert f"wrote {out / 'bench.json'}\n" in result.stderr


# no option goes silently unused: it acts, or it is an error naming it
@pytest.mark.parametrize(
    "args,option",
    [
        (["retrieve", "--data-dir", "DIR"], "--data-dir"),
        (["retrieve", "--level", "0.3"], "--level"),  # block hides a fixed half
        (["retrieve", "--eps", "0.1"], "--eps"),  # lse has no floor
        (["retrieve", "--corruption", "noise", "--clamp"], "--clamp"),  # nothing left intact
        (["train", "et", "--data-dir", "DIR"], "--data-dir"),
        (["train", "diffusion", "--data-dir", "DIR"], "--data-dir"),
        (["eval", "et", "--model", "OUT", "--data-dir", "DIR"], "--data-dir"),
        (["train", "et-graph", "--edges", "e", "--features", "f", "--labels", "l"], "--nodes"),
        (["listops", "train", "--pretrain-steps", "5"], "--pretrain-steps"),
        (["listops", "sweep", "--ray", "local", "--workers", "2"], "--workers"),
        (["export", "--seed", "3"], "--seed"),  # seeds only the test vectors
    ],
)
def test_an_option_that_would_do_nothing_is_an_error(tmp_path, args, option):
    out = tmp_path / "out"
    args = [str(tmp_path) if a in ("DIR", "OUT") else a for a in args]
    if args[:2] == ["train", "et-graph"]:
        args += ["--nodes", "50"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert option in error_line(result)
    assert not out.exists()  # refused before any work


def test_threads_on_cuda_is_an_error(monkeypatch):
    import amlab.tasks.bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # refused before any use
    monkeypatch.setattr(amlab.tasks.bench.torch, "set_num_threads", None)  # never called
    result = runner.invoke(app, ["bench", "--quick", "--threads", "1"])
    assert "--threads would do nothing" in error_line(result)


# errors name the options the user typed, not the library's arguments
@pytest.mark.parametrize(
    "args,named,not_named",
    [
        (["retrieve", "--data", "mnist"], "--data-dir DIR", "data_dir"),
        (["retrieve", "--corruption", "mask", "--level", "1.5"], "--level", "fraction must"),
        (["retrieve", "--step-size", "0"], "--step-size", "step_size"),
        (["retrieve", "--energy", "lsr", "--method", "attention"], "--method fixed_point", "="),
        (["listops", "train", "--pretrain-ops", "max"], "--pretrain-steps", "pretrain_steps"),
    ],
)
def test_errors_name_the_options_typed(args, named, not_named):
    line = error_line(runner.invoke(app, args))
    assert named in line and not_named not in line, line


@pytest.mark.parametrize(
    "args,option",
    [
        (["retrieve", "--memories", "0"], "--memories"),
        (["listops", "train", "--max-args", "1"], "--max-args"),  # not min_args
        (["listops", "train", "--batch-size", "0"], "--batch-size"),  # not batch_size
        (["train", "et", "--head-dim", "0"], "--head-dim"),
        (["explain", "--port", "70000"], "--port"),
    ],
)
def test_out_of_range_numbers_are_refused_by_the_parser(args, option):
    refused_by_parser(runner.invoke(app, args), option)


def test_the_cli_and_the_explainer_start_without_the_heavy_libraries():
    """`amlab` imports every command module at startup, and `amlab explain` the explainer
    package: neither may import pyarrow, duckdb, matplotlib, scikit-learn, scipy, onnx or
    fairlearn until a command needs them (a fresh interpreter, as a user's shell starts)."""
    import subprocess
    import sys

    heavy = ("pyarrow", "duckdb", "matplotlib", "sklearn", "scipy", "onnx", "fairlearn")
    code = (
        "import sys, amlab.cli, amlab.explain; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"imported at startup: {loaded}"
