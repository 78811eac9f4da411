"""DrDAM against the exact DenseAM as the number of stored patterns M grows (float32).

At fixed Y = 16,384 random projections, D = 100, B = 64 queries, for M from 10^3 to 10^6:
the time of one energy-and-gradient step (one step of retrieval), the model's bytes, the
largest tensor any torch op returns during the step (dispatch probe) and the growth of the
process's peak resident memory during the step (VmHWM after ``echo 5 > clear_refs``; it
includes the model, the queries and torch itself).
DrDAM's patterns are streamed in blocks, so the process never holds all M of them; the exact
model must. Reports where the exact model's step becomes slower (and bigger) than DrDAM's.

    python benchmarks/bench_drdam.py [--json] [--repeats N] [--max-memories M]
"""

from __future__ import annotations

import json
import math
import time

import torch
from common import best_time, parse_options

from amlab import DenseAM, RandomFeatureAM
from amlab.tasks.profiling import LargestTensor, peak_rss_bytes


def patterns(num: int, dim: int, seed: int, block: int = 1 << 16):
    """num random patterns (num, dim) in [0, 1/sqrt(dim)), yielded a block at a time."""
    g = torch.Generator().manual_seed(seed)
    for lo in range(0, num, block):
        yield torch.rand(min(block, num - lo), dim, generator=g) / math.sqrt(dim)


def measure(model, x: torch.Tensor, repeats: int) -> dict:
    step = lambda: model.energy_and_grad(x)  # noqa: E731
    seconds = best_time(step, repeats)
    with LargestTensor() as probe:
        step()
    return {
        "step_seconds": seconds,
        "largest_tensor_bytes": probe.largest_bytes,
        "step_peak_rss_bytes": peak_rss_bytes(step),
    }


def crossover(ms: list[int], ours: list[float], theirs: list[float]) -> float | None:
    """Smallest M (log-interpolated) from which theirs exceeds ours for good; None if never."""
    above = [t > o for o, t in zip(ours, theirs, strict=True)]
    if not above[-1]:
        return None
    i = len(above) - 1
    while i > 0 and above[i - 1]:
        i -= 1
    if i == 0:
        return float(ms[0])
    gap = [math.log(t / o) for o, t in zip(ours, theirs, strict=True)]
    frac = gap[i - 1] / (gap[i - 1] - gap[i])
    return math.exp(math.log(ms[i - 1]) + frac * (math.log(ms[i]) - math.log(ms[i - 1])))


def _pair(row: dict, key: str, scale: float) -> str:
    """'DrDAM / DenseAM' values of one measurement, scaled."""
    values = [row[f"{who}_{key}"] for who in ("drdam", "dense")]
    return " / ".join("?" if v is None else f"{v * scale:.1f}" for v in values)


def main() -> None:
    args = parse_options(
        __doc__, repeats=5, features=16_384, dim=100, batch=64, max_memories=1_000_000
    )
    sizes = [
        m
        for m in (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)
        if m <= args.max_memories
    ]
    x = torch.rand(args.batch, args.dim, generator=torch.Generator().manual_seed(1))
    x /= math.sqrt(args.dim)
    beta = 10.0
    # All DrDAM rows first: the exact models' freed memory would otherwise linger in the
    # process and blur DrDAM's peak RSS.
    rows = []
    for m in sizes:
        rf = RandomFeatureAM(args.dim, args.features, beta)
        start = time.perf_counter()
        for block in patterns(m, args.dim, seed=m):
            rf.add(block)
        row = {"M": m, "drdam_write_seconds": time.perf_counter() - start, "drdam_bytes": rf.nbytes}
        row.update({f"drdam_{k}": v for k, v in measure(rf, x, args.repeats).items()})
        rows.append(row)
        del rf
    for row in rows:
        dense = DenseAM(torch.cat(list(patterns(row["M"], args.dim, seed=row["M"]))), beta=beta)
        row["dense_bytes"] = dense.memories.numel() * dense.memories.element_size()
        row.update({f"dense_{k}": v for k, v in measure(dense, x, args.repeats).items()})
        del dense
        if not args.json:
            print(
                f"M={row['M']:>9,}  step ms {_pair(row, 'step_seconds', 1e3)}  model MiB "
                f"{row['drdam_bytes'] / 2**20:.1f} / {row['dense_bytes'] / 2**20:.1f}  largest "
                f"temporary MiB {_pair(row, 'largest_tensor_bytes', 2**-20)}  peak RSS MiB "
                f"{_pair(row, 'step_peak_rss_bytes', 2**-20)}  DrDAM write "
                f"{row['drdam_write_seconds']:.2f} s",
                flush=True,
            )
    ms = [r["M"] for r in rows]
    report = {
        "shape": {"Y": args.features, "D": args.dim, "B": args.batch, "dtype": "float32"},
        "threads": torch.get_num_threads(),
        "rows": rows,
        "time_crossover_M": crossover(
            ms, [r["drdam_step_seconds"] for r in rows], [r["dense_step_seconds"] for r in rows]
        ),
        "bytes_crossover_M": crossover(
            ms, [r["drdam_bytes"] for r in rows], [r["dense_bytes"] for r in rows]
        ),
        "drdam_step_ratio_largest_to_smallest_M": rows[-1]["drdam_step_seconds"]
        / rows[0]["drdam_step_seconds"],
        "dense_step_ratio_largest_to_smallest_M": rows[-1]["dense_step_seconds"]
        / rows[0]["dense_step_seconds"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("(each pair: DrDAM / DenseAM)")
    for key in ("time_crossover_M", "bytes_crossover_M"):
        v = report[key]
        print(f"{key}: " + ("never in this range" if v is None else f"M ~ {v:,.0f}"))
    print(
        f"step time from M={ms[0]:,} to M={ms[-1]:,}: DrDAM x"
        f"{report['drdam_step_ratio_largest_to_smallest_M']:.2f}, DenseAM x"
        f"{report['dense_step_ratio_largest_to_smallest_M']:.1f} "
        f"({report['threads']} threads)"
    )


if __name__ == "__main__":
    main()
