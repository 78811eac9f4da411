"""``amlab retrieve``: store images, corrupt them, retrieve them."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from amlab.cli.common import (
    DataFilesOpt,
    JsonOpt,
    OutOpt,
    SeedOpt,
    console,
    descent_progress,
    errors,
    path_str,
)


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
    from amlab.tasks.retrieval import RetrievalConfig, run_retrieval

    config = RetrievalConfig(
        data=data,
        data_dir=path_str(data_dir),
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
    with errors(), descent_progress("retrieving", total=steps) as advance:
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
