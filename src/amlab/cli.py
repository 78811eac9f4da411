"""The ``amlab`` command: thin wiring from options to the library, no logic of its own."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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


@app.callback()
def main() -> None:
    """amlab: energy-based associative memory."""


@app.command()
def retrieve(
    data: Annotated[
        str, typer.Option(help="digits (embedded), mnist, fashion_mnist or cifar10.")
    ] = "digits",
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory holding the data files (for all but digits).")
    ] = None,
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
        data_dir=None if data_dir is None else str(data_dir),
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


repro_app = typer.Typer(
    help="Reproduce a paper: writes report.md, PNG figures and metrics.json to --out.",
    no_args_is_help=True,
)
app.add_typer(repro_app, name="repro")

QuickOpt = Annotated[bool, typer.Option("--quick", help="A reduced grid that runs in minutes.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory with MNIST IDX files (default: embedded digits)."),
]


#: paper -> one-line description; each is ``amlab.experiments.<paper>.run``
PAPERS = {
    "lsr": "Epanechnikov (LSR) DenseAM: exact minima, emergent memories, log-likelihood.",
    "drdam": "DrDAM: the memory in a fixed-size random-feature tensor, its errors and retrieval.",
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
        metrics = run(
            out=out,
            quick=quick,
            seed=seed,
            data_dir=None if data_dir is None else str(data_dir),
            progress=progress,
        )
    if as_json:
        typer.echo(json.dumps(json.loads((out / "metrics.json").read_text()), indent=2))
        return
    console.print(
        f"wrote {out / 'report.md'}, {out / 'metrics.json'} and "
        f"{len(list(out.glob('*.png')))} figures"
    )
    del metrics


class _stage_progress:
    """A rich progress bar over a whole run; yields ``progress(stage, fraction)``."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=1.0)

    def __enter__(self):
        self.bar.__enter__()
        return lambda stage, fraction: self.bar.update(
            self.task, description=stage, completed=fraction
        )

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


class _errors:
    """Turn an AmlabError into a one-line message and exit status 2."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, AmlabError):
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2)
        return False


class _progress:
    """A rich progress bar on stderr; yields ``advance(step, still_moving)``."""

    def __init__(self, description: str, total: int) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[moving]} moving"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task(description, total=total, moving="-")

    def __enter__(self):
        self.bar.__enter__()
        return lambda step, moving: self.bar.update(self.task, completed=step, moving=moving)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


class training_progress:
    """A rich progress bar for :func:`amlab.training.train`; yields its ``on_step``."""

    def __init__(self, description: str) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task(description, total=None, loss="-")

    def __enter__(self):
        self.bar.__enter__()
        return lambda done, total, metrics: self.bar.update(
            self.task, completed=done, total=total, loss=f"{metrics['loss']:.4g}"
        )

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


# -- amlab bench (issue 8) ---------------------------------------------------------------


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
    from amlab.io import atomic_write

    with _errors():
        if threads is not None:
            torch.set_num_threads(max(1, threads))
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
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "bench.json", lambda tmp: Path(tmp).write_text(text))
    if as_json:
        typer.echo(text)
        return
    table = Table(
        title=f"amlab bench on {report['device']}, {report['threads']} threads, {clock} clock, "
        f"matmul {report['matmul_gflops']:.0f} GFLOP/s, load {report['load_average_before']}"
    )
    for column in (
        "workload",
        "ms",
        "GFLOP/s",
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
            _fmt(row["fraction_of_matmul"], ".2f"),
            f"{row['plain_seconds'] * 1e3:.1f}",
            f"{row['speedup_vs_plain']:.2f}",
            _fmt(row["peak_bytes"], ".1f", 2**-20),
            _fmt(row["plain_peak_bytes"], ".1f", 2**-20),
            _fmt(row["largest_tensor_bytes"], ".1f", 2**-20),
            _fmt(row["plain_largest_tensor_bytes"], ".1f", 2**-20),
        )
    Console(width=140).print(table)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


if __name__ == "__main__":
    app()
