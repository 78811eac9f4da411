"""The ``amlab`` command: thin wiring from options to the library, no logic of its own."""

from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from amlab.errors import AmlabError

app = typer.Typer(
    help="amlab: energy-based associative memory. Every model is an energy; every "
    "computation is descent on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Directory to write figures and metrics.json into.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from its latest checkpoint.")
]
QuickOpt = Annotated[bool, typer.Option("--quick", help="A reduced grid that runs in minutes.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory with MNIST IDX files (default: embedded digits)."),
]
#: the image sets a model trains on, and where the files of all but the embedded one are
ImageDataOpt = Annotated[str, typer.Option(help="digits (embedded), mnist or fashion_mnist.")]
DataFilesOpt = Annotated[
    Path | None, typer.Option(help="Directory holding the data files (for all but digits).")
]
#: the directory a training run checkpoints into (and --resume continues)
RunDirOpt = Annotated[Path, typer.Option("--out", help="Run directory.")]


@app.callback()
def main() -> None:
    """amlab: energy-based associative memory."""


@app.command()
def retrieve(
    data: Annotated[
        str, typer.Option(help="digits (embedded), mnist, fashion_mnist or cifar10.")
    ] = "digits",
    data_dir: DataFilesOpt = None,
    memories: Annotated[int, typer.Option(help="Number of images stored.")] = 100,
    queries: Annotated[
        int, typer.Option(help="Number of corrupted queries (0: one per stored image).")
    ] = 0,
    corruption: Annotated[
        str, typer.Option(help="block (lower half hidden), mask, noise or salt_pepper.")
    ] = "block",
    level: Annotated[
        float, typer.Option(help="Hidden fraction (mask, salt_pepper) or noise sigma.")
    ] = 0.5,
    energy: Annotated[str, typer.Option(help="lse, lse_dot or lsr.")] = "lse",
    beta: Annotated[
        float | None,
        typer.Option(
            help="Inverse temperature (default: 3 for lse, 20 for lse_dot, 0.15 for lsr)."
        ),
    ] = None,
    eps: Annotated[float, typer.Option(help="LSR's floor inside the log.")] = 0.0,
    method: Annotated[
        str,
        typer.Option(
            help="auto (attention for LSE, fixed_point for LSR), gd, attention or fixed_point."
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option(help="Most steps of descent.")] = 1000,
    step_size: Annotated[
        float | None, typer.Option(help="Step size (default 0.1 for gd, 1 otherwise).")
    ] = None,
    tol: Annotated[
        float | None, typer.Option(help="Stop a query when no entry moves more than this.")
    ] = None,
    clamp: Annotated[
        bool | None,
        typer.Option(
            "--clamp/--no-clamp",
            help="Keep visible entries fixed (default: on for block and mask).",
        ),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(help="Memories per chunk (default: automatic).")
    ] = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store images, corrupt them, retrieve them, and report how many come back."""
    from amlab.experiments.retrieval import RetrievalConfig, run_retrieval

    config = RetrievalConfig(
        data=data,
        data_dir=_path_str(data_dir),
        memories=memories,
        queries=queries,
        corruption=corruption,
        level=level,
        energy=energy,
        beta=beta,
        eps=eps,
        method=method,
        steps=steps,
        step_size=step_size,
        tol=tol,
        clamp=clamp,
        seed=seed,
        chunk_size=chunk_size,
    )
    with _errors(), _progress("retrieving", total=steps) as advance:
        metrics = run_retrieval(config, out=out, on_step=advance)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    table = Table(
        title=f"retrieve: {config.data}, {metrics['config']['energy']} "
        f"({metrics['config']['method']}), beta={metrics['config']['beta']:g}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "accuracy",
        "mean_squared_error",
        "corrupted_mean_squared_error",
        "mean_steps",
        "converged_fraction",
    ):
        table.add_row(key, f"{metrics[key]:.4g}")
    Console().print(table)
    if out is not None:
        console.print(f"wrote {out / 'retrieval.png'} and {out / 'metrics.json'}")


train_app = typer.Typer(
    help="Train a model through the shared loop (progress bar, checkpoints, --resume).",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")
eval_app = typer.Typer(help="Evaluate a trained model against baselines.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


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
    alpha: Annotated[float, typer.Option(help="Step size of the dynamics.")] = 0.1,
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
    from amlab.experiments.et_images import ETImageConfig
    from amlab.experiments.et_images import train_et as run

    with _errors():
        config = ETImageConfig(
            data=data,
            data_dir=_path_str(data_dir),
            patch=patch,
            dim=dim,
            heads=heads,
            head_dim=head_dim,
            et_steps=et_steps,
            alpha=alpha,
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
    from amlab.experiments.et_images import eval_et as run

    with _errors():
        metrics = run(
            model,
            out,
            data_dir=_path_str(data_dir),
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
    from amlab.experiments.diffusion import train_image_model

    with _errors(), training_progress("training the denoiser") as on_step:
        metrics = train_image_model(
            out,
            data=data,
            data_dir=_path_str(data_dir),
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


repro_app = typer.Typer(
    help="Reproduce a paper: writes report.md, PNG figures and metrics.json to --out.",
    no_args_is_help=True,
)
app.add_typer(repro_app, name="repro")


#: paper -> one-line description; each is ``amlab.experiments.<paper>.run``
PAPERS = {
    "lsr": "Epanechnikov (LSR) DenseAM: exact minima, emergent memories, log-likelihood.",
    "drdam": "DrDAM: the memory in a fixed-size random-feature tensor, its errors and retrieval.",
    "listops": "ListOps: fewest parameters per task mix, curriculum, embeddings, ablation.",
    "diffusion": "Diffusion as associative memory: the optimal denoiser is a DenseAM; circle toy, "
    "memorisation on digits, sampler vs descent.",
}


def _add_repro_command(paper: str, description: str) -> None:
    def command(
        out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path(
            f"runs/repro-{paper}"
        ),
        quick: QuickOpt = False,
        data_dir: DataDirOpt = None,
        seed: SeedOpt = 0,
        as_json: JsonOpt = False,
    ) -> None:
        run = importlib.import_module(f"amlab.experiments.{paper}").run
        _run_repro(run, out, quick, data_dir, seed, as_json)

    repro_app.command(paper, help=description)(command)


for _paper, _description in PAPERS.items():
    _add_repro_command(_paper, _description)


def _run_repro(
    run, out: Path, quick: bool, data_dir: Path | None, seed: int, as_json: bool
) -> None:
    """Run one paper's experiments with a progress bar; print where the report went."""
    with _errors(), _stage_progress() as progress:
        run(
            out=out,
            quick=quick,
            seed=seed,
            data_dir=_path_str(data_dir),
            progress=progress,
        )
    if as_json:
        typer.echo(json.dumps(json.loads((out / "metrics.json").read_text()), indent=2))
        return
    console.print(
        f"wrote {out / 'report.md'}, {out / 'metrics.json'} and "
        f"{len(list(out.glob('*.png')))} figures"
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
    from amlab.experiments.et_graph import DETECTORS, GraphRunConfig, run_graph_anomaly

    with _errors():
        config = GraphRunConfig(
            nodes=nodes,
            structural=structural,
            contextual=contextual,
            train_steps=steps,
            et_steps=et_steps,
            lr=lr,
            seed=seed,
            edges=_path_str(edges),
            features=_path_str(features),
            labels=_path_str(labels),
        )
        with _stage_progress() as progress:

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


def _path_str(path: Path | None) -> str | None:
    """A path option as the str the experiments' configs hold (None stays None)."""
    return None if path is None else str(path)


class _errors:
    """Turn an AmlabError into a one-line message and exit status 2, and a file the system
    refuses (an --out that cannot be made, a full disk) into one with exit status 1."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, AmlabError):
            _error(str(exc))
            raise typer.Exit(2)
        if isinstance(exc, OSError) and exc.filename is not None:
            _error(f"{exc.strerror or exc}: {exc.filename}")
            raise typer.Exit(1)
        return False


def _error(message: str) -> None:
    # escaped: a message's own brackets ("amlab[onnx]", a shape) are not markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


@contextmanager
def _bar(description: str, total: float | None, *columns: TextColumn, **fields: Any):
    """A transient rich progress bar on stderr with ``columns`` between the bar and the
    elapsed time; yields ``update(**changes)`` for its one task."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *columns,
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total, **fields)
        yield lambda **changes: bar.update(task, **changes)


@contextmanager
def _stage_progress():
    """A bar over a whole run; yields ``progress(stage, fraction)``."""
    with _bar("starting", 1.0, TextColumn("{task.percentage:>3.0f}%")) as update:
        yield lambda stage, fraction: update(description=stage, completed=fraction)


@contextmanager
def _progress(description: str, total: int):
    """A bar over descent steps; yields ``advance(step, still_moving)``."""
    columns = (
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[moving]} moving"),
    )
    with _bar(description, total, *columns, moving="-") as update:
        yield lambda step, moving: update(completed=step, moving=moving)


@contextmanager
def training_progress(description: str):
    """A bar for :func:`amlab.training.train`; yields its ``on_step``. The total is known
    only at the first step (a None total cannot be formatted, hence the ``steps`` field)."""
    columns = (
        TextColumn("step {task.completed:.0f}/{task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
    )
    with _bar(description, None, *columns, loss="-", steps="?") as update:
        yield lambda done, total, metrics: update(
            completed=done, total=total, steps=total, loss=f"{metrics['loss']:.4g}"
        )


listops_app = typer.Typer(
    help="ListOps: how few parameters a small transformer needs, per task mix and curriculum.",
    no_args_is_help=True,
)
app.add_typer(listops_app, name="listops")

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
    from amlab.listops.train import RunSpec

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
    from amlab.experiments.report import write_metrics
    from amlab.listops.train import train_run

    with _errors():
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


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AmlabError(f"{name} must be comma-separated integers; got {text!r}.") from None


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
    from amlab.listops.sweep import MIXES, summarize, sweep_grid

    with _errors():
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
            _int_list(dims, "dims"),
            _int_list(seeds, "seeds"),
            curriculum_steps,
        )
        with _stage_progress() as progress:
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


# -- the browser explainer (amlab.explain) ---------------------------------------------------
@app.command()
def explain(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Only serve; do not open a browser.")
    ] = False,
) -> None:
    """Serve the interactive explainer on 127.0.0.1 and open it in the browser."""
    import webbrowser

    from amlab.explain import serve

    with _errors():
        server = serve(port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    console.print(f"amlab explain: serving {url} (Ctrl-C stops)")
    if not no_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def export(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the app's data (digits, projections).")
    ] = Path("web/public/data"),
    vectors: Annotated[
        Path | None,
        typer.Option(help="Also write the test vectors of the app's math to this JSON file."),
    ] = None,
    seed: SeedOpt = 0,
) -> None:
    """Write the data the explainer computes with, and test vectors for its math."""
    from amlab.explain import export_app_data, export_test_vectors

    with _errors():
        written = export_app_data(out)
        if vectors is not None:
            written.append(export_test_vectors(vectors, seed=seed))
    for path in written:
        console.print(f"wrote {path}")


# -- amlab bench (amlab.bench) -----------------------------------------------------------


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: a smoke test in seconds.")
    ] = False,
    workload: Annotated[
        list[str] | None,
        typer.Option(
            "--workload",
            help="Run only these (repeatable): lse_784, lse_64, lsr_index, drdam, "
            "energy_transformer.",
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed runs per measurement (best kept).")] = 3,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: cuda when present).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads (default: torch's choice).")
    ] = None,
    clock: Annotated[
        str,
        typer.Option(
            help="wall, or cpu: the process's CPU time (with --threads 1, robust to a busy "
            "machine)."
        ),
    ] = "wall",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Time amlab's hot paths against plain implementations and the matmul rate."""
    import torch

    from amlab.bench import WORKLOADS, run_bench
    from amlab.io import atomic_write_text

    with _errors():
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        if out is not None:  # before the run, so that a bad --out loses no measurement
            out.mkdir(parents=True, exist_ok=True)
        with _stage_progress() as progress:
            report = run_bench(
                quick=quick,
                workloads=tuple(workload) if workload else WORKLOADS,
                repeats=repeats,
                device=device,
                clock=clock,
                seed=seed,
                progress=progress,
            )
        text = json.dumps(report, indent=2)
        if out is not None:
            atomic_write_text(out / "bench.json", text)
    if as_json:
        typer.echo(text)
        return
    Console(width=160).print(bench_table(report))


def bench_table(report: dict) -> Table:
    """``amlab bench``'s report as the table it prints."""
    table = Table(
        title=f"amlab bench on {report['device']}, {report['threads']} threads, "
        f"{report['clock']} clock, matmul up to {report['matmul_gflops']:.0f} GFLOP/s, "
        f"load {report['load_average_before']}"
    )
    for column in (
        "workload",
        "ms",
        "GFLOP/s",
        "matmul GFLOP/s",
        "of matmul",
        "plain ms",
        "x plain",
        "peak MiB",
        "plain peak MiB",
        "largest MiB",
        "plain largest MiB",
    ):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for row in report["workloads"]:
        table.add_row(
            row["name"],
            f"{row['seconds'] * 1e3:.1f}",
            _fmt(row["gflops"], ".0f"),
            f"{row['matmul_gflops']:.0f}",
            _fmt(row["fraction_of_matmul"], ".2f"),
            f"{row['plain_seconds'] * 1e3:.1f}",
            f"{row['speedup_vs_plain']:.2f}",
            _fmt(row["peak_bytes"], ".1f", 2**-20),
            _fmt(row["plain_peak_bytes"], ".1f", 2**-20),
            _fmt(row["largest_tensor_bytes"], ".1f", 2**-20),
            _fmt(row["plain_largest_tensor_bytes"], ".1f", 2**-20),
        )
    return table


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


if __name__ == "__main__":
    app()
