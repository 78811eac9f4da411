"""The sweep: many :class:`RunSpec` runs (task mix x model size x seed), resumable.

Each finished run is recorded as ``out/runs/<key>.json`` (written atomically by the
process that drives the sweep, as results come in); a sweep started again over the same
directory skips every run whose record is there with the same settings, so a killed sweep
loses at most the runs that were in flight. Runs go to a local process pool (one torch
thread per worker) or, given ``ray_address``, to a Ray cluster (``pip install
amlab[ray]``).

:func:`thresholds` turns the records into the study's answer: per task mix, the smallest
parameter count at which at least ``min_fraction`` of the seeds reach ``target`` test
accuracy.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

from amlab.distributed.group import refuse_torchrun
from amlab.errors import AmlabError, check_positive_int
from amlab.io import atomic_write_text, read_json
from amlab.tasks.listops import RunSpec, train_run

#: the task mixes the study asks for
MIXES = ("sum", "max", "min", "med", "max,med", "max,med,sum")

#: on_done(record, finished so far, total); ``record["skipped"]`` marks runs found on disk
OnDone = Callable[[dict[str, Any], int, int], None]


def grid(
    base: RunSpec,
    mixes: Iterable[str | tuple[str, ...]],
    sizes: Iterable[dict[str, Any]],
    seeds: Iterable[int],
) -> list[RunSpec]:
    """Every (mix, size, seed) combination; a size is a dict of RunSpec model fields,
    e.g. ``{"dim": 16}`` or ``{"dim": 24, "layers": 1}``."""
    specs = [
        replace(base, ops=mix, seed=seed, **size)
        for mix in mixes
        for size in sizes
        for seed in seeds
    ]
    keys = [s.key() for s in specs]
    if len(set(keys)) != len(keys):
        raise AmlabError("the sweep's grid repeats a run; list each mix, size and seed once.")
    return specs


def _run_job(spec: RunSpec, model_dir: str | None) -> dict[str, Any]:
    """One run in a worker: one torch thread, the record back to the driver; the trained
    model is saved to ``model_dir`` (a path the worker can write) when given."""
    import torch

    torch.set_num_threads(1)
    return train_run(spec, model_dir=model_dir)


def _set_single_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def record_path(out: str | os.PathLike, key: str) -> Path:
    """Where the record of the run with this :meth:`RunSpec.key` goes."""
    return Path(out) / "runs" / f"{key}.json"


def finished(out: str | os.PathLike, spec: RunSpec) -> dict[str, Any] | None:
    """The record of a finished run with these exact settings, or None."""
    path = record_path(out, spec.key())
    if not path.exists():
        return None
    try:
        record = read_json(path, "")
    except AmlabError:
        return None  # cannot happen with atomic writes; treat as not finished
    return record if isinstance(record, dict) and record.get("spec") == spec.describe() else None


def run_sweep(
    specs: list[RunSpec],
    out: str | os.PathLike,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    on_done: OnDone | None = None,
    save_models: bool = False,
) -> list[dict[str, Any]]:
    """Run every spec not yet recorded in ``out``; return all records in spec order.

    With ``save_models`` each trained model is saved to ``out/models/<key>/`` (on a Ray
    cluster of several machines that directory must be shared). Refused under torchrun with
    several ranks: the sweep spreads its runs itself."""
    refuse_torchrun(
        "amlab listops sweep",
        "it spreads its runs over its own worker processes (--workers) or a Ray cluster "
        "(--ray), not over torchrun's ranks: every rank would run and record every run, and "
        "the workers would inherit the rank's torchrun settings",
    )
    check_positive_int(workers, "workers")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    pending = []
    for spec in specs:
        record = finished(out, spec)
        if record is None:
            pending.append(spec)
        else:
            records[spec.key()] = record
            if on_done is not None:
                on_done({**record, "skipped": True}, len(records), len(specs))

    def done(record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=1) + "\n"
        atomic_write_text(record_path(out, record["key"]), text)
        records[record["key"]] = record
        if on_done is not None:
            on_done(record, len(records), len(specs))

    jobs = [(s, str(out / "models" / s.key()) if save_models else None) for s in pending]
    if ray_address is not None:
        _run_on_ray(jobs, ray_address, done)
    elif workers == 1:
        for spec, model_dir in jobs:  # in this process, with its thread settings
            done(train_run(spec, model_dir=model_dir))
    else:
        _set_single_thread()  # inherited by the spawned workers
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_run_job, *job) for job in jobs}
            while futures:
                complete, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in complete:
                    done(future.result())
    return [records[s.key()] for s in specs]


def _run_on_ray(jobs: list[tuple[RunSpec, str | None]], address: str, done) -> None:
    try:
        import ray
    except ImportError:
        raise AmlabError(
            "--ray needs Ray: pip install 'amlab[ray]' (or pip install ray)."
        ) from None
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_run_job)
    futures = [remote.remote(*job) for job in jobs]
    while futures:
        complete, futures = ray.wait(futures, num_returns=1)
        for ref in complete:
            done(ray.get(ref))


def mix_name(ops: Iterable[str]) -> str:
    return "+".join(o.upper() for o in ops)


def thresholds(
    records: list[dict[str, Any]], target: float, min_fraction: float = 0.5
) -> dict[str, dict[str, Any]]:
    """Per mix (runs without pretraining): each size's parameter count and seeds that
    reached ``target``; ``threshold`` is the smallest count where at least
    ``min_fraction`` of the seeds did (None when no size on the ladder did)."""
    table: dict[str, dict[int, list[float]]] = {}
    for r in records:
        if r["spec"].get("pretrain_ops") is not None:
            continue
        table.setdefault(mix_name(r["spec"]["ops"]), {}).setdefault(r["parameters"], []).append(
            r["test_accuracy"]
        )
    result = {}
    for mix, by_size in table.items():
        sizes = []
        for params in sorted(by_size):
            accs = by_size[params]
            sizes.append(
                {
                    "parameters": params,
                    "accuracies": accs,
                    "learned": sum(a >= target for a in accs),
                    "seeds": len(accs),
                }
            )
        learned = [s["parameters"] for s in sizes if s["learned"] >= min_fraction * s["seeds"]]
        result[mix] = {"threshold": min(learned) if learned else None, "sizes": sizes}
    return result


CURRICULUM = (("max", "med"), ("sum",))


def sweep_grid(
    base: RunSpec,
    mixes: Iterable[str | tuple[str, ...]],
    dims: Iterable[int],
    seeds: Iterable[int],
    curriculum_steps: int = 0,
) -> list[RunSpec]:
    """The study's grid over embedding sizes; with ``curriculum_steps`` > 0 also, for each
    size and seed, MAX+MED pretraining for that many steps followed by SUM."""
    dims, seeds = list(dims), list(seeds)
    if not dims or not seeds:
        raise AmlabError("a sweep needs at least one size (dims) and one seed.")
    specs = grid(base, mixes, [{"dim": d} for d in dims], seeds)
    if curriculum_steps:
        first, then = CURRICULUM
        specs += [
            replace(s, pretrain_ops=first, pretrain_steps=curriculum_steps)
            for s in grid(base, [then], [{"dim": d} for d in dims], seeds)
        ]
    return specs


def curriculum_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size: SUM test accuracy of SUM-only runs and of MAX+MED-then-SUM runs."""
    first, then = CURRICULUM
    rows: dict[int, dict[str, Any]] = {}
    for r in records:
        spec = r["spec"]
        if tuple(spec["ops"]) != then:
            continue
        pre = spec.get("pretrain_ops")
        kind = "alone" if pre is None else "curriculum" if tuple(pre) == first else None
        if kind is not None:
            row = rows.setdefault(
                r["parameters"], {"parameters": r["parameters"], "alone": [], "curriculum": []}
            )
            row[kind].append(r["test_accuracy"])
    return [rows[p] for p in sorted(rows) if rows[p]["curriculum"]]


def summarize(
    specs: list[RunSpec],
    out: str | os.PathLike,
    target: float,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    on_done: OnDone | None = None,
    save_models: bool = False,
) -> dict[str, Any]:
    """Run the sweep (resuming), then write and return ``out/summary.json``: thresholds
    per mix, the curriculum rows, and every record."""
    records = run_sweep(
        specs,
        out,
        workers=workers,
        ray_address=ray_address,
        on_done=on_done,
        save_models=save_models,
    )
    summary = {
        "target": target,
        "thresholds": thresholds(records, target),
        "curriculum": curriculum_rows(records),
        "records": records,
    }
    text = json.dumps(summary, indent=1) + "\n"
    atomic_write_text(Path(out) / "summary.json", text)
    return summary
