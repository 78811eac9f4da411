"""``amlab listops``: train one ListOps model, or sweep sizes and task mixes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from amlab.cli.common import (
    JsonOpt,
    ResumeOpt,
    RunDirOpt,
    SeedOpt,
    console,
    errors,
    int_list,
    stage_progress,
    training_progress,
)

listops_app = typer.Typer(
    help="ListOps: how few parameters a small transformer needs, per task mix and curriculum.",
    no_args_is_help=True,
)

MaxDepthOpt = Annotated[int, typer.Option(help="Most nested operators in an expression.")]
MaxArgsOpt = Annotated[int, typer.Option(help="Most arguments of one operator.")]
LeafProbOpt = Annotated[float, typer.Option(help="Probability that a child is a value.")]
ModulusOpt = Annotated[int, typer.Option(help="Values are 0..modulus-1; SUM and PROD mod it.")]
StepsOpt = Annotated[int, typer.Option(help="Most optimizer steps per run.")]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")]
BatchOpt = Annotated[int, typer.Option(help="Expressions per step.")]
TrainSizeOpt = Annotated[int, typer.Option(help="Distinct training expressions per mix.")]
TestSizeOpt = Annotated[int, typer.Option(help="Held-out test expressions per mix.")]


def _listops_spec(**fields):
    from amlab.tasks.listops import RunSpec

    data = {k: fields.pop(k) for k in ("max_depth", "max_args", "leaf_prob", "modulus")}
    return RunSpec(data=data, **fields)


@listops_app.command("train")
def listops_train(
    ops: Annotated[str, typer.Option(help="The task mix, e.g. sum or max,med,sum.")] = "sum",
    dim: Annotated[int, typer.Option(help="Embedding size.")] = 32,
    layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads (must divide dim).")] = 2,
    mlp_ratio: Annotated[float, typer.Option(help="MLP hidden size / dim.")] = 2.0,
    share_weights: Annotated[
        bool, typer.Option("--share-weights", help="Use one block for every layer.")
    ] = False,
    pretrain_ops: Annotated[
        str | None, typer.Option(help="Train on this mix first (the curriculum).")
    ] = None,
    pretrain_steps: Annotated[int, typer.Option(help="Steps of the first phase.")] = 0,
    steps: StepsOpt = 3000,
    lr: LrOpt = 3e-3,
    batch_size: BatchOpt = 128,
    eval_every: Annotated[
        int, typer.Option(help="Steps between validation checks and checkpoints.")
    ] = 100,
    max_depth: MaxDepthOpt = 2,
    max_args: MaxArgsOpt = 3,
    leaf_prob: LeafProbOpt = 0.75,
    modulus: ModulusOpt = 10,
    train_size: TrainSizeOpt = 20000,
    test_size: TestSizeOpt = 2000,
    resume: ResumeOpt = False,
    seed: SeedOpt = 0,
    out: RunDirOpt = Path("runs/listops"),
    as_json: JsonOpt = False,
) -> None:
    """Train one model on one task mix; report test accuracy per root operation."""
    from amlab.io import write_metrics
    from amlab.tasks.listops import train_run

    with errors():
        spec = _listops_spec(
            ops=ops,
            dim=dim,
            layers=layers,
            heads=heads,
            mlp_ratio=mlp_ratio,
            share_weights=share_weights,
            pretrain_ops=pretrain_ops,
            pretrain_steps=pretrain_steps,
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
        with training_progress(f"listops {spec.key()}") as on_step:
            record = train_run(spec, out=out, resume=resume, on_step=on_step)
        text = write_metrics(out / "metrics.json", record)
    if as_json:
        typer.echo(text)
        return
    table = Table(title=f"listops {'+'.join(spec.ops)}: {record['parameters']} parameters")
    table.add_column("root operation")
    table.add_column("test accuracy", justify="right")
    table.add_column("expressions", justify="right")
    for op, acc in record["test_per_op"].items():
        table.add_row(op, f"{acc:.4f}", str(record["test_count"][op]))
    table.add_row("all", f"{record['test_accuracy']:.4f}", str(sum(record["test_count"].values())))
    Console().print(table)
    console.print(f"wrote {out / 'model'} and {out / 'metrics.json'}")


@listops_app.command("sweep")
def listops_sweep(
    mix: Annotated[
        list[str] | None,
        typer.Option(help="A task mix (repeat the option); default: the study's six."),
    ] = None,
    dims: Annotated[str, typer.Option(help="The size ladder: embedding sizes.")] = "8,16,24,32",
    layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads (must divide each dim).")] = 2,
    mlp_ratio: Annotated[float, typer.Option(help="MLP hidden size / dim.")] = 2.0,
    seeds: Annotated[str, typer.Option(help="Model seeds, comma-separated.")] = "0,1",
    curriculum_steps: Annotated[
        int,
        typer.Option(help="Also run MAX+MED pretraining for this many steps, then SUM (0: no)."),
    ] = 0,
    target: Annotated[float, typer.Option(help="Test accuracy that counts as learned.")] = 0.9,
    stop_at: Annotated[
        float, typer.Option(help="Stop a run once its validation accuracy reaches this.")
    ] = 0.97,
    patience: Annotated[
        int, typer.Option(help="Stop a run after this many checks without improvement.")
    ] = 20,
    steps: StepsOpt = 2500,
    lr: LrOpt = 3e-3,
    batch_size: BatchOpt = 128,
    eval_every: Annotated[int, typer.Option(help="Steps between validation checks.")] = 100,
    max_depth: MaxDepthOpt = 2,
    max_args: MaxArgsOpt = 3,
    leaf_prob: LeafProbOpt = 0.75,
    modulus: ModulusOpt = 10,
    train_size: TrainSizeOpt = 20000,
    test_size: TestSizeOpt = 2000,
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 2,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Run on this Ray cluster address ('local': start one)."),
    ] = None,
    save_models: Annotated[
        bool, typer.Option("--save-models", help="Keep each trained model in --out/models/.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Sweep directory (resumable).")] = Path(
        "runs/listops-sweep"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Train every (mix, size, seed); report the smallest size that learns each mix.

    Finished runs are recorded in --out and skipped when the sweep is run again.
    """
    from amlab.tasks.listops_sweep import MIXES, summarize, sweep_grid

    with errors():
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
        specs = sweep_grid(
            base,
            mix or list(MIXES),
            int_list(dims, "dims"),
            int_list(seeds, "seeds"),
            curriculum_steps,
        )
        with stage_progress() as progress:
            summary = summarize(
                specs,
                out,
                target,
                workers=workers,
                ray_address=ray,
                save_models=save_models,
                on_done=lambda r, n, total: progress(f"{n}/{total} runs done", n / total),
            )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"smallest model that learns each mix (test accuracy >= {target:g})")
    for column in ("mix", "threshold (parameters)", "seeds learned per size"):
        table.add_column(column)
    for name, row in summary["thresholds"].items():
        sizes = ", ".join(f"{s['parameters']}: {s['learned']}/{s['seeds']}" for s in row["sizes"])
        table.add_row(name, str(row["threshold"] or "not within the ladder"), sizes)
    Console().print(table)
    console.print(f"wrote {out / 'summary.json'}")
