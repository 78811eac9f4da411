"""``amlab bench``: amlab's hot paths against plain implementations and the matmul rate."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from amlab.cli.common import JsonOpt, OutOpt, SeedOpt, errors, stage_progress


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

    from amlab.io import atomic_write_text
    from amlab.tasks.bench import WORKLOADS, run_bench

    with errors():
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        if out is not None:  # before the run, so that a bad --out loses no measurement
            out.mkdir(parents=True, exist_ok=True)
        with stage_progress() as progress:
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
