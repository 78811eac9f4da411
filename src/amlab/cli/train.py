"""``amlab train`` and ``amlab eval``: models trained through the shared loop, and their
evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amlab.cli.common import (
    DataFilesOpt,
    ImageDataOpt,
    JsonOpt,
    ResumeOpt,
    SeedOpt,
    busy,
    console,
    errors,
    image_files,
    out_option,
    path_str,
    refuse_unused,
    result_table,
    show_result,
    shows_results,
    stage_progress,
    training_progress,
)

train_app = typer.Typer(
    help="Train a model through the shared loop (progress bar, checkpoints, --resume).",
    no_args_is_help=True,
)
eval_app = typer.Typer(help="Evaluate a trained model against baselines.", no_args_is_help=True)

StepsOpt = Annotated[int, typer.Option(min=1, help="Optimizer steps.")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Images per step.")]


@train_app.command("et")
def train_et(
    out: Annotated[Path, out_option("checkpoints, model/ and train.json", resumable=True)] = Path(
        "runs/et"
    ),
    data: ImageDataOpt = "digits",
    data_dir: DataFilesOpt = None,
    patch: Annotated[int, typer.Option(min=1, help="Side of the square patches.")] = 2,
    dim: Annotated[int, typer.Option(min=1, help="Token dimension D.")] = 64,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads H.")] = 4,
    head_dim: Annotated[int, typer.Option(min=1, help="Head dimension Y.")] = 16,
    et_steps: Annotated[int, typer.Option(min=1, help="Steps T of the block's dynamics.")] = 12,
    step_size: Annotated[float, typer.Option(help="Step size of the dynamics.")] = 0.1,
    steps: StepsOpt = 3000,
    batch_size: BatchOpt = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup: Annotated[int, typer.Option(min=0, help="Linear warm-up steps.")] = 100,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")] = 0.05,
    clip: Annotated[float, typer.Option(help="Gradient-norm clip.")] = 1.0,
    scored_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of patches scored per image.")
    ] = 0.5,
    masked_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of the scored patches hidden behind MASK."),
    ] = 0.9,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 250,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Masked image completion with the Energy Transformer (writes OUT/model/)."""
    from amlab.tasks.et_images import ETImageConfig
    from amlab.tasks.et_images import train_et as run

    with errors():
        config = ETImageConfig(
            data=data,
            data_dir=image_files(data, data_dir),
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
        shows = shows_results()  # under torchrun every rank trains; rank 0 shows and writes
        with training_progress("training ET", shown=shows) as on_step:
            summary = run(config, out, resume=resume, on_step=on_step)
    if not shows:
        return
    show_result(summary, as_json, wrote=(out / "model", out / "train.json"))
    if not as_json:
        console.print(
            f"trained {summary['parameters']} parameters; final loss "
            f"{summary['final_loss']:.4g}. Next: amlab eval et --model {out}"
        )


@eval_app.command("et")
def eval_et(
    model: Annotated[Path, typer.Option("--model", help="Run directory of amlab train et.")] = (
        Path("runs/et")
    ),
    out: Annotated[
        Path | None,
        out_option("metrics.json, completions.png and energy.png", optional=True),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Directory holding the files of the data the model was trained on "
            "(default: where it was trained from; not for digits)."
        ),
    ] = None,
    images: Annotated[int, typer.Option(min=0, help="Test images (0: all).")] = 0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Masked-patch MSE of a trained ET beside mean fill and a DenseAM, same masks."""
    from amlab.tasks.et_images import eval_et as run

    with errors(), busy("evaluating"):
        metrics = run(model, out, data_dir=path_str(data_dir), images=images, seed=seed)
    fill = metrics["masked_mse"]["mean_fill"]
    table = result_table(
        f"masked-patch MSE, {metrics['test_images']} held-out {metrics['data']}",
        ("method", "MSE", "vs mean fill"),
        [(n, f"{v:.5f}", f"{v / fill:.2f}x") for n, v in metrics["masked_mse"].items()],
    )
    names = ("metrics.json", "completions.png", "energy.png")
    show_result(metrics, as_json, table, () if out is None else [out / n for n in names])


@train_app.command("diffusion")
def diffusion_train(
    data: ImageDataOpt = "digits",
    data_dir: DataFilesOpt = None,
    images: Annotated[int, typer.Option(min=1, help="Number of training images.")] = 1000,
    steps: StepsOpt = 2000,
    batch_size: BatchOpt = 64,
    channels: Annotated[int, typer.Option(min=1, help="Channels of the conv net.")] = 32,
    blocks: Annotated[int, typer.Option(min=1, help="Residual blocks of the conv net.")] = 2,
    energy: Annotated[
        bool, typer.Option("--energy/--no-energy", help="Energy-parameterised (D = x - grad E).")
    ] = False,
    guidance: Annotated[float, typer.Option(help="Guidance scale of the samples.")] = 2.0,
    text: Annotated[
        bool,
        typer.Option(
            "--text/--no-text",
            help="Prompted by captions of the images ('a thick slanted 7') instead of classes.",
        ),
    ] = False,
    resume: ResumeOpt = False,
    seed: SeedOpt = 0,
    out: Annotated[
        Path,
        out_option("checkpoints/, model/, samples.png and metrics.json", resumable=True),
    ] = Path("runs/diffusion"),
    as_json: JsonOpt = False,
) -> None:
    """Train a class- or text-conditional diffusion model (checkpoints, resume) and sample it."""
    from amlab.tasks.diffusion import ImageDiffusionConfig, train_image_model

    with errors():
        config = ImageDiffusionConfig(
            data=data,
            data_dir=image_files(data, data_dir),
            images=images,
            steps=steps,
            batch_size=batch_size,
            channels=channels,
            blocks=blocks,
            energy=energy,
            guidance=guidance,
            seed=seed,
            text=text,
        )
        shows = shows_results()  # under torchrun every rank trains; rank 0 shows and writes
        with training_progress("training the denoiser", shown=shows) as on_step:
            metrics = train_image_model(config, out, resume=resume, on_step=on_step)
    if not shows:
        return
    table = None
    if text:
        table = result_table(
            f"prompt adherence of {metrics['prompted_samples']} guided samples",
            ("attribute", "adherence", "chance"),
            [
                (name, f"{r['adherence']:.0%}", f"{r['chance']:.0%}")
                for name, r in metrics["adherence"].items()
            ],
        )
    wrote = (metrics["model"], metrics["samples"], out / "metrics.json")
    show_result(metrics, as_json, table, wrote=wrote)
    if not as_json:
        console.print(f"final loss {metrics['final_loss']:.4g}")


@train_app.command("et-graph")
def train_et_graph(
    out: Annotated[
        Path,
        out_option("each detector's checkpoints, metrics.json and roc.png", resumable=True),
    ] = Path("runs/et-graph"),
    nodes: Annotated[
        int | None, typer.Option(min=1, help="Nodes of the generated graph (default 600).")
    ] = None,
    structural: Annotated[
        int | None,
        typer.Option(min=0, help="Structural anomalies (in cliques) of it (default 30)."),
    ] = None,
    contextual: Annotated[
        int | None, typer.Option(min=0, help="Contextual anomalies of it (default 30).")
    ] = None,
    edges: Annotated[
        Path | None,
        typer.Option(help="Edge list file (u v per line) instead of a generated graph."),
    ] = None,
    features: Annotated[Path | None, typer.Option(help="Node feature file (one row per node).")] = (
        None
    ),
    labels: Annotated[Path | None, typer.Option(help="Node label file (0/1 per node).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per detector.")] = 300,
    et_steps: Annotated[int, typer.Option(min=1, help="Steps T of the block's dynamics.")] = 6,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Graph anomaly detection: Energy Transformer vs GCN vs feature-only MLP."""
    from amlab.tasks.et_graph import DETECTORS, GraphRunConfig, run_graph_anomaly

    generated = {"nodes": nodes, "structural": structural, "contextual": contextual}
    with errors():
        if edges or features or labels:
            refuse_unused(
                {f"--{name}": value for name, value in generated.items()},
                "--edges, --features and --labels give the graph, and these options shape a "
                "generated one; drop them or the files",
            )
        config = GraphRunConfig(
            **{name: value for name, value in generated.items() if value is not None},
            train_steps=steps,
            et_steps=et_steps,
            lr=lr,
            seed=seed,
            edges=path_str(edges),
            features=path_str(features),
            labels=path_str(labels),
        )
        shows = shows_results()  # under torchrun every rank trains; rank 0 shows and writes
        with stage_progress(shown=shows) as progress:

            def show(name: str, done: int, total: int) -> None:  # the detectors train in turn
                finished = DETECTORS.index(name) + done / total
                progress(f"training {name}", finished / len(DETECTORS))

            metrics = run_graph_anomaly(config, out, resume=resume, progress=show)
    if not shows:
        return
    graph = metrics["graph"]
    table = result_table(
        f"anomalous nodes ({graph['anomalies']} of {graph['nodes']}), test split",
        ("detector", "AUC", "macro-F1", "parameters"),
        [
            (name, f"{r['auc']:.3f}", f"{r['macro_f1']:.3f}", str(r["parameters"]))
            for name, r in metrics["detectors"].items()
        ],
    )
    show_result(metrics, as_json, table, (out / "metrics.json", out / "roc.png"))
