"""``amlab repro <paper>``: reproduce a paper into report.md, figures and metrics.json."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from amlab.cli.common import (
    DataDirOpt,
    JsonOpt,
    QuickOpt,
    SeedOpt,
    errors,
    out_option,
    path_str,
    show_result,
    stage_progress,
)

repro_app = typer.Typer(
    help="Reproduce a paper: writes report.md, PNG figures and metrics.json to --out.",
    no_args_is_help=True,
)


#: paper -> one-line description; each is ``amlab.experiments.<paper>.PAPER``
PAPERS = {
    "lsr": "Epanechnikov (LSR) DenseAM: exact minima, emergent memories, log-likelihood.",
    "drdam": "DrDAM: the memory in a fixed-size random-feature tensor, its errors and retrieval.",
    "listops": "ListOps: fewest parameters per task mix, curriculum, embeddings, ablation.",
    "diffusion": "Diffusion as associative memory: the optimal denoiser is a DenseAM; circle toy, "
    "memorisation on digits, sampler vs descent.",
    "fairness": "Fairness of text classifiers: group and individual metrics of baseline and "
    "mitigated models side by side, on a corpus with a planted bias.",
    "memorisation": "Memorisation to generalisation: memorised, spurious and generalised samples "
    "against the training-set size (the phase curve).",
}


def _add_repro_command(paper: str, description: str) -> None:
    def command(
        out: Annotated[Path, out_option("report.md, the figures and metrics.json")] = Path(
            f"runs/repro-{paper}"
        ),
        quick: QuickOpt = False,
        data_dir: DataDirOpt = None,
        seed: SeedOpt = 0,
        as_json: JsonOpt = False,
    ) -> None:
        # the paper's experiments with a progress bar, then where the report went
        run = importlib.import_module(f"amlab.experiments.{paper}").PAPER.run
        with errors(), stage_progress() as progress:
            metrics = run(
                out=out, quick=quick, seed=seed, data_dir=path_str(data_dir), progress=progress
            )
        figures = f"{len(list(out.glob('*.png')))} figures"
        show_result(metrics, as_json, wrote=(out / "report.md", out / "metrics.json", figures))

    repro_app.command(paper, help=description)(command)


for _paper, _description in PAPERS.items():
    _add_repro_command(_paper, _description)
