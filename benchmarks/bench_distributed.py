"""One retrieval pass over sharded memories: 1 rank x 2 threads against 2 ranks x 1 thread.

At M = 10^6 memories of dimension D = 64 (float32, LSE, beta 10) and B = 256 states, one
pass is ``energy_and_grad(x)`` then ``update(x)``: the work of one step of descent with its
energy. The same pass is timed on one DenseAM with 2 torch threads, then on a
ShardedDenseAM over 2 gloo ranks of 1 thread each, launched here with torchrun on this
machine (each rank builds only its half of the memories). The ranks count the bytes of
every tensor they hand to a collective during one pass (the payload per rank) and check the
count against the formula of docs/distributed.md: B (D + 2) numbers per LSE pass, 3 float64
per rank for each call's states check, 3 numbers for the update's bound; a ring all-reduce
of n bytes sends 2 (P - 1) / P n per rank. Times are the best of --repeats passes (each the
slowest rank's), wall clock; the sharded answers are checked against the single ones. One
rank with 1 thread is timed too, for reference.

    python benchmarks/bench_distributed.py [--json] [--memories M] [--dim D] [--batch B]
        [--repeats N]
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from common import best_time, parse_options

from amlab import DenseAM
from amlab.distributed import (
    ShardedDenseAM,
    init_group,
    is_main_process,
    leave_group,
    shard_range,
)

BETA = 10.0
BLOCK = 1 << 16  # rows drawn per seeded block: any rank draws its rows alone


def memories(lo: int, hi: int, dim: int) -> torch.Tensor:
    """Rows lo..hi of the benchmark's memories, in [0, 1/sqrt(dim)): the same rows whoever
    draws them (block b of BLOCK rows is drawn with seed b)."""
    blocks = []
    for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1 if hi > lo else lo // BLOCK):
        g = torch.Generator().manual_seed(b)
        block = torch.rand(BLOCK, dim, generator=g) / math.sqrt(dim)
        blocks.append(block[max(lo - b * BLOCK, 0) : hi - b * BLOCK])
    return torch.cat(blocks) if blocks else torch.empty(0, dim)


def states(batch: int, dim: int) -> torch.Tensor:
    return torch.rand(batch, dim, generator=torch.Generator().manual_seed(1)) / math.sqrt(dim)


def one_pass(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy (B,) at x and the updated states (B, D)."""
    energy, _ = model.energy_and_grad(x)
    return energy, model.update(x)


def formula_bytes(batch: int, dim: int, element_size: int) -> int:
    """docs/distributed.md's payload per rank of one pass: two LSE passes of B (D + 2)
    numbers, two states checks of 3 float64, one bound of 3 numbers (the update's)."""
    return 2 * batch * (dim + 2) * element_size + 2 * 3 * 8 + 3 * element_size


class CollectiveBytes:
    """While active, counts the bytes of every tensor this rank hands to torch.distributed's
    all_reduce and all_gather (its own piece), and what a ring sends for them."""

    def __init__(self, world: int) -> None:
        self.world, self.calls = world, []

    def __enter__(self) -> CollectiveBytes:
        self.saved = dist.all_reduce, dist.all_gather

        def all_reduce(tensor, *args, **kwargs):
            self.calls.append(("all_reduce", tensor.numel(), tensor.element_size()))
            return self.saved[0](tensor, *args, **kwargs)

        def all_gather(out, tensor, *args, **kwargs):
            self.calls.append(("all_gather", tensor.numel(), tensor.element_size()))
            return self.saved[1](out, tensor, *args, **kwargs)

        dist.all_reduce, dist.all_gather = all_reduce, all_gather
        return self

    def __exit__(self, *exc) -> None:
        dist.all_reduce, dist.all_gather = self.saved

    def payload(self) -> int:
        return sum(n * size for _, n, size in self.calls)

    def ring_sent(self) -> float:
        """Bytes a ring sends per rank: 2 (P-1)/P n for an all-reduce of n bytes (reduce-
        scatter, then all-gather), (P-1) n for an all-gather of n bytes from each rank."""
        p = self.world
        return sum(
            n * size * (2 * (p - 1) / p if kind == "all_reduce" else p - 1)
            for kind, n, size in self.calls
        )


def run_rank(args) -> None:
    """One rank of the sharded run (under torchrun); rank 0 writes the result to
    ``args.ranks_out``."""
    torch.set_num_threads(1)
    init_group(backend="gloo", timeout_s=600)
    rank, world = dist.get_rank(), dist.get_world_size()
    lo, hi = shard_range(args.memories, rank, world)
    model = ShardedDenseAM(memories(lo, hi, args.dim), beta=BETA)
    x = states(args.batch, args.dim)
    with CollectiveBytes(world) as counted:
        energy, new = one_pass(model, x)  # also the warm-up
    times = []
    for _ in range(args.repeats):
        dist.barrier()
        start = time.perf_counter()
        one_pass(model, x)
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the pass ends with its slowest rank
        times.append(float(elapsed))
    if is_main_process():
        result = {
            "ranks": world,
            "threads_per_rank": torch.get_num_threads(),
            "pass_seconds": min(times),
            "payload_bytes_per_rank": counted.payload(),
            "ring_bytes_sent_per_rank": counted.ring_sent(),
            "collectives": [
                {"op": kind, "numbers": n, "bytes": n * size} for kind, n, size in counted.calls
            ],
            "energy": energy.tolist(),
            "update": new.tolist(),
        }
        Path(args.ranks_out).write_text(json.dumps(result))
    leave_group()  # (after a barrier: no rank tears the group down while rank 0 writes)


def run_single(args, x: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The single run in this process: its best times with 2 threads (the comparison) and
    with 1 (for reference), its energy and update."""
    single = DenseAM(memories(0, args.memories, args.dim), beta=BETA)
    energy, new = one_pass(single, x)
    seconds = {}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        seconds[threads] = best_time(lambda: one_pass(single, x), args.repeats)
    return seconds, energy, new


def run_sharded(args) -> dict:
    """The sharded run: 2 ranks launched with torchrun; its rank 0's result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ranks.json"
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        options = ["--memories", args.memories, "--dim", args.dim, "--batch", args.batch]
        options += ["--repeats", args.repeats, "--ranks-out", out]
        done = subprocess.run(
            [*launch, "--nproc_per_node", "2", __file__, *map(str, options)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"the torchrun ranks failed:\n{done.stdout[-3000:]}{done.stderr[-6000:]}"
            )
        return json.loads(out.read_text())


def loadavg() -> str | None:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


def main() -> None:
    args = parse_options(__doc__, memories=1_000_000, dim=64, batch=256, repeats=3, ranks_out="")
    if args.ranks_out:
        return run_rank(args)
    load_before = loadavg()
    x = states(args.batch, args.dim)
    single, energy, new = run_single(args, x)
    single_seconds = single[2]
    sharded = run_sharded(args)  # after the single model is freed
    # the sharded pass answers what the single one does, up to float32 rounding
    torch.testing.assert_close(torch.tensor(sharded.pop("energy")), energy, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(sharded.pop("update")), new, rtol=1e-4, atol=1e-6)
    formula = formula_bytes(args.batch, args.dim, x.element_size())
    report = {
        "shape": {"M": args.memories, "D": args.dim, "B": args.batch, "dtype": "float32"},
        "pass": "energy_and_grad(x) then update(x) (LSE, beta 10)",
        "single": {"ranks": 1, "threads": 2, "pass_seconds": single_seconds},
        "single_one_thread": {"ranks": 1, "threads": 1, "pass_seconds": single[1]},
        "sharded": sharded,
        "formula_payload_bytes_per_rank": formula,
        "payload_matches_formula": sharded["payload_bytes_per_rank"] == formula,
        "single_over_sharded_time": single_seconds / sharded["pass_seconds"],
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"one pass at M={args.memories:,}, D={args.dim}, B={args.batch} (float32, LSE): "
            "energy_and_grad + update"
        )
        print(f"{'run':<22}{'pass ms':>10}{'payload B/rank':>16}{'ring sent B/rank':>18}")
        print(f"{'1 rank x 2 threads':<22}{single_seconds * 1e3:>10.1f}{0:>16,}{0:>18,}")
        print(f"{'(1 rank x 1 thread)':<22}{single[1] * 1e3:>10.1f}{0:>16,}{0:>18,}")
        print(
            f"{'2 ranks x 1 thread':<22}{sharded['pass_seconds'] * 1e3:>10.1f}"
            f"{sharded['payload_bytes_per_rank']:>16,}{sharded['ring_bytes_sent_per_rank']:>18,.0f}"
        )
        print(
            f"time ratio (1x2 / 2x1): {report['single_over_sharded_time']:.2f}; payload "
            f"{'matches' if report['payload_matches_formula'] else 'DIFFERS FROM'} the formula "
            f"({formula:,} bytes); load average before {load_before}, after "
            f"{report['loadavg_after']}"
        )
    if not report["payload_matches_formula"]:
        raise SystemExit(
            f"the ranks sent {sharded['payload_bytes_per_rank']} bytes per pass, the formula "
            f"of docs/distributed.md says {formula}: {sharded['collectives']}"
        )


if __name__ == "__main__":
    main()
