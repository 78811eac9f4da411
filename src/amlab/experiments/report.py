"""What every paper reproduction writes: ``report.md``, PNG figures and ``metrics.json``.

A report is built section by section; claims are recorded as (what the paper says,
what was measured, verdict), and written as a table so a reader sees at once where the
reproduction agrees and where it does not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from amlab.data import ImageSet, load
from amlab.io import atomic_write_text, write_metrics

#: progress(stage description, fraction of the whole run done in [0, 1])
Progress = Callable[[str, float], None]


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


def run_sections(
    sections: Sequence[tuple[str, Callable[[Progress], Any], float]], progress: Progress
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run (name, section(progress), share of the whole run) in order.

    Each section reports its own progress in [0, 1]; it is scaled into the section's share
    and prefixed with its name. Returns ({name: what the section returned}, {name: seconds}).
    """
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    done = 0.0
    for name, section, share in sections:

        def scaled(stage: str, fraction: float, start=done, share=share, name=name) -> None:
            progress(f"{name}: {stage}", min(start + share * min(max(fraction, 0.0), 1.0), 0.999))

        lap = time.perf_counter()
        results[name] = section(scaled)
        seconds[name] = time.perf_counter() - lap
        done += share
    return results, seconds


class Report:
    """Markdown report plus metrics, written into directory ``out``."""

    def __init__(self, out: str | Path, title: str, intro: str = "") -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = [f"# {title}", ""]
        if intro:
            self.lines += [intro.strip(), ""]
        self.claims: list[tuple[str, str, str]] = []

    def path(self, name: str) -> Path:
        """Where a file of this report (a figure, say) goes."""
        return self.out / name

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
