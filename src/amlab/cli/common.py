"""What every ``amlab`` command shares: the options spelled once, the one-line error, the
progress bars."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from amlab.errors import AmlabError

#: messages and progress bars go to stderr; results (tables, --json) to stdout
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


def path_str(path: Path | None) -> str | None:
    """A path option as the str the experiments' configs hold (None stays None)."""
    return None if path is None else str(path)


class errors:
    """Turn an AmlabError into a one-line message and exit status 2, and a file the system
    refuses (an --out that cannot be made, a full disk) into one with exit status 1."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, AmlabError):
            error_line(str(exc))
            raise typer.Exit(2)
        if isinstance(exc, OSError) and exc.filename is not None:
            error_line(f"{exc.strerror or exc}: {exc.filename}")
            raise typer.Exit(1)
        return False


def error_line(message: str) -> None:
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
def stage_progress():
    """A bar over a whole run; yields ``progress(stage, fraction)``."""
    with _bar("starting", 1.0, TextColumn("{task.percentage:>3.0f}%")) as update:
        yield lambda stage, fraction: update(description=stage, completed=fraction)


@contextmanager
def descent_progress(description: str, total: int):
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


def int_list(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AmlabError(f"{name} must be comma-separated integers; got {text!r}.") from None
