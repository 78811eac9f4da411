"""``amlab bench``: amlab's hot paths against plain implementations and the matmul rate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from amlab.cli.common import (
    JsonOpt,
    SeedOpt,
    choice,
    errors,
    list_option,
    one_of,
    out_option,
    result_table,
    show_result,
    stage_progress,
)
from amlab.distributed.group import refuse_torchrun
from amlab.tasks.bench import CLOCKS, DEVICES, WORKLOADS


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes: a smoke test in seconds.")
    ] = False,
    workloads: Annotated[
        Any,
        list_option(
            choice(WORKLOADS),
            "lse_64,drdam",
            f"The workloads to run, from {', '.join(WORKLOADS)}",
            "NAME,...",
        ),
    ] = ",".join(WORKLOADS),
    repeats: Annotated[
        int, typer.Option(min=1, help="Timed runs per measurement (best kept).")
    ] = 3,
    device: Annotated[
        one_of(DEVICES) | None, typer.Option(help="Where to run (default: cuda when present).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="torch CPU threads, for --device cpu (default: torch's choice)."),
    ] = None,
    clock: Annotated[
        one_of(CLOCKS),
        typer.Option(
            help="wall, or cpu: the process's CPU time (for --device cpu; with --threads 1, "
            "robust to a busy machine)."
        ),
    ] = "wall",
    seed: SeedOpt = 0,
    out: Annotated[Path | None, out_option("bench.json", optional=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Time amlab's hot paths against plain implementations and the matmul rate."""
    from amlab.io import write_metrics
    from amlab.tasks.bench import run_bench

    with errors():
        refuse_torchrun(
            "amlab bench",
            "it times one process's work: every rank would run the same workloads at once on "
            "one machine, skewing each other's timings, and write the same bench.json",
        )
        if out is not None:  # before the run, so that a bad --out loses no measurement
            out.mkdir(parents=True, exist_ok=True)
        with stage_progress() as progress:
            report = run_bench(
                quick=quick,
                workloads=tuple(workloads),
                repeats=repeats,
                device=device,
                threads=threads,
                clock=clock,
                seed=seed,
                progress=progress,
            )
        if out is not None:
            write_metrics(out / "bench.json", report)
    wrote = () if out is None else (out / "bench.json",)
    show_result(report, as_json, bench_table(report), wrote, width=160)


def bench_table(report: dict) -> Table:
    """``amlab bench``'s report as the table it prints."""
    title = (
        f"amlab bench on {report['device']}, {report['threads']} threads, "
        f"{report['clock']} clock, matmul up to {report['matmul_gflops']:.0f} GFLOP/s, "
        f"load {report['load_average_before']}"
    )
    columns = (
        "workload",
        "ms",
        "GFLOP/s",
        "matmul GFLOP/s",
        "of matmul",
        "plain ms",
        "x plain",
        "ceiling",
        "peak MiB",
        "plain peak MiB",
        "largest MiB",
        "plain largest MiB",
        "err vs f64 (plain)",
    )
    rows = [
        (
            row["name"],
            f"{row['seconds'] * 1e3:.1f}",
            _fmt(row["gflops"], ".0f"),
            f"{row['matmul_gflops']:.0f}",
            _fmt(row["fraction_of_matmul"], ".2f"),
            f"{row['plain_seconds'] * 1e3:.1f}",
            f"{row['speedup_vs_plain']:.2f}",
            _fmt(row.get("speedup_ceiling"), ".2f"),
            _fmt(row["peak_bytes"], ".1f", 2**-20),
            _fmt(row["plain_peak_bytes"], ".1f", 2**-20),
            _fmt(row["largest_tensor_bytes"], ".1f", 2**-20),
            _fmt(row["plain_largest_tensor_bytes"], ".1f", 2**-20),
            _errors(row),
        )
        for row in report["workloads"]
    ]
    return result_table(title, columns, rows)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _errors(row: dict) -> str:
    """The largest relative error against float64 of amlab's result and plain's, if measured."""
    if row.get("error_vs_float64") is None:
        return "-"
    return f"{row['error_vs_float64']:.1e} ({row['plain_error_vs_float64']:.1e})"
