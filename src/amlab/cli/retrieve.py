"""``amlab retrieve``: store images, corrupt them, retrieve them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amlab.cli.common import (
    DataFilesOpt,
    ImageDataOpt,
    JsonOpt,
    SeedOpt,
    descent_progress,
    errors,
    image_files,
    one_of,
    out_option,
    refuse_unused,
    result_table,
    show_result,
    shows_results,
    typed,
)
from amlab.data.corrupt import CORRUPTIONS
from amlab.models.dense_am import ENERGIES
from amlab.tasks.retrieval import DEFAULT_LEVEL, METHODS


def retrieve(
    ctx: typer.Context,
    data: ImageDataOpt = "digits",
    data_dir: DataFilesOpt = None,
    memories: Annotated[int, typer.Option(min=1, help="Number of images stored.")] = 100,
    queries: Annotated[
        int, typer.Option(min=0, help="Number of corrupted queries (0: one per stored image).")
    ] = 0,
    corruption: Annotated[
        one_of(CORRUPTIONS),
        typer.Option(
            help="block hides the lower half; mask hides, salt_pepper flips a --level fraction "
            "of the pixels; noise adds Gaussian noise of sigma --level."
        ),
    ] = "block",
    level: Annotated[
        float | None,
        typer.Option(
            help=f"The fraction (mask, salt_pepper) or sigma (noise); default {DEFAULT_LEVEL}. "
            "block takes none."
        ),
    ] = None,
    energy: Annotated[one_of(ENERGIES), typer.Option(help="The energy of the memory.")] = "lse",
    beta: Annotated[
        float | None,
        typer.Option(
            help="Inverse temperature (default: 3 for lse, 20 for lse_dot, 0.15 for lsr)."
        ),
    ] = None,
    eps: Annotated[
        float, typer.Option(min=0.0, help="LSR's floor inside the log (--energy lsr only).")
    ] = 0.0,
    method: Annotated[
        one_of(METHODS),
        typer.Option(
            help="auto: attention for the LSE energies, fixed_point for lsr (their exact "
            "updates); gd: gradient descent on any energy."
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option(min=0, help="Most steps of descent.")] = 1000,
    step_size: Annotated[
        float | None, typer.Option(help="Step size (default 0.1 for gd, 1 otherwise).")
    ] = None,
    tol: Annotated[
        float | None,
        typer.Option(min=0.0, help="Stop a query when no entry moves more than this."),
    ] = None,
    clamp: Annotated[
        bool | None,
        typer.Option(
            "--clamp/--no-clamp",
            help="Keep the entries the corruption left alone fixed (default: on for block and "
            "mask; noise leaves none alone).",
        ),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(min=1, help="Memories per chunk (default: automatic).")
    ] = None,
    seed: SeedOpt = 0,
    store: Annotated[
        Path | None,
        typer.Option(
            help="A memory store (amlab store write) to retrieve from, instead of --data. Under "
            "torchrun --nproc_per_node P each rank loads its shard and rank 0 writes the "
            "results; without torchrun one process reads the whole store."
        ),
    ] = None,
    out: Annotated[Path | None, out_option("retrieval.png and metrics.json", optional=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store images, corrupt them, retrieve them, and report how many come back."""
    from amlab.tasks.retrieval import RetrievalConfig, run_retrieval

    with errors():
        if store is not None:
            data_options = {"--data": typed(ctx, "data"), "--data-dir": data_dir}
            data_options["--memories"] = typed(ctx, "memories")
            refuse_unused(data_options, "--store holds the memories")
        shows = shows_results()  # under torchrun every rank retrieves; rank 0 shows and writes
        config = RetrievalConfig(
            data=data,
            data_dir=image_files(data, data_dir),
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
            store=None if store is None else str(store),
        )
        with descent_progress("retrieving", total=steps, shown=shows) as advance:
            metrics = run_retrieval(config, out=out, on_step=advance)
    if not shows:
        return
    keys = (
        "accuracy",
        "mean_squared_error",
        "corrupted_mean_squared_error",
        "mean_steps",
        "converged_fraction",
    )
    run = metrics["config"]
    table = result_table(
        f"retrieve: {data}, {run['energy']} ({run['method']}), beta={run['beta']:g}",
        ("metric", "value"),
        [(key, f"{metrics[key]:.4g}") for key in keys],
    )
    wrote = () if out is None else (out / "retrieval.png", out / "metrics.json")
    show_result(metrics, as_json, table, wrote)
