"""``amlab train`` and ``amlab eval``: models trained through the shared loop, and their
evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from amlab.cli.common import (
    DataFilesOpt,
    ImageDataOpt,
    JsonOpt,
    OutOpt,
    ResumeOpt,
    RunDirOpt,
    SeedOpt,
    console,
    errors,
    path_str,
    stage_progress,
    training_progress,
)

train_app = typer.Typer(
    help="Train a model through the shared loop (progress bar, checkpoints, --resume).",
    no_args_is_help=True,
)
eval_app = typer.Typer(help="Evaluate a trained model against baselines.", no_args_is_help=True)


@train_app.command("et")
def train_et(
    out: RunDirOpt = Path("runs/et"),
    data: ImageDataOpt = "digits",
    data_dir: DataFilesOpt = None,
    patch: Annotated[int, typer.Option(help="Side of the square patches.")] = 2,
    dim: Annotated[int, typer.Option(help="Token dimension D.")] = 64,
    heads: Annotated[int, typer.Option(help="Attention heads H.")] = 4,
    head_dim: Annotated[int, typer.Option(help="Head dimension Y.")] = 16,
    et_steps: Annotated[int, typer.Option(help="Steps T of the block's dynamics.")] = 12,
    step_size: Annotated[float, typer.Option(help="Step size of the dynamics.")] = 0.1,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 3000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    clip: Annotated[float, typer.Option(help="Gradient-norm clip.")] = 1.0,
    scored_fraction: Annotated[
        float, typer.Option(help="Share of patches scored per image.")
    ] = 0.5,
    masked_share: Annotated[
        float, typer.Option(help="Share of the scored patches hidden behind MASK.")
    ] = 0.9,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 250,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
) -> None:
    """Masked image completion with the Energy Transformer (writes OUT/model/)."""
    from amlab.tasks.et_images import ETImageConfig
    from amlab.tasks.et_images import train_et as run

    with errors():
        config = ETImageConfig(
            data=data,
            data_dir=path_str(data_dir),
            patch=patch,
            dim=dim,
            heads=heads,
            head_dim=head_dim,
            et_steps=et_steps,
            step_size=step_size,
            scored_fraction=scored_fraction,
            masked_share=masked_share,
            batch_size=batch_size,
            train_steps=steps,
            lr=lr,
            warmup=warmup,
            weight_decay=weight_decay,
            clip=clip,
            checkpoint_every=checkpoint_every,
            seed=seed,
        )
        with training_progress("training ET") as on_step:
            summary = run(config, out, resume=resume, on_step=on_step)
    console.print(
        f"trained {summary['parameters']} parameters; final loss {summary['final_loss']:.4g}; "
        f"model in {out / 'model'}. Next: amlab eval et --model {out}"
    )


@eval_app.command("et")
def eval_et(
    model: Annotated[Path, typer.Option("--model", help="Run directory of amlab train et.")] = (
        Path("runs/et")
    ),
    out: OutOpt = None,
    data_dir: DataFilesOpt = None,
    images: Annotated[int, typer.Option(help="Test images (0: all).")] = 0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Masked-patch MSE of a trained ET beside mean fill and a DenseAM, same masks."""
    from amlab.tasks.et_images import eval_et as run

    with errors():
        metrics = run(
            model,
            out,
            data_dir=path_str(data_dir),
            images=images,
            seed=seed,
        )
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    table = Table(title=f"masked-patch MSE, {metrics['test_images']} held-out {metrics['data']}")
    table.add_column("method")
    table.add_column("MSE", justify="right")
    table.add_column("vs mean fill", justify="right")
    for name, value in metrics["masked_mse"].items():
        table.add_row(name, f"{value:.5f}", f"{value / metrics['masked_mse']['mean_fill']:.2f}x")
    Console().print(table)
    if out is not None:
        console.print(f"wrote {out / 'metrics.json'}, completions.png and energy.png")


@train_app.command("diffusion")
def diffusion_train(
    data: ImageDataOpt = "digits",
    data_dir: DataFilesOpt = None,
    images: Annotated[int, typer.Option(help="Number of training images.")] = 1000,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    channels: Annotated[int, typer.Option(help="Channels of the conv net.")] = 32,
    blocks: Annotated[int, typer.Option(help="Residual blocks of the conv net.")] = 2,
    energy: Annotated[
        bool, typer.Option("--energy/--no-energy", help="Energy-parameterised (D = x - grad E).")
    ] = False,
    guidance: Annotated[float, typer.Option(help="Guidance scale of the samples.")] = 2.0,
    resume: ResumeOpt = False,
    seed: SeedOpt = 0,
    out: RunDirOpt = Path("runs/diffusion"),
    as_json: JsonOpt = False,
) -> None:
    """Train a class-conditional diffusion model (checkpoints, resume) and sample each class."""
    from amlab.tasks.diffusion import train_image_model

    with errors(), training_progress("training the denoiser") as on_step:
        metrics = train_image_model(
            out,
            data=data,
            data_dir=path_str(data_dir),
            images=images,
            steps=steps,
            batch_size=batch_size,
            channels=channels,
            blocks=blocks,
            energy=energy,
            guidance=guidance,
            seed=seed,
            resume=resume,
            on_step=on_step,
        )
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    console.print(
        f"wrote {metrics['model']}, {metrics['samples']} and {out / 'metrics.json'} "
        f"(final loss {metrics['final_loss']:.4g})"
    )


@train_app.command("et-graph")
def train_et_graph(
    out: RunDirOpt = Path("runs/et-graph"),
    nodes: Annotated[int, typer.Option(help="Nodes of the generated graph.")] = 600,
    structural: Annotated[int, typer.Option(help="Structural anomalies (in cliques).")] = 30,
    contextual: Annotated[int, typer.Option(help="Contextual anomalies.")] = 30,
    edges: Annotated[
        Path | None,
        typer.Option(help="Edge list file (u v per line) instead of a generated graph."),
    ] = None,
    features: Annotated[Path | None, typer.Option(help="Node feature file (one row per node).")] = (
        None
    ),
    labels: Annotated[Path | None, typer.Option(help="Node label file (0/1 per node).")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps per detector.")] = 300,
    et_steps: Annotated[int, typer.Option(help="Steps T of the block's dynamics.")] = 6,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Graph anomaly detection: Energy Transformer vs GCN vs feature-only MLP."""
    from amlab.tasks.et_graph import DETECTORS, GraphRunConfig, run_graph_anomaly

    with errors():
        config = GraphRunConfig(
            nodes=nodes,
            structural=structural,
            contextual=contextual,
            train_steps=steps,
            et_steps=et_steps,
            lr=lr,
            seed=seed,
            edges=path_str(edges),
            features=path_str(features),
            labels=path_str(labels),
        )
        with stage_progress() as progress:

            def show(name: str, done: int, total: int) -> None:  # the detectors train in turn
                finished = DETECTORS.index(name) + done / total
                progress(f"training {name}", finished / len(DETECTORS))

            metrics = run_graph_anomaly(config, out, resume=resume, progress=show)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    table = Table(
        title=f"anomalous nodes ({metrics['graph']['anomalies']} of "
        f"{metrics['graph']['nodes']}), test split"
    )
    for column in ("detector", "AUC", "macro-F1", "parameters"):
        table.add_column(column, justify="left" if column == "detector" else "right")
    for name, r in metrics["detectors"].items():
        table.add_row(name, f"{r['auc']:.3f}", f"{r['macro_f1']:.3f}", str(r["parameters"]))
    Console().print(table)
    console.print(f"wrote {out / 'metrics.json'} and {out / 'roc.png'}")
