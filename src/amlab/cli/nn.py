"""``amlab nn``: the worked examples of the trainable memory layers (:mod:`amlab.nn`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from amlab.cli.common import (
    JsonOpt,
    QuickOpt,
    errors,
    integer,
    list_option,
    out_option,
    result_table,
    show_result,
    shows_results,
    stage_progress,
)

nn_app = typer.Typer(
    help="Associative memory as a trainable layer: worked examples, each writing report.md, "
    "metrics.json and a figure to --out.",
    no_args_is_help=True,
)

SeedsOpt = Annotated[
    Any,
    list_option(
        integer, "0,1,2", "Seeds, one training run each (default 0,1,2; --quick 0,1)", "N,..."
    ),
]
StepsOpt = Annotated[
    int | None, typer.Option(min=1, help="Optimizer steps per run (default: the example's).")
]


@nn_app.command("mil")
def mil(
    out: Annotated[Path, out_option("report.md, metrics.json and mil.png")] = Path("runs/nn-mil"),
    target: Annotated[
        int, typer.Option(min=0, max=9, help="The digit that makes a bag positive.")
    ] = 9,
    steps: StepsOpt = None,
    seeds: SeedsOpt = None,
    quick: QuickOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Multiple-instance learning on bags of digits: memory pooling (LSE, LSR) against
    attention and mean pooling."""
    from amlab.tasks.memory_layers import MIL_QUICK, MILConfig, run_mil

    with errors():
        config = _settings(MIL_QUICK if quick else MILConfig(), steps, seeds, target=target)
        shows = shows_results()  # under torchrun every rank trains; rank 0 shows and writes
        with stage_progress(shown=shows) as progress:
            metrics = run_mil(config, out, progress)
    if not shows:
        return
    rows = [
        (
            name,
            f"{acc['mean']:.3f} ± {acc['std']:.3f}",
            ", ".join(f"{a:.3f}" for a in acc["per_seed"]),
        )
        for name, acc in metrics["accuracy"].items()
    ]
    table = result_table(
        f"bags holding a {target}: test accuracy", ("pooling", "mean ± std", "per seed"), rows
    )
    show_result(metrics, as_json, table, (out / "report.md", out / "metrics.json", out / "mil.png"))


@nn_app.command("prototypes")
def prototypes(
    out: Annotated[Path, out_option("report.md, metrics.json and prototypes.png")] = Path(
        "runs/nn-prototypes"
    ),
    per_class: Annotated[int, typer.Option(min=1, help="Learnable prototypes per class.")] = 3,
    steps: StepsOpt = None,
    seeds: SeedsOpt = None,
    quick: QuickOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """A digit classifier whose last layer is a memory of learnable prototypes: LSE against
    LSR (accuracy, sparsity, the prototypes as images)."""
    from amlab.tasks.memory_layers import (
        PROTOTYPE_ENERGIES,
        PROTOTYPES_QUICK,
        PrototypeConfig,
        run_prototypes,
    )

    with errors():
        config = _settings(
            PROTOTYPES_QUICK if quick else PrototypeConfig(), steps, seeds, per_class=per_class
        )
        shows = shows_results()  # under torchrun every rank trains; rank 0 shows and writes
        with stage_progress(shown=shows) as progress:
            metrics = run_prototypes(config, out, progress)
    if not shows:
        return
    rows = [
        (
            energy.upper(),
            f"{metrics[energy]['accuracy']['mean']:.3f} ± {metrics[energy]['accuracy']['std']:.3f}",
            f"{metrics[energy]['zero_weights']['mean']:.3f}",
        )
        for energy in PROTOTYPE_ENERGIES
    ]
    rows.append(("logistic regression", f"{metrics['logistic_regression_accuracy']:.3f}", "-"))
    table = result_table(
        "digit prototypes: test accuracy", ("memory", "accuracy", "zero weights"), rows
    )
    show_result(
        metrics, as_json, table, (out / "report.md", out / "metrics.json", out / "prototypes.png")
    )


def _settings(config, steps: int | None, seeds: list[int] | None, **fields):
    """The example's config with the options given on the command line."""
    if steps is not None:
        fields["steps"] = steps
    if seeds is not None:
        fields["seeds"] = tuple(seeds)
    return replace(config, **fields)
