"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def best_time(
    fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Best time of ``repeats`` calls of fn, after one warm-up call: wall time, or with
    ``clock=time.process_time`` the process's CPU time (steady on a busy machine, for
    one-thread runs)."""
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def add_row(rows: list[dict], row: dict, line: str, quiet: bool) -> None:
    """Append ``row`` to ``rows`` and, unless ``quiet`` (the script prints JSON at the end),
    print ``line`` at once, so that a long run shows each result as it comes."""
    rows.append(row)
    if not quiet:
        print(line, flush=True)


def parse_options(doc: str, json: bool = True, **defaults: object) -> argparse.Namespace:
    """A benchmark script's command line: the first line of ``doc`` as its description,
    ``--json`` (print the results as JSON) unless ``json=False``, and one ``--<name>``
    option per keyword (underscores become dashes), of its default's type."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if json:
        parser.add_argument("--json", action="store_true")
    for name, default in defaults.items():
        if isinstance(default, bool):  # type=bool would read "--x False" as True
            raise TypeError(f"--{name}: a flag is not a typed option; add it as store_true")
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return parser.parse_args()
