"""What every paper reproduction writes: ``report.md``, PNG figures and ``metrics.json``.

Every reproduction is a :class:`Paper`: a quick and a full ``Grid`` (a frozen dataclass
of every size the run uses) and its :class:`Section` s, each split into compute -> figure
-> write; :func:`reproduce` runs them with one progress bar and one report. The report is
built section by section; claims are recorded as (what the paper says, what was measured,
verdict), and written as a table so a reader sees at once where the reproduction agrees
and where it does not.

A directory is written as a unit. :func:`reproduce` first marks it unfinished and clears
the previous run's outputs, then writes the new ones, and marks it finished last:
``run.json`` holds ``{"complete": bool, "seed", "quick", "files": [figures]}``. At the
start it becomes ``complete: false`` listing the figures of the previous run (read from
the old ``run.json``) and those of this run as each is written; those old figures,
``report.md`` and ``metrics.json`` are deleted, and ``report.md`` says the run has not
finished. Only after the new ``report.md`` and ``metrics.json`` are written does
``run.json`` say ``complete: true``. So an interrupted rerun (another seed, say) never
leaves figures of one run beside the report of another: the directory holds this run's
partial figures, a report.md that says so, and a run.json that lists them for the next run
to clear. Resumable state that sections keep under the directory (``checkpoints/``,
``sweep/``) is not touched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch

from amlab.data import ImageSet, load
from amlab.distributed.group import refuse_torchrun
from amlab.errors import AmlabError
from amlab.io import atomic_write_text, read_json, write_metrics

#: the file that says whether a reproduction directory holds a finished run, and its figures
RUN_FILE = "run.json"

#: progress(stage description, fraction of the whole run done in [0, 1])
Progress = Callable[[str, float], None]


def part(progress: Progress, label: str, start: float, share: float) -> Progress:
    """``progress`` as one part of a larger work sees it: the part's fractions 0..1 move the
    whole from ``start`` to ``start + share``, its stages are prefixed with ``label``."""

    def within(stage: str, fraction: float) -> None:
        progress(f"{label}: {stage}", start + share * min(max(fraction, 0.0), 1.0))

    return within


def no_progress(stage: str, fraction: float) -> None:
    """The progress callback used when nobody is watching."""


def reproduction_report(out: str | Path, title: str, source: str, quick: bool, seed: int) -> Report:
    """The report of ``amlab repro <paper>``: the title, the source and the run's mode."""
    mode = "quick (reduced grid)" if quick else "full"
    return Report(
        out,
        f"Reproduction: {title}",
        intro=f"Source: {source}. Mode: {mode}, seed {seed}. Every number below was measured "
        "by this run.",
    )


def paper_images(data_dir: str | None) -> ImageSet:
    """The images of a reproduction: MNIST's test split from ``data_dir``, else the
    embedded digits. Load them first, so that a wrong directory fails at once."""
    return load("mnist", data_dir, split="test") if data_dir else load("digits")


@dataclass(frozen=True)
class Context:
    """What every section of one reproduction sees.

    grid: the paper's ``Grid`` for this run (its quick or full sizes, or a test's own).
    images: the run's images (MNIST from ``--data-dir``, else the embedded digits), for the
        papers that use images; None otherwise.
    out: the run's directory (long computations keep resumable state under it).
    results: what the sections before this one computed, by section name.
    """

    grid: Any
    seed: int
    quick: bool
    out: Path
    images: ImageSet | None = None
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Section:
    """One section of a reproduction, in three steps that never mix:

    - ``compute(ctx, progress)``: the measurements (numbers, tensors, records); no
      matplotlib, no prose. ``progress(stage, fraction)`` reports within the section.
    - ``figure(result, ctx, report)``: draws the section's figures into
      ``report.path(name)``; computes nothing.
    - ``write(result, ctx, report)``: the section's heading, prose, tables, figure
      references and claims; returns the section's entries of ``metrics.json``.

    ``share`` is the section's part of the whole run's progress bar (its expected cost).
    """

    name: str
    share: float
    compute: Callable[[Context, Progress], Any]
    write: Callable[[Any, Context, Report], dict[str, Any]]
    figure: Callable[[Any, Context, Report], None] | None = None


def reproduce(
    paper: Paper,
    out: str | Path,
    quick: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
    progress: Progress = no_progress,
    grid: Any = None,
) -> dict[str, Any]:
    """Run ``paper``'s sections in order (compute, figure, write) and write ``report.md``,
    the figures and ``metrics.json`` into ``out``; returns the metrics.

    ``grid`` replaces the quick or full grid (tests run tiny ones). The images are loaded
    first, so that a wrong ``data_dir`` fails before any work; a paper without images
    refuses ``data_dir``. Under torchrun with several ranks it refuses to start, before it
    clears anything in ``out``: a reproduction runs in one process.
    """
    refuse_torchrun(
        "amlab repro",
        "its experiments are not spread over ranks: every rank would run all of them and "
        "clear and write the same files",
    )
    started = time.perf_counter()
    if paper.uses_images:
        images = paper_images(data_dir)
    elif data_dir is not None:
        raise AmlabError(f"this reproduction uses no image files; drop --data-dir ({data_dir}).")
    else:
        images = None
    ctx = Context(
        grid=grid if grid is not None else (paper.quick if quick else paper.full),
        seed=seed,
        quick=quick,
        out=Path(out),
        images=images,
    )
    report = reproduction_report(out, paper.title, paper.source, quick, seed)
    report.begin_run(seed, quick)
    if intro := paper.intro(ctx):
        report.text(intro)
    metrics = paper.metrics(ctx)
    seconds: dict[str, float] = {}
    done = 0.0

    def below_one(stage: str, fraction: float) -> None:  # 1 only once the report is written
        progress(stage, min(fraction, 0.999))

    for section in paper.sections:
        lap = time.perf_counter()
        result = section.compute(ctx, part(below_one, section.name, done, section.share))
        ctx.results[section.name] = result
        if section.figure is not None:
            section.figure(result, ctx, report)
        metrics.update(section.write(result, ctx, report))
        seconds[section.name] = time.perf_counter() - lap
        done += section.share
    metrics["claims"] = [
        dict(zip(("paper", "measured", "verdict"), claim, strict=True)) for claim in report.claims
    ]
    metrics["seconds"] = time.perf_counter() - started
    metrics["section_seconds"] = seconds
    report.section(
        "Run",
        f"Seed {seed}, {'quick' if quick else 'full'} grid, {metrics['seconds']:.0f} s on "
        f"{torch.get_num_threads()} CPU thread(s). The grid:\n\n"
        + "\n".join(f"- `{k}` = {v}" for k, v in _fields(ctx.grid).items()),
    )
    progress("done", 1.0)
    report.write(metrics)
    report.finish_run()
    return metrics


def _fields(grid: Any) -> dict[str, Any]:
    return asdict(grid) if is_dataclass(grid) else dict(vars(grid))


@dataclass(frozen=True)
class Paper:
    """A reproduction: its grids, its sections in order, and what its report says first.

    ``metrics(ctx)`` gives the entries of ``metrics.json`` that belong to the whole run (the
    grid, the seed); each section's ``write`` adds its own, and :func:`reproduce` adds
    the claims the sections recorded (``claims``: paper, measured, verdict) and the run time
    (``seconds``, ``section_seconds``).
    """

    title: str
    source: str
    full: Any
    quick: Any
    sections: tuple[Section, ...]
    metrics: Callable[[Context], dict[str, Any]]
    intro: Callable[[Context], str] = lambda ctx: ""
    uses_images: bool = False

    #: ``amlab repro <paper>``: run(out, quick, seed, data_dir, progress, grid)
    run = reproduce


class Report:
    """Markdown report plus metrics, written into directory ``out``."""

    def __init__(self, out: str | Path, title: str, intro: str = "") -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = [f"# {title}", ""]
        if intro:
            self.lines += [intro.strip(), ""]
        self.claims: list[tuple[str, str, str]] = []
        self.files: list[str] = []  # the figures this report wrote (names in out)
        self._run: dict[str, Any] | None = None  # seed and grid, once begin_run is called

    def path(self, name: str) -> Path:
        """Where a file of this report (a figure, say) goes."""
        if name not in self.files:
            self.files.append(name)
            if self._run is not None:
                self._write_run_file(complete=False)
        return self.out / name

    # -- the directory as a unit (see the module docstring) ------------------------------------
    def begin_run(self, seed: int, quick: bool) -> None:
        """Mark the directory unfinished and clear the previous run's outputs: its figures
        (plain ``.png`` names in the old run.json only, so a tampered one cannot reach other
        files), report.md (replaced by a note that the run has not finished) and
        metrics.json."""
        run_file = self.out / RUN_FILE
        old = read_json(run_file, f"delete {run_file}") if run_file.exists() else {}
        listed = old.get("files") if isinstance(old, dict) else None
        stale = [
            name
            for name in (listed if isinstance(listed, list) else [])
            if isinstance(name, str) and name.endswith(".png") and Path(name).name == name
        ]
        self._run = {"seed": seed, "quick": quick}
        self._write_run_file(complete=False, stale=stale)  # until the old figures are gone
        grid = "quick" if quick else "full"
        atomic_write_text(
            self.out / "report.md",
            f"# Unfinished reproduction\n\nThis directory holds a reproduction (seed {seed}, "
            f"{grid} grid) that has not finished: the figures here are its partial output, "
            "not a report. Run the command again to finish it.\n",
        )
        (self.out / "metrics.json").unlink(missing_ok=True)
        for name in stale:
            if name not in self.files and (self.out / name).is_file():
                (self.out / name).unlink()
        self._write_run_file(complete=False)

    def finish_run(self) -> None:
        """Mark the directory finished (after :meth:`write`)."""
        self._write_run_file(complete=True)

    def _write_run_file(self, complete: bool, stale: Sequence[str] = ()) -> None:
        """run.json: this run's figures, after ``stale`` ones of the previous run not yet
        deleted."""
        files = list(dict.fromkeys([*stale, *self.files]))
        write_metrics(
            self.out / RUN_FILE, {**(self._run or {}), "complete": complete, "files": files}
        )

    def section(self, heading: str, text: str = "") -> None:
        self.lines += [f"## {heading}", ""]
        if text:
            self.lines += [text.strip(), ""]

    def text(self, text: str) -> None:
        self.lines += [text.strip(), ""]

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        for row in rows:
            self.lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
        self.lines.append("")

    def figure(self, name: str, caption: str) -> None:
        """Reference a figure already saved as ``self.path(name)``."""
        self.lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]

    def claim(self, paper: str, measured: str, verdict: str) -> None:
        """Record one claim: what the paper says, what we measured, and the verdict
        ("reproduced", "not reproduced", "partly", ...)."""
        self.claims.append((paper, measured, verdict))

    def write(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write ``report.md`` (with the claims table first) and ``metrics.json``."""
        lines = self.lines[:2]
        if self.claims:
            lines += [
                "## Claims, one by one",
                "",
                "| the paper says | measured here | verdict |",
                "|---|---|---|",
            ]
            lines += [f"| {p} | {m} | {v} |" for p, m, v in self.claims] + [""]
        lines += self.lines[2:]
        atomic_write_text(self.out / "report.md", "\n".join(lines).rstrip() + "\n")
        write_metrics(self.out / "metrics.json", metrics)
        return metrics


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)
