"""The ``amlab`` command: thin wiring from options to the library, no logic of its own.

One module per command group; what they share (options, errors, progress bars) is in
:mod:`amlab.cli.common`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from amlab.cli.bench import bench
from amlab.cli.common import OneLineErrors, error_line
from amlab.cli.explain import explain, export
from amlab.cli.fairness import fairness_app
from amlab.cli.gallery import gallery_app
from amlab.cli.listops import listops_app
from amlab.cli.nn import nn_app
from amlab.cli.repro import repro_app
from amlab.cli.retrieve import retrieve
from amlab.cli.store import store_app
from amlab.cli.train import eval_app, train_app

app = typer.Typer(
    help="amlab: energy-based associative memory. Every model is an energy; every "
    "computation is descent on it.",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    from importlib.metadata import PackageNotFoundError, version

    if not asked:
        return
    try:
        typer.echo(f"amlab {version('amlab')}")
    except PackageNotFoundError:
        error_line("amlab is not installed, so it has no version: pip install -e . first.")
        raise typer.Exit(1) from None
    raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print amlab's version and exit.",
        ),
    ] = False,
) -> None:
    """amlab: energy-based associative memory."""


app.command()(retrieve)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(repro_app, name="repro")
app.add_typer(listops_app, name="listops")
app.add_typer(fairness_app, name="fairness")
app.add_typer(nn_app, name="nn")
app.add_typer(gallery_app, name="gallery")
app.add_typer(store_app, name="store")
app.command()(explain)
app.command()(export)
app.command()(bench)

__all__ = ["app"]
