"""Where the time of one streaming LSE pass goes, at the shape of `amlab bench`'s lse_64.

Times (by CPU time, steady on a busy machine), in one run and on one thread, the loop over
the same cache-sized chunks with more and more of the pass's work in it, each as a share of
the 2048 x 2048 matmul rate measured just before it (4 B M D flops per pass):

- matmuls: the two matmuls per chunk alone (scores = x xi^T, then acc += scores xi);
- matmuls + exp: the same with the exp of every score between them;
- amlab: the whole pass (:func:`amlab.energy.lse.lse_softmax_mean`, row sums and bookkeeping
  included).

    python benchmarks/bench_lse_parts.py [--memories M] [--repeats N] [--json]
"""

from __future__ import annotations

import json
import time

import torch
from common import best_time, parse_options

from amlab.energy.chunks import chunk_ranges, score_block
from amlab.energy.distances import sq_norms
from amlab.energy.lse import lse_softmax_mean, memory_bias


def main() -> None:
    args = parse_options(__doc__, batch=1024, memories=150_000, dim=64, beta=0.1, repeats=3)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    b, m, d = args.batch, args.memories, args.dim
    memories, x = torch.rand(m, d, generator=g), torch.rand(b, d, generator=g)
    xs = x * args.beta
    mem_sq = sq_norms(memories)
    bias = memory_bias(memories, "distance", mem_sq)
    chunks = list(chunk_ranges(m, b, None, score_block(x.device)))
    block = torch.empty(b * (chunks[0][1] - chunks[0][0]))

    def loop(with_exp: bool) -> torch.Tensor:
        acc = torch.zeros(b, d)
        for lo, hi in chunks:
            scores = torch.mm(xs, memories[lo:hi].T, out=block[: b * (hi - lo)].view(b, hi - lo))
            if with_exp:
                scores.exp_()
            acc.addmm_(scores, memories[lo:hi])
        return acc

    parts = {
        "matmuls": lambda: loop(False),
        "matmuls + exp": lambda: loop(True),
        "amlab": lambda: lse_softmax_mean(x, memories, args.beta, bias=bias, mem_sq=mem_sq),
    }
    a = torch.randn(2048, 2048, generator=g)
    rows = []
    for name, fn in parts.items():
        matmul_gflops = (
            2 * 2048**3 / best_time(lambda: a @ a, args.repeats, time.process_time) / 1e9
        )
        seconds = best_time(fn, args.repeats, time.process_time)
        gflops = 4 * b * m * d / seconds / 1e9
        rows.append(
            {
                "part": name,
                "ms": seconds * 1e3,
                "gflops": gflops,
                "matmul_gflops": matmul_gflops,
                "fraction_of_matmul": gflops / matmul_gflops,
            }
        )
    if args.json:
        print(json.dumps({"B": b, "M": m, "D": d, "chunk": chunks[0][1], "rows": rows}, indent=2))
        return
    print(f"streaming LSE pass, B={b} M={m} D={d}, chunks of {chunks[0][1]}, 1 thread")
    for row in rows:
        print(
            f"  {row['part']:14s} {row['ms']:7.1f} ms {row['gflops']:6.0f} GFLOP/s "
            f"({row['fraction_of_matmul']:.2f} of matmul at {row['matmul_gflops']:.0f})"
        )


if __name__ == "__main__":
    main()
