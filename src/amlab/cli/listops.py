"""``amlab listops``: train one ListOps model, or sweep sizes and task mixes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from amlab.cli.common import (
    JsonOpt,
    ResumeOpt,
    SeedOpt,
    choice,
    errors,
    integer,
    list_option,
    out_option,
    refuse_unused,
    result_table,
    show_result,
    shows_results,
    split_list,
    stage_progress,
    training_progress,
)
from amlab.data.listops import OP_TOKENS
from amlab.errors import AmlabError
from amlab.tasks.listops_sweep import MIXES

listops_app = typer.Typer(
    help="ListOps: how few parameters a small transformer needs, per task mix and curriculum.",
    no_args_is_help=True,
)

#: the operations a task mix is made of
OPERATIONS = tuple(OP_TOKENS)


def task_mix(text: str) -> tuple[str, ...]:
    """One mix in a list of mixes: its operations joined by '+', e.g. max+med."""
    return tuple(split_list(text, choice(OPERATIONS), sep="+"))


def ops_option(help: str) -> Any:
    return list_option(
        choice(OPERATIONS),
        "max,med,sum",
        f"{help}: operations from {', '.join(OPERATIONS)}",
        "OP,...",
    )


MaxDepthOpt = Annotated[int, typer.Option(min=1, help="Most nested operators in an expression.")]
MaxArgsOpt = Annotated[
    int, typer.Option(min=2, help="Most arguments of one operator (at least 2).")
]
LeafProbOpt = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Probability that a child is a value.")
]
ModulusOpt = Annotated[
    int, typer.Option(min=2, help="Values are 0..modulus-1; SUM and PROD mod it.")
]
StepsOpt = Annotated[int, typer.Option(min=1, help="Most optimizer steps per run.")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Expressions per step.")]
TrainSizeOpt = Annotated[int, typer.Option(min=1, help="Distinct training expressions per mix.")]
TestSizeOpt = Annotated[int, typer.Option(min=1, help="Held-out test expressions per mix.")]
LayersOpt = Annotated[int, typer.Option(min=1, help="Transformer blocks.")]
MlpRatioOpt = Annotated[float, typer.Option(min=0.0, help="MLP hidden size / dim.")]


def _listops_spec(**fields):
    from amlab.tasks.listops import RunSpec

    data = {k: fields.pop(k) for k in ("max_depth", "max_args", "leaf_prob", "modulus")}
    return RunSpec(data=data, **fields)


@listops_app.command("train")
def listops_train(
    ops: Annotated[Any, ops_option("The task mix")] = "sum",
    dim: Annotated[int, typer.Option(min=1, help="Embedding size.")] = 32,
    layers: LayersOpt = 2,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads (must divide dim).")] = 2,
    mlp_ratio: MlpRatioOpt = 2.0,
    share_weights: Annotated[
        bool, typer.Option("--share-weights", help="Use one block for every layer.")
    ] = False,
    causal: Annotated[
        bool,
        typer.Option(
            "--causal",
            help="A next-token model, trained on each expression followed by '=' and its "
            "value; scored on the value it predicts after '='.",
        ),
    ] = False,
    pretrain_ops: Annotated[
        Any, ops_option("Train on this mix first (the curriculum; with --pretrain-steps)")
    ] = None,
    pretrain_steps: Annotated[
        int | None, typer.Option(min=1, help="Steps of the first phase (with --pretrain-ops).")
    ] = None,
    steps: StepsOpt = 3000,
    lr: LrOpt = 3e-3,
    batch_size: BatchOpt = 128,
    eval_every: Annotated[
        int, typer.Option(min=1, help="Steps between validation checks and checkpoints.")
    ] = 100,
    max_depth: MaxDepthOpt = 2,
    max_args: MaxArgsOpt = 3,
    leaf_prob: LeafProbOpt = 0.75,
    modulus: ModulusOpt = 10,
    train_size: TrainSizeOpt = 20000,
    test_size: TestSizeOpt = 2000,
    resume: ResumeOpt = False,
    seed: SeedOpt = 0,
    out: Annotated[Path, out_option("checkpoints, model/ and metrics.json", resumable=True)] = Path(
        "runs/listops"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Train one model on one task mix; report test accuracy per root operation."""
    from amlab.tasks.listops import train_run

    with errors():
        if (pretrain_ops is None) != (pretrain_steps is None):
            given, missing = (
                ("--pretrain-ops", "--pretrain-steps N")
                if pretrain_steps is None
                else ("--pretrain-steps", "--pretrain-ops OPS")
            )
            raise AmlabError(f"{given} needs {missing}: the curriculum's first phase is both.")
        spec = _listops_spec(
            ops=ops,
            dim=dim,
            layers=layers,
            heads=heads,
            mlp_ratio=mlp_ratio,
            share_weights=share_weights,
            causal=causal,
            pretrain_ops=pretrain_ops,
            pretrain_steps=pretrain_steps or 0,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            eval_every=eval_every,
            max_depth=max_depth,
            max_args=max_args,
            leaf_prob=leaf_prob,
            modulus=modulus,
            train_size=train_size,
            test_size=test_size,
            seed=seed,
        )
        shows = shows_results()  # under torchrun every rank trains; rank 0 shows and writes
        with training_progress(f"listops {spec.key()}", shown=shows) as on_step:
            record = train_run(spec, out=out, resume=resume, on_step=on_step)
    if not shows:
        return
    counts = record["test_count"]
    rows = [(op, f"{acc:.4f}", str(counts[op])) for op, acc in record["test_per_op"].items()]
    rows.append(("all", f"{record['test_accuracy']:.4f}", str(sum(counts.values()))))
    table = result_table(
        f"listops {'+'.join(spec.ops)}: {record['parameters']} parameters",
        ("root operation", "test accuracy", "expressions"),
        rows,
    )
    show_result(record, as_json, table, (out / "model", out / "metrics.json"))


@listops_app.command("sweep")
def listops_sweep(
    mixes: Annotated[
        Any,
        list_option(
            task_mix,
            "sum,max+med",
            f"The task mixes (default: the study's six), each its operations "
            f"({', '.join(OPERATIONS)}) joined by +",
            "MIX,...",
        ),
    ] = ",".join(mix.replace(",", "+") for mix in MIXES),
    dims: Annotated[
        Any, list_option(integer, "8,16,32", "The size ladder: embedding sizes", "N,...")
    ] = "8,16,24,32",
    layers: LayersOpt = 2,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads (must divide each dim).")] = 2,
    mlp_ratio: MlpRatioOpt = 2.0,
    seeds: Annotated[Any, list_option(integer, "0,1", "Model seeds", "N,...")] = "0,1",
    curriculum_steps: Annotated[
        int,
        typer.Option(
            min=0, help="Also run MAX+MED pretraining for this many steps, then SUM (0: no)."
        ),
    ] = 0,
    target: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Test accuracy that counts as learned.")
    ] = 0.9,
    stop_at: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Stop a run once its validation accuracy reaches this."
        ),
    ] = 0.97,
    patience: Annotated[
        int, typer.Option(min=1, help="Stop a run after this many checks without improvement.")
    ] = 20,
    steps: StepsOpt = 2500,
    lr: LrOpt = 3e-3,
    batch_size: BatchOpt = 128,
    eval_every: Annotated[int, typer.Option(min=1, help="Steps between validation checks.")] = 100,
    max_depth: MaxDepthOpt = 2,
    max_args: MaxArgsOpt = 3,
    leaf_prob: LeafProbOpt = 0.75,
    modulus: ModulusOpt = 10,
    train_size: TrainSizeOpt = 20000,
    test_size: TestSizeOpt = 2000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Local worker processes (default 2; not with --ray).")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on the Ray cluster at this address ('auto': the running one, "
            "'local': start one here).",
        ),
    ] = None,
    save_models: Annotated[
        bool, typer.Option("--save-models", help="Keep each trained model in OUT/models/.")
    ] = False,
    out: Annotated[
        Path,
        out_option(
            "runs/<run>.json for each finished run and summary.json (a finished run is "
            "skipped when the sweep is run again)"
        ),
    ] = Path("runs/listops-sweep"),
    as_json: JsonOpt = False,
) -> None:
    """Train every (mix, size, seed); report the smallest size that learns each mix.

    Finished runs are recorded in --out and skipped when the sweep is run again.
    """
    from amlab.tasks.listops_sweep import summarize, sweep_grid

    with errors():
        if ray is not None:
            refuse_unused({"--workers": workers}, "on --ray the cluster runs the jobs")
        base = _listops_spec(
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            eval_every=eval_every,
            stop_at=stop_at,
            patience=patience,
            max_depth=max_depth,
            max_args=max_args,
            leaf_prob=leaf_prob,
            modulus=modulus,
            train_size=train_size,
            test_size=test_size,
            layers=layers,
            heads=heads,
            mlp_ratio=mlp_ratio,
        )
        specs = sweep_grid(base, mixes, dims, seeds, curriculum_steps)
        with stage_progress() as progress:
            summary = summarize(
                specs,
                out,
                target,
                workers=2 if workers is None else workers,
                ray_address=ray,
                save_models=save_models,
                on_done=lambda r, n, total: progress(f"{n}/{total} runs done", n / total),
            )
    table = result_table(
        f"smallest model that learns each mix (test accuracy >= {target:g})",
        ("mix", "threshold (parameters)", "seeds learned per size"),
        [
            (
                name,
                str(row["threshold"] or "not within the ladder"),
                ", ".join(f"{s['parameters']}: {s['learned']}/{s['seeds']}" for s in row["sizes"]),
            )
            for name, row in summary["thresholds"].items()
        ],
    )
    show_result(summary, as_json, table, (out / "summary.json",))
