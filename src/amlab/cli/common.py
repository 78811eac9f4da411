"""What every ``amlab`` command shares: the options spelled once, the one parser of list
options, the one-line error, the progress bars and the way results are shown.

The conventions every command follows (DESIGN.md):

- ``--out DIR`` is the directory the command writes its files into, created if missing.
  Commands whose job is to make files (``train``, ``listops``, ``repro``, ``export``)
  have a default directory; the others (``retrieve``, ``eval et``, ``bench``) only print
  unless ``--out`` is given. A directory that holds a training run is never overwritten:
  ``--resume`` continues the run there. Files go nowhere else, except a file that an option
  names itself (``export --vectors FILE``).
- ``--json`` prints the command's result as JSON on stdout and nothing else there; without
  it the result is a table on stdout. Messages, "wrote ..." lines and progress bars go to
  stderr.
- ``--seed`` fixes every random choice; long work shows a progress bar.
- Lists are comma-separated, one value after another: ``--dims 8,16,32``, ``--seeds 0,1``,
  ``--ops max,med,sum``, ``--workloads lse_64,drdam``. A ListOps task mix inside a list of
  mixes joins its operations with ``+``, as the reports name mixes: ``--mixes sum,max+med``.
- An option that takes one of a fixed set of values declares them (a ``Literal``), so
  ``--help`` lists them and the parser refuses any other.
- An option never goes silently unused: one that would have no effect with the others
  given is an error saying what to drop or add.
- Errors name the options the user typed. The parser refuses a bad value itself (exit
  status 2, naming the option); a problem found later is one line ``error: ...`` (exit
  status 2, :class:`errors`), a file the system refuses one line with exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

try:  # typer >= 0.21 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

from amlab.data.images import DATASETS
from amlab.errors import AmlabError
from amlab.io import jsonable

#: messages and progress bars go to stderr; results (tables, --json) to stdout
console = Console(stderr=True)


def one_of(values: Sequence[str]) -> Any:
    """The type of an option that takes one of ``values``: ``--help`` lists them and the
    parser refuses any other."""
    return Literal[tuple(values)]  # type: ignore[valid-type]


def out_option(writes: str, *, optional: bool = False, resumable: bool = False) -> Any:
    """``--out``, with a help text that says what the command writes there (see the module
    docstring); ``optional``: without it nothing is written."""
    help = f"Directory to write {writes} into (created if missing)"
    if resumable:
        help += "; a run already there is continued with --resume, never overwritten"
    if optional:
        help += "; without --out nothing is written"
    return typer.Option("--out", help=help + ".", parser=out_dir, metavar="PATH")


def out_dir(text: str | Path) -> Path:
    """The directory ``--out`` names; an empty one is refused (Path("") would be the current
    directory, and a command would scatter its files there)."""
    if isinstance(text, Path):  # a command's default
        return text
    if not text.strip():
        raise typer.BadParameter(
            "an empty path names no directory; pass the directory to write into, e.g. "
            "--out results."
        )
    return Path(text)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout instead of a table.")
]
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
ImageDataOpt = Annotated[
    one_of(DATASETS),
    typer.Option(help="The images: digits (embedded) or a data set read from --data-dir."),
]
DataFilesOpt = Annotated[
    Path | None, typer.Option(help="Directory holding the files of --data (all but digits).")
]


def path_str(path: Path | None) -> str | None:
    """A path option as the str the experiments' configs hold (None stays None)."""
    return None if path is None else str(path)


def image_files(data: str, data_dir: Path | None) -> str | None:
    """``--data-dir`` checked against ``--data``: the embedded digits read no files, every
    other data set needs them. Returns the directory as a str (None for digits)."""
    if data == "digits" and data_dir is not None:
        raise AmlabError(
            f"--data digits is embedded and reads no files: drop --data-dir {data_dir}, or "
            f"say which data set it holds with --data ({', '.join(DATASETS[1:])})."
        )
    if data != "digits" and data_dir is None:
        raise AmlabError(
            f"--data {data} is read from files: pass --data-dir DIR, the directory that holds them."
        )
    return path_str(data_dir)


def shows_results() -> bool:
    """Whether this process shows progress and results: any process not started by
    torchrun, and rank 0 of those it started (the other ranks work alongside, silently;
    :func:`amlab.distributed.group.is_main_process`, which the tasks ask before they write).
    A command that runs under torchrun asks it inside :class:`errors`, passes it to its
    progress bar as ``shown`` and shows its result only where it is true."""
    from amlab.distributed.group import is_main_process

    return is_main_process()


def typed(ctx: typer.Context, name: str) -> object | None:
    """The value of the command's option ``name`` (its parameter's name) when the user
    typed it, None when it holds its default."""
    source = ctx.get_parameter_source(name)
    return None if source is None or source.name == "DEFAULT" else ctx.params[name]


def refuse_unused(unused: dict[str, object], reason: str) -> None:
    """An AmlabError when any option in ``unused`` (spelling -> value, None when not
    given) was given though ``reason`` makes it do nothing."""
    given = [name for name, value in unused.items() if value is not None]
    if given:
        raise AmlabError(f"{' and '.join(given)} would do nothing: {reason}.")


# -- list options ---------------------------------------------------------------------------
def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def choice(values: Iterable[str]) -> Callable[[str], str]:
    """An element that must be one of ``values`` (case does not matter)."""
    values = tuple(values)

    def parse(text: str) -> str:
        if text.lower() not in values:
            raise ValueError(f"{text!r} is not one of {', '.join(values)}")
        return text.lower()

    return parse


def split_list(text: str, item: Callable[[str], Any], sep: str = ",") -> list[Any]:
    """``text`` split at ``sep``, each element through ``item`` (which raises ValueError
    naming the element); an empty element or one listed twice is a ValueError."""
    values: list[Any] = []
    for part in (p.strip() for p in text.split(sep)):
        if not part:
            raise ValueError(f"{text!r} has an empty element")
        value = item(part)
        if value in values:
            raise ValueError(f"{part!r} is listed twice in {text!r}")
        values.append(value)
    return values


def list_option(item: Callable[[str], Any], example: str, help: str, metavar: str) -> Any:
    """The one way amlab spells a list option: comma-separated values, each parsed by
    ``item``; a bad element is refused by the parser, named, with an example of the form.
    Annotate the option ``Any``: it arrives as a list."""

    def parse(text: str) -> list[Any]:
        try:
            return split_list(text, item)
        except ValueError as exc:
            message = f"{exc}; give comma-separated values, e.g. {example}."
            raise typer.BadParameter(message) from None

    return typer.Option(
        parser=parse, metavar=metavar, help=f"{help}; comma-separated, e.g. {example}."
    )


# -- errors -----------------------------------------------------------------------------------
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
    # soft_wrap: one line however long (the terminal wraps it, rich does not break it)
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """The root command group. A command line the parser refuses (an unknown command or
    option, a value out of range or not among the choices) ends in one ``error:`` line that
    names the option and the command whose ``--help`` lists the choices, exit status 2, as
    every other refused input does; no box. No arguments at all still shows the help."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        with _usage_errors_as_one_line():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_as_one_line(), _leaving_the_process_group():
            return super().invoke(ctx)


@contextmanager
def _leaving_the_process_group() -> Iterator[None]:
    """A command that joined a torch.distributed process group (one run under torchrun:
    training, ``retrieve --store``) leaves it when it ends, as gloo needs (a process that
    exits with its group open can abort): after waiting for every rank when the command
    succeeded, at once when it failed."""
    from amlab.distributed.group import leaving_group

    with leaving_group(succeeded=lambda e: isinstance(e, typer.Exit) and e.exit_code == 0):
        yield


@contextmanager
def _usage_errors_as_one_line() -> Iterator[None]:
    try:
        yield
    except getattr(click_exceptions, "NoArgsIsHelpError", ()):  # click < 8.2 exits instead
        raise
    except click_exceptions.UsageError as e:
        where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
        error_line(e.format_message() + where)
        raise typer.Exit(e.exit_code) from None


# -- results ----------------------------------------------------------------------------------
def show_result(
    result: Any,
    as_json: bool,
    table: Table | None = None,
    wrote: Sequence[Path | str] = (),
    width: int | None = None,
) -> None:
    """A command's result: with ``--json`` the result as JSON on stdout and nothing else;
    otherwise ``table`` (if any, ``width`` columns wide) on stdout and a "wrote ..." line
    naming the files on stderr."""
    if as_json:
        typer.echo(json.dumps(jsonable(result), indent=2))
        return
    if table is not None:
        Console(width=width).print(table)
    if wrote:
        names = [str(path) for path in wrote]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        console.print(f"wrote {escape(listed)}", highlight=False, soft_wrap=True)


def result_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A table whose first column is left-aligned and the others, numbers, right-aligned."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


# -- progress bars ----------------------------------------------------------------------------
@contextmanager
def _bar(
    description: str, total: float | None, *columns: TextColumn, shown: bool = True, **fields: Any
):
    """A transient rich progress bar on stderr with ``columns`` between the bar and the
    elapsed time; yields ``update(**changes)`` for its one task. ``shown`` False: no bar, and
    ``update`` does nothing (a torchrun rank but 0, :func:`shows_results`)."""
    if not shown:
        yield lambda **changes: None
        return
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
def stage_progress(shown: bool = True):
    """A bar over a whole run; yields ``progress(stage, fraction)``."""
    with _bar("starting", 1.0, TextColumn("{task.percentage:>3.0f}%"), shown=shown) as update:
        yield lambda stage, fraction: update(description=stage, completed=fraction)


@contextmanager
def busy(description: str, shown: bool = True):
    """A bar for work that reports no progress of its own: it moves and shows the time."""
    with _bar(description, None, shown=shown):
        yield


@contextmanager
def descent_progress(description: str, total: int, shown: bool = True):
    """A bar over descent steps; yields ``advance(step, still_moving)``."""
    columns = (
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[moving]} moving"),
    )
    with _bar(description, total, *columns, shown=shown, moving="-") as update:
        yield lambda step, moving: update(completed=step, moving=moving)


@contextmanager
def training_progress(description: str, shown: bool = True):
    """A bar for :func:`amlab.training.train`; yields its ``on_step``. The total is known
    only at the first step (a None total cannot be formatted, hence the ``steps`` field)."""
    columns = (
        TextColumn("step {task.completed:.0f}/{task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
    )
    with _bar(description, None, *columns, shown=shown, loss="-", steps="?") as update:
        yield lambda done, total, metrics: update(
            completed=done, total=total, steps=total, loss=f"{metrics['loss']:.4g}"
        )
